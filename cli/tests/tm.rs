//! The OpenNebula TM actions, run as oned runs them (the real binary, argv as oned
//! writes it into the transfer file), against the oned double and the real test
//! cluster as the restricted client.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::one::{OneEnv, assert_fails, assert_ok, vm_doc};
use rbdx_tests::{MIB, checksum, fill};

const LOCAL: &str = "EXECUTION = local\nCEPH_TIMEOUT = 20\n";
const IMAGE_DS: u32 = 100;
const SYSTEM_DS: u32 = 0;

fn env() -> OneEnv {
    OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), LOCAL)
}

/// Ids no other test or earlier run uses in the shared cluster.
fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 1_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

fn spec(pool: &str, name: &str) -> ImageSpec {
    ImageSpec::new(pool, name).unwrap()
}

fn disk_path(vm: u32, disk: u32) -> String {
    format!("localhost:/var/lib/one//datastores/{SYSTEM_DS}/{vm}/disk.{disk}")
}

/// Images and trash entries whose names start with any of `prefixes`.
fn leftovers(c: &Cluster, pool: &str, prefixes: &[String]) -> (Vec<String>, Vec<String>) {
    let io = c.ioctx(pool).unwrap();
    let m = |n: &String| {
        prefixes.iter().any(|p| n == p || n.starts_with(&format!("{p}-")) || n.starts_with(&format!("{p}.")))
    };
    let images = io.list_images().unwrap().into_iter().map(|e| e.name).filter(m).collect();
    let trash = io.trash_list().unwrap().into_iter().map(|e| e.name).filter(m).collect();
    (images, trash)
}

fn data_pool(c: &Cluster, s: &ImageSpec) -> Option<String> {
    ops::stat(c, s).unwrap().data_pool
}

fn make_image(c: &Cluster, s: &ImageSpec, ec: Option<&str>, mb: u64, seed: u8) {
    ops::create(c, s, mb * MIB, &CreateOptions::with_data_pool(ec)).unwrap();
    let io = ops::ioctx(c, s).unwrap();
    fill(&io.open(&s.name).unwrap(), 0, 8 * MIB, seed);
}

fn sum(c: &Cluster, s: &ImageSpec) -> u64 {
    let io = ops::ioctx(c, s).unwrap();
    checksum(&io.open_read_only(&s.name, s.snap.as_deref()).unwrap())
}

fn read_at(c: &Cluster, s: &ImageSpec, off: u64, len: usize) -> Vec<u8> {
    let io = ops::ioctx(c, s).unwrap();
    let mut buf = vec![0; len];
    io.open_read_only(&s.name, None).unwrap().read_at(off, &mut buf).unwrap();
    buf
}

