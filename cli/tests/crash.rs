//! Crash points: every multi-step action is aborted right after each of its Ceph
//! mutations in turn (the test build's `RBDX_CRASH_AT=k`), then run again with
//! the same arguments; the end state must equal that of an uninterrupted run,
//! with no leaked image, snapshot, metadata key or trash entry.
//!
//! Covered, each from every crash point:
//! - OpenNebula TM: `clone`, `cpds`, `snap_create` (a disk's first snapshot, and
//!   one after a revert), `snap_revert`, `snap_delete`, `delete`, `mkimage` (FS
//!   ext4) and `mkswap` (the file system or swap signature checked too);
//! - OpenNebula datastore: `snap_flatten`, `clone`, `rm`, and `cp` of a raw and of
//!   a qcow2 file (the image's bytes checked too; an aborted run can leave its
//!   staging files behind, at most two);
//! - the Proxmox helper (`rbdx pve`, re-run with the same request, as PVE retries
//!   a call): `create_base`, `volume_snapshot_rollback`, `free_image`, and
//!   `alloc_image` / `clone_image` (linked clone of a template). A re-run of the
//!   last two cannot give an interrupted run's image back: with no name, the
//!   retry picks the next free name and the interrupted run's complete image is
//!   left under a name PVE was never told (listed for the VM, so `qm rescan`
//!   finds it); with a name, the retry is refused as the image exists. Those
//!   tests pin exactly that, and that nothing else is left.
//! - A revert by clone swap stopped inside librbd's rename (both names open
//!   the image, the directory moved or not), then re-run.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, Reclaim};
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_core::rbd::SnapNamespace;
use rbdx_tests::one::{OneEnv, assert_ok, vm_doc};
use rbdx_tests::pve::{answer, storage};
use rbdx_tests::{MIB, checksum, fill, reclaim_until_gone};
use serde_json::{Value, json};

const IMAGE_DS: u32 = 100;
const SYSTEM_DS: u32 = 0;

/// One crash-point test at a time: each is long and busy on the test process's
/// Ceph client, and librados in this process has aborted under that load (see
/// docs/ceph-behaviour.md).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reverts by the clone swap (the path with carriers and most crash points);
/// [`snap_revert_in_place_converges_from_every_crash_point`] takes the other.
fn env() -> OneEnv {
    env_with("ROLLBACK_MAX_MB = 0\n")
}

fn env_with(extra: &str) -> OneEnv {
    OneEnv::new(
        Path::new(env!("CARGO_BIN_EXE_rbdx")),
        &format!("EXECUTION = local\nCEPH_TIMEOUT = 20\n{extra}"),
    )
}

/// Ids no other test process uses: 5000 per process (each case takes three).
fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 5_000 + 20_000_000 + N.fetch_add(1, Ordering::Relaxed)
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
        format!("localhost:/var/lib/one//datastores/{SYSTEM_DS}/{}/disk.0", self.vm)
    }
    /// The Proxmox volume `vm-<vm>-disk-0`.
    fn vol(&self) -> String {
        format!("vm-{}-disk-0", self.vm)
    }
    /// Image-name prefixes of this case, with the label each becomes in a state.
    fn labels(&self) -> Vec<(String, &'static str)> {
        vec![
            (format!("one-{}-{}-0", self.img, self.vm), "DISK"),
            (format!("one-{}", self.new), "NEW"),
            (format!("one-{}", self.img), "IMG"),
            (format!("one-sys-{}", self.vm), "SYS"),
            (format!("vm-{}-disk", self.vm), "VM"),
            (format!("base-{}-disk", self.vm), "BASE"),
            (format!("vm-{}-disk", self.new), "CLONE"),
        ]
    }
    /// `s` with the case's ids replaced by labels, and the snapshot id in an rbdx
    /// carrier name (`<head>.rbdx-c<id>`, different in every case) masked.
    fn norm(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (p, l) in self.labels() {
            s = s.replace(p.as_str(), l);
        }
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(".rbdx-c") {
            out.push_str(&rest[..i + 7]);
            rest = rest[i + 7..].trim_start_matches(|ch: char| ch.is_ascii_digit());
            out.push('N');
        }
        out.push_str(rest);
        out
    }
    /// True if image `name` is one of this case's.
    fn owns(&self, name: &str) -> bool {
        self.labels().iter().any(|(p, _)| {
            name == p || name.starts_with(&format!("{p}-")) || name.starts_with(&format!("{p}."))
        })
    }
}

/// Everything of a case in the pool: each image (size, parent, data pool, user
/// snapshots, trashed snapshots, rbdx metadata) and each trash entry, with the
/// case's ids replaced by labels.
fn state(c: &Cluster, pool: &str, case: &Case) -> BTreeMap<String, String> {
    let norm = |s: &str| case.norm(s);
    let io = c.ioctx(pool).unwrap();
    let mut out = BTreeMap::new();
    for e in io.list_images().unwrap() {
        if !case.owns(&e.name) {
            continue;
        }
        let spec = ImageSpec::new(pool, &e.name).unwrap();
        let st = match ops::stat(c, &spec) {
            Ok(st) => st,
            // A clone stopped before its last step: listed, opening nothing.
            Err(err) if err.is_not_found() => {
                out.insert(norm(&e.name), UNFINISHED.to_string());
                continue;
            }
            Err(err) => panic!("{}: {err}", e.name),
        };
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
        if case.owns(&t.name) {
            out.insert(format!("trash:{}", norm(&t.name)), format!("{:?}", t.source));
        }
    }
    out
}

/// What [`state`] says of a clone stopped before its last step (its name
/// does not open yet).
const UNFINISHED: &str = "unfinished";

