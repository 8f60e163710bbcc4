//! Secrets never leave their files: the restricted client's key must not appear in
//! the argv or environment of any process rbdx starts (ssh, mkfs, mkswap, qemu-img,
//! virsh, …), nor in what rbdx prints (stdout, stderr), nor in what it sends to
//! oned. Each action runs under `strace -f`, which records every `execve` with its
//! full argv and environment; the test also checks that the children it expects
//! were started, so a silent strace cannot pass for a clean run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::one::{OneEnv, vm_doc};
use rbdx_tests::sshd::Sshd;
use rbdx_tests::{MIB, fill};

const IMAGE_DS: u32 = 100;
const SYSTEM_DS: u32 = 0;

fn disk_path(host: &str, vm: u32, disk: u32) -> String {
    format!("{host}:/var/lib/one//datastores/{SYSTEM_DS}/{vm}/disk.{disk}")
}

/// Runs `cmd` under `strace -f`, with `stdin`; returns its output and the trace.
fn traced(cmd: &Command, stdin: &[u8], trace: &Path) -> (Output, String) {
    let mut strace = Command::new("strace");
    strace.args(["-f", "-v", "-s", "100000", "-e", "trace=execve", "-o"]).arg(trace);
    let out = rbdx_tests::run_with_stdin(&mut rbdx_tests::wrapped(strace, cmd), stdin);
    (out, std::fs::read_to_string(trace).unwrap_or_default())
}

/// The programs the trace shows started (basename of each execve's path).
fn started(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter_map(|l| l.split_once("execve(\"")?.1.split_once('"').map(|(p, _)| p.to_string()))
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

struct Check<'a> {
    key: &'a str,
    dir: PathBuf,
    n: usize,
}

impl Check<'_> {
    /// Runs `cmd` traced; asserts success, that each of `children` was started,
    /// and that the key shows nowhere.
    fn run(&mut self, what: &str, cmd: &Command, stdin: &[u8], children: &[&str]) -> Output {
        self.n += 1;
        let (out, trace) = traced(cmd, stdin, &self.dir.join(format!("trace.{}", self.n)));
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let progs = started(&trace);
        for c in children {
            assert!(progs.iter().any(|p| p == c), "{what}: expected {c} to run, saw {progs:?}");
        }
        assert!(!trace.contains(self.key), "{what}: the key is in a child's argv or environment");
        for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(!String::from_utf8_lossy(text).contains(self.key), "{what}: the key is on {name}");
        }
        out
    }
}