/// The whole life of a VM's disks through the TM actions.
fn lifecycle(ec: bool) {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let want_pool = ec.then(|| e.cluster.ec_pool.clone());
    let (img, pimg, saved, vm) = (fresh_id(), fresh_id(), fresh_id(), fresh_id());
    let (img_s, pimg_s) = (spec(&pool, &format!("one-{img}")), spec(&pool, &format!("one-{pimg}")));
    make_image(c, &img_s, want_pool.as_deref(), 64, 1);
    make_image(c, &pimg_s, want_pool.as_deref(), 32, 2);

    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, ec, &[]));
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, ec));
    let disks = [
        e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 64),
        e.image_disk(1, &pimg_s.to_string(), false, IMAGE_DS, 32),
        e.volatile_disk(2, "fs", Some("ext4"), SYSTEM_DS, 64),
        e.volatile_disk(3, "swap", None, SYSTEM_DS, 16),
    ];
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &disks));
    let (vms, ds, sys) = (vm.to_string(), IMAGE_DS.to_string(), SYSTEM_DS.to_string());

    // Deploy: prolog lines as oned writes them.
    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk_path(vm, 0), &vms, &ds]));
    assert_ok(&e.tm("ln", &[&format!("frontend:{pimg_s}"), &disk_path(vm, 1), &vms, &ds]));
    assert_ok(&e.tm("mkimage", &["64", "raw", &disk_path(vm, 2), &vms, &sys]));
    assert_ok(&e.tm("mkswap", &["16", &disk_path(vm, 3), &vms, &sys]));

    let d0 = spec(&pool, &format!("one-{img}-{vm}-0"));
    let d2 = spec(&pool, &format!("one-sys-{vm}-2"));
    let d3 = spec(&pool, &format!("one-sys-{vm}-3"));
    let st = ops::stat(c, &d0).unwrap();
    let p = st.parent.as_ref().expect("a CoW clone");
    assert_eq!((p.image.name.as_str(), p.snap.as_str()), (img_s.name.as_str(), "snap"));
    assert_eq!(sum(c, &d0), sum(c, &img_s.at("snap").unwrap()));
    for s in [&d0, &d2, &d3] {
        assert_eq!(data_pool(c, s), want_pool, "{s}");
    }
    // ext4 superblock magic at 1024 + 56; swap signature at 4096 - 10.
    assert_eq!(read_at(c, &d2, 1024 + 56, 2), [0x53, 0xef]);
    assert_eq!(read_at(c, &d3, 4086, 10), b"SWAPSPACE2");
    assert_eq!(ops::stat(c, &d2).unwrap().size, 64 * MIB);

    // Snapshots on the running disk, a revert, and deletes in any order.
    assert_ok(&e.tm("snap_create", &[&disk_path(vm, 0), "0", &vms, &ds]));
    let snap0 = sum(c, &d0);
    let io = ops::ioctx(c, &d0).unwrap();
    fill(&io.open(&d0.name).unwrap(), 0, 4 * MIB, 9);
    assert_ok(&e.tm("snap_create", &[&disk_path(vm, 0), "1", &vms, &ds]));
    let snap1 = sum(c, &d0);
    assert_ok(&e.tm("snap_revert", &[&disk_path(vm, 0), "0", &vms, &ds]));
    assert_eq!(sum(c, &d0), snap0);
    assert_eq!(data_pool(c, &d0), want_pool, "the reverted head");
    assert_ok(&e.tm("snap_create", &[&disk_path(vm, 0), "2", &vms, &ds]));
    assert_ok(&e.tm("snap_revert", &[&disk_path(vm, 0), "1", &vms, &ds]));
    assert_eq!(sum(c, &d0), snap1);
    for s in ["0", "2"] {
        assert_ok(&e.tm("snap_delete", &[&disk_path(vm, 0), s, &vms, &ds]));
    }

    // Save-as (CoW) of the current state, then of snapshot 1.
    let saved_s = spec(&pool, &format!("one-{saved}"));
    assert_ok(&e.tm("cpds", &[&disk_path(vm, 0), &saved_s.to_string(), "-1", &vms, &ds]));
    assert_eq!(sum(c, &saved_s), snap1);
    assert_eq!(data_pool(c, &saved_s), want_pool);
    assert!(ops::stat(c, &saved_s).unwrap().parent.is_some(), "save-as is a CoW clone");
    let saved2_s = spec(&pool, &format!("one-{saved}-b"));
    assert_ok(&e.tm("cpds", &[&disk_path(vm, 0), &saved2_s.to_string(), "1", &vms, &ds]));
    assert_eq!(sum(c, &saved2_s), snap1);
    assert_ok(&e.tm("snap_delete", &[&disk_path(vm, 0), "1", &vms, &ds]));

    // Grow; a running VM's resize is left to the hypervisor.
    assert_ok(&e.tm("resize", &[&disk_path(vm, 0), "128", &vms, &ds]));
    assert_eq!(ops::stat(c, &d0).unwrap().size, 128 * MIB);
    assert_ok(
        &e.tm("mv", &[&disk_path(vm, 0), &disk_path(vm, 0).replace("localhost", "otherhost"), &vms, &ds]),
    );
    assert_ok(&e.tm("mvds", &[&disk_path(vm, 1), &pimg_s.to_string(), &vms, &ds]));

    // Undeployed: the VM left the host, the work goes to a bridge.
    e.oned.set_vm(vm, vm_doc(vm, "elsewhere", 3, &disks));
    e.oned.set_hosts(&[("localhost", 2)]);
    for d in 0..4 {
        assert_ok(&e.tm("delete", &[&disk_path(vm, d), &vms, if d < 2 { &ds } else { &sys }]));
    }
    assert_ok(&e.tm("delete", &[&format!("localhost:/var/lib/one//datastores/0/{vm}"), &vms, &sys]));
    assert!(ops::stat(c, &pimg_s).is_ok(), "a persistent image is not the VM's to delete");
    assert!(ops::stat(c, &d0).unwrap_err().is_not_found());
    assert_eq!(sum(c, &saved_s), snap1, "the saved image outlives its source disk");

    // The saved images go: the disk's trashed images are reclaimed; then the
    // images themselves (as the datastore's rm will do). Nothing is left.
    let (_, waiting) = leftovers(c, &pool, &[format!("one-{img}-{vm}-0")]);
    assert!(!waiting.is_empty(), "the disk's images wait in the trash for the saved clones");
    for s in [&saved_s, &saved2_s] {
        ops::remove(c, s, ops::RemoveOptions::default()).unwrap();
    }
    let disk = format!("one-{img}-{vm}-0");
    let waiting =
        rbdx_tests::reclaim_until_gone(c, &pool, |n| n == disk || n.starts_with(&format!("{disk}-")));
    assert!(waiting.is_empty(), "reclaimed once the clones are gone: {waiting:?}");
    for s in [&img_s, &pimg_s] {
        ops::remove(c, s, ops::RemoveOptions::default()).unwrap();
    }
    let prefixes =
        [format!("one-{img}"), format!("one-{pimg}"), format!("one-{saved}"), format!("one-sys-{vm}")];
    let (images, trash) = leftovers(c, &pool, &prefixes);
    assert!(images.is_empty(), "images left: {images:?}");
    assert!(trash.is_empty(), "trash left: {trash:?}");
}

