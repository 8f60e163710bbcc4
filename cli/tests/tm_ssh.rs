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
    ops::create(c, &img_s, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &img_s).unwrap().open(&img_s.name).unwrap(), 0, 4 * MIB, 1);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "127.0.0.1", 3, &[e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 16)]));
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    let d0 = ImageSpec::new(&pool, &format!("one-{img}-{vm}-0")).unwrap();

    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk_path("127.0.0.1", vm, 0), &vms, &ds]));
    let st = ops::stat(c, &d0).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(e.cluster.ec_pool.as_str()));
    assert!(st.parent.is_some());
    // Traced: the front-end's ssh round trip, and the host's own spans inside it.
    let trace = e.dir.path().join("trace.jsonl");
    let mut cmd = e.command(&["tm", "snap_create"]);
    cmd.args([&disk_path("127.0.0.1", vm, 0), "0", &vms, &ds]).env("RBDX_TRACE", &trace);
    assert_ok(&cmd.output().unwrap());
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let names: Vec<&str> =
        run["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for want in ["ssh", "host: connect", "host: snapshot create", "host: job"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let want = checksum(&ops::ioctx(c, &d0).unwrap().open_read_only(&d0.name, None).unwrap());
    fill(&ops::ioctx(c, &d0).unwrap().open(&d0.name).unwrap(), 0, MIB, 9);
    let out = e.tm("snap_revert", &[&disk_path("127.0.0.1", vm, 0), "0", &vms, &ds]);
    assert_ok(&out);
    assert_eq!(checksum(&ops::ioctx(c, &d0).unwrap().open_read_only(&d0.name, None).unwrap()), want);
    assert_ok(&e.tm("delete", &[&disk_path("127.0.0.1", vm, 0), &vms, &ds]));
    assert!(ops::stat(c, &d0).unwrap_err().is_not_found());
    let log = std::fs::read_to_string(&sshd.log).unwrap();
    assert!(log.matches("Accepted publickey").count() >= 4, "each action was one ssh login: {log}");

    // A host nobody answers on: a clear line within the connect timeout.
    let t = Instant::now();
    let line =
        assert_fails(&e.tm("snap_create", &[&disk_path("127.0.0.2", vm, 0), "1", &vms, &ds]), "127.0.0.2");
    assert!(t.elapsed() < Duration::from_secs(60), "{line}");
    ops::remove(c, &img_s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn one_ping_times_the_oned_call_the_hop_and_the_connection_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let e = ssh_env(dir.path(), &sshd);
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    let trace = e.dir.path().join("trace.jsonl");
    let ds = IMAGE_DS.to_string();
    let ping = |args: &[&str]| {
        e.command(&["one", "ping", "--datastore"]).args(args).env("RBDX_TRACE", &trace).output().unwrap()
    };
    let out = ping(&[&ds, "--host", "127.0.0.1"]);
    assert_ok(&out);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = format!(
        "datastore {ds}: pool {} reached from 127.0.0.1 as client.{} in ",
        e.cluster.pool, e.cluster.id
    );
    assert!(line.starts_with(&want) && line.ends_with(" ms"), "{line}");
    let run: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&trace).unwrap().trim()).unwrap();
    let mut names: Vec<&str> =
        run["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["host: connect", "host: job", "oned one.datastore.info", "ssh"]);
    // A host name that is an option, a datastore that is not there: one line, exit 2.
    for (args, want) in [(vec![ds.as_str(), "--host=-oProxyCommand=x"], "host"), (vec!["4242"], "4242")] {
        let out = ping(&args);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.lines().count() == 1 && err.contains(want), "{err}");
    }
}

#[test]
fn a_host_without_rbdx_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let config =
        format!("EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = /nonexistent/remotes\n", sshd.ssh_setting());
    let e = OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), &config);
    let vm = 3_100_000 + std::process::id() % 100_000;
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, "127.0.0.1", 3, &[e.image_disk(0, "rbdx/one-1", true, IMAGE_DS, 16)]));
    let line = assert_fails(
        &e.tm("snap_delete", &[&disk_path("127.0.0.1", vm, 0), "0", &vm.to_string(), "100"]),
        "running rbdx over ssh failed",
    );
    assert!(line.contains("/nonexistent/remotes/rbdx/rbdx"), "{line}");
}

fn ssh_env(dir: &Path, sshd: &Sshd) -> OneEnv {
    let config = format!(
        "EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = {}\nACTION_TIMEOUT = 120\n",
        sshd.ssh_setting(),
        remotes(dir)
    );
    OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), &config)
}

