//! Crash points: every multi-step action is aborted right after each of its Ceph
//! mutations in turn (the test build's `RBDX_CRASH_AT=k`), then run again with
//! the same arguments; the end state must equal that of an uninterrupted run,
//! with no leaked image, snapshot, metadata key or trash entry.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use rbdx_core::Cluster;
use rbdx_core::ops::disk::Disk;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_core::rbd::SnapNamespace;
use rbdx_tests::one::{OneEnv, assert_ok, vm_doc};
use rbdx_tests::{MIB, fill};

const IMAGE_DS: u32 = 100;

/// One crash-point test at a time: each is long and busy on the test process's
/// Ceph client, and librados in this process has aborted under that load (see
/// docs/ceph-behaviour.md).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn env() -> OneEnv {
    OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), "EXECUTION = local\nCEPH_TIMEOUT = 20\n")
}

fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 200 + 20_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

/// One scenario: names are made from `id`, so every attempt has its own images.
struct Case {
    img: u32,
    vm: u32,
    new: u32,
}

impl Case {
    fn new() -> Self {
        Self { img: fresh_id(), vm: fresh_id(), new: fresh_id() }
    }
    fn disk_path(&self) -> String {
        format!("localhost:/var/lib/one//datastores/0/{}/disk.0", self.vm)
    }
    /// Image-name prefixes of this case, with the label each becomes in a state.
    fn labels(&self) -> Vec<(String, &'static str)> {
        vec![
            (format!("one-{}-{}-0", self.img, self.vm), "DISK"),
            (format!("one-{}", self.new), "NEW"),
            (format!("one-{}", self.img), "IMG"),
        ]
    }
}

/// Everything of a case in the pool: each image (size, parent, data pool, user
/// snapshots, trashed snapshots, rbdx metadata) and each trash entry, with the
/// case's ids replaced by labels.
fn state(c: &Cluster, pool: &str, case: &Case) -> BTreeMap<String, String> {
    let labels = case.labels();
    let norm = |s: &str| {
        let mut s = s.to_string();
        for (p, l) in &labels {
            s = s.replace(p.as_str(), l);
        }
        s
    };
    let ours = |n: &str| {
        labels
            .iter()
            .any(|(p, _)| n == p || n.starts_with(&format!("{p}-")) || n.starts_with(&format!("{p}.")))
    };
    let io = c.ioctx(pool).unwrap();
    let mut out = BTreeMap::new();
    for e in io.list_images().unwrap() {
        if !ours(&e.name) {
            continue;
        }
        let spec = ImageSpec::new(pool, &e.name).unwrap();
        let st = ops::stat(c, &spec).unwrap();
        let img = io.open_read_only(&e.name, None).unwrap();
        let mut user = Vec::new();
        let mut trashed = 0;
        for s in &st.snapshots {
            match img.snap_namespace(s.id).unwrap() {
                SnapNamespace::User => user.push(norm(&s.name)),
                _ => trashed += 1,
            }
        }
        let meta: Vec<String> = img
            .metadata_list("rbdx.")
            .unwrap()
            .into_iter()
            .map(|(k, v)| format!("{}={}", norm(&k), norm(&v)))
            .collect();
        // A snapshot in the trash namespace is named by a random UUID.
        let parent = st.parent.as_ref().map(|p| {
            let snap = if p.snap_namespace == SnapNamespace::Trash {
                "<trashed>".to_string()
            } else {
                norm(&p.snap)
            };
            format!("{}@{snap}", norm(&p.image.name))
        });
        out.insert(
            norm(&e.name),
            format!(
                "size={} parent={parent:?} pool={:?} snaps={user:?} trashed={trashed} meta={meta:?}",
                st.size, st.data_pool
            ),
        );
    }
    for t in io.trash_list().unwrap() {
        if ours(&t.name) {
            out.insert(format!("trash:{}", norm(&t.name)), format!("{:?}", t.source));
        }
    }
    out
}