#[test]
fn vm_lifecycle_on_a_replicated_datastore() {
    lifecycle(false);
}

#[test]
fn vm_lifecycle_on_an_ec_datastore() {
    lifecycle(true);
}

#[test]
fn actions_converge_when_run_again() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, Some(&e.cluster.ec_pool), 16, 3);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, true));
    let disks = [
        e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 16),
        e.volatile_disk(1, "fs", Some("ext4"), SYSTEM_DS, 16),
    ];
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &disks));
    let (vms, ds, sys) = (vm.to_string(), IMAGE_DS.to_string(), SYSTEM_DS.to_string());
    let clone = [format!("frontend:{img_s}"), disk_path(vm, 0), vms.clone(), ds.clone()];
    let clone: Vec<&str> = clone.iter().map(String::as_str).collect();
    for _ in 0..2 {
        assert_ok(&e.tm("clone", &clone));
        assert_ok(&e.tm("mkimage", &["16", "raw", &disk_path(vm, 1), &vms, &sys]));
        assert_ok(&e.tm("snap_create", &[&disk_path(vm, 0), "0", &vms, &ds]));
    }
    for _ in 0..2 {
        assert_ok(&e.tm("snap_revert", &[&disk_path(vm, 0), "0", &vms, &ds]));
    }
    for _ in 0..2 {
        assert_ok(&e.tm("snap_delete", &[&disk_path(vm, 0), "0", &vms, &ds]));
    }
    for _ in 0..2 {
        assert_ok(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]));
        assert_ok(&e.tm("delete", &[&disk_path(vm, 1), &vms, &sys]));
    }
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
    let (images, trash) = leftovers(c, &pool, &[format!("one-{img}"), format!("one-sys-{vm}")]);
    assert!(images.is_empty() && trash.is_empty(), "{images:?} {trash:?}");
}