/// Waits (up to 30 s) until no image of the case has a watcher.
fn wait_unwatched(c: &Cluster, pool: &str, case: &Case) {
    let io = c.ioctx(pool).unwrap();
    let start = std::time::Instant::now();
    loop {
        let watched = io.list_images().unwrap().into_iter().any(|e| {
            case.owns(&e.name)
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

/// Asserts a run succeeded, showing its stderr and stdout (the Proxmox helper
/// answers errors there) if not.
fn assert_finished(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// How a scenario is made, run and removed: `setup` makes a fresh case, `action`
/// runs the action under test (with crash point `k` when given), `result`
/// describes what the state listing cannot see (data, the answer) from a
/// finished run and its output, and `cleanup` removes the case, asserting that
/// nothing is left.
struct Scenario<'a> {
    setup: &'a dyn Fn(&OneEnv, &Case),
    action: &'a dyn Fn(&OneEnv, &Case, Option<u32>) -> Output,
    result: &'a dyn Fn(&OneEnv, &Case, &Output) -> String,
    cleanup: &'a dyn Fn(&OneEnv, &Case),
}

/// `state` plus the scenario's `result` of a finished run.
fn end_state(e: &OneEnv, s: &Scenario<'_>, case: &Case, out: &Output) -> BTreeMap<String, String> {
    let mut st = state(e.cluster.connect(), &e.cluster.pool, case);
    st.insert("<result>".into(), (s.result)(e, case, out));
    st
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
    converges(e, &Scenario { setup, action, result: &|_, _, _| String::new(), cleanup })
}

/// [`every_crash_point`] for a [`Scenario`].
fn converges(e: &OneEnv, s: &Scenario<'_>) -> u32 {
    converges_meddled(e, s, &|_, _| true)
}

/// [`converges`], with `meddle` changing each interrupted state before the
/// re-run (as a process killed inside a Ceph call would have left it); a crash
/// point where it returns `false` is not re-run.
fn converges_meddled(e: &OneEnv, s: &Scenario<'_>, meddle: &dyn Fn(&OneEnv, &Case) -> bool) -> u32 {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let c = e.cluster.connect();
    let pool = &e.cluster.pool;
    let reference = Case::new();
    (s.setup)(e, &reference);
    let out = (s.action)(e, &reference, None);
    assert_finished(&out, "an uninterrupted run");
    let want = end_state(e, s, &reference, &out);
    (s.cleanup)(e, &reference);
    let mut k = 1;
    loop {
        let case = Case::new();
        (s.setup)(e, &case);
        let out = (s.action)(e, &case, Some(k));
        if !crashed(&out) {
            assert_finished(&out, &format!("a run without crash point {k}"));
            assert_eq!(end_state(e, s, &case, &out), want, "an action without crash point {k}");
            (s.cleanup)(e, &case);
            return k - 1;
        }
        // Interrupted after its k-th mutation: run it again, once the dead
        // process's watches have expired (as a later re-run would find it).
        wait_unwatched(c, pool, &case);
        if !meddle(e, &case) {
            (s.cleanup)(e, &case);
            k += 1;
            continue;
        }
        let again = (s.action)(e, &case, None);
        assert_finished(&again, &format!("the re-run after crash point {k}"));
        assert_eq!(end_state(e, s, &case, &again), want, "re-run after crash point {k}");
        (s.cleanup)(e, &case);
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

/// An image and a VM whose disk 0 is a clone of it, made by the TM driver (on
/// the EC datastore).
fn vm_with_disk(e: &OneEnv, case: &Case) {
    let c = e.cluster.connect();
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{}", case.img)).unwrap();
    ops::create(c, &img, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &img).unwrap().open(&img.name).unwrap(), 0, MIB, 1);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e.oned.set_vm(
        case.vm,
        vm_doc(case.vm, "localhost", 3, &[e.image_disk(0, &img.to_string(), true, IMAGE_DS, 16)]),
    );
    let (vm, ds) = (case.vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&tm(e, "clone", &[format!("frontend:{img}"), case.disk_path(), vm, ds], None));
}

/// [`vm_with_disk`], with snapshots 0 and 1 taken through the TM driver (and a
/// revert to 0 when asked).
fn vm_with_snapshots(e: &OneEnv, case: &Case, revert: bool) {
    vm_with_disk(e, case);
    for s in ["0", "1"] {
        assert_ok(&tm(e, "snap_create", &snap_args(case, s), None));
    }
    if revert {
        assert_ok(&tm(e, "snap_revert", &snap_args(case, "0"), None));
    }
}

/// Removes every image of the case, clones before what they were made from, and
/// asserts that nothing is left.
fn remove_all(e: &OneEnv, case: &Case) {
    let c = e.cluster.connect();
    let pool = &e.cluster.pool;
    wait_unwatched(c, pool, case);
    let remove = |name: &str| {
        Disk::new(c, ImageSpec::new(pool, name).unwrap(), &rbdx_one::naming::ONE)
            .remove(None, Reclaim::Flatten)
            .unwrap();
    };
    // Proxmox volumes `<prefix>-<n>`: the alloc and clone tests leave several.
    let volumes = |prefix: String| -> Vec<String> {
        let io = c.ioctx(pool).unwrap();
        let names = io.list_images().unwrap().into_iter().map(|e| e.name);
        names
            .filter(|n| {
                n.strip_prefix(prefix.as_str())
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect()
    };
    let clones = [format!("one-{}", case.new), format!("one-{}-{}-0", case.img, case.vm)];
    for name in clones.into_iter().chain(volumes(format!("vm-{}-disk", case.new))) {
        remove(&name);
    }
    rbdx_core::ops::disk::reclaim(c, &ImageSpec::new(pool, "x").unwrap()).unwrap();
    let sources = [format!("one-{}", case.img), format!("one-sys-{}-0", case.vm)];
    let volumes =
        volumes(format!("vm-{}-disk", case.vm)).into_iter().chain(volumes(format!("base-{}-disk", case.vm)));
    for name in sources.into_iter().chain(volumes) {
        remove(&name);
    }
    let waiting = reclaim_until_gone(c, pool, |n| case.owns(n));
    assert!(waiting.is_empty(), "reclaim left {waiting:?}");
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

/// What librbd leaves when its rename of `from` to `to` is killed after its
/// first write: `to`'s id object, a copy of `from`'s (both names open the
/// image; the pool directory still lists `from`); with `directory_moved`,
/// after its second (the directory lists `to`).
fn stop_rename_half_way(e: &OneEnv, from: &str, to: &str, directory_moved: bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("id");
    let cl = &e.cluster;
    let rados = |args: &[&OsStr]| {
        let out = Command::new("rados")
            .args(["-c".as_ref(), cl.conf.as_os_str(), "--id".as_ref(), cl.id.as_ref()])
            .args(["--keyring".as_ref(), cl.keyring.as_os_str(), "-p".as_ref(), cl.pool.as_ref()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "rados {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    rados(&[OsStr::new("get"), format!("rbd_id.{from}").as_ref(), file.as_os_str()]);
    rados(&[OsStr::new("put"), format!("rbd_id.{to}").as_ref(), file.as_os_str()]);
    if directory_moved {
        // The directory's two keys per image, each value a cls string.
        let raw = std::fs::read(&file).unwrap();
        let id = std::str::from_utf8(&raw[4..]).unwrap().to_string();
        let set = |key: String, value: &str| {
            let mut v = u32::try_from(value.len()).unwrap().to_le_bytes().to_vec();
            v.extend_from_slice(value.as_bytes());
            std::fs::write(&file, v).unwrap();
            let (key, input) = (OsStr::new(&key), OsStr::new("--input-file"));
            rados(&[OsStr::new("setomapval"), OsStr::new("rbd_directory"), key, input, file.as_os_str()]);
        };
        rados(&[OsStr::new("rmomapkey"), OsStr::new("rbd_directory"), format!("name_{from}").as_ref()]);
        set(format!("name_{to}"), &id);
        set(format!("id_{id}"), to);
    }
}

#[test]
fn snap_revert_converges_from_a_rename_stopped_half_way() {
    let e = env();
    // Before each of the clone swap's renames (the old head to its carrier,
    // the finished clone into place), the run is stopped as if killed inside
    // librbd's rename, after its first write or its second.
    let met = std::cell::Cell::new((0, 0));
    let n = converges_meddled(
        &e,
        &Scenario {
            setup: &|e, case| vm_with_snapshots(e, case, false),
            action: &|e, case, k| tm(e, "snap_revert", &snap_args(case, "0"), k),
            result: &|_, _, _| String::new(),
            cleanup: &remove_all,
        },
        &|e, case| {
            let io = e.cluster.connect().ioctx(&e.cluster.pool).unwrap();
            let head = format!("one-{}-{}-0", case.img, case.vm);
            let temp = format!("{head}.rbdx-new");
            let exists = |n: &str| io.open_read_only(n, None).is_ok();
            if !exists(&temp) {
                return false;
            }
            let (to_carrier, into_place) = met.get();
            if !exists(&head) {
                // Every other time with the directory moved too.
                stop_rename_half_way(e, &temp, &head, into_place % 2 == 1);
                met.set((to_carrier, into_place + 1));
                return true;
            }
            let carrier =
                io.open_read_only(&temp, None).unwrap().metadata_get("rbdx.revert.carrier").unwrap();
            match carrier.filter(|c| !c.is_empty() && !exists(c)) {
                Some(c) => {
                    stop_rename_half_way(e, &head, &c, true);
                    met.set((to_carrier + 1, into_place));
                    true
                }
                None => false,
            }
        },
    );
    let (to_carrier, into_place) = met.get();
    assert!(
        to_carrier >= 1 && into_place >= 1,
        "renames stopped: {to_carrier} to the carrier, {into_place} into place"
    );
    eprintln!(
        "snap_revert: {n} crash points, renames stopped half-way and re-run: {to_carrier} + {into_place}"
    );
}

#[test]
fn snap_revert_in_place_converges_from_every_crash_point() {
    let e = env_with("");
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| {
                vm_with_snapshots(e, case, false);
                let io = e.cluster.connect().ioctx(&e.cluster.pool).unwrap();
                fill(&io.open(&format!("one-{}-{}-0", case.img, case.vm)).unwrap(), 0, MIB, 9);
            },
            action: &|e, case, k| tm(e, "snap_revert", &snap_args(case, "0"), k),
            // Rolled back in place: the head reads as snapshot 0, and no other
            // image of the disk (a carrier) was made.
            result: &|e, case, _| {
                let io = e.cluster.connect().ioctx(&e.cluster.pool).unwrap();
                let head = format!("one-{}-{}-0", case.img, case.vm);
                let now = checksum(&io.open_read_only(&head, None).unwrap());
                let at0 = checksum(&io.open_read_only(&head, Some("0")).unwrap());
                let others: Vec<String> = io
                    .list_images()
                    .unwrap()
                    .into_iter()
                    .map(|i| i.name)
                    .filter(|n| n.starts_with(&format!("{head}-")) || n.starts_with(&format!("{head}.")))
                    .collect();
                assert_eq!((now, &others), (at0, &Vec::new()), "rolled back in place");
                "rolled back in place".to_string()
            },
            cleanup: &remove_all,
        },
    );
    assert!(n >= 2, "snap_revert in place has {n} crash points");
    eprintln!("snap_revert in place: {n} crash points, each re-run converged");
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
    eprintln!("cpds (a copy of the disk's own data): {m} crash points, each re-run converged");
    // The same save with a snapshot, as a disk with more data takes.
    let by_snapshot = [("RBDX_SAVEAS_COPY_MAX_MB", "0".to_string())];
    let s = every_crash_point(
        &e,
        &|e, case| {
            vm_with_snapshots(e, case, false);
            e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &by_snapshot));
        },
        &|e, case, k| {
            let new = format!("{}/one-{}", e.cluster.pool, case.new);
            tm(e, "cpds", &[case.disk_path(), new, "-1".into(), case.vm.to_string(), IMAGE_DS.to_string()], k)
        },
        &remove_all,
    );
    assert!(n >= 2 && m >= 2 && s >= 2, "clone {n}, cpds {m} and {s} crash points");
    eprintln!("cpds (a snapshot): {s} crash points, each re-run converged");
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
    let d = Disk::new(c, img.clone(), &rbdx_one::naming::ONE);
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
            let d = Disk::new(
                c,
                ImageSpec::new(&e.cluster.pool, &format!("one-{}", case.img)).unwrap(),
                &rbdx_one::naming::ONE,
            );
            d.revert("0", &rbdx_core::ops::disk::DiskConfig::default()).unwrap();
        },
        &|e, case, k| ds(e, "rm", case.img, &ds_image(e, case, ""), k),
        &remove_all,
    );
    assert!(n >= 2, "rm has {n} crash points");
    eprintln!("ds rm: {n} crash points, each re-run converged");
}

/// A VM whose disk 0 is volatile (`kind` `fs` with `fs`, or `swap`), 16 MiB, on
/// the EC system datastore.
fn vm_with_volatile_disk(e: &OneEnv, case: &Case, kind: &str, fs: Option<&str>) {
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, true));
    e.oned.set_vm(case.vm, vm_doc(case.vm, "localhost", 3, &[e.volatile_disk(0, kind, fs, SYSTEM_DS, 16)]));
}

/// `len` bytes of image `name` at `offset`.
fn read_at(e: &OneEnv, name: &str, offset: u64, len: usize) -> Vec<u8> {
    let io = e.cluster.connect().ioctx(&e.cluster.pool).unwrap();
    let mut buf = vec![0u8; len];
    io.open_read_only(name, None).unwrap().read_at(offset, &mut buf).unwrap();
    buf
}

#[test]
fn mkimage_converges_from_every_crash_point() {
    let e = env();
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| vm_with_volatile_disk(e, case, "fs", Some("ext4")),
            action: &|e, case, k| {
                let (vm, sys) = (case.vm.to_string(), SYSTEM_DS.to_string());
                tm(e, "mkimage", &["16".into(), "raw".into(), case.disk_path(), vm, sys], k)
            },
            // The ext4 superblock magic (mkfs puts a fresh UUID in every image).
            result: &|e, case, _| {
                format!("magic {:02x?}", read_at(e, &format!("one-sys-{}-0", case.vm), 1024 + 56, 2))
            },
            cleanup: &remove_all,
        },
    );
    assert!(n >= 2, "mkimage has {n} crash points");
    eprintln!("mkimage (ext4): {n} crash points, each re-run converged");
}

#[test]
fn mkswap_converges_from_every_crash_point() {
    let e = env();
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| vm_with_volatile_disk(e, case, "swap", None),
            action: &|e, case, k| {
                let (vm, sys) = (case.vm.to_string(), SYSTEM_DS.to_string());
                tm(e, "mkswap", &["16".into(), case.disk_path(), vm, sys], k)
            },
            result: &|e, case, _| {
                String::from_utf8_lossy(&read_at(e, &format!("one-sys-{}-0", case.vm), 4086, 10)).into()
            },
            cleanup: &remove_all,
        },
    );
    assert!(n >= 2, "mkswap has {n} crash points");
    eprintln!("mkswap: {n} crash points, each re-run converged");
}

