//! Cluster faults, on a cluster of this test's own (it stops daemons, so never on
//! the shared test cluster): every kind of action (TM, DS, `rbdx pve`, the operator
//! CLI) with the monitor stopped, then with every OSD stopped, fails within its
//! configured timeout (asserted: under twice the timeout plus a second) with one
//! clear line, and succeeds when run again after the daemons are back; with one
//! OSD of three stopped, the same actions succeed on an EC datastore (k=2, m=1,
//! min_size 2). The test prints every action's time under each fault.
//!
//! The private cluster has replicated pools of size 3 (min_size 2) and small OSDs;
//! `rbdx-test-cluster kill` and `revive` stop and start its daemons. The phases
//! share it and run one after the other in a single test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rbdx_core::Cluster;
use rbdx_core::ops::disk::Disk;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::one::{OneEnv, vm_doc};
use rbdx_tests::{MIB, TestCluster, checksum, fill};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/cluster/rbdx-test-cluster");
const BIN: &str = env!("CARGO_BIN_EXE_rbdx");

/// Seconds one Ceph call may take, in every action's settings (CEPH_TIMEOUT, the
/// PVE request's `ceph.timeout`, `--timeout`).
const TIMEOUT: u64 = 3;
/// How long an action that cannot reach the cluster may take: twice its timeout,
/// plus a second for starting the process. (The promise is one timeout: the times
/// measured, which the test prints, are about TIMEOUT + 0.5 s with all the cases
/// running at once.)
const BOUND: Duration = Duration::from_secs(2 * TIMEOUT + 1);
/// A run that takes longer than this is killed (a hang fails the test, not CI).
const DEADLINE_SECS: u64 = 60;

const IMAGE_DS: u32 = 100;
const SYSTEM_DS: u32 = 0;

/// The private cluster: started in a temporary directory, stopped on drop (also
/// when the test fails).
struct PrivateCluster {
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// Starts it with replicated pools of size 3 and 1 GiB OSDs.
    fn start() -> (Self, TestCluster) {
        let dir = tempfile::Builder::new().prefix("rbdx-faults.").tempdir().expect("tempdir");
        let pc = Self { dir };
        pc.script(&["start"], &[("RBDX_OSD_BYTES", "1073741824"), ("RBDX_POOL_SIZE", "3")]);
        let env = TestCluster::from_env_file(&pc.dir.path().join("env"));
        (pc, env)
    }

    /// `rbdx-test-cluster kill DIR <daemon>`.
    fn kill(&self, daemon: &str) {
        self.script(&["kill", daemon], &[]);
    }

    /// `rbdx-test-cluster revive DIR <daemon>` (returns once placement groups are
    /// active again).
    fn revive(&self, daemon: &str) {
        self.script(&["revive", daemon], &[]);
    }

    fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new(SCRIPT);
        c.arg(cmd).arg(self.dir.path());
        // The shared cluster's settings must not leak into this one.
        for v in ["RBDX_POOL", "RBDX_EC_POOL", "RBDX_CLIENT", "RBDX_MON_PORT", "RBDX_POOL_SIZE"] {
            c.env_remove(v);
        }
        c
    }

    fn script(&self, args: &[&str], env: &[(&str, &str)]) {
        let mut c = self.command(args[0]);
        c.args(&args[1..]).envs(env.iter().copied()).stdout(Stdio::null());
        let start = Instant::now();
        let out = c.output().expect("run rbdx-test-cluster");
        assert!(
            out.status.success(),
            "rbdx-test-cluster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("rbdx-test-cluster {}: {:.1}s", args.join(" "), start.elapsed().as_secs_f64());
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.command("stop").stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// How an action reports a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// One non-log line on stderr (oned's drivers, the operator CLI).
    Stderr,
    /// `{"ok":false,"error":…}` on stdout (`rbdx pve`).
    Json,
}

/// One kind of action, run against one phase's [`Fixture`].
struct Case {
    name: &'static str,
    answer: Answer,
    /// Needs only the monitor (capacity from `df` and the OSD map; the monitor
    /// actions' reclaim, which needs OSDs, only logs its failure): it answers, within
    /// the same bound, while every OSD is down.
    mon_only: bool,
    run: fn(&Ctx, &Fixture) -> Output,
    /// Asserts the state a successful run leaves, given its stdout (for `rbdx pve`,
    /// the answer's result).
    done: fn(&Ctx, &Fixture, &str),
}

/// The test's environment: the oned double and driver settings, a harness
/// connection, and a raw file to import.
struct Ctx {
    e: OneEnv,
    c: Cluster,
    raw: PathBuf,
    raw_data: Vec<u8>,
}

/// What one phase acts on, made while the cluster is healthy: the source image
/// `one-<img>`; VM `vm` with disk 1 (snapshot 0) and disk 2 made by TM clone, disk
/// 0 (clone) and 3 (volatile) not made yet; image `one-<rm>` for DS rm; ids for DS
/// cp and clone; PVE VM `pve_vm` with `vm-<pve_vm>-disk-1`.
struct Fixture {
    vm: u32,
    img: u32,
    cp: u32,
    clone: u32,
    rm: u32,
    pve_vm: u32,
}

impl Ctx {
    fn spec(&self, name: &str) -> ImageSpec {
        ImageSpec::new(&self.e.cluster.pool, name).unwrap()
    }

    fn ec(&self) -> Option<String> {
        Some(self.e.cluster.ec_pool.clone())
    }

    fn fixture(&self, n: u32) -> Fixture {
        let base = 100 * n;
        let f = Fixture {
            vm: base + 1,
            img: base + 2,
            cp: base + 3,
            clone: base + 4,
            rm: base + 5,
            pve_vm: base + 6,
        };
        let ec = Some(self.e.cluster.ec_pool.as_str());
        let src = self.spec(&format!("one-{}", f.img));
        ops::create(&self.c, &src, 16 * MIB, &CreateOptions::with_data_pool(ec)).unwrap();
        fill(&ops::ioctx(&self.c, &src).unwrap().open(&src.name).unwrap(), 0, 4 * MIB, n as u8);
        for name in [format!("one-{}", f.rm), format!("vm-{}-disk-1", f.pve_vm)] {
            ops::create(&self.c, &self.spec(&name), 8 * MIB, &CreateOptions::with_data_pool(ec)).unwrap();
        }
        let e = &self.e;
        let disks = [
            e.image_disk(0, &src.to_string(), true, IMAGE_DS, 16),
            e.image_disk(1, &src.to_string(), true, IMAGE_DS, 16),
            e.image_disk(2, &src.to_string(), true, IMAGE_DS, 16),
            e.volatile_disk(3, "fs", None, SYSTEM_DS, 16),
        ];
        e.oned.set_vm(f.vm, vm_doc(f.vm, "localhost", 3, &disks));
        let vm = f.vm.to_string();
        let ds = IMAGE_DS.to_string();
        for d in [1, 2] {
            ok("tm clone", &e.tm("clone", &[&format!("frontend:{src}"), &disk_path(f.vm, d), &vm, &ds]));
        }
        ok("tm snap_create", &e.tm("snap_create", &[&disk_path(f.vm, 1), "0", &vm, &ds]));
        f
    }

    /// Runs `cmd` with `stdin`, killed after [`DEADLINE_SECS`].
    fn output(cmd: &Command, stdin: &[u8]) -> Output {
        let mut timeout = Command::new("timeout");
        timeout.args(["--kill-after=5", &DEADLINE_SECS.to_string()]);
        rbdx_tests::run_with_stdin(&mut rbdx_tests::wrapped(timeout, cmd), stdin)
    }

    fn tm(&self, args: &[&str]) -> Output {
        Self::output(self.e.command(&["tm"]).args(args), b"")
    }

    fn tm_monitor(&self) -> Output {
        let data = action_data(&self.e.system_ds(SYSTEM_DS, true));
        Self::output(&self.e.command(&["tm", "monitor", &SYSTEM_DS.to_string()]), data.as_bytes())
    }

    fn ds(&self, action: &str, id: u32, message: &str) -> Output {
        let cmd = self.e.command(&["ds", action, &id.to_string()]);
        Self::output(&cmd, action_data(message).as_bytes())
    }

    /// A DS message: `<IMAGE>` with these elements and the EC image datastore.
    fn ds_message(&self, image: &[(&str, String)]) -> String {
        let img: String = image.iter().map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>")).collect();
        format!("<IMAGE>{img}</IMAGE>{}", self.e.image_ds(IMAGE_DS, true, &[]))
    }

    fn pve(&self, method: &str, params: Value) -> Output {
        let cl = &self.e.cluster;
        let req = json!({
            "version": 1,
            "storeid": "faults",
            "ceph": {
                "pool": cl.pool, "data_pool": cl.ec_pool, "id": cl.id,
                "conf": cl.conf, "keyring": cl.keyring, "timeout": TIMEOUT,
            },
            "method": method,
            "params": params,
        });
        Self::output(Command::new(BIN).arg("pve"), format!("{req}\n").as_bytes())
    }

    fn cli(&self, args: &[&str]) -> Output {
        let cl = &self.e.cluster;
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--conf")
            .arg(&cl.conf)
            .args(["--id", &cl.id, "--keyring"])
            .arg(&cl.keyring)
            .args(["--timeout", &TIMEOUT.to_string()])
            .env_remove("RBDX_KEY_FILE")
            .env_remove("RBDX_MON_HOST");
        Self::output(&cmd, b"")
    }
}

fn disk_path(vm: u32, disk: u32) -> String {
    format!("localhost:/var/lib/one//datastores/{SYSTEM_DS}/{vm}/disk.{disk}")
}

fn action_data(inner: &str) -> String {
    rbdx_one::base64::encode(format!("<DS_DRIVER_ACTION_DATA>{inner}</DS_DRIVER_ACTION_DATA>").as_bytes())
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one failure line of a failed run (the JSON answer's error for `rbdx pve`).
fn failure_line(case: &Case, out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !["ERROR:", "INFO:", "WARN:", "DEBUG:"].iter().any(|p| l.starts_with(p)))
        .collect();
    assert!(!out.status.success(), "{}: should have failed: {}{err}", case.name, stdout(out));
    match case.answer {
        Answer::Stderr => {
            assert_eq!(lines.len(), 1, "{}: one failure line expected, got: {err}", case.name);
            lines[0].to_string()
        }
        Answer::Json => {
            assert!(lines.is_empty(), "{}: nothing but log lines on stderr: {err}", case.name);
            let text = stdout(out);
            assert_eq!(text.lines().count(), 1, "{}: one answer line: {text}", case.name);
            let v: Value = serde_json::from_str(&text).expect("a JSON answer");
            assert_eq!(v["ok"], false, "{}: {text}", case.name);
            v["error"].as_str().expect("an error").to_string()
        }
    }
}

/// Asserts that `case` succeeded and left its state.
fn succeeded(x: &Ctx, f: &Fixture, case: &Case, out: &Output) {
    ok(case.name, out);
    let text = stdout(out);
    match case.answer {
        Answer::Stderr => (case.done)(x, f, &text),
        Answer::Json => {
            let v: Value = serde_json::from_str(&text).expect("a JSON answer");
            assert_eq!(v["ok"], true, "{}: {v}", case.name);
            (case.done)(x, f, &v["result"].to_string());
        }
    }
}

fn capacity_report(text: &str) {
    let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap_or("")).collect();
    assert_eq!(keys, ["USED_MB", "TOTAL_MB", "FREE_MB"], "{text}");
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "tm clone",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                let src = format!("frontend:{}/one-{}", x.e.cluster.pool, f.img);
                x.tm(&["clone", &src, &disk_path(f.vm, 0), &f.vm.to_string(), &IMAGE_DS.to_string()])
            },
            done: |x, f, _| {
                let st = ops::stat(&x.c, &x.spec(&format!("one-{}-{}-0", f.img, f.vm))).unwrap();
                assert_eq!(st.data_pool, x.ec(), "tm clone: the EC data pool");
                let p = st.parent.expect("tm clone: a CoW clone");
                assert_eq!((p.image.name, p.snap), (format!("one-{}", f.img), "snap".to_string()));
            },
        },
        Case {
            name: "tm snap_create",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                x.tm(&["snap_create", &disk_path(f.vm, 1), "1", &f.vm.to_string(), &IMAGE_DS.to_string()])
            },
            done: |x, f, _| {
                let snaps =
                    Disk::new(&x.c, x.spec(&format!("one-{}-{}-1", f.img, f.vm)), &rbdx_one::naming::ONE)
                        .snapshots()
                        .unwrap();
                let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, ["0", "1"], "tm snap_create");
            },
        },
        Case {
            name: "tm snap_revert",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                x.tm(&["snap_revert", &disk_path(f.vm, 1), "0", &f.vm.to_string(), &IMAGE_DS.to_string()])
            },
            done: |x, f, _| {
                // Rolled back in place or swapped for a clone (as the data
                // decides): the head reads as snapshot 0, in the EC pool.
                let head = x.spec(&format!("one-{}-{}-1", f.img, f.vm));
                let st = ops::stat(&x.c, &head).unwrap();
                assert_eq!(st.data_pool, x.ec(), "tm snap_revert: the head's data pool");
                let holder =
                    Disk::new(&x.c, head.clone(), &rbdx_one::naming::ONE).locate("0").unwrap().unwrap();
                let io = ops::ioctx(&x.c, &head).unwrap();
                let (now, at0) = (
                    checksum(&io.open_read_only(&head.name, None).unwrap()),
                    checksum(&io.open_read_only(&holder, Some("0")).unwrap()),
                );
                assert_eq!(now, at0, "tm snap_revert: the head reads as snapshot 0");
            },
        },
        Case {
            name: "tm delete",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| x.tm(&["delete", &disk_path(f.vm, 2), &f.vm.to_string(), &IMAGE_DS.to_string()]),
            done: |x, f, _| {
                let err = ops::stat(&x.c, &x.spec(&format!("one-{}-{}-2", f.img, f.vm))).unwrap_err();
                assert!(err.is_not_found(), "tm delete: {err}");
            },
        },
        Case {
            name: "tm mkimage",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                x.tm(&[
                    "mkimage",
                    "16",
                    "raw",
                    &disk_path(f.vm, 3),
                    &f.vm.to_string(),
                    &SYSTEM_DS.to_string(),
                ])
            },
            done: |x, f, _| {
                let st = ops::stat(&x.c, &x.spec(&format!("one-sys-{}-3", f.vm))).unwrap();
                assert_eq!((st.size, st.data_pool), (16 * MIB, x.ec()), "tm mkimage");
            },
        },
        Case {
            name: "tm monitor",
            answer: Answer::Stderr,
            mon_only: true,
            run: |x, _| x.tm_monitor(),
            done: |_, _, out| capacity_report(out),
        },
        Case {
            name: "ds cp",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                let msg = x.ds_message(&[("PATH", x.raw.display().to_string()), ("SIZE", "4".into())]);
                x.ds("cp", f.cp, &msg)
            },
            done: |x, f, out| {
                let s = x.spec(&format!("one-{}", f.cp));
                assert_eq!(out, format!("{s} raw\n"));
                assert_eq!(ops::stat(&x.c, &s).unwrap().data_pool, x.ec(), "ds cp: the EC data pool");
                let io = ops::ioctx(&x.c, &s).unwrap();
                let mut got = vec![0u8; x.raw_data.len()];
                io.open_read_only(&s.name, None).unwrap().read_at(0, &mut got).unwrap();
                assert!(got == x.raw_data, "ds cp: the file's bytes");
            },
        },
        Case {
            name: "ds clone",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                let src = format!("{}/one-{}", x.e.cluster.pool, f.img);
                x.ds("clone", f.clone, &x.ds_message(&[("PATH", src), ("SIZE", "16".into())]))
            },
            done: |x, f, out| {
                let s = x.spec(&format!("one-{}", f.clone));
                assert_eq!(out, format!("{s} raw\n"));
                let st = ops::stat(&x.c, &s).unwrap();
                assert_eq!(st.data_pool, x.ec(), "ds clone: the EC data pool");
                assert!(st.parent.is_some(), "ds clone: a CoW clone");
            },
        },
        Case {
            name: "ds rm",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| {
                let src = format!("{}/one-{}", x.e.cluster.pool, f.rm);
                x.ds("rm", f.rm, &x.ds_message(&[("SOURCE", src)]))
            },
            done: |x, f, _| {
                let err = ops::stat(&x.c, &x.spec(&format!("one-{}", f.rm))).unwrap_err();
                assert!(err.is_not_found(), "ds rm: {err}");
            },
        },
        Case {
            name: "ds monitor",
            answer: Answer::Stderr,
            mon_only: true,
            run: |x, _| x.ds("monitor", IMAGE_DS, &x.e.image_ds(IMAGE_DS, true, &[])),
            done: |_, _, out| capacity_report(out),
        },
        Case {
            name: "pve alloc_image",
            answer: Answer::Json,
            mon_only: false,
            run: |x, f| {
                let name = format!("vm-{}-disk-0", f.pve_vm);
                x.pve("alloc_image", json!({"vmid": f.pve_vm, "name": name, "size_kib": 16 * 1024}))
            },
            done: |x, f, out| {
                let name = format!("vm-{}-disk-0", f.pve_vm);
                assert_eq!(out, json!(name).to_string());
                let st = ops::stat(&x.c, &x.spec(&name)).unwrap();
                assert_eq!((st.size, st.data_pool), (16 * MIB, x.ec()), "pve alloc_image");
            },
        },
        Case {
            name: "pve status",
            answer: Answer::Json,
            mon_only: true,
            run: |x, _| x.pve("status", json!({})),
            done: |_, _, out| {
                let r: Value = serde_json::from_str(out).unwrap();
                assert!(r["total"].as_u64().is_some_and(|t| t > 0), "pve status: {r}");
            },
        },
        Case {
            name: "pve volume_snapshot",
            answer: Answer::Json,
            mon_only: false,
            run: |x, f| {
                let volname = format!("vm-{}-disk-1", f.pve_vm);
                x.pve("volume_snapshot", json!({"volname": volname, "snap": "s1"}))
            },
            done: |x, f, _| {
                let d = Disk::new(
                    &x.c,
                    x.spec(&format!("vm-{}-disk-1", f.pve_vm)),
                    &rbdx_core::ops::disk::RBDX_NAMING,
                );
                assert!(d.locate("s1").unwrap().is_some(), "pve volume_snapshot: s1 exists");
            },
        },
        Case {
            name: "rbdx image info",
            answer: Answer::Stderr,
            mon_only: false,
            run: |x, f| x.cli(&["image", "info", &format!("{}/one-{}", x.e.cluster.pool, f.img)]),
            done: |x, _, out| {
                let want = format!("data pool:   {}", x.e.cluster.ec_pool);
                assert!(out.lines().any(|l| l == want), "rbdx image info: {out}");
            },
        },
    ]
}