#[test]
fn an_ssh_system_datastore_copies_disks_to_files_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let e = ssh_env(dir.path(), &sshd);
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let id = 3_200_000 + std::process::id() % 100_000;
    let (img, pimg, vm, saved) = (id, id + 1, id + 2, id + 3);
    let img_s = ImageSpec::new(&pool, &format!("one-{img}")).unwrap();
    let pimg_s = ImageSpec::new(&pool, &format!("one-{pimg}")).unwrap();
    for (s, seed) in [(&img_s, 1), (&pimg_s, 2)] {
        ops::create(c, s, 16 * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
        fill(&ops::ioctx(c, s).unwrap().open(&s.name).unwrap(), MIB, 3 * MIB, seed);
    }
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
    let disks = [
        e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 32),
        e.image_disk(1, &pimg_s.to_string(), false, IMAGE_DS, 16),
    ];
    e.oned.set_vm(vm, vm_doc(vm, "127.0.0.1", 3, &disks));
    let sysdir = dir.path().join(format!("datastores/0/{vm}"));
    let path = |d: u32| format!("127.0.0.1:{}/disk.{d}", sysdir.display());
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());

    assert_ok(&e.tm("clone.ssh", &[&format!("frontend:{img_s}"), &path(0), &vms, &ds]));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("datastores/0/.monitor")).unwrap(),
        "ssh\n",
        "the system datastore is marked for local monitoring, as upstream"
    );
    let file0 = std::fs::read(sysdir.join("disk.0")).unwrap();
    assert_eq!(file0.len() as u64, 32 * MIB, "grown to the DISK SIZE");
    let mut want = vec![0u8; 16 * MIB as usize];
    ops::ioctx(c, &img_s)
        .unwrap()
        .open_read_only(&img_s.name, Some("snap"))
        .unwrap()
        .read_at(0, &mut want)
        .unwrap();
    assert_eq!(&file0[..want.len()], &want[..], "the file holds the base snapshot's bytes");
    assert_ok(&e.tm("ln.ssh", &[&format!("frontend:{pimg_s}"), &path(1), &vms, &ds]));
    assert_ok(&e.tm("resize.ssh", &[&path(1), "24", &vms, &ds]));
    assert_eq!(std::fs::metadata(sysdir.join("disk.1")).unwrap().len(), 24 * MIB);

    // The VM wrote to its persistent disk file; undeploy saves it back.
    let mut f1 = std::fs::read(sysdir.join("disk.1")).unwrap();
    f1[..4].copy_from_slice(b"VM!!");
    std::fs::write(sysdir.join("disk.1"), &f1).unwrap();
    let saved_s = ImageSpec::new(&pool, &format!("one-{saved}")).unwrap();
    assert_ok(&e.tm("cpds.ssh", &[&path(1), &saved_s.to_string(), "-1", &vms, &ds]));
    assert_eq!(ops::stat(c, &saved_s).unwrap().data_pool.as_deref(), Some(e.cluster.ec_pool.as_str()));
    assert_ok(&e.tm("mvds.ssh", &[&path(1), &pimg_s.to_string(), &vms, &ds]));
    assert!(!sysdir.join("disk.1").exists(), "the file is removed once saved");
    for s in [&pimg_s, &saved_s] {
        let io = ops::ioctx(c, s).unwrap();
        let img = io.open_read_only(&s.name, None).unwrap();
        assert_eq!(img.info().unwrap().size, 24 * MIB);
        let mut head = vec![0u8; f1.len()];
        img.read_at(0, &mut head).unwrap();
        assert!(head == f1, "{s} holds the file's bytes");
    }
    assert_fails(&e.tm("cpds.ssh", &[&path(0), &saved_s.to_string(), "3", &vms, &ds]), "not supported");
    for s in [&saved_s, &img_s, &pimg_s] {
        ops::remove(c, s, ops::RemoveOptions::default()).unwrap();
    }
}

#[test]
fn vm_directories_move_between_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let e = ssh_env(dir.path(), &sshd);
    let vm = 3_300_000 + std::process::id() % 100_000;
    e.oned.set_datastore(0, e.system_ds(0, false));
    e.oned.set_vm(vm, vm_doc(vm, "127.0.0.1", 3, &[]));
    let (src, dst) = (
        dir.path().join(format!("host-a/datastores/0/{vm}")),
        dir.path().join(format!("host-b/datastores/0/{vm}")),
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("deployment.0"), b"<domain/>").unwrap();
    std::fs::write(src.join("disk.1"), b"context iso").unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("stale"), b"from an earlier run").unwrap();
    let (p, q) = (src.display().to_string(), dst.display().to_string());
    // Two names for the same sshd: one "host" sends, the other receives.
    assert_ok(&e.tm("mv", &[&format!("127.0.0.1:{p}"), &format!("localhost:{q}"), &vm.to_string(), "0"]));
    assert_eq!(std::fs::read(dst.join("deployment.0")).unwrap(), b"<domain/>");
    assert_eq!(std::fs::read(dst.join("disk.1")).unwrap(), b"context iso");
    assert!(!dst.join("stale").exists(), "the destination is replaced");
    assert!(!src.exists(), "the source is removed after the copy");
    let names: Vec<String> = std::fs::read_dir(dst.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [vm.to_string()], "no temporary sibling is left");
    assert!(
        !std::fs::read_dir(&dst)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".rbdx-probe"))
    );
    // A re-run after the move (the source gone, the destination there) succeeds.
    assert_ok(&e.tm("mv", &[&format!("127.0.0.1:{p}"), &format!("localhost:{q}"), &vm.to_string(), "0"]));
    assert!(dst.join("deployment.0").exists());
    let bad = e.tm("mv", &[&format!("127.0.0.1:{q}"), "localhost:/", &vm.to_string(), "0"]);
    assert!(!bad.status.success());
}