#[test]
fn snap_create_converges_from_every_crash_point() {
    let e = env();
    // The disk's first snapshot: the disk is adopted into the scheme on the way.
    let first = every_crash_point(
        &e,
        &vm_with_disk,
        &|e, case, k| tm(e, "snap_create", &snap_args(case, "0"), k),
        &remove_all,
    );
    eprintln!("snap_create (first snapshot): {first} crash points, each re-run converged");
    // A snapshot of a head that a revert made, with a carrier holding 0 and 1.
    let later = every_crash_point(
        &e,
        &|e, case| vm_with_snapshots(e, case, true),
        &|e, case, k| tm(e, "snap_create", &snap_args(case, "2"), k),
        &remove_all,
    );
    eprintln!("snap_create (after a revert): {later} crash points, each re-run converged");
    // A disk the stock driver reverted: its book is written on the way, the
    // head's mark last (with it first, a run stopped after it left a book that
    // read as complete without the carrier and its snapshots).
    let adopted = every_crash_point(
        &e,
        &vm_reverted_by_the_stock_driver,
        &|e, case, k| tm(e, "snap_create", &snap_args(case, "2"), k),
        &remove_all,
    );
    assert!(
        first >= 2 && later >= 2 && adopted >= 4,
        "snap_create has {first}, {later}, {adopted} crash points"
    );
    eprintln!("snap_create (adopting a stock carrier): {adopted} crash points, each re-run converged");
}

