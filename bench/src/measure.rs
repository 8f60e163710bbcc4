//! Timing, statistics and the two kinds of baseline runner: the stock drivers'
//! `rbd` CLI sequences (a) and the bare librados/librbd floor (b).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Median, min and max of one series, and the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Fastest.
    pub min: f64,
    /// Slowest.
    pub max: f64,
    /// Every sample, in run order.
    pub samples: Vec<f64>,
}

impl Stats {
    /// Statistics of `samples` (at least one).
    pub fn of(samples: Vec<f64>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Self { median, min: s[0], max: s[n - 1], samples }
    }
}

/// A target and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// What was promised, e.g. "at least 4x faster than (a)".
    pub goal: String,
    /// The measured value of the compared quantity.
    pub measured: f64,
    /// The bound it is compared with.
    pub bound: f64,
    /// Whether the target was met.
    pub met: bool,
    /// Why, when it was missed (or a note on what the number means).
    pub note: String,
}

impl Target {
    /// `measured` compared with `bound` (`at_least` or at most); `why` is kept
    /// as the note only when the target is missed.
    pub fn check(goal: &str, measured: f64, bound: f64, at_least: bool, why: &str) -> Self {
        let met = if at_least { measured >= bound } else { measured <= bound };
        let note = if met { String::new() } else { why.to_string() };
        Self { goal: goal.into(), measured, bound, met, note }
    }
}

/// One workload's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    /// Short id, e.g. `tm_clone`.
    pub id: String,
    /// What was measured.
    pub title: String,
    /// `s` (lower is better) or `MB/s` (higher is better).
    pub unit: String,
    /// rbdx through its real entry point.
    pub rbdx: Stats,
    /// Each baseline by name: `a_stock_cli`, `b_bare_librbd`, `c_qemu_img`, …
    pub baselines: BTreeMap<String, Stats>,
    /// Baseline median / rbdx median for times (how many times faster rbdx is),
    /// rbdx / baseline for throughput (the share of the baseline's speed).
    pub ratios: BTreeMap<String, f64>,
    /// Targets checked on this workload.
    pub targets: Vec<Target>,
    /// Remarks (e.g. the OSD map floor beside snapshot times).
    pub notes: Vec<String>,
}

impl Workload {
    /// A workload from its samples; ratios are computed from the medians.
    pub fn new(id: &str, title: &str, unit: &str, rbdx: Vec<f64>) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            rbdx: Stats::of(rbdx),
            baselines: BTreeMap::new(),
            ratios: BTreeMap::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a baseline series.
    pub fn baseline(mut self, name: &str, samples: Vec<f64>) -> Self {
        let s = Stats::of(samples);
        let ratio = if self.unit == "s" { s.median / self.rbdx.median } else { self.rbdx.median / s.median };
        self.ratios.insert(name.into(), ratio);
        self.baselines.insert(name.into(), s);
        self
    }

    /// Adds a remark.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }

    /// Adds a target: `measured` compared with `bound` (`at_least` or at most).
    pub fn target(mut self, goal: &str, measured: f64, bound: f64, at_least: bool, why: &str) -> Self {
        self.targets.push(Target::check(goal, measured, bound, at_least, why));
        self
    }
}

/// Seconds `f` takes.
pub fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

/// Runs `f` `reps` times; `setup` before each run (not timed) returns its input.
pub fn repeat<S>(reps: usize, mut setup: impl FnMut(usize) -> S, mut f: impl FnMut(S)) -> Vec<f64> {
    (0..reps)
        .map(|i| {
            let s = setup(i);
            time(|| f(s)).0
        })
        .collect()
}

/// The `rbd`/`ceph`/`rados` CLIs as the stock drivers run them, with the
/// restricted client's credentials (`--id`, `--keyring` path, `--conf`).
#[derive(Debug, Clone)]
pub struct Cli {
    conf: PathBuf,
    id: String,
    keyring: PathBuf,
}

impl Cli {
    /// The CLIs for the test cluster.
    pub fn new(cluster: &rbdx_tests::TestCluster) -> Self {
        Self { conf: cluster.conf.clone(), id: cluster.id.clone(), keyring: cluster.keyring.clone() }
    }

    /// `tool` with the credentials, ready for its arguments.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.arg("--conf").arg(&self.conf).arg("--id").arg(&self.id).arg("--keyring").arg(&self.keyring);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `rbd <args>`; its output whatever the exit status (the stock scripts
    /// probe with commands that are expected to fail).
    pub fn rbd(&self, args: &[&str]) -> Output {
        self.command("rbd").args(args).output().expect("run rbd")
    }

    /// Runs `rbd <args>` and panics unless it succeeds.
    pub fn rbd_ok(&self, args: &[&str]) -> Output {
        let out = self.rbd(args);
        assert!(out.status.success(), "rbd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs `ceph <args>` and panics unless it succeeds.
    pub fn ceph_ok(&self, args: &[&str]) -> Output {
        let out = self.command("ceph").args(args).output().expect("run ceph");
        assert!(out.status.success(), "ceph {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// The `rbd:` target string qemu-img takes, with the same credentials.
    pub fn qemu_target(&self, spec: &str, data_pool: Option<&str>) -> String {
        let mut s = format!(
            "rbd:{spec}:id={}:keyring={}:conf={}",
            self.id,
            self.keyring.display(),
            self.conf.display()
        );
        if let Some(dp) = data_pool {
            s.push_str(&format!(":rbd_default_data_pool={dp}"));
        }
        s
    }
}

/// `qemu-img` with the rbd: driver, for the baselines that write into RBD:
/// `RBDX_BENCH_QEMU_IMG` (set by `tests/bench` from `tests/bench-qemu`), else the
/// one on PATH.
pub fn qemu_img() -> Command {
    Command::new(std::env::var_os("RBDX_BENCH_QEMU_IMG").unwrap_or_else(|| "qemu-img".into()))
}

/// Runs `cmd` and panics unless it succeeds; returns its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_series() {
        let s = Stats::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn ratios_say_how_many_times_faster_or_what_share_of_the_speed() {
        let w = Workload::new("x", "x", "s", vec![1.0]).baseline("a", vec![4.0]);
        assert_eq!(w.ratios["a"], 4.0);
        let w = Workload::new("y", "y", "MB/s", vec![80.0]).baseline("c", vec![100.0]);
        assert_eq!(w.ratios["c"], 0.8);
        let w = w.target("at least 80%", 0.8, 0.8, true, "slow").target("under 1", 2.0, 1.0, false, "why");
        assert!(w.targets[0].met && !w.targets[1].met && w.targets[1].note == "why");
    }
}