#[test]
fn rbdx_trace_records_where_an_actions_time_went() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, None, 16, 5);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 16)]));
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    let trace = e.dir.path().join("trace.jsonl");
    let run = |action: &str, args: &[&str]| {
        let out = e.command(&["tm", action]).args(args).env("RBDX_TRACE", &trace).output().unwrap();
        assert_ok(&out);
    };
    run("clone", &[&format!("frontend:{img_s}"), &disk_path(vm, 0), &vms, &ds]);
    run("snap_create", &[&disk_path(vm, 0), "0", &vms, &ds]);
    run("snap_delete", &[&disk_path(vm, 0), "0", &vms, &ds]);
    run("delete", &[&disk_path(vm, 0), &vms, &ds]);
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(!text.contains(&e.key()), "no secret in a trace");
    let runs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = runs.iter().map(|r| r["args"][1].as_str().unwrap()).collect();
    assert_eq!(actions, ["clone", "snap_create", "snap_delete", "delete"]);
    // Span names with a host's prefix dropped, and how often each came.
    let count = |run: &serde_json::Value, name: &str| {
        let spans = run["spans"].as_array().unwrap();
        spans.iter().filter(|s| s["name"].as_str().unwrap().trim_start_matches("host: ") == name).count()
    };
    for r in &runs {
        assert!(r["us"].as_u64().unwrap() > 0);
        assert!(count(r, "connect") >= 1, "{r}");
        assert!(count(r, "oned one.vm.info") >= 1, "{r}");
    }
    assert_eq!(count(&runs[0], "clone"), 1, "{}", runs[0]);
    assert_eq!(count(&runs[0], "snapshot create"), 1, "the base snapshot: {}", runs[0]);
    assert_eq!(count(&runs[1], "snapshot create"), 1, "{}", runs[1]);
    assert_eq!(count(&runs[2], "snapshot remove"), 1, "{}", runs[2]);
    assert_eq!(count(&runs[3], "snapshot create") + count(&runs[3], "snapshot remove"), 1, "{}", runs[3]);
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn bad_input_fails_in_one_line_and_changes_nothing() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, None, 8, 4);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, false));
    // A DISK missing the attributes the actions need.
    let mut bare = e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 8);
    bare.0.retain(|(k, _)| *k != "SOURCE" && *k != "POOL_NAME");
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[bare]));
    let ours = [format!("one-{img}"), format!("one-sys-{vm}")];
    let before = leftovers(c, &pool, &ours);
    let src = format!("frontend:{img_s}");
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("clone", vec![src.clone(), disk_path(vm, 0), vms.clone()], "wrong number of arguments"),
        ("clone", vec![img_s.to_string(), disk_path(vm, 0), vms.clone(), ds.clone()], "expected host:path"),
        (
            "clone",
            vec![src.clone(), "localhost:/var/lib/one/datastores/0/5/disk.x".into(), vms.clone(), ds.clone()],
            "not a disk path",
        ),
        ("clone", vec![src.clone(), disk_path(vm, 0), "12a".into(), ds.clone()], "invalid VM id"),
        ("clone", vec![src.clone(), disk_path(vm, 0), "-3".into(), ds.clone()], "invalid VM id"),
        (
            "clone",
            vec![src.clone(), disk_path(vm, 0), vms.clone(), "99999999999".into()],
            "invalid datastore id",
        ),
        ("clone", vec![src.clone(), disk_path(vm, 7), vms.clone(), ds.clone()], "has no disk 7"),
        (
            "clone",
            vec![src.clone(), disk_path(vm, 0), "4242".into(), ds.clone()],
            "Error getting virtual machine",
        ),
        (
            "clone",
            vec!["-oProxyCommand=x:one/one-1".into(), disk_path(vm, 0), vms.clone(), ds.clone()],
            "invalid host",
        ),
        (
            "mkimage",
            vec!["-5".into(), "raw".into(), disk_path(vm, 1), vms.clone(), ds.clone()],
            "invalid size",
        ),
        (
            "mkimage",
            vec!["5".into(), "raw;rm".into(), disk_path(vm, 1), vms.clone(), ds.clone()],
            "invalid format",
        ),
        ("snap_create", vec![disk_path(vm, 0), "x".into(), vms.clone(), ds.clone()], "invalid snapshot id"),
        (
            "snap_revert",
            vec![disk_path(vm, 0), "0".into(), vms.clone(), "4242".into()],
            "Error getting datastore",
        ),
        ("resize", vec![disk_path(vm, 0), "1G".into(), vms.clone(), ds.clone()], "invalid size"),
        (
            "cpds",
            vec![disk_path(vm, 0), "one".into(), "-1".into(), vms.clone(), ds.clone()],
            "invalid image spec",
        ),
        ("no_such_action", vec![], "unknown TM action"),
    ];
    for (action, args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails(&e.tm(action, &args), want);
    }
    assert_eq!(leftovers(c, &pool, &ours), before, "nothing changed in Ceph");
    let io = ops::ioctx(c, &img_s).unwrap();
    assert!(
        io.open_read_only(&img_s.name, None).unwrap().snapshots().unwrap().is_empty(),
        "no base snapshot taken"
    );
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn names_are_data_never_shell() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let vm = fresh_id();
    let marker = e.dir.path().join("pwned");
    let name = format!("one-{} $(touch {}) `id` 'q\"", fresh_id(), marker.display()).replace('/', "_");
    let img_s = spec(&pool, &name);
    make_image(c, &img_s, None, 8, 5);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 8)]));
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk_path(vm, 0), &vms, &ds]));
    let d0 = spec(&pool, &format!("{name}-{vm}-0"));
    assert!(ops::stat(c, &d0).is_ok(), "the clone has the literal name");
    assert!(!marker.exists(), "nothing was executed");
    assert_ok(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]));
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn twenty_vms_deployed_at_once_share_one_base_snapshot() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let img = fresh_id();
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, Some(&e.cluster.ec_pool), 8, 6);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    let vms: Vec<u32> = (0..20).map(|_| fresh_id()).collect();
    for vm in &vms {
        e.oned.set_vm(
            *vm,
            vm_doc(*vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 8)]),
        );
    }
    let children: Vec<_> = vms
        .iter()
        .map(|vm| {
            e.command(&["tm", "clone"])
                .args([format!("frontend:{img_s}"), disk_path(*vm, 0), vm.to_string(), IMAGE_DS.to_string()])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for ch in children {
        assert_ok(&ch.wait_with_output().unwrap());
    }
    let io = ops::ioctx(c, &img_s).unwrap();
    assert_eq!(io.open_read_only(&img_s.name, None).unwrap().snapshots().unwrap().len(), 1);
    let kids = io.open_read_only(&img_s.name, Some("snap")).unwrap().children().unwrap();
    assert_eq!(kids.len(), 20);
    for vm in &vms {
        let d = spec(&pool, &format!("one-{img}-{vm}-0"));
        assert_eq!(data_pool(c, &d).as_deref(), Some(e.cluster.ec_pool.as_str()));
        assert_ok(&e.tm("delete", &[&disk_path(*vm, 0), &vm.to_string(), &IMAGE_DS.to_string()]));
    }
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
    let (images, trash) = leftovers(c, &pool, &[format!("one-{img}")]);
    assert!(images.is_empty() && trash.is_empty(), "{images:?} {trash:?}");
}

#[test]
fn deleting_an_open_disk_is_refused_naming_the_watcher() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, None, 8, 7);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 8)]));
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk_path(vm, 0), &vms, &ds]));
    let d0 = spec(&pool, &format!("one-{img}-{vm}-0"));
    let other = e.cluster.connect_new();
    let io = ops::ioctx(&other, &d0).unwrap();
    let held = io.open_as_client(&d0.name).unwrap();
    let line = assert_fails(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]), "in use by 1 client");
    assert!(line.contains("127.0.0.1"), "{line}");
    drop(held);
    assert!(ops::stat(c, &d0).is_ok(), "the refused delete changed nothing");
    assert_ok(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]));
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