/// [`vm_with_disk`] as the stock driver leaves it after `snap_create 0;
/// snap_create 1; snap_revert 0`: no rbdx metadata, protected numeric
/// snapshots on the carrier `<head>-0:1`, the head a clone of its `@0`.
fn vm_reverted_by_the_stock_driver(e: &OneEnv, case: &Case) {
    vm_with_disk(e, case);
    let c = e.cluster.connect();
    let io = c.ioctx(&e.cluster.pool).unwrap();
    let head = ImageSpec::new(&e.cluster.pool, &format!("one-{}-{}-0", case.img, case.vm)).unwrap();
    let h = io.open(&head.name).unwrap();
    for (k, _) in h.metadata_list("rbdx.").unwrap() {
        h.metadata_remove(&k).unwrap();
    }
    for s in ["0", "1"] {
        fill(&h, 0, MIB, s.as_bytes()[0]);
        h.snap_create(s).unwrap();
        h.snap_protect(s).unwrap();
    }
    drop(h);
    let carrier = format!("{}-0:1", head.name);
    io.rename_image(&head.name, &carrier).unwrap();
    let o = ops::CloneOptions { data_pool: Some(e.cluster.ec_pool.clone()), ..ops::CloneOptions::default() };
    ops::clone(c, &head.sibling(&carrier).unwrap().at("0").unwrap(), &head, &o).unwrap();
}