/// Waits (up to 30 s) until no image of the case has a watcher.
fn wait_unwatched(c: &Cluster, pool: &str, case: &Case) {
    let labels = case.labels();
    let io = c.ioctx(pool).unwrap();
    let start = std::time::Instant::now();
    loop {
        let watched = io.list_images().unwrap().into_iter().any(|e| {
            labels.iter().any(|(p, _)| e.name.starts_with(p.as_str()))
                && io
                    .open_read_only(&e.name, None)
                    .is_ok_and(|i| !i.watchers().unwrap_or_default().is_empty())
        });
        if !watched {
            return;
        }
        assert!(start.elapsed().as_secs() < 30, "watches of the aborted process did not expire");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn crashed(out: &Output) -> bool {
    out.status.signal() == Some(libc_sigabrt())
        && String::from_utf8_lossy(&out.stderr).contains("rbdx crash point")
}

fn libc_sigabrt() -> i32 {
    6
}

/// Runs `action` with crash points 1, 2, … (each on a fresh `setup`), re-runs it
/// after each crash, and compares every end state with the uninterrupted one.
/// Returns how many crash points the action has.
fn every_crash_point(
    e: &OneEnv,
    setup: &dyn Fn(&OneEnv, &Case),
    action: &dyn Fn(&OneEnv, &Case, Option<u32>) -> Output,
    cleanup: &dyn Fn(&OneEnv, &Case),
) -> u32 {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let c = e.cluster.connect();
    let pool = &e.cluster.pool;
    let reference = Case::new();
    setup(e, &reference);
    assert_ok(&action(e, &reference, None));
    let want = state(c, pool, &reference);
    cleanup(e, &reference);
    let mut k = 1;
    loop {
        let case = Case::new();
        setup(e, &case);
        let out = action(e, &case, Some(k));
        if !crashed(&out) {
            assert_ok(&out);
            assert_eq!(state(c, pool, &case), want, "an action without crash point {k}");
            cleanup(e, &case);
            return k - 1;
        }
        // Interrupted after its k-th mutation: run it again, once the dead
        // process's watches have expired (as a later re-run would find it).
        wait_unwatched(c, pool, &case);
        let again = action(e, &case, None);
        assert_ok(&again);
        assert_eq!(state(c, pool, &case), want, "re-run after crash point {k}");
        cleanup(e, &case);
        k += 1;
        assert!(k < 200, "runaway");
    }
}

fn tm(e: &OneEnv, action: &str, args: &[String], crash: Option<u32>) -> Output {
    let mut cmd = e.command(&["tm", action]);
    cmd.args(args).stdin(std::process::Stdio::null());
    if let Some(k) = crash {
        cmd.env("RBDX_CRASH_AT", k.to_string());
    }
    cmd.output().unwrap()
}

/// An image and a VM whose disk 0 is a clone of it (on the EC datastore), with
/// snapshots 0 and 1 taken through the TM driver.
fn vm_with_snapshots(e: &OneEnv, case: &Case, revert: bool) {
    let c = e.cluster.connect();
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{}", case.img)).unwrap();
    ops::create(c, &img, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &img).unwrap().open(&img.name).unwrap(), 0, MIB, 1);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e.oned.set_vm(
        case.vm,
        vm_doc(case.vm, "localhost", 3, &[e.image_disk(0, &img.to_string(), true, IMAGE_DS, 16)]),
    );
    let args = |rest: &[&str]| -> Vec<String> { rest.iter().map(|s| s.to_string()).collect() };
    let (vm, ds) = (case.vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&tm(e, "clone", &args(&[&format!("frontend:{img}"), &case.disk_path(), &vm, &ds]), None));
    for s in ["0", "1"] {
        assert_ok(&tm(e, "snap_create", &args(&[&case.disk_path(), s, &vm, &ds]), None));
    }
    if revert {
        assert_ok(&tm(e, "snap_revert", &args(&[&case.disk_path(), "0", &vm, &ds]), None));
    }
}

fn remove_all(e: &OneEnv, case: &Case) {
    let c = e.cluster.connect();
    let pool = &e.cluster.pool;
    wait_unwatched(c, pool, case);
    for name in [format!("one-{}", case.new), format!("one-{}-{}-0", case.img, case.vm)] {
        Disk::new(c, ImageSpec::new(pool, &name).unwrap())
            .remove(None, rbdx_core::ops::disk::Reclaim::Flatten)
            .unwrap();
    }
    rbdx_core::ops::disk::reclaim(c, &ImageSpec::new(pool, "x").unwrap()).unwrap();
    let img = ImageSpec::new(pool, &format!("one-{}", case.img)).unwrap();
    Disk::new(c, img.clone()).remove(None, rbdx_core::ops::disk::Reclaim::Flatten).unwrap();
    assert!(state(c, pool, case).is_empty(), "cleanup left {:?}", state(c, pool, case));
}

fn snap_args(case: &Case, snap: &str) -> Vec<String> {
    vec![case.disk_path(), snap.into(), case.vm.to_string(), IMAGE_DS.to_string()]
}

#[test]
fn snap_revert_converges_from_every_crash_point() {
    let e = env();
    let n = every_crash_point(
        &e,
        &|e, case| vm_with_snapshots(e, case, false),
        &|e, case, k| tm(e, "snap_revert", &snap_args(case, "0"), k),
        &remove_all,
    );
    assert!(n >= 5, "snap_revert has {n} crash points");
    eprintln!("snap_revert: {n} crash points, each re-run converged");
}

#[test]
fn snap_delete_converges_from_every_crash_point() {
    let e = env();
    // Snapshot 0 lives on the carrier the revert made, and the head is its clone.
    let n = every_crash_point(
        &e,
        &|e, case| vm_with_snapshots(e, case, true),
        &|e, case, k| tm(e, "snap_delete", &snap_args(case, "0"), k),
        &remove_all,
    );
    assert!(n >= 1, "snap_delete has {n} crash points");
    eprintln!("snap_delete: {n} crash points, each re-run converged");
}

#[test]
fn delete_converges_from_every_crash_point() {
    let e = env();
    let n = every_crash_point(
        &e,
        &|e, case| vm_with_snapshots(e, case, true),
        &|e, case, k| tm(e, "delete", &[case.disk_path(), case.vm.to_string(), IMAGE_DS.to_string()], k),
        &remove_all,
    );
    assert!(n >= 3, "delete has {n} crash points");
    eprintln!("delete: {n} crash points, each re-run converged");
}

#[test]
fn clone_and_cpds_converge_from_every_crash_point() {
    let e = env();
    let n = every_crash_point(
        &e,
        &|e, case| {
            let c = e.cluster.connect();
            let img = ImageSpec::new(&e.cluster.pool, &format!("one-{}", case.img)).unwrap();
            ops::create(c, &img, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
            e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
            e.oned.set_vm(
                case.vm,
                vm_doc(case.vm, "localhost", 3, &[e.image_disk(0, &img.to_string(), true, IMAGE_DS, 32)]),
            );
        },
        &|e, case, k| {
            let img = format!("frontend:{}/one-{}", e.cluster.pool, case.img);
            tm(e, "clone", &[img, case.disk_path(), case.vm.to_string(), IMAGE_DS.to_string()], k)
        },
        &remove_all,
    );
    eprintln!("clone: {n} crash points, each re-run converged");
    let m = every_crash_point(
        &e,
        &|e, case| vm_with_snapshots(e, case, false),
        &|e, case, k| {
            let new = format!("{}/one-{}", e.cluster.pool, case.new);
            tm(e, "cpds", &[case.disk_path(), new, "-1".into(), case.vm.to_string(), IMAGE_DS.to_string()], k)
        },
        &remove_all,
    );
    assert!(n >= 2 && m >= 2, "clone {n}, cpds {m} crash points");
    eprintln!("cpds: {m} crash points, each re-run converged");
}

fn ds(e: &OneEnv, action: &str, id: u32, message: &str, crash: Option<u32>) -> Output {
    use std::io::Write;
    let b64 = rbdx_one::base64::encode(
        format!("<DS_DRIVER_ACTION_DATA>{message}</DS_DRIVER_ACTION_DATA>").as_bytes(),
    );
    let mut cmd = e.command(&["ds", action]);
    cmd.arg(id.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(k) = crash {
        cmd.env("RBDX_CRASH_AT", k.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b64.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// An image `one-<img>` with snapshots 0 and 1 (and a revert to 0 when asked).
fn image_with_snapshots(e: &OneEnv, case: &Case) {
    let c = e.cluster.connect();
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{}", case.img)).unwrap();
    ops::create(c, &img, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    let d = Disk::new(c, img.clone());
    for s in ["0", "1"] {
        fill(&ops::ioctx(c, &img).unwrap().open(&img.name).unwrap(), 0, MIB, s.as_bytes()[0]);
        d.snapshot_create(s).unwrap();
    }
}

fn ds_image(e: &OneEnv, case: &Case, extra: &str) -> String {
    format!(
        "<IMAGE><SOURCE>{}/one-{}</SOURCE><PATH>{}/one-{}</PATH>{extra}</IMAGE>{}",
        e.cluster.pool,
        case.img,
        e.cluster.pool,
        case.img,
        e.image_ds(IMAGE_DS, true, &[])
    )
}

#[test]
fn ds_snap_flatten_converges_from_every_crash_point() {
    let e = env();
    let n = every_crash_point(
        &e,
        &image_with_snapshots,
        &|e, case, k| {
            ds(e, "snap_flatten", case.img, &ds_image(e, case, "<TARGET_SNAPSHOT>0</TARGET_SNAPSHOT>"), k)
        },
        &remove_all,
    );
    assert!(n >= 3, "snap_flatten has {n} crash points");
    eprintln!("ds snap_flatten: {n} crash points, each re-run converged");
}

#[test]
fn ds_clone_converges_from_every_crash_point() {
    let e = env();
    let n = every_crash_point(
        &e,
        &image_with_snapshots,
        &|e, case, k| ds(e, "clone", case.new, &ds_image(e, case, ""), k),
        &remove_all,
    );
    assert!(n >= 2, "clone has {n} crash points");
    eprintln!("ds clone: {n} crash points, each re-run converged");
}

#[test]
fn ds_rm_converges_from_every_crash_point() {
    let e = env();
    let n = every_crash_point(
        &e,
        &|e, case| {
            image_with_snapshots(e, case);
            let c = e.cluster.connect();
            let d = Disk::new(c, ImageSpec::new(&e.cluster.pool, &format!("one-{}", case.img)).unwrap());
            d.revert("0", &rbdx_core::ops::disk::DiskConfig::default()).unwrap();
        },
        &|e, case, k| ds(e, "rm", case.img, &ds_image(e, case, ""), k),
        &remove_all,
    );
    assert!(n >= 2, "rm has {n} crash points");
    eprintln!("ds rm: {n} crash points, each re-run converged");
}
