//! Kernel mappings for Proxmox (`map_volume`, `unmap_volume`, and the unmaps
//! that removal, rename, template and snapshot deletion need), through the real
//! helper against the real cluster. The kernel rbd driver and PVE's udev rule
//! are played by [`KernelDouble`] (no rbd module here); it reaches the cluster
//! with exactly the monitor addresses, name and key the helper's add request
//! carries, so a wrong one fails.

use std::path::{Path, PathBuf};

use rbdx_tests::krbd::KernelDouble;
use rbdx_tests::pve::{answer, call, failure, storage};
use serde_json::{Value, json};

struct Env {
    bin: PathBuf,
    ceph: Value,
    // Stops before its root goes.
    double: KernelDouble,
    root: tempfile::TempDir,
    fsid: String,
    pool: String,
    ec_pool: String,
}

impl Env {
    fn new() -> Self {
        let cluster = rbdx_tests::cluster();
        let root = tempfile::tempdir().unwrap();
        let double = KernelDouble::start(root.path());
        let fsid = cluster.connect().fsid().unwrap();
        Self {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_rbdx")),
            // Rollbacks by the clone swap: a snapshot then lives on another image.
            ceph: {
                let mut c = storage(&cluster, true);
                c["rollback_max_mb"] = json!(0);
                c
            },
            double,
            root,
            fsid,
            pool: cluster.pool.clone(),
            ec_pool: cluster.ec_pool.clone(),
        }
    }

    fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.call_at(self.root.path(), method, params)
    }

    /// A call that finds the kernel's sysfs and /dev under `root`.
    fn call_at(&self, root: &Path, method: &str, params: Value) -> Result<Value, String> {
        answer(&call(&self.bin, &self.ceph, method, params, &[("RBDX_KRBD_ROOT", root.as_os_str())]))
    }

    /// The error and kind of a call that must fail, with the kernel under `root`.
    fn fail_at(&self, root: &Path, method: &str, params: Value) -> (String, String) {
        failure(&call(&self.bin, &self.ceph, method, params, &[("RBDX_KRBD_ROOT", root.as_os_str())]))
    }

    fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}; kernel refused: {}", self.double.refused()))
    }

    fn link(&self, image: &str) -> PathBuf {
        self.root.path().join("dev/rbd-pve").join(&self.fsid).join(&self.pool).join(image)
    }

    /// The mapped devices: (id, image, current_snap).
    fn devices(&self) -> Vec<(String, String, String)> {
        let dir = self.root.path().join("sys/bus/rbd/devices");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|d| {
                let d = d.unwrap().path();
                let a = |n: &str| std::fs::read_to_string(d.join(n)).unwrap().trim_end().to_string();
                (d.file_name().unwrap().to_string_lossy().into_owned(), a("name"), a("current_snap"))
            })
            .collect();
        v.sort();
        v
    }
}

fn vmid() -> u32 {
    900_000 + std::process::id() % 50_000
}