/// A 4 MiB raw file with data at two places and a hole between, and the same
/// data as qcow2; returns both paths and the data.
fn source_files(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let mut data = vec![0u8; 4 << 20];
    for (off, seed) in [(0usize, 1u8), (3 << 20, 2)] {
        for (i, b) in data[off..off + (1 << 20)].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
        }
    }
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let qcow = dir.join("src.qcow2");
    let ok = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .expect("qemu-img (qemu-utils) is needed");
    assert!(ok.success(), "qemu-img convert");
    (raw, qcow, data)
}

#[test]
fn ds_cp_converges_from_every_crash_point() {
    let e = env();
    let staging = e.dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let (raw, qcow, data) = source_files(e.dir.path());
    let ds_doc = e.image_ds(IMAGE_DS, true, &[("STAGING_DIR", staging.display().to_string())]);
    for (format, file) in [("raw", &raw), ("qcow2", &qcow)] {
        let message = format!("<IMAGE><PATH>{}</PATH><SIZE>4</SIZE></IMAGE>{ds_doc}", file.display());
        let n = converges(
            &e,
            &Scenario {
                setup: &|_, _| {},
                action: &|e, case, k| ds(e, "cp", case.img, &message, k),
                result: &|e, case, out| {
                    let name = format!("one-{}", case.img);
                    let same = read_at(e, &name, 0, data.len()) == data;
                    let stdout = case.norm(&String::from_utf8_lossy(&out.stdout));
                    format!("{stdout:?} data {}", if same { "as the source" } else { "NOT as the source" })
                },
                cleanup: &remove_all,
            },
        );
        assert!(n >= 2, "cp ({format}) has {n} crash points");
        // An aborted process cannot remove its staging files (the stream's copy
        // and qemu-img's output, for a qcow2 file): at most two per crash, and
        // none from a run that finishes.
        let left: Vec<_> = std::fs::read_dir(&staging).unwrap().map(|d| d.unwrap().file_name()).collect();
        assert!(left.len() <= 2 * n as usize, "staging files left: {left:?}");
        eprintln!("ds cp ({format}): {n} crash points, each re-run converged; staging files left: {left:?}");
        for f in std::fs::read_dir(&staging).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
}

/// Runs `rbdx pve` as the plugin does, for the test pools (the EC data pool
/// set), aborting at crash point `crash`.
fn pve(e: &OneEnv, method: &str, params: Value, crash: Option<u32>) -> Output {
    let k = crash.map(|k| k.to_string());
    let env: Vec<(&str, &OsStr)> = k.iter().map(|k| ("RBDX_CRASH_AT", OsStr::new(k))).collect();
    // Rollbacks by the clone swap, as in the OpenNebula cases.
    let mut ceph = storage(&e.cluster, true);
    ceph["rollback_max_mb"] = json!(0);
    rbdx_tests::pve::call(&e.bin, &ceph, method, params, &env)
}

fn pve_ok(e: &OneEnv, method: &str, params: Value) -> Value {
    answer(&pve(e, method, params, None)).unwrap_or_else(|err| panic!("{method}: {err}"))
}

/// The answer of a finished call, with the case's ids replaced by labels.
fn pve_result(case: &Case, out: &Output) -> String {
    case.norm(&format!("{:?}", answer(out)))
}

/// The Proxmox volume `vm-<vm>-disk-0` (16 MiB, the EC data pool) with data, and
/// `snaps` taken through the helper, each after new data.
fn pve_disk(e: &OneEnv, case: &Case, snaps: &[&str]) {
    let got = pve_ok(e, "alloc_image", json!({"vmid": case.vm, "name": case.vol(), "size_kib": 16 << 10}));
    assert_eq!(got, json!(case.vol()));
    let io = e.cluster.connect().ioctx(&e.cluster.pool).unwrap();
    fill(&io.open(&case.vol()).unwrap(), 0, MIB, 1);
    for (i, s) in (2..).zip(snaps) {
        pve_ok(e, "volume_snapshot", json!({"volname": case.vol(), "snap": s}));
        fill(&io.open(&case.vol()).unwrap(), 0, MIB, i);
    }
}

/// [`pve_disk`] made a template (`base-<vm>-disk-0` with `__base__`).
fn pve_template(e: &OneEnv, case: &Case) {
    pve_disk(e, case, &[]);
    pve_ok(e, "create_base", json!({"volname": case.vol()}));
}

#[test]
fn pve_create_base_converges_from_every_crash_point() {
    let e = env();
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| pve_disk(e, case, &[]),
            action: &|e, case, k| pve(e, "create_base", json!({"volname": case.vol()}), k),
            result: &|_, case, out| pve_result(case, out),
            cleanup: &remove_all,
        },
    );
    assert!(n >= 2, "create_base has {n} crash points");
    eprintln!("pve create_base: {n} crash points, each re-run converged");
}