fn action_data(ds_doc: &str) -> String {
    rbdx_one::base64::encode(format!("<DS_DRIVER_ACTION_DATA>{ds_doc}<DATASTORE_LOCATION>/var/lib/one//datastores</DATASTORE_LOCATION></DS_DRIVER_ACTION_DATA>").as_bytes())
}

fn monitor(e: &OneEnv, ds_doc: &str) -> (u64, u64, u64) {
    use std::io::Write;
    let mut child = e
        .command(&["tm", "monitor", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(action_data(ds_doc).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(text.lines().count(), 3, "{text}");
    (get("USED_MB"), get("TOTAL_MB"), get("FREE_MB"))
}

#[test]
fn monitor_reports_ec_aware_capacity() {
    let e = env();
    let c = e.cluster.connect();
    let (used, total, free) = monitor(&e, &e.system_ds(SYSTEM_DS, false));
    assert!(total.abs_diff(used + free) <= 1, "{total} = {used} + {free}, rounded as the stock monitor");
    let u = ops::pool_usage(c, &[&e.cluster.pool, &e.cluster.ec_pool]).unwrap();
    let near = |a: u64, b: u64| a.abs_diff(b) <= b / 20 + 64;
    assert!(near(free, u[0].available() >> 20), "replicated: free {free} vs {}", u[0].available() >> 20);
    let (used_ec, total_ec, free_ec) = monitor(&e, &e.system_ds(SYSTEM_DS, true));
    assert!(total_ec.abs_diff(used_ec + free_ec) <= 1, "{total_ec} = {used_ec} + {free_ec}");
    assert!(near(free_ec, u[1].available() >> 20), "EC: free {free_ec} vs {}", u[1].available() >> 20);
    assert!(free_ec < free, "the EC pool's capacity (k=2,m=1) is what an EC datastore reports");
    // Other tests write meanwhile: compare with the pools measured right after.
    let u = ops::pool_usage(c, &[&e.cluster.pool, &e.cluster.ec_pool]).unwrap();
    let both = (u[0].stored + u[1].stored) >> 20;
    assert!(near(used_ec, both), "usage counts both pools: {used_ec} vs {both}");
    assert!(near(used, u[0].stored >> 20) || used <= both, "replicated usage {used}");
    // Garbage on stdin: one line, non-zero.
    let mut child = e
        .command(&["tm", "monitor", "0"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"%%% not base64").unwrap();
    assert_fails(&child.wait_with_output().unwrap(), "not base64");
}

#[test]
fn ceph_trash_keeps_deleted_disks_in_the_trash() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, None, 8, 8);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[("CEPH_TRASH", "yes".into())]));
    e.oned.set_vm(
        vm,
        vm_doc(
            vm,
            "localhost",
            3,
            &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 8).with("CEPH_TRASH", "yes")],
        ),
    );
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk_path(vm, 0), &vms, &ds]));
    assert_ok(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]));
    let io = c.ioctx(&pool).unwrap();
    let entry = io
        .trash_list()
        .unwrap()
        .into_iter()
        .find(|t| t.name == format!("one-{img}-{vm}-0"))
        .expect("the disk is in the trash");
    assert!(ops::stat(c, &spec(&pool, &entry.name)).unwrap_err().is_not_found());
    io.trash_remove(&entry.id, true).unwrap();
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn live_snapshots_freeze_and_thaw_the_guest_and_report_a_failed_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("virsh.log");
    let fail = dir.path().join("fail-freeze");
    let virsh = dir.path().join("virsh");
    std::fs::write(
        &virsh,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nif [ \"$3\" = domfsfreeze ] && [ -e '{}' ]; then echo 'error: Guest agent is not responding' >&2; exit 1; fi\nexit 0\n",
            log.display(),
            fail.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&virsh).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&virsh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e =
        OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), &format!("{LOCAL}VIRSH = {}\n", virsh.display()));
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, None, 8, 9);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 8)]));
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk_path(vm, 0), &vms, &ds]));

    let out = e.tm("snap_create_live", &[&disk_path(vm, 0), "0", &vms, &ds]);
    assert_ok(&out);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls,
        format!("-c qemu:///system domfsfreeze one-{vm}\n-c qemu:///system domfsthaw one-{vm}\n")
    );
    std::fs::write(&fail, b"").unwrap();
    let out = e.tm("snap_create_live", &[&disk_path(vm, 0), "1", &vms, &ds]);
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO: could not freeze") && err.contains("Guest agent is not responding"), "{err}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .ends_with(&format!("domfsfreeze one-{vm}\n-c qemu:///system domfsthaw one-{vm}\n"))
    );
    let d0 = spec(&pool, &format!("one-{img}-{vm}-0"));
    let snaps: Vec<String> = ops::stat(c, &d0).unwrap().snapshots.into_iter().map(|s| s.name).collect();
    assert_eq!(snaps, ["0", "1"], "both snapshots were taken");
    assert_ok(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]));
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn disks_left_by_the_stock_drivers_keep_working() {
    // What the bash drivers leave: a protected @snap base, a format-1 clone, and
    // after `snap_create 0; snap_create 1; snap_revert 0` the carrier <disk>-0:1
    // holding protected numeric snapshots, the head a clone of it.
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm, saved) = (fresh_id(), fresh_id(), fresh_id());
    let img_s = spec(&pool, &format!("one-{img}"));
    make_image(c, &img_s, None, 16, 10);
    let io = c.ioctx(&pool).unwrap();
    let base = io.open(&img_s.name).unwrap();
    base.snap_create("snap").unwrap();
    base.snap_protect("snap").unwrap();
    drop(base);
    let v1 = ops::CloneOptions { format: ops::CloneFormat::V1, ..ops::CloneOptions::default() };
    let head = spec(&pool, &format!("one-{img}-{vm}-0"));
    ops::clone(c, &img_s.at("snap").unwrap(), &head, &v1).unwrap();
    let h = io.open(&head.name).unwrap();
    for s in ["0", "1"] {
        fill(&h, 0, MIB, s.as_bytes()[0]);
        h.snap_create(s).unwrap();
        h.snap_protect(s).unwrap();
    }
    drop(h);
    let want0 = sum(c, &head.at("0").unwrap());
    let want1 = sum(c, &head.at("1").unwrap());
    let carrier = format!("{}-0:1", head.name);
    io.rename_image(&head.name, &carrier).unwrap();
    ops::clone(c, &spec(&pool, &carrier).at("0").unwrap(), &head, &v1).unwrap();

    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 16)]));
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&e.tm("snap_create", &[&disk_path(vm, 0), "2", &vms, &ds]));
    assert_ok(&e.tm("snap_revert", &[&disk_path(vm, 0), "1", &vms, &ds]));
    assert_eq!(sum(c, &head), want1);
    let saved_s = spec(&pool, &format!("one-{saved}"));
    assert_ok(&e.tm("cpds", &[&disk_path(vm, 0), &saved_s.to_string(), "0", &vms, &ds]));
    assert_eq!(sum(c, &saved_s), want0);
    for s in ["0", "2", "1"] {
        assert_ok(&e.tm("snap_delete", &[&disk_path(vm, 0), s, &vms, &ds]));
    }
    assert_eq!(sum(c, &head), want1);
    assert_ok(&e.tm("delete", &[&disk_path(vm, 0), &vms, &ds]));
    assert_eq!(sum(c, &saved_s), want0, "the saved image outlives the disk");
    ops::remove(c, &saved_s, ops::RemoveOptions::default()).unwrap();
    let disk = format!("one-{img}-{vm}-0");
    rbdx_tests::reclaim_until_gone(c, &pool, |n| n == disk || n.starts_with(&format!("{disk}-")));
    let (images, trash) = leftovers(c, &pool, &[format!("one-{img}"), format!("one-{saved}")]);
    assert_eq!(images.as_slice(), std::slice::from_ref(&img_s.name), "only the image itself remains");
    assert!(trash.is_empty(), "{trash:?}");
    assert!(ops::stat(c, &img_s).unwrap().snapshots.is_empty(), "its unused @snap went with the last clone");
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

