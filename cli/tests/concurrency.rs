//! Concurrency: driver actions started at the same time, as separate processes
//! (as oned runs them, and as several front-ends or PVE nodes would), against the
//! real test cluster.
//!
//! - Ten VMs deploy from one image at once (one base snapshot, ten clones), then
//!   snapshot their disks at once: each disk has exactly its snapshot and its
//!   bookkeeping. Two different snapshots of one disk at once, on fresh disks
//!   (both calls adopt the disk into the scheme) and on a disk already in it:
//!   each call succeeds or fails in one line, and the disk's `rbdx.*` metadata
//!   describes exactly the snapshots that exist.
//! - A TM `clone` racing a datastore `rm` of its image, at ten offsets: each
//!   action succeeds or fails in one line (no signal, no panic), and either the
//!   image is gone and no clone exists, or the clone exists and the image is
//!   still there or in the trash waiting for reclaim; once the clone is deleted,
//!   everything is freed.
//! - Ten TM `delete`s of disks cloned from one image while another VM deploys
//!   from it: all succeed, the new disk reads the image, and once it is deleted
//!   the image has no snapshot left.
//! - The end state of the clone/rm race that leaks (a base snapshot taken after
//!   `rm` listed the image's snapshots, on an image `rm` then moved to the trash
//!   for reclaim), made step by step: reclaim frees it, also when a requeue was
//!   interrupted midway, and when four reclaims (four hosts' monitors) requeue
//!   such entries at once.
//!
//! No run may die of a signal: actions on one image take turns on its
//! `rbdx_action` lock (librbd 16 aborted one of two `snap_create`s of one disk
//! about once in 200 runs without it; docs/ceph-behaviour.md).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, Reclaim, reclaim_origin};
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_core::rbd::SnapNamespace;
use rbdx_tests::one::{OneEnv, vm_doc};
use rbdx_tests::{MIB, checksum, fill, reclaim_until_gone};

const IMAGE_DS: u32 = 100;
/// Longest one action may take (each Ceph call is bounded by CEPH_TIMEOUT).
const ACTION_TIMEOUT: Duration = Duration::from_secs(180);
const LOG_PREFIXES: [&str; 4] = ["ERROR:", "INFO:", "WARN:", "DEBUG:"];

fn env() -> OneEnv {
    let e = OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), "EXECUTION = local\nCEPH_TIMEOUT = 30\n");
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e
}

/// Ids no other test process uses.
fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 1_000 + 200_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

fn disk_path(vm: u32) -> String {
    format!("localhost:/var/lib/one//datastores/0/{vm}/disk.0")
}

/// The image `one-<id>` (16 MiB, EC data pool) with 1 MiB of data.
fn image(e: &OneEnv, id: u32) -> ImageSpec {
    let c = e.cluster.connect();
    let s = ImageSpec::new(&e.cluster.pool, &format!("one-{id}")).unwrap();
    ops::create(c, &s, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &s).unwrap().open(&s.name).unwrap(), 0, MIB, 7);
    s
}

/// Serves VM `vm`, whose disk 0 is a non-persistent clone of `img`.
fn vm_of(e: &OneEnv, vm: u32, img: &ImageSpec) {
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img.to_string(), true, IMAGE_DS, 16)]));
}

/// The name of VM `vm`'s disk 0, a clone of `img`.
fn head(img: &ImageSpec, vm: u32) -> String {
    format!("{}-{vm}-0", img.name)
}

fn spawn_tm(e: &OneEnv, action: &str, args: &[String]) -> Child {
    e.command(&["tm", action])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rbdx")
}

fn spawn_clone(e: &OneEnv, img: &ImageSpec, vm: u32) -> Child {
    spawn_tm(e, "clone", &[format!("frontend:{img}"), disk_path(vm), vm.to_string(), IMAGE_DS.to_string()])
}

fn spawn_snap_create(e: &OneEnv, vm: u32, snap: &str) -> Child {
    spawn_tm(e, "snap_create", &[disk_path(vm), snap.into(), vm.to_string(), IMAGE_DS.to_string()])
}

