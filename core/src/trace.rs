//! Where an action's time goes: named spans, kept only once [`enable`] was
//! called (the CLI does when `RBDX_TRACE` names a file); otherwise a span costs
//! one relaxed atomic load.
//!
//! Core names the Ceph calls it times after what they wait for: `connect`,
//! `disconnect`,
//! `open`, `close`, `mon command`, `lock` (waiting for a disk's guard or an
//! image's lock), `unlock`,
//! `snapshot create` and `snapshot remove` (each waits for an OSD map update),
//! `clone` (`clone (librbd)` where librbd makes it), `remove`, `rename`, `flatten`, `rollback`, `diff`, `metadata`, `list`.
//! A removal that also frees its parent's trash-namespace snapshot (librbd does
//! with the snapshot's last clone: an OSD map wait inside the call) is
//! `snapshot remove (freed with its last clone)`; to tell, a traced removal
//! opens the image before and its parent after. The orchestrator layers add
//! their own (their API calls, `ssh`).
//!
//! Whether kept or not, a running span is listed while it runs, and the
//! latest one started is the process's [`current`] step: an action stopped at
//! its deadline names what it was waiting for.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

static ON: AtomicBool = AtomicBool::new(false);
static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());
/// The spans running now, oldest first, each with its own number (spans of
/// several threads end in any order).
static RUNNING: Mutex<Vec<(u64, &'static str)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// One timed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// What was waited for (`snapshot create`, an API call, …).
    pub name: String,
    /// Microseconds it took.
    pub us: u64,
}

/// Starts keeping spans in this process.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are kept.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Times `name` until the returned guard drops; meanwhile it is the
/// [`current`] step.
#[must_use = "the span ends when the guard drops"]
pub fn span(name: &'static str) -> Timer {
    Timer { name: enabled().then_some(name), running: start(name), start: Instant::now() }
}

/// Makes `name` the [`current`] step until the returned guard drops, without
/// timing it (a layer that times the step itself, under a name it builds).
#[must_use = "the step ends when the guard drops"]
pub fn step(name: &'static str) -> Timer {
    Timer { name: None, running: start(name), start: Instant::now() }
}

/// The step the latest running span started times (on one thread, the
/// innermost), if any: what the process is waiting for at this moment.
pub fn current() -> Option<&'static str> {
    running().last().map(|(_, name)| *name)
}

/// Lists a running span; returns its number.
fn start(name: &'static str) -> u64 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    running().push((n, name));
    n
}

/// A running span (see [`span`]).
#[derive(Debug)]
pub struct Timer {
    name: Option<&'static str>,
    /// Its number in [`RUNNING`].
    running: u64,
    start: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        let mut running = running();
        if let Some(i) = running.iter().rposition(|(n, _)| *n == self.running) {
            running.remove(i);
        }
        drop(running);
        if let Some(name) = self.name {
            record(name.to_string(), self.start.elapsed());
        }
    }
}

fn running() -> std::sync::MutexGuard<'static, Vec<(u64, &'static str)>> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps a span measured elsewhere (a host's spans, an API call's name).
pub fn record(name: String, took: std::time::Duration) {
    if enabled() {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        lock().push(Span { name, us });
    }
}

/// Adds spans measured in another process, their names prefixed.
pub fn extend(prefix: &str, spans: Vec<Span>) {
    if enabled() {
        lock().extend(spans.into_iter().map(|s| Span { name: format!("{prefix}{}", s.name), us: s.us }));
    }
}

/// The spans kept so far, emptied.
pub fn take() -> Vec<Span> {
    std::mem::take(&mut *lock())
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Span>> {
    // A panic while pushing leaves a valid vector.
    SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the current step is process-wide, and tests run in threads.
    #[test]
    fn spans_name_the_current_step_and_are_kept_only_once_enabled() {
        let outer = span("remove");
        assert_eq!(current(), Some("remove"));
        let inner = span("open");
        assert_eq!(current(), Some("open"));
        drop(inner);
        assert_eq!(current(), Some("remove"));
        drop(outer);
        assert_eq!(current(), None);
        // Spans of two threads that end out of order leave nothing behind.
        let (a, b) = (span("headers"), std::thread::spawn(|| span("headers")).join().unwrap());
        let c = span("open");
        drop(a);
        assert_eq!(current(), Some("open"));
        drop(c);
        assert_eq!(current(), Some("headers"));
        drop(b);
        assert_eq!(current(), None);
        drop(step("oned"));
        assert!(take().is_empty(), "a step alone is not timed");

        drop(span("before"));
        assert!(take().is_empty());
        enable();
        drop(span("open"));
        record("api vm.info".into(), std::time::Duration::from_micros(1500));
        extend("host: ", vec![Span { name: "connect".into(), us: 7 }]);
        let names: Vec<(String, bool)> = take().into_iter().map(|s| (s.name, s.us > 0)).collect();
        assert!(names.iter().any(|(n, _)| n == "open"), "{names:?}");
        assert!(names.contains(&("api vm.info".to_string(), true)), "{names:?}");
        assert!(names.contains(&("host: connect".to_string(), true)), "{names:?}");
        assert!(!names.iter().any(|(n, _)| n == "before"), "{names:?}");
    }
}
