//! Child processes with a deadline: every program rbdx starts (qemu-img, tar,
//! mkfs, xorriso, virsh, ssh, other drivers' scripts) is started here, in a
//! process group of its own, recorded until it is reaped, waited for with a limit
//! and killed (with everything it started) when it passes; its output is drained
//! on threads so that it never blocks on a full pipe. [`kill_all`] stops every
//! one still running, for an action that reached its own deadline.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The process groups of the children started and not yet reaped.
static RUNNING: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Set by [`kill_all`]: nothing is started any more.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn record(pgid: i32, running: bool) {
    let mut set = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    let set = set.get_or_insert_with(HashSet::new);
    if running {
        set.insert(pgid);
    } else {
        set.remove(&pgid);
    }
}

/// Starts `cmd` in a process group of its own (so that a kill reaches what it
/// starts too) and records it.
///
/// # Errors
/// The spawn error.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    // Spawned and recorded under the lock `kill_all` takes: a child started
    // while the deadline passes is either killed with the others or not started.
    let mut set = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    if STOPPING.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("the action is past its deadline"));
    }
    let child = cmd.process_group(0).spawn()?;
    set.get_or_insert_with(HashSet::new).insert(i32::try_from(child.id()).unwrap_or(i32::MAX));
    Ok(child)
}

/// Kills the process group of `child` and reaps it.
pub fn kill(child: &mut Child) {
    let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
    record(pgid, false);
}

/// Kills every recorded child and what it started (an action past its deadline).
pub fn kill_all() {
    let set = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    STOPPING.store(true, Ordering::SeqCst);
    for g in set.iter().flatten() {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
}

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

/// Waits for `child` until `limit` has passed since now; kills it (and what it
/// started) then.
///
/// # Errors
/// One line when it could not be waited for or ran too long.
pub fn wait(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    wait_checked(child, limit, &mut || Ok(()))
}

/// [`wait`], also running `check` about four times a second: when it fails,
/// the child is killed and its message returned.
///
/// # Errors
/// One line when it could not be waited for, ran too long, or `check` failed.
pub fn wait_checked(
    child: &mut Child,
    limit: Duration,
    check: &mut dyn FnMut() -> Result<()>,
) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    let mut checked = start;
    let mut pause = Duration::from_millis(1);
    let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    loop {
        if let Some(st) = child.try_wait().map_err(Error::io("waiting"))? {
            record(pgid, false);
            return Ok(st);
        }
        if start.elapsed() > limit {
            kill(child);
            return Err(Error::TimedOut(format!(
                "did not finish within {}s and was stopped",
                limit.as_secs()
            )));
        }
        if checked.elapsed() >= Duration::from_millis(250) {
            checked = Instant::now();
            if let Err(e) = check() {
                kill(child);
                return Err(e);
            }
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
pub fn wait_output(child: Child, limit: Duration) -> Result<Output> {
    wait_output_checked(child, limit, &mut || Ok(()))
}

/// [`wait_output`] with a `check` as in [`wait_checked`].
///
/// # Errors
/// As [`wait_checked`].
pub fn wait_output_checked(
    mut child: Child,
    limit: Duration,
    check: &mut dyn FnMut() -> Result<()>,
) -> Result<Output> {
    let out = child.stdout.take().map(|o| drain(o, 16 << 20));
    let err = child.stderr.take().map(|e| drain(e, 1 << 20));
    let status = wait_checked(&mut child, limit, check)?;
    let join = |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output { status, stdout: join(out), stderr: join(err) })
}

/// [`spawn`] then [`wait_output`]: runs `cmd` to its end or `limit`.
///
/// # Errors
/// One line naming the program: it could not start, or ran too long.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let child = spawn(cmd).map_err(Error::io(format!("cannot run {name}")))?;
    wait_output(child, limit).map_err(|e| e.prefixed(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn a_child_and_what_it_starts_are_killed_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-ran");
        // The shell starts a grandchild that would write the marker after 2 s.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]).stdout(Stdio::piped()).stderr(Stdio::piped());
        let t = Instant::now();
        let e = run(&mut cmd, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, Error::TimedOut(_)) && e.to_string().contains("sh did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the grandchild was killed with its group");
        let out =
            run(Command::new("sh").args(["-c", "echo hi"]).stdout(Stdio::piped()), Duration::from_secs(5))
                .unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }
}
