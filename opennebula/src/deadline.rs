//! One deadline per action. The action arms it when it starts; every wait it
//! makes (ssh, a child process, a job on a host) is bounded by what is left of
//! it; a job sent to a host carries what is left, and the host arms its own
//! deadline with it (a little earlier, so that it reports before the front-end
//! gives up on it). When the deadline passes, a watchdog kills every child
//! process (and what they started), reports the failure in the action's way
//! (one line for oned, the JSON outcome for a remote job) and exits: nothing an
//! action starts outlives it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static DEADLINE: OnceLock<(Instant, Duration)> = OnceLock::new();
static FINISHED: AtomicBool = AtomicBool::new(false);

/// How long the watchdog waits for its report to be written before it exits
/// anyway.
const REPORT_WAIT: Duration = Duration::from_secs(2);

/// How much earlier than the front-end a host stops a job.
const HOST_MARGIN: Duration = Duration::from_secs(2);

/// Where the report of an action stopped at its deadline goes.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// Standard output (a remote job's JSON outcome).
    Stdout,
    /// Standard error (oned's one line).
    Stderr,
}

/// Arms the deadline `limit` from now (once per process; later calls keep the
/// first). When it passes, the text `report` makes of the failure line goes to
/// `to` (unless the action already finished), children are killed, and the
/// process exits 1.
///
/// The report is written straight to the file descriptor and the process ends
/// without flushing std's streams: the action's thread may hold the lock of
/// one (a job streaming an image on stdout holds it throughout), blocked in a
/// write or a call, and the watchdog must not wait for it.
pub fn arm(limit: Duration, to: Output, report: fn(&str) -> String) {
    let at = rbdx_core::deadline(limit);
    if DEADLINE.set((at, limit)).is_err() {
        return;
    }
    std::thread::spawn(move || {
        loop {
            let now = Instant::now();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(Duration::from_secs(3600)));
        }
        rbdx_import::child::kill_all();
        if !FINISHED.swap(true, Ordering::SeqCst) {
            // From a thread of its own: the stream may be a pipe nobody reads.
            let text = report(&stopped(limit, rbdx_core::trace::current()));
            let (done, wrote) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                write_unlocked(to, text.as_bytes());
                let _ = done.send(());
            });
            let _ = wrote.recv_timeout(REPORT_WAIT);
        }
        // The action's thread is still inside a call: no destructor may run
        // under it (nor under librados' threads).
        rbdx_core::rados::exit_unflushed(1);
    });
}

/// Writes `bytes` to `to`'s file descriptor, without std's lock on the stream.
fn write_unlocked(to: Output, bytes: &[u8]) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let fd = match to {
        Output::Stdout => 1,
        Output::Stderr => 2,
    };
    // SAFETY: descriptors 1 and 2 stay open for the life of the process; the
    // `File` is never dropped, so it does not close them.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let _ = f.write_all(bytes);
}

/// The failure line of an action stopped at its deadline `limit`, naming the
/// step it was waiting for (a Ceph call, an oned call, ssh…) when known.
fn stopped(limit: Duration, step: Option<&str>) -> String {
    let during = step.map(|s| format!(" during: {s}")).unwrap_or_default();
    format!("the action did not finish within {}s (its deadline) and was stopped{during}", limit.as_secs())
}

/// Marks the action finished: a deadline passing now no longer reports (the
/// action is printing its own result).
pub fn finished() {
    FINISHED.store(true, Ordering::SeqCst);
}

/// What is left of the deadline, if one is armed.
pub fn remaining() -> Option<Duration> {
    DEADLINE.get().map(|(at, _)| at.saturating_duration_since(Instant::now()))
}

/// `limit`, or what is left of the deadline if that is shorter.
pub fn bound(limit: Duration) -> Duration {
    remaining().map_or(limit, |r| r.min(limit))
}

/// The time a job sent to a host gets: what is left of `limit` (bounded by the
/// deadline), less the margin that makes the host report first.
pub fn for_host(limit: Duration) -> Duration {
    bound(limit).saturating_sub(HOST_MARGIN).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_never_exceed_what_is_left() {
        // Not armed in this test process: the limits pass through.
        assert_eq!(bound(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(for_host(Duration::from_secs(10)), Duration::from_secs(8));
        assert_eq!(for_host(Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn a_stopped_action_names_the_step_it_waited_for() {
        let s = Duration::from_secs(600);
        assert_eq!(
            stopped(s, Some("snapshot remove")),
            "the action did not finish within 600s (its deadline) and was stopped during: snapshot remove"
        );
        assert_eq!(stopped(s, None), "the action did not finish within 600s (its deadline) and was stopped");
    }
}