fn spawn_delete(e: &OneEnv, vm: u32) -> Child {
    spawn_tm(e, "delete", &[disk_path(vm), vm.to_string(), IMAGE_DS.to_string()])
}

/// `rbdx ds <action> <id>` with oned's base64 message about image `img`.
fn spawn_ds(e: &OneEnv, action: &str, id: u32, img: &ImageSpec) -> Child {
    let message = format!(
        "<DS_DRIVER_ACTION_DATA><IMAGE><SOURCE>{img}</SOURCE><PATH>{img}</PATH></IMAGE>{}\
         </DS_DRIVER_ACTION_DATA>",
        e.image_ds(IMAGE_DS, true, &[])
    );
    let mut child = e
        .command(&["ds", action, &id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rbdx");
    child.stdin.take().unwrap().write_all(rbdx_one::base64::encode(message.as_bytes()).as_bytes()).unwrap();
    child
}

/// Waits for `child`, for at most [`ACTION_TIMEOUT`] (then kills it and fails).
fn finish(mut child: Child, what: &str) -> Output {
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    }
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > ACTION_TIMEOUT {
            let _ = child.kill();
            panic!("{what}: still running after {ACTION_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Checks that a run ended cleanly: success, or an exit code (no signal, no
/// panic) with exactly one line of error besides the log lines. Returns whether
/// it succeeded, or its error line.
fn clean(out: &Output, what: &str) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.signal().is_none(), "{what}: killed by signal {:?}: {err}", out.status.signal());
    assert!(!err.contains("panicked"), "{what}: panicked: {err}");
    if out.status.success() {
        return Ok(());
    }
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !LOG_PREFIXES.iter().any(|p| l.starts_with(p))).collect();
    assert_eq!(lines.len(), 1, "{what}: one line of error expected, got: {err}");
    Err(lines[0].to_string())
}

/// Asserts that a run succeeded.
fn succeeded(out: &Output, what: &str) {
    if let Err(e) = clean(out, what) {
        panic!("{what} failed: {e}");
    }
}

fn exists(c: &Cluster, pool: &str, name: &str) -> bool {
    match c.ioctx(pool).unwrap().open_read_only(name, None) {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => panic!("opening {name}: {e}"),
    }
}

/// The user snapshots of `name`, and how many are in the trash namespace.
fn snapshots(c: &Cluster, pool: &str, name: &str) -> (BTreeSet<String>, usize) {
    let io = c.ioctx(pool).unwrap();
    let img = io.open_read_only(name, None).unwrap();
    let mut user = BTreeSet::new();
    let mut trashed = 0;
    for s in img.snapshots().unwrap() {
        match img.snap_namespace(s.id).unwrap() {
            SnapNamespace::User => {
                user.insert(s.name);
            }
            _ => trashed += 1,
        }
    }
    (user, trashed)
}

/// The `rbdx.*` metadata of `name`.
fn book(c: &Cluster, pool: &str, name: &str) -> BTreeMap<String, String> {
    let io = c.ioctx(pool).unwrap();
    let img = io.open_read_only(name, None).unwrap();
    img.metadata_list("rbdx.").unwrap().into_iter().collect()
}

/// Asserts that the bookkeeping of disk `head` (no revert made: no carriers)
/// describes exactly its snapshots `snaps`: `rbdx.disk` = the head and
/// `rbdx.snap.<s>` = the head for each, nothing else.
fn assert_book_is(c: &Cluster, pool: &str, head: &str, snaps: &BTreeSet<String>) {
    let mut want: BTreeMap<String, String> =
        snaps.iter().map(|s| (format!("rbdx.snap.{s}"), head.to_string())).collect();
    want.insert("rbdx.disk".into(), head.into());
    assert_eq!(book(c, pool, head), want, "the bookkeeping of {head}");
}

/// Images and trash entries named `name` or `name-…`.
fn leftovers(c: &Cluster, pool: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let io = c.ioctx(pool).unwrap();
    let ours =
        |n: &String| n == name || n.starts_with(&format!("{name}-")) || n.starts_with(&format!("{name}."));
    let images = io.list_images().unwrap().into_iter().map(|e| e.name).filter(ours).collect();
    let trash = io.trash_list().unwrap().into_iter().map(|e| e.name).filter(ours).collect();
    (images, trash)
}

/// Deploys VMs `vms` (disk 0 a clone of `img`) all at once.
fn deploy_at_once(e: &OneEnv, img: &ImageSpec, vms: &[u32]) {
    for vm in vms {
        vm_of(e, *vm, img);
    }
    let runs: Vec<Child> = vms.iter().map(|vm| spawn_clone(e, img, *vm)).collect();
    for (vm, run) in vms.iter().zip(runs) {
        succeeded(&finish(run, &format!("clone for VM {vm}")), &format!("clone for VM {vm}"));
    }
}

#[test]
fn snapshots_of_ten_disks_at_once_and_two_of_one_disk_at_once() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let img = image(&e, fresh_id());
    let vms: Vec<u32> = (0..10).map(|_| fresh_id()).collect();
    let start = Instant::now();
    deploy_at_once(&e, &img, &vms);
    assert_eq!(
        snapshots(c, &pool, &img.name),
        (BTreeSet::from(["snap".to_string()]), 0),
        "one base snapshot"
    );
    for vm in &vms {
        let st = ops::stat(c, &ImageSpec::new(&pool, &head(&img, *vm)).unwrap()).unwrap();
        assert_eq!(st.parent.map(|p| (p.image.name, p.snap)), Some((img.name.clone(), "snap".to_string())));
    }
    eprintln!("10 clones at once: all succeeded ({:.1} s)", start.elapsed().as_secs_f64());

    // Snapshot 0 of each disk, all at once.
    let start = Instant::now();
    let runs: Vec<Child> = vms.iter().map(|vm| spawn_snap_create(&e, *vm, "0")).collect();
    for (vm, run) in vms.iter().zip(runs) {
        succeeded(&finish(run, "snap_create"), &format!("snap_create 0 of VM {vm}"));
    }
    let zero = BTreeSet::from(["0".to_string()]);
    for vm in &vms {
        let h = head(&img, *vm);
        assert_eq!(snapshots(c, &pool, &h), (zero.clone(), 0), "{h} has exactly its snapshot");
        assert_book_is(c, &pool, &h, &zero);
    }
    eprintln!("10 snap_create at once: all succeeded ({:.1} s)", start.elapsed().as_secs_f64());

    // Two snapshots of one disk at once: on fresh disks (both calls find the disk
    // outside the scheme and adopt it), then on a disk in it (VM 0's).
    let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
    let fresh: Vec<u32> = (0..4).map(|_| fresh_id()).collect();
    deploy_at_once(&e, &img, &fresh);
    let rounds = fresh
        .iter()
        .map(|vm| (*vm, ["1", "2"]))
        .chain([["1", "2"], ["3", "4"], ["5", "6"], ["7", "8"]].into_iter().map(|pair| (vms[0], pair)));
    for (vm, pair) in rounds {
        let h = head(&img, vm);
        let (before, _) = snapshots(c, &pool, &h);
        let runs: Vec<Child> = pair.iter().map(|s| spawn_snap_create(&e, vm, s)).collect();
        let mut want = before.clone();
        for (s, run) in pair.iter().zip(runs) {
            let what = format!("snap_create {s} of {h}");
            match clean(&finish(run, &what), &what) {
                Ok(()) => {
                    *outcomes.entry("succeeded").or_default() += 1;
                    want.insert(s.to_string());
                }
                Err(line) => {
                    eprintln!("{what} failed: {line}");
                    *outcomes.entry("failed in one line").or_default() += 1;
                }
            }
        }
        let (got, trashed) = snapshots(c, &pool, &h);
        assert_eq!(trashed, 0);
        // A failed call may still have taken its snapshot: then it must be booked.
        assert!(
            got.is_superset(&want) && got.iter().all(|s| before.contains(s) || pair.contains(&s.as_str()))
        );
        assert_book_is(c, &pool, &h, &got);
    }
    eprintln!("2 snap_create of one disk at once, 8 times: {outcomes:?}; the bookkeeping always agreed");

    let runs: Vec<Child> = vms.iter().chain(&fresh).map(|vm| spawn_delete(&e, *vm)).collect();
    for run in runs {
        succeeded(&finish(run, "delete"), "delete");
    }
    assert_eq!(
        snapshots(c, &pool, &img.name),
        (BTreeSet::new(), 0),
        "the base snapshot went with the last clone"
    );
    ops::remove(c, &img, ops::RemoveOptions::default()).unwrap();
    assert_eq!(leftovers(c, &pool, &img.name), (vec![], vec![]));
}