#[test]
fn pve_volume_snapshot_rollback_converges_from_every_crash_point() {
    let e = env();
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| pve_disk(e, case, &["snap1", "snap2"]),
            action: &|e, case, k| {
                pve(e, "volume_snapshot_rollback", json!({"volname": case.vol(), "snap": "snap1"}), k)
            },
            // The head reads as snap1 did.
            result: &|e, case, out| {
                let io = e.cluster.connect().ioctx(&e.cluster.pool).unwrap();
                let sum = checksum(&io.open_read_only(&case.vol(), None).unwrap());
                format!("{} {sum:x}", pve_result(case, out))
            },
            cleanup: &remove_all,
        },
    );
    assert!(n >= 5, "volume_snapshot_rollback has {n} crash points");
    eprintln!("pve volume_snapshot_rollback: {n} crash points, each re-run converged");
}

#[test]
fn pve_free_image_converges_from_every_crash_point() {
    let e = env();
    // A volume with a carrier (a rollback) and a clone of one of its snapshots
    // (another VM's volume): what the clone reads goes to the trash for reclaim.
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| {
                pve_disk(e, case, &["snap1", "snap2"]);
                pve_ok(e, "volume_snapshot_rollback", json!({"volname": case.vol(), "snap": "snap1"}));
                let params = json!({"volname": case.vol(), "vmid": case.new, "snap": "snap2"});
                assert_eq!(pve_ok(e, "clone_image", params), json!(format!("vm-{}-disk-0", case.new)));
            },
            action: &|e, case, k| pve(e, "free_image", json!({"volname": case.vol()}), k),
            result: &|_, case, out| pve_result(case, out),
            cleanup: &remove_all,
        },
    );
    assert!(n >= 3, "free_image has {n} crash points");
    eprintln!("pve free_image: {n} crash points, each re-run converged");
}

/// What PVE's retry of a call that makes a volume meets after an interrupted run
/// made it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// No name was asked: the retry picks the next free name; the interrupted
    /// run's volume stays under the name PVE was never told.
    NextName,
    /// A name was asked: the retry is refused, as the volume exists.
    Refused,
}

/// An image's entry in a state without its rbdx metadata (a clone interrupted
/// before it dropped what it inherited still has its parent's).
fn without_meta(entry: &str) -> &str {
    entry.split(" meta=").next().unwrap_or(entry)
}

/// Runs a Proxmox call that makes one volume (`alloc_image`, `clone_image`) with
/// crash points 1, 2, …, each on a fresh `setup`, and retries it as PVE would.
/// Asserts that each interrupted run left a complete volume (as an uninterrupted
/// run makes it, listed for its VM), or a clone stopped before its last step
/// (its name opens nothing) that the retry finishes or removes, and, per
/// `retry`, what the retry answered, and that nothing else differs from an
/// uninterrupted run. Returns how many
/// crash points the call has.
fn pve_volume_after_every_crash_point(
    e: &OneEnv,
    setup: &dyn Fn(&OneEnv, &Case),
    method: &str,
    params: &dyn Fn(&Case) -> Value,
    retry: Retry,
) -> u32 {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let c = e.cluster.connect();
    let pool = &e.cluster.pool;
    let reference = Case::new();
    setup(e, &reference);
    let made = answer(&pve(e, method, params(&reference), None)).unwrap();
    let made = reference.norm(made.as_str().unwrap());
    let want = state(c, pool, &reference);
    remove_all(e, &reference);
    // The image the call made (the last part of a linked clone's volname).
    let image = made.rsplit('/').next().unwrap().to_string();
    let (stem, n) = image.rsplit_once('-').unwrap();
    let next_image = format!("{stem}-{}", n.parse::<u32>().unwrap() + 1);
    let next = made.replace(&image, &next_image);
    let mut k = 1;
    loop {
        let case = Case::new();
        setup(e, &case);
        let out = pve(e, method, params(&case), Some(k));
        if !crashed(&out) {
            assert_eq!(answer(&out).map(|v| case.norm(v.as_str().unwrap())), Ok(made.clone()));
            assert_eq!(state(c, pool, &case), want, "a call without crash point {k}");
            remove_all(e, &case);
            return k - 1;
        }
        wait_unwatched(c, pool, &case);
        let left = state(c, pool, &case);
        let strip = |st: &BTreeMap<String, String>| {
            let mut st = st.clone();
            st.entry(image.clone()).and_modify(|v| *v = without_meta(v).to_string());
            st
        };
        let without_image = |st: &BTreeMap<String, String>| {
            let mut st = st.clone();
            st.remove(&image);
            st
        };
        // Stopped inside the clone: its name opens nothing yet.
        let unfinished = left.get(&image).is_some_and(|v| v == UNFINISHED);
        if unfinished {
            assert_eq!(without_image(&left), without_image(&want), "crash point {k}: nothing else differs");
        } else {
            assert_eq!(
                strip(&left),
                strip(&want),
                "crash point {k}: the interrupted run's volume is complete, and nothing else differs"
            );
            let vmid = params(&case)["vmid"].clone();
            let listed = pve_ok(e, "list_images", json!({ "vmid": vmid }));
            let listed: Vec<String> =
                listed.as_array().unwrap().iter().map(|v| case.norm(v["name"].as_str().unwrap())).collect();
            assert!(listed.contains(&made), "crash point {k}: {made} is listed for its VM: {listed:?}");
        }
        let again = pve(e, method, params(&case), None);
        let after = state(c, pool, &case);
        let got = answer(&again).map(|v| case.norm(v.as_str().unwrap()));
        // The retry made the next volume, whole: what else is there.
        let beside_the_next = || {
            assert_eq!(got, Ok(next.clone()), "crash point {k}: the retry's volume");
            assert_eq!(after.get(&next_image), Some(&want[&image]), "crash point {k}: the retry's volume");
            let mut rest = after.clone();
            rest.remove(&next_image);
            rest
        };
        match retry {
            // The retry finished the unfinished clone (its header linked its
            // parent) and made the next volume, or removed it (nothing linked
            // it yet) and made the volume again under its name.
            Retry::NextName if unfinished => {
                if got == Ok(made.clone()) {
                    assert_eq!(after, want, "crash point {k}: removed and made again");
                } else {
                    let rest = beside_the_next();
                    assert_eq!(strip(&rest), strip(&want), "crash point {k}: the interrupted clone finished");
                }
            }
            Retry::NextName => {
                assert_eq!(beside_the_next(), left, "crash point {k}: the retry changed nothing else");
            }
            Retry::Refused => {
                let err = answer(&again).expect_err("the retry is refused");
                assert!(err.contains("exists"), "crash point {k}: {err}");
                assert_eq!(after, want, "crash point {k}: the refused retry");
            }
        }
        eprintln!("{method} crash point {k}: retry {:?}; left {left:?}", answer(&again));
        remove_all(e, &case);
        k += 1;
        assert!(k < 50, "runaway");
    }
}