#[test]
fn a_move_between_two_names_of_one_directory_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let e = ssh_env(dir.path(), &sshd);
    let vm = 3_400_000 + std::process::id() % 100_000;
    e.oned.set_datastore(0, e.system_ds(0, false));
    e.oned.set_vm(vm, vm_doc(vm, "127.0.0.1", 3, &[]));
    let shared = dir.path().join(format!("shared/datastores/0/{vm}"));
    std::fs::create_dir_all(&shared).unwrap();
    for f in ["deployment.0", "disk.0", "disk.1", "checkpoint"] {
        std::fs::write(shared.join(f), f.as_bytes()).unwrap();
    }
    // The same directory, as one host sees it and as another does (a shared
    // file system, or two names for one machine): the paths differ only by a link.
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(dir.path().join("shared"), &alias).unwrap();
    let (p, q) =
        (shared.display().to_string(), alias.join(format!("datastores/0/{vm}")).display().to_string());
    let (vms, ds) = (vm.to_string(), "0".to_string());
    assert_ok(&e.tm("mv", &[&format!("127.0.0.1:{p}"), &format!("localhost:{q}"), &vms, &ds]));
    for f in ["deployment.0", "disk.0", "disk.1", "checkpoint"] {
        assert_eq!(std::fs::read(shared.join(f)).unwrap(), f.as_bytes(), "{f} is kept");
    }
    // postmigrate between the two names does not remove it either.
    let out = e
        .command(&["tm", "postmigrate", "127.0.0.1", "localhost", &q, &vms, &ds])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 4, "every file is still there");
}

#[test]
fn bridges_that_oned_reports_off_are_skipped_and_none_left_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let e = ssh_env(dir.path(), &sshd);
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    // 10.255.255.1 answers nothing: picked, it would hang until the ssh timeout.
    let bridges = ("BRIDGE_LIST", "10.255.255.1 127.0.0.1 10.255.255.2".to_string());
    let ds_doc = e.image_ds(IMAGE_DS, false, &[bridges]);
    let rm = |id: u32| {
        let src = format!("{pool}/one-{id}");
        let msg = format!("<IMAGE><SOURCE>{src}</SOURCE></IMAGE>{ds_doc}");
        ops::create(c, &ImageSpec::new(&pool, &format!("one-{id}")).unwrap(), MIB, &CreateOptions::default())
            .unwrap();
        let t = Instant::now();
        let out = e.ds("rm", id, &msg);
        (out, t.elapsed())
    };
    e.oned.set_hosts(&[("10.255.255.1", 8), ("127.0.0.1", 2), ("10.255.255.2", 4)]);
    let base = 3_200_000 + std::process::id() % 100_000 * 3;
    for id in base..base + 3 {
        let (out, took) = rm(id);
        assert_ok(&out);
        assert!(took < Duration::from_secs(20), "id {id} went to the live bridge ({took:?})");
        assert!(
            ops::stat(c, &ImageSpec::new(&pool, &format!("one-{id}")).unwrap()).unwrap_err().is_not_found()
        );
    }
    let logins = std::fs::read_to_string(&sshd.log).unwrap().matches("Accepted publickey").count();
    assert_eq!(logins, 3, "every action ran on 127.0.0.1");
    // Every bridge off: one line, at once, nothing changed.
    e.oned.set_hosts(&[("10.255.255.1", 8), ("127.0.0.1", 3), ("10.255.255.2", 4)]);
    let id = base + 9;
    let (out, took) = rm(id);
    let line = assert_fails(&out, "no usable host in BRIDGE_LIST");
    assert!(took < Duration::from_secs(2), "failed at once ({took:?}): {line}");
    let img = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    assert!(ops::stat(c, &img).is_ok(), "nothing was removed");
    ops::remove(c, &img, ops::RemoveOptions::default()).unwrap();
}