/// How long before the clone the removal starts, in ms (negative: after it).
const LEADS: [i64; 10] = [-900, -500, -250, -150, -60, 0, 60, 150, 250, 500];

#[test]
fn a_clone_racing_the_removal_of_its_image_leaves_nothing_behind() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    let mut leaks = Vec::new();
    // Each lead twice: an image without snapshots, and one with snapshots of its
    // own (as the datastore makes them), which makes rm's path longer.
    let rounds = LEADS.into_iter().flat_map(|lead| [(lead, false), (lead, true)]);
    for (round, (lead, with_snapshots)) in rounds.enumerate() {
        let id = fresh_id();
        let img = image(&e, id);
        if with_snapshots {
            let d = Disk::new(c, img.clone(), &rbdx_one::naming::ONE);
            for s in ["0", "1"] {
                d.snapshot_create(s).unwrap();
            }
        }
        let sum = checksum(&c.ioctx(&pool).unwrap().open_read_only(&img.name, None).unwrap());
        let vm = fresh_id();
        vm_of(&e, vm, &img);
        let pause = Duration::from_millis(lead.unsigned_abs());
        let (clone, rm) = if lead >= 0 {
            let rm = spawn_ds(&e, "rm", id, &img);
            std::thread::sleep(pause);
            (spawn_clone(&e, &img, vm), rm)
        } else {
            let clone = spawn_clone(&e, &img, vm);
            std::thread::sleep(pause);
            (clone, spawn_ds(&e, "rm", id, &img))
        };
        let cloned = clean(&finish(clone, "clone"), &format!("round {round}: clone"));
        let removed = clean(&finish(rm, "rm"), &format!("round {round}: rm"));
        let h = head(&img, vm);
        let has_clone = exists(c, &pool, &h);
        let has_image = exists(c, &pool, &img.name);
        let io = c.ioctx(&pool).unwrap();
        // Reclaim (from any test) may be requeueing it: restored for a moment
        // under an internal name, then trashed under that name.
        let ours = |n: &str| n != img.name && reclaim_origin(n) == img.name;
        let trashed = io.trash_list().unwrap().into_iter().find(|t| reclaim_origin(&t.name) == img.name);
        let requeued = io.list_images().unwrap().into_iter().any(|i| ours(&i.name));
        let marked = requeued
            || trashed.as_ref().is_some_and(|t| {
                let i = io.open_by_id_read_only(&t.id).unwrap();
                i.metadata_get(rbdx_core::ops::disk::KEY_RECLAIM).unwrap().is_some()
            });
        let trashed = trashed.map(|t| t.name).or(requeued.then(|| img.name.clone()));
        let outcome = format!(
            "clone {}, rm {}: {}",
            if cloned.is_ok() { "ok" } else { "failed" },
            if removed.is_ok() { "ok" } else { "failed" },
            match (has_clone, has_image, trashed.is_some()) {
                (false, false, false) => "image gone, no clone",
                (false, true, false) => "image kept, no clone",
                (true, true, false) => "clone made, image kept",
                (true, false, true) if marked => "clone made, image in the trash for reclaim",
                _ => "INCONSISTENT",
            }
        );
        eprintln!(
            "round {round} (rm {lead:+} ms before the clone, {} snapshots): {outcome}; {cloned:?} {removed:?}",
            if with_snapshots { "with" } else { "no" }
        );
        assert!(
            !outcome.ends_with("INCONSISTENT"),
            "round {round}: clone {has_clone}, image {has_image}, trash {trashed:?}"
        );
        // A successful clone is there; a successful rm left no image in place.
        assert!(cloned.is_err() || has_clone, "round {round}: the clone succeeded but is not there");
        assert!(removed.is_err() || !has_image, "round {round}: rm succeeded but the image is there");
        if has_image {
            let io = c.ioctx(&pool).unwrap();
            let now = checksum(&io.open_read_only(&img.name, None).unwrap());
            assert_eq!(now, sum, "round {round}: the image kept its data");
        }
        *outcomes.entry(outcome.clone()).or_default() += 1;

        // Whatever happened, deleting what is left frees everything.
        if has_clone {
            succeeded(&finish(spawn_delete(&e, vm), "delete"), &format!("round {round}: deleting the clone"));
        }
        if has_image {
            succeeded(&finish(spawn_ds(&e, "rm", id, &img), "rm"), &format!("round {round}: rm again"));
        }
        let waiting = reclaim_until_gone(c, &pool, |n| n == img.name);
        if !waiting.is_empty() {
            let snaps = free_by_hand(c, &pool, &img.name);
            eprintln!("round {round}: LEAK: {} stays in the trash with snapshots {snaps:?}", img.name);
            leaks.push(format!(
                "round {round} ({outcome}): {} in the trash with snapshots {snaps:?}",
                img.name
            ));
        }
        assert_eq!(leftovers(c, &pool, &img.name), (vec![], vec![]), "round {round}: left behind");
    }
    eprintln!("clone racing rm, {} rounds: {outcomes:?}", 2 * LEADS.len());
    assert!(leaks.is_empty(), "reclaim never frees: {leaks:#?}");
}

