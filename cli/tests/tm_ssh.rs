//! The ssh execution path end to end: the front-end runs the action, the Ceph work
//! runs through one ssh round trip to a real sshd on 127.0.0.1, where the rbdx
//! binary from the remotes directory executes the job read from stdin.

use std::path::Path;
use std::time::{Duration, Instant};

use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::one::{OneEnv, assert_fails, assert_ok, vm_doc};
use rbdx_tests::sshd::Sshd;
use rbdx_tests::{MIB, checksum, fill};

const IMAGE_DS: u32 = 100;

fn disk_path(host: &str, vm: u32, disk: u32) -> String {
    format!("{host}:/var/lib/one//datastores/0/{vm}/disk.{disk}")
}

/// A remotes tree like `onehost sync` leaves on a host: `<dir>/rbdx/rbdx`.
fn remotes(dir: &Path) -> String {
    let r = dir.join("remotes");
    std::fs::create_dir_all(r.join("rbdx")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rbdx"), r.join("rbdx/rbdx")).unwrap();
    r.display().to_string()
}

#[test]
fn actions_run_on_the_host_through_one_ssh_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let config = format!(
        "EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = {}\nACTION_TIMEOUT = 120\n",
        sshd.ssh_setting(),
        remotes(dir.path())
    );
    let e = OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), &config);
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let id = 3_000_000 + std::process::id() % 100_000;
    let (img, vm) = (id, id + 1);
    let img_s = ImageSpec::new(&pool, &format!("one-{img}")).unwrap();
    ops::create(
        &c,
        &img_s,
        16 * MIB,
        &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool)),
    )
    .unwrap();
    fill(
        &ops::ioctx(&c, &img_s).unwrap().open(&img_s.name).unwrap(),
        0,
        4 * MIB,
        1,
    );
    e.oned
        .set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e.oned.set_vm(
        vm,
        vm_doc(
            vm,
            "127.0.0.1",
            3,
            &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 16)],
        ),
    );
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    let d0 = ImageSpec::new(&pool, &format!("one-{img}-{vm}-0")).unwrap();

    assert_ok(&e.tm(
        "clone",
        &[
            &format!("frontend:{img_s}"),
            &disk_path("127.0.0.1", vm, 0),
            &vms,
            &ds,
        ],
    ));
    let st = ops::stat(&c, &d0).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(e.cluster.ec_pool.as_str()));
    assert!(st.parent.is_some());
    assert_ok(&e.tm(
        "snap_create",
        &[&disk_path("127.0.0.1", vm, 0), "0", &vms, &ds],
    ));
    let want = checksum(
        &ops::ioctx(&c, &d0)
            .unwrap()
            .open_read_only(&d0.name, None)
            .unwrap(),
    );
    fill(
        &ops::ioctx(&c, &d0).unwrap().open(&d0.name).unwrap(),
        0,
        MIB,
        9,
    );
    let out = e.tm(
        "snap_revert",
        &[&disk_path("127.0.0.1", vm, 0), "0", &vms, &ds],
    );
    assert_ok(&out);
    assert_eq!(
        checksum(
            &ops::ioctx(&c, &d0)
                .unwrap()
                .open_read_only(&d0.name, None)
                .unwrap()
        ),
        want
    );
    assert_ok(&e.tm("delete", &[&disk_path("127.0.0.1", vm, 0), &vms, &ds]));
    assert!(ops::stat(&c, &d0).unwrap_err().is_not_found());
    let log = std::fs::read_to_string(&sshd.log).unwrap();
    assert!(
        log.matches("Accepted publickey").count() >= 4,
        "each action was one ssh login: {log}"
    );

    // A host nobody answers on: a clear line within the connect timeout.
    let t = Instant::now();
    let line = assert_fails(
        &e.tm(
            "snap_create",
            &[&disk_path("127.0.0.2", vm, 0), "1", &vms, &ds],
        ),
        "127.0.0.2",
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{line}");
    ops::remove(&c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn a_host_without_rbdx_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let config = format!(
        "EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = /nonexistent/remotes\n",
        sshd.ssh_setting()
    );
    let e = OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), &config);
    let vm = 3_100_000 + std::process::id() % 100_000;
    e.oned
        .set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(
        vm,
        vm_doc(
            vm,
            "127.0.0.1",
            3,
            &[e.image_disk(0, "rbdx/one-1", true, IMAGE_DS, 16)],
        ),
    );
    let line = assert_fails(
        &e.tm(
            "snap_delete",
            &[&disk_path("127.0.0.1", vm, 0), "0", &vm.to_string(), "100"],
        ),
        "running rbdx over ssh failed",
    );
    assert!(line.contains("/nonexistent/remotes/rbdx/rbdx"), "{line}");
}