/// A virsh (and lxc-freeze) stand-in on the host: records its calls, and fails
/// the verbs named in `<dir>/fail` (one per line).
fn recording_quiescers(dir: &Path) -> (std::path::PathBuf, String) {
    let log = dir.join("quiesce.log");
    let script = |name: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{log}'\nfor v in \"$@\"; do grep -qx \"$v\" '{fail}' 2>/dev/null && {{ echo \"error: $v failed\" >&2; exit 1; }}; done\nexit 0\n",
                log = log.display(),
                fail = dir.join("fail").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let (virsh, freeze, unfreeze) = (script("virsh"), script("lxc-freeze"), script("lxc-unfreeze"));
    (log, format!("VIRSH = {virsh}\nLXC_FREEZE = {freeze}\nLXC_UNFREEZE = {unfreeze}\n"))
}

#[test]
fn a_running_disk_is_saved_frozen_else_suspended_else_not_at_all_and_containers_freeze_with_lxc() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let (log, host_conf) = recording_quiescers(dir.path());
    std::fs::create_dir_all(dir.path().join("remotes/etc/rbdx")).unwrap();
    std::fs::write(dir.path().join("remotes/etc/rbdx/rbdx.conf"), &host_conf).unwrap();
    let e = ssh_env(dir.path(), &sshd);
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let id = 3_400_000 + std::process::id() % 100_000;
    let (pimg, vm) = (id, id + 1);
    let pimg_s = ImageSpec::new(&pool, &format!("one-{pimg}")).unwrap();
    ops::create(c, &pimg_s, 8 * MIB, &CreateOptions::default()).unwrap();
    e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, false, &[]));
    let disks = [e.image_disk(1, &pimg_s.to_string(), false, IMAGE_DS, 8)];
    // LCM 26: HOTPLUG_SAVEAS, a save-as of the running VM's disk.
    e.oned.set_vm(vm, vm_doc(vm, "127.0.0.1", 26, &disks));
    let sysdir = dir.path().join(format!("datastores/0/{vm}"));
    let disk = format!("127.0.0.1:{}/disk.1", sysdir.display());
    let (vms, ds) = (vm.to_string(), IMAGE_DS.to_string());
    assert_ok(&e.tm("ln.ssh", &[&format!("frontend:{pimg_s}"), &disk, &vms, &ds]));
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    let fail = |verbs: &str| std::fs::write(dir.path().join("fail"), verbs).unwrap();

    // Frozen and thawed.
    let saved = |n: u32| ImageSpec::new(&pool, &format!("one-{}", id + 10 + n)).unwrap();
    assert_ok(&e.tm("cpds.ssh", &[&disk, &saved(0).to_string(), "-1", &vms, &ds]));
    assert_eq!(
        calls(),
        format!("virsh -c qemu:///system domfsfreeze one-{vm}\nvirsh -c qemu:///system domfsthaw one-{vm}\n")
    );
    // The guest agent does not answer: suspended and resumed.
    std::fs::remove_file(&log).unwrap();
    fail("domfsfreeze\n");
    assert_ok(&e.tm("cpds.ssh", &[&disk, &saved(1).to_string(), "-1", &vms, &ds]));
    let got = calls();
    assert!(
        got.contains(&format!("suspend one-{vm}")) && got.ends_with(&format!("resume one-{vm}\n")),
        "{got}"
    );
    // Neither: the copy is refused and nothing is made.
    fail("domfsfreeze\nsuspend\n");
    let out = e.tm("cpds.ssh", &[&disk, &saved(2).to_string(), "-1", &vms, &ds]);
    assert_fails(&out, "could not domfsfreeze or suspend");
    assert!(
        ops::stat(c, &saved(2)).unwrap_err().is_not_found(),
        "nothing is saved from a live, unquiesced disk"
    );
    for n in 0..2 {
        assert!(ops::stat(c, &saved(n)).is_ok());
        ops::remove(c, &saved(n), ops::RemoveOptions::default()).unwrap();
    }

    // An LXC container: lxc-freeze and lxc-unfreeze around a live snapshot.
    fail("");
    std::fs::remove_file(&log).unwrap();
    let lxc_vm = vm_doc(vm, "127.0.0.1", 3, &disks).replace("<![CDATA[kvm]]>", "<![CDATA[lxc]]>");
    e.oned.set_vm(vm, lxc_vm);
    assert_ok(&e.tm("snap_create_live", &[&disk, "0", &vms, &ds]));
    assert_eq!(calls(), format!("lxc-freeze -n one-{vm}\nlxc-unfreeze -n one-{vm}\n"));
    let snaps: Vec<String> = ops::stat(c, &pimg_s).unwrap().snapshots.into_iter().map(|s| s.name).collect();
    assert!(snaps.contains(&"0".to_string()), "{snaps:?}");
    ops::disk::Disk::new(c, pimg_s.clone(), &rbdx_one::naming::ONE)
        .remove(None, ops::disk::Reclaim::Trash)
        .unwrap();
}