#[test]
fn pve_alloc_image_after_every_crash_point() {
    let e = env();
    let any = pve_volume_after_every_crash_point(
        &e,
        &|_, _| {},
        "alloc_image",
        &|case| json!({"vmid": case.vm, "name": null, "size_kib": 16 << 10}),
        Retry::NextName,
    );
    let named = pve_volume_after_every_crash_point(
        &e,
        &|_, _| {},
        "alloc_image",
        &|case| json!({"vmid": case.vm, "name": case.vol(), "size_kib": 16 << 10}),
        Retry::Refused,
    );
    assert!(any >= 1 && named >= 1, "alloc_image has {any} and {named} crash points");
    eprintln!(
        "pve alloc_image: {any} crash points (no name: each retry made the next volume, the \
         interrupted one stays), {named} (named: each retry refused, the volume complete)"
    );
}

#[test]
fn pve_clone_image_of_a_template_after_every_crash_point() {
    let e = env();
    let n = pve_volume_after_every_crash_point(
        &e,
        &pve_template,
        "clone_image",
        &|case| json!({"volname": format!("base-{}-disk-0", case.vm), "vmid": case.new}),
        Retry::NextName,
    );
    assert!(n >= 1, "clone_image has {n} crash points");
    eprintln!(
        "pve clone_image (linked): {n} crash points; each retry made the next volume (the \
         interrupted one finished, and stays) or, where the interrupted clone had not linked \
         its parent yet, removed it and made it again"
    );
}

/// A VM directory move killed after each of its steps (the tree received, the
/// old destination moved aside, the swap) converges when run again: the
/// destination holds the whole tree, the source is removed, nothing else is left.
#[test]
fn a_vm_directory_move_converges_from_every_crash_point() {
    let e = env();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    e.oned.set_datastore(0, e.system_ds(0, false));
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("disk.{i}"), (0..(1u32 << 16) * (i + 1)).map(|b| (b % 251) as u8).collect()))
        .collect();
    let mut k = 1;
    loop {
        let vm = fresh_id();
        e.oned.set_vm(vm, vm_doc(vm, &host, 3, &[]));
        let src = dir.path().join(format!("a/datastores/0/{vm}"));
        let dst = dir.path().join(format!("b/datastores/0/{vm}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        for (n, data) in &files {
            std::fs::write(src.join(n), data).unwrap();
        }
        std::fs::write(dst.join("stale"), b"an earlier attempt").unwrap();
        let args = [
            format!("{host}:{}", src.display()),
            format!("{host}:{}", dst.display()),
            vm.to_string(),
            "0".to_string(),
        ];
        let crashed = tm(&e, "mv", &args, Some(k));
        let stderr = String::from_utf8_lossy(&crashed.stderr).into_owned();
        let done = crashed.status.success() && !stderr.contains("crash point");
        if !done {
            assert!(
                src.join("disk.4").exists(),
                "crash point {k}: the source is kept until the copy is whole"
            );
            assert_ok(&tm(&e, "mv", &args, None));
        }
        for (n, data) in &files {
            assert_eq!(&std::fs::read(dst.join(n)).unwrap(), data, "crash point {k}: {n}");
        }
        assert!(!dst.join("stale").exists() && !src.exists(), "crash point {k}");
        let left: Vec<String> = std::fs::read_dir(dst.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&vm.to_string()))
            .collect();
        assert_eq!(left, [vm.to_string()], "crash point {k}: no temporary sibling is left");
        if done {
            break;
        }
        k += 1;
    }
    assert!(k >= 4, "the move has {} crash points", k - 1);
    eprintln!("mv: {} crash points, each re-run converged", k - 1);
}

/// A reverted disk whose incremental backup chain is at `one_backup_0`, in a
/// VM whose BACKUP_CONFIG asks for the next increment.
fn vm_with_backup_chain(e: &OneEnv, case: &Case) {
    vm_with_snapshots(e, case, true);
    let c = e.cluster.connect();
    let head = ImageSpec::new(&e.cluster.pool, &format!("one-{}-{}-0", case.img, case.vm)).unwrap();
    let io = ops::ioctx(c, &head).unwrap();
    let img = io.open(&head.name).unwrap();
    img.snap_create("one_backup_0").unwrap();
    fill(&img, 2 * MIB, MIB, 7);
    drop(img);
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, false));
    let disk = e.image_disk(0, &format!("{}/one-{}", e.cluster.pool, case.img), true, IMAGE_DS, 16);
    let doc = vm_doc(case.vm, "localhost", 3, &[disk]).replace(
        "</VM>",
        "<BACKUPS><BACKUP_CONFIG><MODE>INCREMENT</MODE><LAST_INCREMENT_ID>0</LAST_INCREMENT_ID>\
         </BACKUP_CONFIG></BACKUPS></VM>",
    );
    e.oned.set_vm(case.vm, doc);
}