/// Runs every case at once (each is its own process, as oned and PVE run them);
/// returns each one's output and wall time, in the order of `cases`.
fn run_all(x: &Ctx, f: &Fixture, cases: &[Case]) -> Vec<(Output, Duration)> {
    std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let start = Instant::now();
                    let out = (c.run)(x, f);
                    (out, start.elapsed())
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("a run")).collect()
    })
}

/// With `daemon` stopped, every case fails within [`BOUND`] in one clear line
/// (but `mon_only` ones answer when only OSDs are down); with it revived, each
/// succeeds when run again and leaves its expected state.
fn fail_then_recover(x: &Ctx, pc: &PrivateCluster, daemon: &str, f: &Fixture, osds_down: bool) {
    let cases = cases();
    pc.kill(daemon);
    let t = Instant::now();
    let results = run_all(x, f, &cases);
    eprintln!("{daemon} stopped ({:.1}s for all the cases at once):", t.elapsed().as_secs_f64());
    pc.revive(daemon);
    for (case, (out, took)) in cases.iter().zip(&results) {
        let said = match (out.status.success(), case.answer) {
            (true, _) => "answered".to_string(),
            (false, Answer::Stderr) => {
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").into()
            }
            (false, Answer::Json) => stdout(out).trim_end().to_string(),
        };
        eprintln!("  {:<20} {:>5.2}s  {said}", case.name, took.as_secs_f64());
    }
    for (case, (out, took)) in cases.iter().zip(&results) {
        if osds_down && case.mon_only {
            succeeded(x, f, case, out);
        } else {
            let line = failure_line(case, out);
            assert!(line.contains("did not answer in time"), "{}: a clear timeout error: {line}", case.name);
        }
        assert!(
            *took < BOUND,
            "{} with {daemon} stopped took {took:?}: an action must give up within 2 x its {TIMEOUT}s \
             timeout + 1s ({BOUND:?})",
            case.name
        );
    }
    for case in &cases {
        succeeded(x, f, case, &(case.run)(x, f));
    }
}