/// Frees the trashed image `name` that reclaim cannot (so that a failed test
/// leaves the cluster clean): restores it, removes its snapshots, removes it.
/// Returns the user snapshots it had.
fn free_by_hand(c: &Cluster, pool: &str, name: &str) -> Vec<String> {
    let io = c.ioctx(pool).unwrap();
    let entry = io.trash_list().unwrap().into_iter().find(|t| reclaim_origin(&t.name) == name).unwrap();
    io.trash_restore(&entry.id, name).unwrap();
    let (user, _) = snapshots(c, pool, name);
    let img = io.open(name).unwrap();
    for s in &user {
        img.snap_remove(s).unwrap();
    }
    drop(img);
    io.remove_image(name).unwrap();
    user.into_iter().collect()
}

#[test]
fn ten_deletes_and_a_clone_of_the_same_image_at_once() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    for round in 0..2 {
        let start = Instant::now();
        let img = image(&e, fresh_id());
        let vms: Vec<u32> = (0..10).map(|_| fresh_id()).collect();
        deploy_at_once(&e, &img, &vms);
        let late = fresh_id();
        vm_of(&e, late, &img);
        // The clone starts among the deletes (in the middle in round 0, last in round 1).
        let at = if round == 0 { 5 } else { 10 };
        let mut runs: Vec<(String, Child)> = Vec::new();
        for (i, vm) in vms.iter().enumerate() {
            if i == at {
                runs.push((format!("clone for VM {late}"), spawn_clone(&e, &img, late)));
            }
            runs.push((format!("delete of VM {vm}"), spawn_delete(&e, *vm)));
        }
        if at == vms.len() {
            runs.push((format!("clone for VM {late}"), spawn_clone(&e, &img, late)));
        }
        for (what, run) in runs {
            succeeded(&finish(run, &what), &format!("round {round}: {what}"));
        }
        for vm in &vms {
            assert!(!exists(c, &pool, &head(&img, *vm)), "round {round}: VM {vm}'s disk is gone");
        }
        // The new disk reads the image: from @snap, or from the snapshot a delete
        // removed under it (kept in the trash namespace while it has a child).
        let h = head(&img, late);
        let st = ops::stat(c, &ImageSpec::new(&pool, &h).unwrap()).unwrap();
        let parent = st.parent.expect("the new disk is a clone");
        assert_eq!(parent.image.name, img.name, "round {round}");
        let (user, trashed) = snapshots(c, &pool, &img.name);
        let from_trash = parent.snap_namespace == SnapNamespace::Trash;
        assert!(
            user.iter().all(|s| s == "snap") && user.len() + trashed == 1,
            "round {round}: {user:?} {trashed}"
        );
        succeeded(&finish(spawn_delete(&e, late), "delete"), &format!("round {round}: delete of VM {late}"));
        assert_eq!(snapshots(c, &pool, &img.name), (BTreeSet::new(), 0), "round {round}: no snapshot left");
        ops::remove(c, &img, ops::RemoveOptions::default()).unwrap();
        assert_eq!(leftovers(c, &pool, &img.name), (vec![], vec![]), "round {round}");
        eprintln!(
            "round {round}: 10 deletes and a clone at once: all succeeded, the clone read {} ({:.1} s)",
            if from_trash { "a snapshot a delete removed (trash namespace)" } else { "@snap" },
            start.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn reclaim_frees_an_image_that_got_a_snapshot_while_it_was_removed() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, clone) = trashed_with_a_user_snapshot(&e);
    Disk::new(c, clone, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    let waiting = reclaim_until_gone(c, &pool, |n| n == img.name);
    if !waiting.is_empty() {
        let snaps = free_by_hand(c, &pool, &img.name);
        panic!("reclaim never frees {waiting:?}: it has snapshots {snaps:?}");
    }
    assert_eq!(leftovers(c, &pool, &img.name), (vec![], vec![]));
}

/// Reclaim interrupted right after it restored such an image to drop its
/// snapshot: the next pass (this test's or a concurrent one's) finishes the job.
#[test]
fn reclaim_interrupted_while_it_requeues_an_image_converges() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let io = c.ioctx(&pool).unwrap();
    // The state right after the restore: the image under its in-transit name,
    // marked, with the user snapshot and a clone of the older one.
    let (img, clone) = with_a_user_snapshot_and_a_clone(&e);
    let restored = format!("{}.rbdx-reclaim-{:x}", img.name, fresh_id());
    io.rename_image(&img.name, &restored).unwrap();
    let data = checksum(&io.open_read_only(&clone.name, None).unwrap());
    // While the clone lives, reclaim moves it back to the trash, without the
    // user snapshot, the clone still reading it.
    let spec = ImageSpec::new(&pool, "x").unwrap();
    for _ in 0..20 {
        rbdx_core::ops::disk::reclaim(c, &spec).unwrap();
        if !leftovers(c, &pool, &img.name).0.contains(&restored) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(leftovers(c, &pool, &img.name), (vec![clone.name.clone()], vec![restored.clone()]));
    assert_eq!(
        trashed_snapshot_kinds(c, &pool, &restored),
        vec![SnapNamespace::Trash],
        "only the snapshot the clone reads is left"
    );
    assert_eq!(
        checksum(&io.open_read_only(&clone.name, None).unwrap()),
        data,
        "the clone reads the same data"
    );
    Disk::new(c, clone, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    assert_eq!(reclaim_until_gone(c, &pool, |n| n == img.name), Vec::<String>::new());
    assert_eq!(leftovers(c, &pool, &img.name), (vec![], vec![]));
}

/// Each host's monitor reclaims the whole pool: four reclaims at once, each a
/// client of its own, over entries that each need a requeue (a user snapshot
/// taken while they were removed, a live clone). None fails (a snapshot or an
/// entry another one took away meanwhile is its to finish), and each entry ends
/// back in the trash with only the snapshot its clone reads.
#[test]
fn four_reclaims_at_once_over_entries_that_need_a_requeue() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let spec = ImageSpec::new(&pool, "x").unwrap();
    for round in 0..3 {
        let entries: Vec<(ImageSpec, ImageSpec)> = (0..3).map(|_| trashed_with_a_user_snapshot(&e)).collect();
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let own = e.cluster.connect_new();
                        rbdx_core::ops::disk::reclaim(&own, &spec)
                    })
                })
                .collect();
            for (i, run) in runs.into_iter().enumerate() {
                if let Err(err) = run.join().expect("reclaim panicked") {
                    panic!("round {round}: reclaim {i} failed: {err}");
                }
            }
        });
        // A requeue another test's reclaim has under way at this moment is its
        // to finish: give it time.
        let restored = || entries.iter().any(|(img, _)| leftovers(c, &pool, &img.name).0.len() > 1);
        for _ in 0..20 {
            if !restored() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for (img, clone) in &entries {
            let (images, trash) = leftovers(c, &pool, &img.name);
            assert_eq!(
                images,
                vec![clone.name.clone()],
                "round {round}: {img} was requeued, not left restored"
            );
            assert_eq!(trash.len(), 1, "round {round}: {img} is in the trash once: {trash:?}");
            let kinds = trashed_snapshot_kinds(c, &pool, &trash[0]);
            assert_eq!(
                kinds,
                vec![SnapNamespace::Trash],
                "round {round}: {img} keeps only what its clone reads"
            );
        }
        for (img, clone) in entries {
            Disk::new(c, clone, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
            assert_eq!(reclaim_until_gone(c, &pool, |n| n == img.name), Vec::<String>::new());
            assert_eq!(leftovers(c, &pool, &img.name), (vec![], vec![]), "round {round}");
        }
    }
}