/// A fake driver script that records its arguments and stdin.
fn recorder(path: &Path, log: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!("#!/bin/sh\necho \"$@\" >> '{0}'\ncat >> '{0}'\necho >> '{0}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn migrate_actions_call_the_other_drivers_of_the_vm() {
    let e = env();
    let remotes = e.dir.path().join("remotes");
    let log = e.dir.path().join("calls.log");
    recorder(&remotes.join("tm/shared/premigrate"), &log);
    recorder(&remotes.join("tm/shared/postmigrate"), &log);
    let vm = fresh_id();
    let disks = [
        e.image_disk(0, "rbdx/one-1", true, IMAGE_DS, 8),
        e.image_disk(1, "shared-ds/x", true, 1, 8).with("TM_MAD", "shared"),
    ];
    let doc = vm_doc(vm, "localhost", 3, &disks);
    let b64 = rbdx_one::base64::encode(doc.as_bytes());
    let dir = format!("/var/lib/one/datastores/0/{vm}");
    for action in ["premigrate", "postmigrate"] {
        use std::io::Write;
        // Same host: no directory to move, but the other drivers are still called.
        let mut child = e
            .command(&["tm", action, "localhost", "localhost", &dir, &vm.to_string(), "0"])
            .env("RBDX_REMOTES", &remotes)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b64.as_bytes()).unwrap();
        assert_ok(&child.wait_with_output().unwrap());
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    let want = format!("localhost localhost {dir} {vm} 0 ceph\n{b64}\n");
    assert_eq!(
        calls,
        format!("{want}{want}"),
        "each other driver got the same argv plus ours, and the same stdin"
    );
    // Called by another driver (6th argument): nothing to do.
    let out =
        e.command(&["tm", "premigrate", "a", "b", &dir, &vm.to_string(), "0", "shared"]).output().unwrap();
    assert_ok(&out);
    assert_fails(&e.tm("premigrate", &["a", "b", "/", "1", "0"]), "unsafe path");
}

#[test]
fn the_no_op_actions_take_oneds_arguments() {
    let e = env();
    assert_ok(&e.tm("failmigrate", &["a", "b", "/var/lib/one/datastores/0/5", "5", "0"]));
    assert_ok(&e.tm("delete.ssh", &[&disk_path(5, 0), "5", "0"]));
    assert_ok(&e.tm("mvds", &[&disk_path(5, 0), "rbdx/one-1", "5", "100"]));
    assert_fails(&e.tm("mvds", &[&disk_path(5, 0), "rbdx/one-1", "x", "100"]), "invalid VM id");
}

#[test]
fn delete_of_the_vm_directory_removes_the_checkpoint_and_the_directory_only() {
    let e = env();
    let c = e.cluster.connect();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("datastores/0");
    let mut sys = vec![("BASE_PATH", base.display().to_string()), ("POOL_NAME", e.cluster.pool.clone())];
    sys.extend(e.ceph_attrs());
    e.oned.set_datastore(SYSTEM_DS, rbdx_tests::one::ds_doc(SYSTEM_DS, "system", 1, &sys));
    let vm = fresh_id();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    e.oned.set_vm(vm, vm_doc(vm, &host, 3, &[]));
    let vm_dir = base.join(vm.to_string());
    std::fs::create_dir_all(&vm_dir).unwrap();
    for f in ["deployment.0", "disk.1", "vm.xml"] {
        std::fs::write(vm_dir.join(f), f).unwrap();
    }
    let other = base.join((vm + 1).to_string());
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("disk.0"), "another VM").unwrap();
    let checkpoint = ImageSpec::new(&e.cluster.pool, &format!("one-sys-{vm}-checkpoint")).unwrap();
    ops::create(c, &checkpoint, MIB, &ops::CreateOptions::default()).unwrap();
    let (vms, sysid) = (vm.to_string(), SYSTEM_DS.to_string());
    // Not this VM's directory, or not in the datastore: refused, nothing touched.
    for bad in [
        format!("{host}:{}", other.display()),
        format!("{host}:/tmp/{}/0/{vm}", vm),
        format!("{host}:{}", base.display()),
    ] {
        assert_fails(&e.tm("delete", &[&bad, &vms, &sysid]), "not the directory of VM");
    }
    assert!(other.join("disk.0").exists() && vm_dir.join("deployment.0").exists());
    assert!(ops::stat(c, &checkpoint).is_ok(), "nothing changed for a refused delete");
    // oned's own path (with its double slash): checkpoint and directory go.
    let path = format!("{host}:{}//0/{vm}/", dir.path().join("datastores").display());
    assert_ok(&e.tm("delete", &[&path, &vms, &sysid]));
    assert!(ops::stat(c, &checkpoint).unwrap_err().is_not_found(), "the checkpoint is gone");
    assert!(!vm_dir.exists(), "the VM directory is gone");
    assert!(other.join("disk.0").exists(), "another VM's directory stays");
    // Again: nothing to do, success.
    assert_ok(&e.tm("delete", &[&path, &vms, &sysid]));
}