/// Both pools serve I/O with one OSD of three down: replicated size 3 with
/// min_size 2, EC k=2, m=1 (size 3) with min_size 2.
fn pools_survive_one_osd(x: &Ctx) {
    let dump = x.c.mon_command(&json!({"prefix": "osd dump"})).expect("osd dump");
    for name in [&x.e.cluster.pool, &x.e.cluster.ec_pool] {
        let p = dump["pools"].as_array().unwrap().iter().find(|p| p["pool_name"] == **name).unwrap();
        assert_eq!((&p["size"], &p["min_size"]), (&json!(3), &json!(2)), "pool {name}");
    }
}

/// `rbdx doctor` on a cluster whose `require_min_compat_client` is below mimic
/// (clones fall back to format 1): one failed check naming the fix. Done here, on
/// this private cluster, and put back before the next phase.
fn doctor_names_an_old_compat_client(x: &Ctx) {
    let cl = &x.e.cluster;
    cl.admin(&["osd", "set-require-min-compat-client", "luminous", "--yes-i-really-mean-it"]);
    let out = Command::new(BIN)
        .args(["doctor", "--pool", &cl.pool, "--conf"])
        .arg(&cl.conf)
        .args(["--id", &cl.id, "--keyring"])
        .arg(&cl.keyring)
        .output()
        .unwrap();
    // Clones read it from the OSD map their connection holds.
    let fresh = cl.connect_new();
    let format = rbdx_core::ops::cluster_clone_format(&fresh);
    drop(fresh);
    cl.admin(&["osd", "set-require-min-compat-client", "mimic", "--yes-i-really-mean-it"]);
    assert_eq!(format.unwrap(), 1, "format-1 clones below mimic");
    let text = String::from_utf8_lossy(&out.stdout);
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(fails.len(), 1, "{text}");
    assert!(fails[0].contains("require_min_compat_client is luminous"), "{text}");
    assert!(fails[0].contains("ceph osd set-require-min-compat-client mimic"), "{text}");
}

