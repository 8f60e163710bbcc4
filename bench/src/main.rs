//! `rbdx-bench`: runs the workloads of `docs/bench/README.md` against the local
//! test cluster (as the restricted client), through the real rbdx entry points,
//! beside the baselines measured in the same run, and writes `results.json`,
//! `README.md` and `chart.png`.
//!
//! Run it through `tests/bench` (or `make bench`), which starts the cluster and
//! builds the release binary.

mod agent;
mod breakdown;
mod measure;
mod one;
mod pve;
mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use rbdx_core::Cluster;
use rbdx_core::rbd::ImageOptions;

use measure::{Cli, Workload};

/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// What every workload shares: the cluster, the binary, the CLIs, fresh ids.
#[derive(Debug)]
pub struct Bench {
    /// The rbdx binary under test (release build).
    pub rbdx: PathBuf,
    /// The test cluster.
    pub test_cluster: rbdx_tests::TestCluster,
    /// The replicated pool.
    pub pool: String,
    /// The EC data pool.
    pub ec_pool: String,
    /// The CLIs for baseline (a).
    pub cli: Cli,
    /// Repetitions per workload (heavy ones use fewer).
    pub reps: usize,
    next: AtomicU32,
    seed: AtomicU32,
    floor: std::sync::atomic::AtomicU64,
}

