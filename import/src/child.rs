//! Child processes with a deadline: every program rbdx starts (qemu-img, tar,
//! mkfs, virsh, ssh) is waited for with a limit and killed when it passes, its
//! output drained on threads so that it never blocks on a full pipe.

use std::io::Read;
use std::process::{Child, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads up to `limit` bytes of `from` on a thread of its own (so that a child
/// never blocks on a full pipe while we wait for it); the rest is discarded.
pub fn drain(from: impl Read + Send + 'static, limit: u64) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut from = from;
        let _ = (&mut from).take(limit).read_to_end(&mut v);
        // Keep reading past the limit so the child is never stuck writing.
        let _ = std::io::copy(&mut from, &mut std::io::sink());
        v
    })
}

/// Waits for `child` until `limit` has passed since now; kills it then.
///
/// # Errors
/// One line when it could not be waited for or ran too long.
pub fn wait(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish within {}s and was stopped", limit.as_secs()));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Waits for `child` (stdout and stderr piped, or not) and collects its output,
/// killing it when it runs past `limit`.
///
/// # Errors
/// One line when it could not be waited for or ran too long.
pub fn wait_output(mut child: Child, limit: Duration) -> Result<Output, String> {
    let out = child.stdout.take().map(|o| drain(o, 16 << 20));
    let err = child.stderr.take().map(|e| drain(e, 1 << 20));
    let status = wait(&mut child, limit)?;
    let join = |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output { status, stdout: join(out), stderr: join(err) })
}
