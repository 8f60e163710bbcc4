//! TM prebackup / postbackup (and `_live`), run as oned runs them against the
//! oned double and the test cluster: the files a backup datastore collects,
//! checked byte for byte against the disk (qcow2 chains rebuilt with
//! `qemu-img`, `.rbdiff` streams applied), the snapshot chain kept across
//! runs, a revert and a save-as child, a chain the stock scripts started, and
//! a failed run that leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::one::{OneEnv, assert_fails, assert_ok, vm_doc};
use rbdx_tests::{MIB, fill};

const LOCAL: &str = "EXECUTION = local\nCEPH_TIMEOUT = 20\n";
const IMAGE_DS: u32 = 100;
const SYSTEM_DS: u32 = 0;
const SIZE_MB: u64 = 16;

fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 3_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

struct Vm {
    e: OneEnv,
    id: u32,
    img: ImageSpec,
    sysdir: PathBuf,
}

impl Vm {
    /// A running VM with one persistent disk (`one-<id>`, 16 MiB, 8 MiB written).
    fn new() -> Self {
        let e = OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), LOCAL);
        let id = fresh_id();
        let img = ImageSpec::new(&e.cluster.pool, &format!("one-{id}")).unwrap();
        let c = e.cluster.connect();
        ops::create(c, &img, SIZE_MB * MIB, &CreateOptions::with_data_pool(Some(&e.cluster.ec_pool)))
            .unwrap();
        fill(&ops::ioctx(c, &img).unwrap().open(&img.name).unwrap(), 0, 8 * MIB, 1);
        e.oned.set_datastore(IMAGE_DS, e.image_ds(IMAGE_DS, true, &[]));
        e.oned.set_datastore(SYSTEM_DS, e.system_ds(SYSTEM_DS, false));
        let sysdir = e.dir.path().join(format!("datastores/{SYSTEM_DS}/{id}"));
        let vm = Self { e, id, img, sysdir };
        vm.set_backup_config("FULL", -1, None);
        vm
    }

    fn c(&self) -> &Cluster {
        self.e.cluster.connect()
    }

    /// oned's VM document with this BACKUP_CONFIG (and the chain's image id).
    fn set_backup_config(&self, mode: &str, last: i64, image: Option<u32>) {
        let disk = self.e.image_disk(0, &self.img.to_string(), false, IMAGE_DS, SIZE_MB);
        let doc = vm_doc(self.id, "localhost", 3, &[disk]);
        let ids = image.map_or(String::new(), |i| format!("<BACKUP_IDS><ID>{i}</ID></BACKUP_IDS>"));
        let backups = format!(
            "<BACKUPS><BACKUP_CONFIG><MODE><![CDATA[{mode}]]></MODE>\
             <LAST_INCREMENT_ID><![CDATA[{last}]]></LAST_INCREMENT_ID>\
             <FS_FREEZE><![CDATA[NONE]]></FS_FREEZE></BACKUP_CONFIG>{ids}</BACKUPS>"
        );
        self.e.oned.set_vm(self.id, doc.replace("</VM>", &format!("{backups}</VM>")));
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("localhost:{}", self.sysdir.display()),
            "0".into(),
            format!("one-{}", self.id),
            "-".into(),
            self.id.to_string(),
            SYSTEM_DS.to_string(),
        ]
    }

    fn tm(&self, action: &str, stdin: &str) -> Output {
        let mut cmd = self.e.command(&["tm", action]);
        cmd.args(self.args());
        rbdx_tests::run_with_stdin(&mut cmd, stdin.as_bytes())
    }

    fn doc(&self, result: &str) -> String {
        format!("<VM><ID>{}</ID><BACKUP_RESULT>{result}</BACKUP_RESULT></VM>", self.id)
    }

    /// prebackup_live, then the files it left (copied out, as the backup
    /// datastore would), then postbackup_live.
    fn backup(&self, files: &Path) -> Vec<String> {
        assert_ok(&self.tm("prebackup_live", &self.doc("")));
        let dir = self.sysdir.join("backup");
        let mut names = Vec::new();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            std::fs::copy(f.path(), files.join(&name)).unwrap();
            names.push(name);
        }
        names.sort();
        let xml = std::fs::read_to_string(dir.join("vm.xml")).unwrap();
        let decoded = rbdx_one::base64::decode(&xml.replace('\n', "")).expect("vm.xml is base64");
        assert!(String::from_utf8_lossy(&decoded).starts_with("<VM>"), "vm.xml holds the VM document");
        assert_ok(&self.tm("postbackup_live", &self.doc("SUCCESS")));
        assert!(!dir.exists(), "postbackup removes the backup directory");
        names
    }

    fn snapshots(&self, image: &ImageSpec) -> Vec<String> {
        let mut v: Vec<String> =
            ops::stat(self.c(), image).unwrap().snapshots.into_iter().map(|s| s.name).collect();
        v.sort();
        v
    }

    fn write(&self, offset: u64, len: u64, seed: u8) {
        let io = ops::ioctx(self.c(), &self.img).unwrap();
        fill(&io.open(&self.img.name).unwrap(), offset, len, seed);
    }

    fn finish(&self) {
        let _ = ops::disk::Disk::new(self.c(), self.img.clone(), &rbdx_one::naming::ONE)
            .remove(None, ops::disk::Reclaim::Flatten);
    }
}

