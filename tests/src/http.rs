//! A static file server on 127.0.0.1 for the import tests: `GET /<name>` serves
//! `<dir>/<name>` with a Content-Length, or without one (read until close) for
//! paths under `/nolength/`. Generated bodies, for long transfers without files:
//! `/slow/<bytes per second>/<size>` sends [`slow_body`] of `size` bytes at that
//! rate, never idle for long; `/stall/<size>` sends the headers and 1 KiB, then
//! nothing; `/short/<claimed>/<sent>` says `claimed` bytes, sends `sent` and closes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Byte `i` of a generated body: in each MiB, the MiB's index in its first
/// 8 bytes (little-endian), zeros after.
pub fn slow_body(i: u64) -> u8 {
    let (block, off) = (i >> 20, i & ((1 << 20) - 1));
    if off < 8 { block.to_le_bytes()[off as usize] } else { 0 }
}

fn serve_slow(mut w: std::net::TcpStream, rate: u64, size: u64) {
    let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
    let start = std::time::Instant::now();
    let tick = (rate / 20).max(1);
    let mut sent = 0u64;
    while sent < size {
        let n = tick.min(size - sent);
        let chunk: Vec<u8> = (sent..sent + n).map(slow_body).collect();
        if w.write_all(&chunk).is_err() {
            return;
        }
        sent += n;
        let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct FileServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl FileServer {
    /// Serves the files of `dir` until the process exits.
    pub fn start(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dir: PathBuf = dir.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = r.read_line(&mut line);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    if let Some(rest) = path.strip_prefix("/slow/") {
                        let mut p = rest.split('/').map(|x| x.parse::<u64>().unwrap_or(0));
                        let (rate, size) = (p.next().unwrap_or(1).max(1), p.next().unwrap_or(0));
                        serve_slow(conn, rate, size);
                        return;
                    }
                    if let Some(rest) = path.strip_prefix("/short/") {
                        let mut p = rest.split('/').map(|x| x.parse::<usize>().unwrap_or(0));
                        let (claimed, sent) = (p.next().unwrap_or(0), p.next().unwrap_or(0));
                        let mut w = conn;
                        let _ = write!(
                            w,
                            "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
                        );
                        let _ = w.write_all(&vec![7u8; sent.min(claimed)]);
                        return;
                    }
                    if let Some(size) = path.strip_prefix("/stall/") {
                        let mut w = conn;
                        let _ = write!(
                            w,
                            "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                        );
                        let _ = w.write_all(&[1u8; 1024]);
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                        return;
                    }
                    let (no_len, name) = match path.strip_prefix("/nolength/") {
                        Some(n) => (true, n.to_string()),
                        None => (false, path.trim_start_matches('/').to_string()),
                    };
                    let mut w = conn;
                    match std::fs::read(dir.join(&name)) {
                        Ok(body) if !name.contains("..") => {
                            let len = if no_len {
                                String::new()
                            } else {
                                format!("Content-Length: {}\r\n", body.len())
                            };
                            let _ = write!(w, "HTTP/1.1 200 OK\r\n{len}Connection: close\r\n\r\n");
                            let _ = w.write_all(&body);
                        }
                        _ => {
                            let _ = write!(
                                w,
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                        }
                    }
                });
            }
        });
        Self { base }
    }
}