#[test]
fn actions_fail_in_time_under_faults_and_succeed_after() {
    let t0 = Instant::now();
    let (pc, cluster) = PrivateCluster::start();
    let config = format!("EXECUTION = local\nCEPH_TIMEOUT = {TIMEOUT}\nONED_TIMEOUT = 10\n");
    let e = OneEnv::with_cluster(Path::new(BIN), &config, cluster);
    let c = e.cluster.connect_new();
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, true));
    let raw = e.dir.path().join("disk.raw");
    let raw_data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &raw_data).unwrap();
    let x = Ctx { e, c, raw, raw_data };
    pools_survive_one_osd(&x);

    for (n, daemon, osds_down) in [(1, "mon.a", false), (2, "osds", true)] {
        fail_then_recover(&x, &pc, daemon, &x.fixture(n), osds_down);
    }
    doctor_names_an_old_compat_client(&x);

    // One OSD of three down: the EC pool (k=2, m=1, min_size 2) and the replicated
    // pool (size 3, min_size 2) still serve I/O, so every action succeeds.
    let f = x.fixture(3);
    pc.kill("osd.1");
    eprintln!("osd.1 stopped:");
    for case in cases() {
        let start = Instant::now();
        let out = (case.run)(&x, &f);
        let took = start.elapsed();
        succeeded(&x, &f, &case, &out);
        eprintln!("  {:<20} {:>5.2}s  ok", case.name, took.as_secs_f64());
    }
    // No revive: dropping `pc` stops the cluster.
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
}