/// The bytes of `image` (at its snapshot).
fn bytes(c: &Cluster, image: &ImageSpec) -> Vec<u8> {
    let io = ops::ioctx(c, image).unwrap();
    let img = io.open_read_only(&image.name, image.snap.as_deref()).unwrap();
    let mut buf = vec![0u8; usize::try_from(img.info().unwrap().size).unwrap()];
    ops::changes::read_exact_at(&img, 0, &mut buf).unwrap();
    buf
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// What a qcow2 chain `links` (base first) reads as, rebuilt as a restore does.
fn chain_bytes(dir: &Path, links: &[&str]) -> Vec<u8> {
    for link in links {
        let out = Command::new("qemu-img").args(["check", "-q"]).arg(dir.join(link)).output().unwrap();
        assert!(out.status.success(), "qemu-img check {link}: {}", String::from_utf8_lossy(&out.stdout));
    }
    for pair in links.windows(2) {
        let (base, top) = (dir.join(pair[0]), dir.join(pair[1]));
        qemu_img(&["rebase", "-u", "-F", "qcow2", "-b", base.to_str().unwrap(), top.to_str().unwrap()]);
    }
    let raw = dir.join("chain.raw");
    let top = dir.join(links.last().unwrap());
    qemu_img(&["convert", "-O", "raw", top.to_str().unwrap(), raw.to_str().unwrap()]);
    let b = std::fs::read(&raw).unwrap();
    std::fs::remove_file(raw).unwrap();
    b
}

/// `base` with the `rbd export-diff` stream `diff` applied.
fn apply_rbdiff(mut base: Vec<u8>, diff: &[u8]) -> (Vec<u8>, Option<String>, Option<String>) {
    assert!(diff.starts_with(b"rbd diff v1\n"));
    let (mut p, mut from, mut to) = (12, None, None);
    let u64_at = |p: usize| u64::from_le_bytes(diff[p..p + 8].try_into().unwrap());
    loop {
        let tag = diff[p];
        p += 1;
        match tag {
            b'f' | b't' => {
                let n = u32::from_le_bytes(diff[p..p + 4].try_into().unwrap()) as usize;
                let name = String::from_utf8(diff[p + 4..p + 4 + n].to_vec()).unwrap();
                if tag == b'f' {
                    from = Some(name)
                } else {
                    to = Some(name)
                }
                p += 4 + n;
            }
            b's' => {
                base.resize(u64_at(p) as usize, 0);
                p += 8;
            }
            b'w' => {
                let (off, len) = (u64_at(p) as usize, u64_at(p + 8) as usize);
                base[off..off + len].copy_from_slice(&diff[p + 16..p + 16 + len]);
                p += 16 + len;
            }
            b'z' => {
                let (off, len) = (u64_at(p) as usize, u64_at(p + 8) as usize);
                base[off..off + len].fill(0);
                p += 16;
            }
            b'e' => return (base, from, to),
            t => panic!("unknown record {t}"),
        }
    }
}

#[test]
fn incremental_qcow2_backups_follow_a_reverted_disk_and_spare_its_save_as_child() {
    let vm = Vm::new();
    let c = vm.c();
    let files = tempfile::tempdir().unwrap();
    let (vms, ds) = (vm.id.to_string(), IMAGE_DS.to_string());
    let disk = format!("localhost:{}/disk.0", vm.sysdir.display());

    // A reverted disk with a save-as child.
    assert_ok(&vm.e.tm("snap_create", &[&disk, "0", &vms, &ds]));
    vm.write(2 * MIB, 2 * MIB, 2);
    assert_ok(&vm.e.tm("snap_revert", &[&disk, "0", &vms, &ds]));
    let child = ImageSpec::new(&vm.img.pool, &format!("one-{}", fresh_id())).unwrap();
    assert_ok(&vm.e.tm("cpds", &[&disk, &child.to_string(), "-1", &vms, &ds]));
    let child_bytes = bytes(c, &child);

    // First increment: the whole disk, snapshot one_backup_0 kept.
    vm.set_backup_config("INCREMENT", -1, None);
    assert_eq!(vm.backup(files.path()), ["disk.0.0", "vm.xml"]);
    let want0 = bytes(c, &vm.img);
    assert_eq!(chain_bytes(files.path(), &["disk.0.0"]), want0);
    assert!(vm.snapshots(&vm.img).contains(&"one_backup_0".to_string()));

    // Second: only what changed (a write and a discard), as an overlay.
    vm.write(MIB, MIB / 2, 3);
    let io = ops::ioctx(c, &vm.img).unwrap();
    io.open(&vm.img.name).unwrap().discard(6 * MIB, MIB).unwrap();
    vm.set_backup_config("INCREMENT", 0, None);
    assert_eq!(vm.backup(files.path()), ["disk.0.1", "vm.xml"]);
    let size1 = std::fs::metadata(files.path().join("disk.0.1")).unwrap().len();
    assert!(size1 < 2 * MIB, "the increment holds the changes only ({size1} bytes)");
    let want1 = bytes(c, &vm.img);
    assert_ne!(want1, want0);
    assert_eq!(chain_bytes(files.path(), &["disk.0.0", "disk.0.1"]), want1);
    let backup_snaps: Vec<String> =
        vm.snapshots(&vm.img).into_iter().filter(|s| s.starts_with("one_backup")).collect();
    assert_eq!(backup_snaps, ["one_backup_1"], "postbackup keeps the next increment's base only");

    // A revert replaces the head: the next increment holds the whole disk.
    assert_ok(&vm.e.tm("snap_revert", &[&disk, "0", &vms, &ds]));
    vm.set_backup_config("INCREMENT", 1, None);
    assert_eq!(vm.backup(files.path()), ["disk.0.2", "vm.xml"]);
    let want2 = bytes(c, &vm.img);
    assert_eq!(chain_bytes(files.path(), &["disk.0.0", "disk.0.1", "disk.0.2"]), want2);

    // A full backup of the stopped VM ends the chain.
    vm.set_backup_config("FULL", -1, None);
    assert_ok(&vm.tm("prebackup", &vm.doc("")));
    let dir = vm.sysdir.join("backup");
    assert_eq!(chain_bytes(&dir, &["disk.0.0"]), want2);
    assert_ok(&vm.tm("postbackup", &vm.doc("SUCCESS")));
    assert!(
        vm.snapshots(&vm.img).iter().all(|s| !s.starts_with("one_backup")),
        "{:?}",
        vm.snapshots(&vm.img)
    );

    // The save-as child never changed, and the disk still reverts.
    assert_eq!(bytes(c, &child), child_bytes);
    assert_ok(&vm.e.tm("snap_revert", &[&disk, "0", &vms, &ds]));
    let _ = ops::disk::Disk::new(c, child, &rbdx_one::naming::ONE).remove(None, ops::disk::Reclaim::Flatten);
    vm.finish();
}

#[test]
fn a_chain_the_stock_scripts_started_continues_as_rbd_export_diffs() {
    let vm = Vm::new();
    let c = vm.c();
    let files = tempfile::tempdir().unwrap();
    // The stock first increment: a protected one_backup_0.
    let io = ops::ioctx(c, &vm.img).unwrap();
    {
        let img = io.open(&vm.img.name).unwrap();
        img.snap_create("one_backup_0").unwrap();
        img.snap_protect("one_backup_0").unwrap();
    }
    let base = bytes(c, &vm.img.at("one_backup_0").unwrap());
    vm.write(3 * MIB, MIB, 4);
    io.open(&vm.img.name).unwrap().discard(0, MIB).unwrap();
    // The chain's backup image says FORMAT rbd (a chain of .rbd2 + .rbdiff).
    vm.e.oned.set_image(4242, "<IMAGE><ID>4242</ID><FORMAT>rbd</FORMAT></IMAGE>".into());
    vm.set_backup_config("INCREMENT", 0, Some(4242));
    assert_eq!(vm.backup(files.path()), ["disk.0.1.rbdiff", "vm.xml"]);
    let diff = std::fs::read(files.path().join("disk.0.1.rbdiff")).unwrap();
    // 1 MiB written, 1 MiB discarded (librbd may report a partly discarded
    // object as zeros to write): far below the 8 MiB the disk holds.
    assert!((diff.len() as u64) < 3 * MIB, "changes only: {} bytes", diff.len());
    let (applied, from, to) = apply_rbdiff(base, &diff);
    assert_eq!((from.as_deref(), to.as_deref()), (Some("one_backup_0"), Some("one_backup_1")));
    assert_eq!(applied, bytes(c, &vm.img));
    let snaps = vm.snapshots(&vm.img);
    assert_eq!(snaps, ["one_backup_1"], "the protected stock base is gone, the new one kept");
    vm.finish();
}

#[test]
fn a_failed_backup_removes_the_snapshots_it_took_and_keeps_the_base() {
    let vm = Vm::new();
    let c = vm.c();
    let io = ops::ioctx(c, &vm.img).unwrap();
    io.open(&vm.img.name).unwrap().snap_create("one_backup_3").unwrap();
    // A second disk whose image does not exist: its snapshot fails.
    let d0 = vm.e.image_disk(0, &vm.img.to_string(), false, IMAGE_DS, SIZE_MB);
    let missing = format!("{}/one-{}", vm.img.pool, fresh_id());
    let d1 = vm.e.image_disk(1, &missing, false, IMAGE_DS, SIZE_MB);
    let doc = vm_doc(vm.id, "localhost", 3, &[d0, d1]).replace(
        "</VM>",
        "<BACKUPS><BACKUP_CONFIG><MODE>INCREMENT</MODE><LAST_INCREMENT_ID>3</LAST_INCREMENT_ID>\
         </BACKUP_CONFIG></BACKUPS></VM>",
    );
    vm.e.oned.set_vm(vm.id, doc);
    let mut args = vm.args();
    args[1] = "0:1".into();
    let mut cmd = vm.e.command(&["tm", "prebackup_live"]);
    cmd.args(&args);
    let out = rbdx_tests::run_with_stdin(&mut cmd, vm.doc("").as_bytes());
    assert_fails(&out, &missing);
    assert_eq!(vm.snapshots(&vm.img), ["one_backup_3"], "one_backup_4 was taken back, the base kept");
    // postbackup after the failure keeps the base, removes the directory, exits 0.
    let mut cmd = vm.e.command(&["tm", "postbackup_live"]);
    cmd.args(&args);
    assert_ok(&rbdx_tests::run_with_stdin(&mut cmd, vm.doc("FAILURE").as_bytes()));
    assert_eq!(vm.snapshots(&vm.img), ["one_backup_3"]);
    assert!(!vm.sysdir.join("backup").exists());
    vm.finish();
}

#[test]
fn backups_go_under_backup_base_path_when_the_driver_sets_one() {
    let vm = Vm::new();
    let remotes = tempfile::tempdir().unwrap();
    let base = vm.e.dir.path().join("bk");
    std::fs::create_dir_all(remotes.path().join("etc/datastore")).unwrap();
    std::fs::write(
        remotes.path().join("etc/datastore/datastore.conf"),
        format!("# comment\nexport BACKUP_BASE_PATH=\"{}\"\n", base.display()),
    )
    .unwrap();
    let run = |action: &str, doc: &str| {
        let mut cmd = vm.e.command(&["tm", action]);
        cmd.args(vm.args()).env("RBDX_REMOTES", remotes.path());
        rbdx_tests::run_with_stdin(&mut cmd, doc.as_bytes())
    };
    assert_ok(&run("prebackup", &vm.doc("")));
    let dir = base.join(format!("{}/backup", vm.id));
    assert_eq!(chain_bytes(&dir, &["disk.0.0"]), bytes(vm.c(), &vm.img));
    assert!(!vm.sysdir.join("backup").exists());
    assert_ok(&run("postbackup", &vm.doc("SUCCESS")));
    assert!(!base.join(vm.id.to_string()).exists(), "the VM's directory under the base path goes too");
    assert!(base.exists(), "the base path itself stays");
    vm.finish();
}

#[test]
fn a_backup_snapshot_does_not_change_the_carrier_a_revert_makes() {
    let vm = Vm::new();
    let c = vm.c();
    let (vms, ds) = (vm.id.to_string(), IMAGE_DS.to_string());
    let disk = format!("localhost:{}/disk.0", vm.sysdir.display());
    assert_ok(&vm.e.tm("snap_create", &[&disk, "0", &vms, &ds]));
    ops::ioctx(c, &vm.img).unwrap().open(&vm.img.name).unwrap().snap_create("one_backup_2").unwrap();
    vm.write(0, MIB, 9);
    assert_ok(&vm.e.tm("snap_revert", &[&disk, "0", &vms, &ds]));
    let carrier = ImageSpec::new(&vm.img.pool, &format!("{}-0", vm.img.name)).unwrap();
    assert_eq!(vm.snapshots(&carrier), ["0", "one_backup_2"], "the stock carrier name, as without backups");
    assert_ok(&vm.e.tm("snap_delete", &[&disk, "0", &vms, &ds]));
    vm.finish();
    assert!(ops::stat(c, &carrier).unwrap_err().is_not_found(), "removed with the disk");
}
