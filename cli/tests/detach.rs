//! `rbdx one detach`: a safe way back to the stock drivers. rbdx's save-as
//! images and image clones are CoW children of another disk's snapshot; the
//! stock drivers remove a snapshot's children with it (`rbd_rm_r` in
//! ceph_utils.sh), so removing the source with them would delete those images.
//! `--check` lists them (exit 1, nothing changed); `detach` flattens them, after
//! which the stock removal of every source loses nothing.

use std::path::Path;
use std::process::{Command, Output};

use rbdx_core::Cluster;
use rbdx_core::ops::{self, ImageSpec};
use rbdx_tests::one::{OneEnv, assert_ok, vm_doc};
use rbdx_tests::{MIB, checksum, fill};

const BIN: &str = env!("CARGO_BIN_EXE_rbdx");
const DS: u32 = 100;
const SYS_DS: u32 = 0;

fn fresh_id() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 8_000_000 + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn detach(e: &OneEnv, args: &[&str]) -> Output {
    e.command(&["one", "detach"]).args(args).output().expect("run rbdx one detach")
}

/// The stock drivers' removal (`rbd_rm_r` of ceph_utils.sh), with the rbd CLI:
/// every snapshot's children first (recursively), then the snapshot, then the
/// image.
fn stock_rm_r(e: &OneEnv, spec: &str) {
    let rbd = |args: &[&str]| -> Output {
        Command::new("rbd")
            .arg("--conf")
            .arg(&e.cluster.conf)
            .args(["--id", &e.cluster.id, "--keyring"])
            .arg(&e.cluster.keyring)
            .args(args)
            .output()
            .expect("the rbd CLI (ceph-common) stands in for the stock drivers")
    };
    if let Some((image, _)) = spec.split_once('@') {
        let children = String::from_utf8_lossy(&rbd(&["children", spec]).stdout).into_owned();
        for child in children.split_whitespace() {
            stock_rm_r(e, child);
        }
        rbd(&["snap", "unprotect", spec]);
        let out = rbd(&["snap", "rm", spec]);
        assert!(out.status.success(), "rbd snap rm {spec}: {}", String::from_utf8_lossy(&out.stderr));
        let _ = image;
    } else {
        let out = rbd(&["snap", "ls", "--format", "json", spec]);
        let snaps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for s in snaps {
            stock_rm_r(e, &format!("{spec}@{}", s["name"].as_str().unwrap_or_default()));
        }
        let out = rbd(&["rm", spec]);
        assert!(out.status.success(), "rbd rm {spec}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// packaging/one/removal-check (the package's prerm / %preun check) with this
/// binary and the test's oned.
fn removal_check(e: &OneEnv) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/one/removal-check");
    let probe = e.command(&[]);
    let mut cmd = Command::new("sh");
    cmd.arg(script).env("RBDX_REMOVAL_CHECK_BIN", BIN);
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run the removal check")
}

fn parent(c: &Cluster, s: &ImageSpec) -> Option<String> {
    ops::stat(c, s).unwrap().parent.map(|p| p.image.name)
}

#[test]
fn detach_flattens_what_the_stock_drivers_would_delete_with_its_source() {
    // Saves by snapshot and clone (no copy of the little data these disks hold).
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nSAVEAS_COPY_MAX_MB = 0\n");
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    e.oned.set_datastore(DS, e.image_ds(DS, true, &[]));
    e.oned.set_datastore(SYS_DS, e.system_ds(SYS_DS, true));
    let (a, b, saved, vm) = (fresh_id(), fresh_id(), fresh_id(), fresh_id());
    let spec = |id: u32| ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    let (a_s, b_s, saved_s) = (spec(a), spec(b), spec(saved));
    ops::create(c, &a_s, 16 * MIB, &ops::CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &a_s).unwrap().open(&a_s.name).unwrap(), 0, 4 * MIB, 5);

    // An image clone (DS clone) and a save-as of a VM disk (TM cpds): both CoW
    // children of a snapshot of another disk.
    let msg =
        format!("<IMAGE><PATH><![CDATA[{a_s}]]></PATH><SIZE>16</SIZE></IMAGE>{}", e.image_ds(DS, true, &[]));
    assert_ok(&e.ds("clone", b, &msg));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &a_s.to_string(), true, DS, 16)]));
    let disk = format!("localhost:/var/lib/one//datastores/{SYS_DS}/{vm}/disk.0");
    let (vms, ds) = (vm.to_string(), DS.to_string());
    assert_ok(&e.tm("clone", &[&format!("frontend:{a_s}"), &disk, &vms, &ds]));
    let vm_disk = ImageSpec::new(&pool, &format!("one-{a}-{vm}-0")).unwrap();
    fill(&ops::ioctx(c, &vm_disk).unwrap().open(&vm_disk.name).unwrap(), 8 * MIB, MIB, 6);
    assert_ok(&e.tm("cpds", &[&disk, &saved_s.to_string(), "-1", &vms, &ds]));
    assert!(parent(c, &b_s).is_some() && parent(c, &saved_s).is_some(), "CoW children");
    let sums = |c: &Cluster| {
        [&b_s, &saved_s].map(|s| checksum(&ops::ioctx(c, s).unwrap().open_read_only(&s.name, None).unwrap()))
    };
    let before = sums(c);

    // The package's removal check refuses while they depend.
    let check = removal_check(&e);
    assert_eq!(check.status.code(), Some(1), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stderr).contains("run 'rbdx one detach' as oneadmin first"));

    // --check: listed, exit 1, nothing changed.
    let out = detach(&e, &["--check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for s in [&b_s, &saved_s] {
        assert!(text.contains(&format!("{s}: depends on another disk's snapshot")), "{text}");
    }
    assert!(!text.contains(&vm_disk.name), "a VM's own disk is the stock drivers' too: {text}");
    assert!(text.contains("run `rbdx one detach` first"), "{text}");
    assert!(parent(c, &b_s).is_some() && parent(c, &saved_s).is_some(), "--check changes nothing");
    // A datastore that is not rbdx's is refused.
    let out = detach(&e, &["--check", "--datastore", "77"]);
    assert_eq!(out.status.code(), Some(2));

    // detach: flattened, contents kept.
    let out = detach(&e, &["--datastore", &DS.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(parent(c, &b_s).is_none() && parent(c, &saved_s).is_none(), "flattened");
    assert_eq!(sums(c), before, "the images hold what they held");
    assert_eq!(detach(&e, &["--check"]).status.code(), Some(0), "nothing depends any more");
    assert_eq!(removal_check(&e).status.code(), Some(0), "the package may go now");

    // The stock drivers' removal of the VM disk and of the source image.
    stock_rm_r(&e, &vm_disk.to_string());
    stock_rm_r(&e, &a_s.to_string());
    assert!(ops::stat(c, &a_s).unwrap_err().is_not_found());
    assert_eq!(sums(c), before, "nothing was lost with the source");
    for s in [&b_s, &saved_s] {
        ops::remove(c, s, ops::RemoveOptions::default()).unwrap();
    }
}
