//! Crash points, for the re-run tests only: with the `crash-points` feature and
//! `RBDX_CRASH_AT=k` in the environment, the process aborts right after its k-th
//! Ceph mutation. Release builds do not have the feature: this is a no-op there.

/// Marks a completed Ceph mutation (`what` names it for the test's log).
#[cfg(feature = "crash-points")]
pub fn point(what: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let at = *AT.get_or_init(|| std::env::var("RBDX_CRASH_AT").ok().and_then(|v| v.parse().ok()));
    let n = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
    if at == Some(n) {
        eprintln!("rbdx crash point {n}: after {what}");
        std::process::abort();
    }
}

/// Marks a completed Ceph mutation (no-op without the `crash-points` feature).
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_what: &str) {}