/// The namespaces of the snapshots of trash entry `name`.
fn trashed_snapshot_kinds(c: &Cluster, pool: &str, name: &str) -> Vec<SnapNamespace> {
    let io = c.ioctx(pool).unwrap();
    let entry = io.trash_list().unwrap().into_iter().find(|t| t.name == name).unwrap();
    let img = io.open_by_id_read_only(&entry.id).unwrap();
    img.snapshots().unwrap().iter().map(|s| img.snap_namespace(s.id).unwrap()).collect()
}

/// An image with a clone of its snapshot `snap`, that snapshot then removed
/// (kept in the trash namespace for the clone) and taken again (a user
/// snapshot), marked for reclaim: what `rm` leaves when a clone races it.
fn with_a_user_snapshot_and_a_clone(e: &OneEnv) -> (ImageSpec, ImageSpec) {
    let c = e.cluster.connect();
    let img = image(e, fresh_id());
    let io = c.ioctx(&e.cluster.pool).unwrap();
    rbdx_core::ops::disk::ensure_snapshot(&io, &img.name, "snap").unwrap();
    let clone = img.sibling(&format!("{}-1-0", img.name)).unwrap();
    ops::clone(c, &img.at("snap").unwrap(), &clone, &ops::CloneOptions::default()).unwrap();
    let i = io.open(&img.name).unwrap();
    i.snap_remove("snap").unwrap();
    i.snap_create("snap").unwrap();
    i.metadata_set(rbdx_core::ops::disk::KEY_RECLAIM, "1").unwrap();
    (img, clone)
}

/// The end state of the race above where the clone took the base snapshot after
/// `rm` had listed the image's snapshots, made step by step as `rm` would: the
/// image is in the trash for reclaim with a user snapshot, and a clone of it.
fn trashed_with_a_user_snapshot(e: &OneEnv) -> (ImageSpec, ImageSpec) {
    let (img, clone) = with_a_user_snapshot_and_a_clone(e);
    e.cluster.connect().ioctx(&e.cluster.pool).unwrap().trash_move(&img.name, 0).unwrap();
    (img, clone)
}