#[test]
fn map_unmap_and_every_path_that_must_unmap_first() {
    let e = Env::new();
    let vm = vmid();
    let vol = e.ok("alloc_image", json!({"vmid": vm, "size_kib": 8192}));
    let vol = vol.as_str().unwrap().to_string();
    let info = e.ok("volume_size_info", json!({"volname": vol}));
    assert_eq!(info["data_pool"], json!(e.ec_pool));

    // Map: the udev link PVE's path() computes, to the device; asked again, the same.
    let path = e.ok("map_volume", json!({"volname": vol}));
    assert_eq!(Path::new(path.as_str().unwrap()), e.link(&vol));
    assert_eq!(e.ok("device_path", json!({"volname": vol})), path);
    let target = std::fs::read_link(e.link(&vol)).unwrap();
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 8 << 20, "the device has the volume's size");
    assert_eq!(e.ok("map_volume", json!({"volname": vol})), path, "mapping twice");
    assert_eq!(e.devices(), vec![("0".into(), vol.clone(), "-".into())], "one device");
    // The request carried the monitors (msgr2: the test cluster has no v1
    // addresses), the client, a key (masked by the stand-in) and the image.
    let requests = e.double.requests();
    let first = requests.lines().next().unwrap();
    let words: Vec<&str> = first.split(' ').collect();
    assert!(words[0].starts_with("127.0.0.1:"), "{first}");
    let mut opts: Vec<&str> = words[1].split(',').collect();
    opts.sort_unstable();
    let name = format!("name={}", e.ceph["id"].as_str().unwrap());
    assert_eq!(opts, ["ms_mode=prefer-crc", name.as_str(), "secret=***"]);
    assert_eq!(&words[2..], [e.pool.as_str(), vol.as_str(), "-"]);

    // A snapshot maps read-only from the image holding it, with map options.
    e.ok("volume_snapshot", json!({"volname": vol, "snap": "s1"}));
    let snap_path = e.ok("map_volume", json!({"volname": vol, "snap": "s1", "options": ["rxbounce"]}));
    assert_eq!(Path::new(snap_path.as_str().unwrap()), e.link(&format!("{vol}@s1")));
    assert!(e.double.requests().lines().nth(1).unwrap().contains(",rxbounce"));
    // After a rollback the snapshot lives on an older image of the disk: the
    // device path follows it (the head is unmapped first: a mapped head is in use).
    let err = e.call("volume_snapshot_rollback", json!({"volname": vol, "snap": "s1"})).unwrap_err();
    assert!(err.contains("in use"), "{err}");
    assert!(e.ok("unmap_volume", json!({"volname": vol})).as_bool().unwrap());
    assert!(!e.link(&vol).exists());
    assert!(!e.ok("unmap_volume", json!({"volname": vol})).as_bool().unwrap(), "unmapping twice");
    e.ok("unmap_volume", json!({"volname": vol, "snap": "s1"}));
    e.ok("volume_snapshot_rollback", json!({"volname": vol, "snap": "s1"}));
    let moved = e.ok("map_volume", json!({"volname": vol, "snap": "s1"}));
    let holder = moved.as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert_ne!(holder, format!("{vol}@s1"), "the snapshot is held by the pre-rollback image");
    assert_eq!(e.ok("device_path", json!({"volname": vol, "snap": "s1"})), moved);
    // Deleting the snapshot unmaps it.
    e.ok("volume_snapshot_delete", json!({"volname": vol, "snap": "s1"}));
    assert!(e.devices().is_empty(), "{:?}", e.devices());

    // Rename and template unmap the source; free unmaps everything.
    e.ok("map_volume", json!({"volname": vol}));
    let renamed = e.ok("rename_volume", json!({"volname": vol, "target_vmid": vm}));
    let renamed = renamed.as_str().unwrap().to_string();
    assert!(e.devices().is_empty() && !e.link(&vol).exists());
    e.ok("map_volume", json!({"volname": renamed}));
    let base = e.ok("create_base", json!({"volname": renamed}));
    let base = base.as_str().unwrap().to_string();
    assert!(e.devices().is_empty());
    e.ok("map_volume", json!({"volname": base}));
    e.ok("map_volume", json!({"volname": base, "snap": "__base__"}));
    assert_eq!(e.devices().len(), 2);
    e.ok("free_image", json!({"volname": base}));
    assert!(e.devices().is_empty(), "{:?}", e.devices());
    assert_eq!(e.double.refused(), "", "the stand-in refused nothing");
}

#[test]
fn map_errors_are_one_line_and_map_nothing() {
    let e = Env::new();
    let vm = vmid() + 1;
    let root = e.root.path();
    let (err, kind) = e.fail_at(root, "map_volume", json!({"volname": format!("vm-{vm}-disk-9")}));
    assert!(err.contains("no such file"), "{err}");
    assert_eq!(kind, "not_found");
    let vol = e.ok("alloc_image", json!({"vmid": vm, "size_kib": 1024}));
    let (err, kind) = e.fail_at(root, "map_volume", json!({"volname": vol, "snap": "nope"}));
    assert!(err.contains("snapshot nope"), "{err}");
    assert_eq!(kind, "not_found");
    for bad in ["a,b", "secret=x", "two words", ""] {
        let (err, kind) = e.fail_at(root, "map_volume", json!({"volname": vol, "options": [bad]}));
        assert!(err.contains("invalid krbd map option"), "{bad:?}: {err}");
        assert_eq!(kind, "invalid", "{bad:?}");
    }
    assert_eq!(e.double.requests(), "", "no request reached the kernel");
    // Without the rbd driver: a clear error for map; nothing to unmap.
    let none = tempfile::tempdir().unwrap();
    let (err, kind) = e.fail_at(none.path(), "map_volume", json!({"volname": vol}));
    assert!(err.contains("rbd driver is not loaded"), "{err}");
    assert_eq!(kind, "invalid");
    assert_eq!(e.call_at(none.path(), "unmap_volume", json!({"volname": vol})), Ok(json!(false)));
    e.ok("free_image", json!({"volname": vol}));
}

