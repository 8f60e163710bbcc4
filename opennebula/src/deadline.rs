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

/// How much earlier than the front-end a host stops a job.
const HOST_MARGIN: Duration = Duration::from_secs(2);

/// Arms the deadline `limit` from now (once per process; later calls keep the
/// first). When it passes, `report` is called with the failure line (unless the
/// action already finished), children are killed, and the process exits 1.
pub fn arm(limit: Duration, report: fn(&str)) {
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
            report(&stopped(limit, rbdx_core::trace::current()));
        }
        // The action's thread is still inside a call: no destructor may run
        // under it (nor under librados' threads).
        rbdx_core::rados::exit_process(1);
    });
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