fn backup(e: &OneEnv, case: &Case, action: &str, crash: Option<u32>) -> Output {
    let sysdir = e.dir.path().join(format!("datastores/{SYSTEM_DS}/{}", case.vm));
    let mut cmd = e.command(&["tm", action]);
    cmd.args([
        format!("localhost:{}", sysdir.display()),
        "0".into(),
        format!("one-{}", case.vm),
        "-".into(),
        case.vm.to_string(),
        SYSTEM_DS.to_string(),
    ]);
    if let Some(k) = crash {
        cmd.env("RBDX_CRASH_AT", k.to_string());
    }
    let doc = format!("<VM><ID>{}</ID><BACKUP_RESULT>SUCCESS</BACKUP_RESULT></VM>", case.vm);
    rbdx_tests::run_with_stdin(&mut cmd, doc.as_bytes())
}

#[test]
fn backups_converge_from_every_crash_point() {
    let e = env();
    let increment = |e: &OneEnv, case: &Case| {
        let f = e.dir.path().join(format!("datastores/{SYSTEM_DS}/{}/backup/disk.0.1", case.vm));
        format!("{:x}", checksum_file(&f))
    };
    let pre = converges(
        &e,
        &Scenario {
            setup: &vm_with_backup_chain,
            action: &|e, case, k| backup(e, case, "prebackup_live", k),
            result: &|e, case, _| increment(e, case),
            cleanup: &remove_all,
        },
    );
    eprintln!("prebackup_live: {pre} crash points, each re-run converged on the same increment");
    let post = every_crash_point(
        &e,
        &|e, case| {
            vm_with_backup_chain(e, case);
            assert_ok(&backup(e, case, "prebackup_live", None));
        },
        &|e, case, k| backup(e, case, "postbackup_live", k),
        &remove_all,
    );
    assert!(pre >= 1 && post >= 1, "prebackup has {pre} and postbackup {post} crash points");
    eprintln!("postbackup_live: {post} crash points, each re-run converged");
}

/// FNV-1a of a file's bytes.
fn checksum_file(p: &Path) -> u64 {
    std::fs::read(p)
        .unwrap_or_default()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A reverted disk ([`vm_with_snapshots`]), a backup of other content as a
/// qcow2 file, and the backup datastore's `ls` and `downloader.sh` stand-ins
/// that hand it out; returns the remotes tree.
fn vm_with_a_backup(e: &OneEnv, case: &Case) -> PathBuf {
    vm_with_snapshots(e, case, true);
    let dir = e.dir.path().join(format!("restore-{}", case.vm));
    std::fs::create_dir_all(dir.join("remotes/datastore/rsync")).unwrap();
    let raw = dir.join("backup.raw");
    let mut data = vec![0u8; 16 << 20];
    data[MIB as usize..2 * MIB as usize].fill(0x5a);
    std::fs::write(&raw, &data).unwrap();
    let qcow = dir.join("backup.qcow2");
    let ok =
        Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&qcow).status();
    assert!(ok.unwrap().success());
    let url = format!("rsync://150/0/0:aa//{}", qcow.display());
    let ls = dir.join("remotes/datastore/rsync/ls");
    std::fs::write(&ls, format!("#!/bin/sh\ncat >/dev/null\necho '{{\"0\":\"{url}\"}}'\n")).unwrap();
    let dl = dir.join("remotes/datastore/downloader.sh");
    std::fs::write(&dl, "#!/bin/sh\nexec cat \"/${2#*//*/*/*/}\"\n").unwrap();
    for f in [&ls, &dl] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    e.oned.set_datastore(150, rbdx_tests::one::ds_doc(150, "backups", 2, &[("DS_MAD", "rsync".into())]));
    e.oned.set_image(
        4444,
        "<IMAGE><ID>4444</ID><DATASTORE_ID>150</DATASTORE_ID><FORMAT>raw</FORMAT></IMAGE>".into(),
    );
    dir.join("remotes")
}

#[test]
fn restore_converges_from_every_crash_point() {
    let e = env();
    let restore = |e: &OneEnv, case: &Case, k: Option<u32>| {
        let remotes = e.dir.path().join(format!("restore-{}/remotes", case.vm));
        let mut cmd = e.command(&["tm", "restore"]);
        cmd.args([
            format!("localhost:/var/lib/one//datastores/{SYSTEM_DS}/{}", case.vm),
            case.vm.to_string(),
            "4444".into(),
            "-1".into(),
            "0".into(),
        ])
        .env("RBDX_REMOTES", remotes)
        .stdin(std::process::Stdio::null());
        if let Some(k) = k {
            cmd.env("RBDX_CRASH_AT", k.to_string());
        }
        cmd.output().unwrap()
    };
    let n = converges(
        &e,
        &Scenario {
            setup: &|e, case| drop(vm_with_a_backup(e, case)),
            action: &restore,
            result: &|e, case, _| {
                let head =
                    ImageSpec::new(&e.cluster.pool, &format!("one-{}-{}-0", case.img, case.vm)).unwrap();
                let io = ops::ioctx(e.cluster.connect(), &head).unwrap();
                format!("{:x}", checksum(&io.open_read_only(&head.name, None).unwrap()))
            },
            cleanup: &remove_all,
        },
    );
    assert!(n >= 3, "restore has {n} crash points");
    eprintln!("restore: {n} crash points, each re-run converged on the restored disk");
}