#[test]
fn mkimage_of_a_1_tib_volatile_disk_reads_and_writes_only_what_mkfs_made() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let vm = fresh_id();
    const TIB_MB: u64 = 1 << 20;
    e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, true));
    e.oned
        .set_vm(vm, vm_doc(vm, "localhost", 3, &[e.volatile_disk(1, "fs", Some("ext4"), SYSTEM_DS, TIB_MB)]));
    let (vms, sys) = (vm.to_string(), SYSTEM_DS.to_string());
    let t = std::time::Instant::now();
    assert_ok(&e.tm("mkimage", &[&TIB_MB.to_string(), "raw", &disk_path(vm, 1), &vms, &sys]));
    let took = t.elapsed();
    let d = spec(&pool, &format!("one-sys-{vm}-1"));
    assert_eq!(ops::stat(c, &d).unwrap().size, TIB_MB << 20);
    assert_eq!(read_at(c, &d, 1024 + 56, 2), [0x53, 0xef], "an ext4 superblock");
    assert_eq!(data_pool(c, &d), Some(e.cluster.ec_pool.clone()));
    let io = ops::ioctx(c, &d).unwrap();
    let mut written = 0;
    io.open_read_only(&d.name, None)
        .unwrap()
        .diff_iterate(None, false, false, |_, len, exists| {
            written += if exists { len } else { 0 };
            Ok(())
        })
        .unwrap();
    eprintln!("mkimage of a 1 TiB ext4 disk: {took:?}, {} MiB written", written >> 20);
    assert!(written < 256 * MIB, "only what mkfs wrote is in RBD ({} MiB)", written >> 20);
    // Reading 1 TiB of zeros would take many minutes; this is a bound on that,
    // not a speed target (bench/ measures speed).
    assert!(took < std::time::Duration::from_secs(120), "{took:?}");
    drop(io);
    let t = std::time::Instant::now();
    assert_ok(&e.tm("delete", &[&disk_path(vm, 1), &vms, &sys]));
    eprintln!("delete: {:?}", t.elapsed());
    let (images, trash) = leftovers(c, &pool, &[format!("one-sys-{vm}")]);
    assert!(images.is_empty() && trash.is_empty(), "{images:?} {trash:?}");
}