#[test]
fn a_windows_guest_volume_mapped_without_rxbounce_is_mapped_again_when_safe() {
    let e = Env::new();
    let vm = vmid() + 7;
    let vol = e.ok("alloc_image", json!({"vmid": vm, "size_kib": 4096}));
    let vol = vol.as_str().unwrap().to_string();
    let requests =
        || e.double.requests().lines().filter(|l| l.contains(&vol)).map(str::to_string).collect::<Vec<_>>();
    e.ok("map_volume", json!({"volname": vol}));
    assert_eq!(requests().len(), 1);
    // PVE says deactivating is not safe: the mapping stays (a warning only).
    let out = call(
        &e.bin,
        &e.ceph,
        "map_volume",
        json!({"volname": vol, "options": ["rxbounce"]}),
        &[("RBDX_KRBD_ROOT", e.root.path().as_os_str())],
    );
    answer(&out).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not unmapping"), "warned");
    assert_eq!(requests().len(), 1, "not mapped again");
    // Safe: unmapped and mapped again with rxbounce.
    e.ok("map_volume", json!({"volname": vol, "options": ["rxbounce"], "may_remap": true}));
    let r = requests();
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[1].split(' ').nth(1).unwrap().split(',').any(|o| o == "rxbounce"), "{}", r[1]);
    assert_eq!(e.devices().len(), 1, "one device, with rxbounce");
    // Asked again: already mapped with it, nothing to do.
    e.ok("map_volume", json!({"volname": vol, "options": ["rxbounce"], "may_remap": true}));
    assert_eq!(requests().len(), 2);
    e.ok("free_image", json!({"volname": vol}));
    assert!(e.devices().is_empty());
}

#[test]
fn snapshots_qemu_takes_on_the_volume_join_its_snapshots() {
    let e = Env::new();
    let cluster = rbdx_tests::cluster();
    let c = cluster.connect();
    let vm = vmid() + 11;
    let vol = e.ok("alloc_image", json!({"vmid": vm, "size_kib": 4096}));
    let vol = vol.as_str().unwrap().to_string();
    assert_eq!(e.ok("qemu_snapshot_method", json!({"volname": vol})), json!("qemu"));
    e.ok("volume_snapshot", json!({"volname": vol, "snap": "by-rbdx"}));
    // qemu's rbd driver snapshots the image it has open, outside rbdx.
    let io = c.ioctx(&e.pool).unwrap();
    io.open_as_client(&vol).unwrap().snap_create("by-qemu").unwrap();
    let info = e.ok("volume_snapshot_info", json!({"volname": vol}));
    let mut names: Vec<&String> = info.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["by-qemu", "by-rbdx"], "the snapshot qemu took is the volume's");
    // It rolls back and deletes like any other, carriers and all.
    e.ok("volume_snapshot_rollback", json!({"volname": vol, "snap": "by-qemu"}));
    assert_eq!(e.ok("qemu_snapshot_method", json!({"volname": vol})), json!("storage"));
    e.ok("volume_snapshot_delete", json!({"volname": vol, "snap": "by-qemu"}));
    e.ok("volume_snapshot_delete", json!({"volname": vol, "snap": "by-rbdx"}));
    assert_eq!(e.ok("volume_snapshot_info", json!({"volname": vol})), json!({}));
    assert_eq!(
        e.ok("qemu_snapshot_method", json!({"volname": vol})),
        json!("qemu"),
        "all on its image again"
    );
    // qemu deletes a snapshot it took: the bookkeeping forgets it.
    io.open_as_client(&vol).unwrap().snap_create("gone").unwrap();
    assert!(e.ok("volume_snapshot_info", json!({"volname": vol})).get("gone").is_some());
    io.open_as_client(&vol).unwrap().snap_remove("gone").unwrap();
    assert_eq!(e.ok("volume_snapshot_info", json!({"volname": vol})), json!({}));
    drop(io);
    e.ok("free_image", json!({"volname": vol}));
}
