//! A static file server on 127.0.0.1 for the import tests: `GET /<name>` serves
//! `<dir>/<name>` with a Content-Length, or without one (read until close) for
//! paths under `/nolength/`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

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