impl Bench {
    /// The bench's own long-lived connection (for set-up and clean-up).
    pub fn cluster(&self) -> &'static Cluster {
        self.test_cluster.connect()
    }

    /// A new connection, as a new process would make (baseline (b) pays for it).
    pub fn connect_new(&self) -> Cluster {
        self.test_cluster.connect_new()
    }

    /// An id no other image of this run (or an earlier one) uses.
    pub fn id(&self) -> u32 {
        (std::process::id() % 2000) * 100_000 + 300_000_000 + self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes `len` bytes of a pattern at `offset` of image `name`, 16 MiB at a time.
    pub fn fill(&self, name: &str, offset: u64, len: u64, seed: u8) {
        let io = self.cluster().ioctx(&self.pool).unwrap();
        let img = io.open(name).unwrap();
        let chunk = 16 * MIB;
        let mut buf: Vec<u8> = (0..chunk).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            buf[..8].copy_from_slice(&(offset + done).to_le_bytes());
            img.write_at(offset + done, &buf[..n as usize]).unwrap();
            done += n;
        }
        img.flush().unwrap();
    }

    /// Rewrites the first `len` bytes of `name` with new data (set-up, not timed).
    pub fn rewrite(&self, name: &str, len: u64) {
        let seed = self.seed.fetch_add(1, Ordering::Relaxed) as u8;
        self.fill(name, 0, len, seed);
    }

    /// A new image `one-<id>` of `size` with its data in the EC pool and
    /// `written` bytes of data; returns the id.
    pub fn image(&self, size: u64, written: u64) -> u32 {
        let id = self.id();
        let io = self.cluster().ioctx(&self.pool).unwrap();
        let name = format!("one-{id}");
        io.create_image(&name, size, &ImageOptions::new().data_pool(&self.ec_pool).unwrap()).unwrap();
        self.fill(&name, 0, written, 1);
        id
    }

    /// Removes every image, snapshot and trash entry whose name starts with
    /// `prefix` (clone trees in any order: repeats until nothing is left).
    pub fn wipe(&self, prefix: &str) {
        let io = self.cluster().ioctx(&self.pool).unwrap();
        for _ in 0..50 {
            let names: Vec<String> = io
                .list_images()
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .filter(|n| n.starts_with(prefix))
                .collect();
            let trash: Vec<_> =
                io.trash_list().unwrap().into_iter().filter(|t| t.name.starts_with(prefix)).collect();
            if names.is_empty() && trash.is_empty() {
                return;
            }
            for n in &names {
                if let Ok(img) = io.open(n) {
                    for s in img.snapshots().unwrap_or_default() {
                        let _ = img.snap_unprotect(&s.name);
                        let _ = img.snap_remove(&s.name);
                    }
                }
                let _ = io.remove_image(n);
            }
            for t in &trash {
                let _ = io.trash_remove(&t.id, true);
            }
        }
        panic!("could not wipe the images starting with {prefix}");
    }

    /// Waits (up to a minute) until the pools hold no more than they did at the
    /// start plus 256 MiB: the OSDs free removed data in the background, and
    /// memstore keeps it in RAM until then.
    pub fn settle(&self) {
        self.settle_with(0);
    }

    /// [`Bench::settle`], with `live` bytes of data still in use.
    pub fn settle_with(&self, live: u64) {
        let stored = || -> u64 {
            rbdx_core::ops::pool_usage(self.cluster(), &[&self.pool, &self.ec_pool])
                .map(|u| u.iter().map(|p| p.stored).sum())
                .unwrap_or(u64::MAX)
        };
        for _ in 0..120 {
            if stored() <= self.floor.load(Ordering::Relaxed) + live + 256 * MIB {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        eprintln!("    (the pools still hold {} MiB of removed data)", stored() >> 20);
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    let mut out = PathBuf::from("docs/bench");
    let mut rbdx = PathBuf::from("target/release/rbdx");
    let mut reps = 5;
    let mut only: Option<String> = None;
    let mut traces: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().expect("--out DIR").into(),
            "--rbdx" => rbdx = args.next().expect("--rbdx PATH").into(),
            "--reps" => reps = args.next().and_then(|r| r.parse().ok()).expect("--reps N"),
            "--only" => only = Some(args.next().expect("--only TEXT").to_lowercase()),
            "--traces" => traces = Some(args.next().expect("--traces FILE").into()),
            "--render" => {
                // Render README.md and chart.png again from results.json.
                let (meta, mut ws, bs) = report::read(&out).expect("reading results.json");
                report::stock_targets(&mut ws);
                report::write(&out, &meta, &ws, &bs).expect("writing the report");
                return;
            }
            _ => {
                eprintln!(
                    "usage: rbdx-bench [--out DIR] [--rbdx PATH] [--reps N] [--only STEP-TEXT] [--traces FILE] [--render]"
                );
                std::process::exit(2);
            }
        }
    }
    let test_cluster = rbdx_tests::cluster();
    let b = Bench {
        rbdx: std::fs::canonicalize(&rbdx).expect("the rbdx binary (build it with --release)"),
        pool: test_cluster.pool.clone(),
        ec_pool: test_cluster.ec_pool.clone(),
        cli: Cli::new(&test_cluster),
        test_cluster,
        reps,
        next: AtomicU32::new(0),
        seed: AtomicU32::new(10),
        floor: Default::default(),
    };
    let floor = rbdx_core::ops::pool_usage(b.cluster(), &[&b.pool, &b.ec_pool])
        .expect("the pools' usage")
        .iter()
        .map(|p| p.stored)
        .sum();
    b.floor.store(floor, Ordering::Relaxed);
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut results: Vec<Workload> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Vec<Workload>| {
        if only.as_ref().is_some_and(|o| !name.to_lowercase().contains(o.as_str())) {
            return;
        }
        let t = Instant::now();
        eprintln!("==> {name}");
        let ws = f();
        b.settle();
        for w in &ws {
            eprintln!("    {}: rbdx median {:.4} {}", w.id, w.rbdx.median, w.unit);
        }
        eprintln!("    ({:.0} s)", t.elapsed().as_secs_f64());
        results.extend(ws);
    };
    let o = one::One::new(&b);
    step("TM clone", &mut || vec![o.tm_clone()]);
    step("TM clone, 20 at once", &mut || vec![o.tm_clone_20()]);
    step("TM delete", &mut || vec![o.tm_delete()]);
    step("TM snapshots", &mut || {
        let (c, d) = o.tm_snapshots();
        vec![c, d]
    });
    step("TM snap_revert", &mut || {
        vec![
            o.tm_revert(GIB, 256 * MIB, b.reps, true),
            o.tm_revert(8 * GIB, 256 * MIB, b.reps, true),
            o.tm_revert(8 * GIB, 4 * GIB, b.reps.min(2), false),
        ]
    });
    step("TM cpds", &mut || vec![o.tm_cpds()]);
    let mut rados_mbs = 0.0;
    step("DS cp", &mut || {
        rados_mbs = o.rados_bench();
        eprintln!("    rados bench (EC pool): {rados_mbs:.0} MiB/s");
        let (r, q) = o.ds_cp(scratch.path());
        vec![r, q]
    });
    step("DS clone", &mut || vec![o.ds_clone()]);
    step("DS monitor", &mut || {
        let (p, d) = o.ds_monitor(1000, scratch.path());
        vec![p, d]
    });
    let mut breakdowns = Vec::new();
    step("Breakdown", &mut || {
        breakdowns = breakdown::run(&b, &o, reps.min(3), scratch.path(), traces.as_deref());
        Vec::new()
    });
    let p = pve::Pve::new(&b);
    step("Proxmox alloc", &mut || vec![p.alloc()]);
    step("Proxmox clones", &mut || {
        let (l, f) = p.clones();
        vec![l, f]
    });
    step("Proxmox rollback", &mut || {
        vec![
            p.rollback(GIB, 256 * MIB),
            p.rollback(8 * GIB, 256 * MIB),
            p.rollback(64 * GIB, 256 * MIB),
            p.rollback(8 * GIB, 4 * GIB),
        ]
    });
    step("Proxmox list", &mut || vec![p.list(200)]);
    step("Proxmox scenario", &mut || vec![p.scenario()]);
    drop(o);

    report::cross_targets(&mut results, rados_mbs);
    report::stock_targets(&mut results);
    let meta = report::Meta {
        date: env("RBDX_BENCH_DATE").unwrap_or_default(),
        machine: report::machine(),
        ceph: report::ceph_version(),
        reps,
        seconds: started.elapsed().as_secs_f64(),
        rados_bench_mbs: rados_mbs,
    };
    std::fs::create_dir_all(&out).unwrap();
    report::write(&out, &meta, &results, &breakdowns).expect("writing the report");
    eprintln!("==> wrote {} in {:.0} s", out.display(), meta.seconds);
}