#[test]
fn keys_stay_out_of_argv_environment_output_and_oned_calls() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let remotes = dir.path().join("remotes");
    std::fs::create_dir_all(remotes.join("rbdx")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rbdx"), remotes.join("rbdx/rbdx")).unwrap();
    let virsh = dir.path().join("virsh");
    std::fs::write(&virsh, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&virsh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_rbdx"));
    // Two drivers: one that works through ssh, one in-process (its children run here).
    let ssh = OneEnv::new(
        bin,
        &format!(
            "EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = {}\nACTION_TIMEOUT = 120\n",
            sshd.ssh_setting(),
            remotes.display()
        ),
    );
    let local = OneEnv::new(bin, &format!("EXECUTION = local\nVIRSH = {}\n", virsh.display()));
    let c = local.cluster.connect();
    let pool = local.cluster.pool.clone();
    let key = local.key();
    assert!(key.len() > 20, "a real key");
    let mut check = Check { key: &key, dir: dir.path().to_path_buf(), n: 0 };

    let id = 5_000_000 + (std::process::id() % 20_000) * 10;
    let (img, vm) = (id, id + 1);
    let img_s = ImageSpec::new(&pool, &format!("one-{img}")).unwrap();
    ops::create(c, &img_s, 16 * MIB, &CreateOptions::with_data_pool(Some(&local.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &img_s).unwrap().open(&img_s.name).unwrap(), 0, 2 * MIB, 1);
    let disks = |e: &OneEnv| {
        vec![
            e.image_disk(0, &img_s.to_string(), true, IMAGE_DS, 16),
            e.volatile_disk(1, "fs", Some("ext4"), SYSTEM_DS, 16),
            e.volatile_disk(2, "swap", None, SYSTEM_DS, 8),
        ]
    };
    for (e, host) in [(&ssh, "127.0.0.1"), (&local, "localhost")] {
        e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
        e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, true));
        e.oned.set_vm(vm, vm_doc(vm, host, 3, &disks(e)));
    }
    let (vms, ds, sys) = (vm.to_string(), IMAGE_DS.to_string(), SYSTEM_DS.to_string());

    // Through ssh: the one child is ssh, and the key is not in its argv or env.
    let src = format!("frontend:{img_s}");
    let mut cmd = ssh.command(&["tm", "clone"]);
    cmd.args([src.as_str(), &disk_path("127.0.0.1", vm, 0), &vms, &ds]);
    check.run("ssh clone", &cmd, b"", &["ssh"]);
    let mut cmd = ssh.command(&["tm", "snap_create"]);
    cmd.args([disk_path("127.0.0.1", vm, 0).as_str(), "0", &vms, &ds]);
    check.run("ssh snap_create", &cmd, b"", &["ssh"]);

    // In-process: mkfs, mkswap, virsh, qemu-img run as rbdx's children.
    let mut cmd = local.command(&["tm", "mkimage"]);
    cmd.args(["16", "raw", &disk_path("localhost", vm, 1), &vms, &sys]);
    check.run("mkimage ext4", &cmd, b"", &["mkfs.ext4"]);
    let mut cmd = local.command(&["tm", "mkswap"]);
    cmd.args(["8", &disk_path("localhost", vm, 2), &vms, &sys]);
    check.run("mkswap", &cmd, b"", &["mkswap"]);
    let mut cmd = local.command(&["tm", "snap_create_live"]);
    cmd.args([disk_path("localhost", vm, 0).as_str(), "1", &vms, &ds]);
    check.run("snap_create_live", &cmd, b"", &["virsh"]);

    // A qcow2 import: qemu-img converts it.
    let raw = dir.path().join("img.raw");
    std::fs::write(&raw, vec![7u8; 2 * MIB as usize]).unwrap();
    let qcow = dir.path().join("img.qcow2");
    let ok = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let new = id + 2;
    let msg = format!(
        "<DS_DRIVER_ACTION_DATA><IMAGE><PATH>{}</PATH><SIZE>2</SIZE></IMAGE>{}</DS_DRIVER_ACTION_DATA>",
        qcow.display(),
        local.image_ds(IMAGE_DS, true, &[])
    );
    let cmd = local.command(&["ds", "cp", &new.to_string()]);
    check.run("ds cp qcow2", &cmd, rbdx_one::base64::encode(msg.as_bytes()).as_bytes(), &["qemu-img"]);

    // The Proxmox helper: keyring by path only.
    let req = serde_json::json!({
        "version": 1, "storeid": "s",
        "ceph": {"pool": pool, "data_pool": local.cluster.ec_pool, "id": local.cluster.id,
                 "conf": local.cluster.conf, "keyring": local.cluster.keyring},
        "method": "alloc_image", "params": {"vmid": id + 3, "name": null, "size_kib": 4096}
    });
    let mut cmd = Command::new(bin);
    cmd.arg("pve");
    let out = check.run("pve alloc_image", &cmd, format!("{req}\n").as_bytes(), &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // Nothing rbdx sent to oned carries the key either.
    for e in [&ssh, &local] {
        let sent = e.oned.requests().join("\n");
        assert!(sent.contains("one.vm.info"), "the actions did ask oned");
        assert!(!sent.contains(&key), "the key went to oned");
    }

    // Clean up: the VM's disks, the imported image, the Proxmox volume, the image.
    for d in 0..3 {
        let mut cmd = local.command(&["tm", "delete"]);
        cmd.args([disk_path("localhost", vm, d).as_str(), &vms, if d == 0 { &ds } else { &sys }]);
        assert!(cmd.stdin(Stdio::null()).output().unwrap().status.success());
    }
    for name in [format!("one-{new}"), format!("vm-{}-disk-0", id + 3), format!("one-{img}")] {
        ops::remove(c, &ImageSpec::new(&pool, &name).unwrap(), ops::RemoveOptions::default()).unwrap();
    }
}
