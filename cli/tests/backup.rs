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

/// Reverts by the clone swap: the backups must follow a disk whose snapshots
/// live on carriers.
const LOCAL: &str = "EXECUTION = local\nCEPH_TIMEOUT = 20\nROLLBACK_MAX_MB = 0\n";
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

    /// Reverts the disk to a snapshot 0 taken before `written` bytes at 2 MiB
    /// (the old head becomes a carrier), then saves it as a new image: a CoW
    /// child of the disk. Returns the child and its bytes.
    fn reverted_with_save_as_child(&self, written: u64) -> (ImageSpec, Vec<u8>) {
        let (vms, ds) = (self.id.to_string(), IMAGE_DS.to_string());
        let disk = format!("localhost:{}/disk.0", self.sysdir.display());
        assert_ok(&self.e.tm("snap_create", &[&disk, "0", &vms, &ds]));
        self.write(2 * MIB, written, 2);
        assert_ok(&self.e.tm("snap_revert", &[&disk, "0", &vms, &ds]));
        let child = ImageSpec::new(&self.img.pool, &format!("one-{}", fresh_id())).unwrap();
        assert_ok(&self.e.tm("cpds", &[&disk, &child.to_string(), "-1", &vms, &ds]));
        let child_bytes = bytes(self.c(), &child);
        (child, child_bytes)
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
    let (child, child_bytes) = vm.reverted_with_save_as_child(2 * MIB);

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
    // What the stock full increment of an rbd chain was (fixture: Ceph's CLI).
    let rbd2 = files.path().join("disk.0.rbd2");
    vm.e.rbd_admin(&[
        "export",
        "--export-format",
        "2",
        &format!("{}@one_backup_0", vm.img),
        rbd2.to_str().unwrap(),
    ]);
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
    let want = bytes(c, &vm.img);

    // Ceph's own `rbd import-diff` applies the stream onto the chain's base.
    let check = ImageSpec::new(&vm.img.pool, &format!("one-{}", fresh_id())).unwrap();
    vm.e.rbd_admin(&["import", "--export-format", "2", rbd2.to_str().unwrap(), &check.to_string()]);
    let rbdiff = files.path().join("disk.0.1.rbdiff");
    vm.e.rbd_admin(&["import-diff", rbdiff.to_str().unwrap(), &check.to_string()]);
    assert_eq!(bytes(c, &check), want, "rbd import-diff reads the same");
    assert!(vm.snapshots(&check).contains(&"one_backup_1".to_string()));
    ops::disk::Disk::new(c, check, &rbdx_one::naming::ONE).remove(None, ops::disk::Reclaim::Flatten).unwrap();

    // Restored in place from the chain, as the rsync downloader serves an rbd
    // chain (a tarball of the links), after the disk moved on.
    vm.write(0, 4 * MIB, 8);
    let tarball = files.path().join("disk.0.1.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(files.path())
        .args(["disk.0.rbd2", "disk.0.1.rbdiff"])
        .status()
        .unwrap();
    assert!(ok.success());
    let url = format!("rsync+rbd://150/0/0:aa,1:bb/{}", tarball.display());
    let remotes = backup_remotes(files.path(), &format!("{{\"0\":\"{url}\"}}"));
    vm.e.oned.set_datastore(150, rbdx_tests::one::ds_doc(150, "backups", 2, &[("DS_MAD", "rsync".into())]));
    vm.e.oned.set_image(
        4242,
        "<IMAGE><ID>4242</ID><DATASTORE_ID>150</DATASTORE_ID><FORMAT>rbd</FORMAT></IMAGE>".into(),
    );
    let mut cmd = vm.e.command(&["tm", "restore"]);
    cmd.args([
        format!("localhost:{}", vm.sysdir.display()),
        vm.id.to_string(),
        "4242".into(),
        "1".into(),
        "-1".into(),
    ])
    .env("RBDX_REMOTES", &remotes);
    assert_ok(&rbdx_tests::run_with_stdin(&mut cmd, b""));
    assert_eq!(bytes(c, &vm.img), want, "the disk reads as increment 1");
    assert!(vm.snapshots(&vm.img).is_empty(), "no backup snapshots left on the restored disk");
    assert_eq!(std::fs::read_to_string(files.path().join("ls.log")).unwrap().trim(), "-i 1");
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

/// A remotes tree with stand-ins for the backup datastore's `ls` (answers
/// `listing`, records its argv and checks its stdin) and for `downloader.sh`
/// (streams the file an rsync URL ends with, as the rsync downloader streams
/// the chain it merged).
fn backup_remotes(root: &Path, listing: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let remotes = root.join("remotes");
    let ls = remotes.join("datastore/rsync/ls");
    let dl = remotes.join("datastore/downloader.sh");
    std::fs::create_dir_all(ls.parent().unwrap()).unwrap();
    let log = root.join("ls.log");
    std::fs::write(
        &ls,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\ninput=$(cat)\n\
             case \"$input\" in *'<DATASTORE>'*'<VM>'*'<IMAGE>'*) ;; *) echo 'bad input' >&2; exit 1;; esac\n\
             echo '{listing}'\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::write(&dl, "#!/bin/sh\n[ \"$1\" = --nodecomp ] || exit 2\nexec cat \"/${2#*//*/*/*/}\"\n")
        .unwrap();
    for f in [&ls, &dl] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    remotes
}

#[test]
fn restore_puts_the_backup_in_place_and_never_deletes_a_save_as_child() {
    const BACKUP_DS: u32 = 150;
    const BACKUP_IMAGE: u32 = 4343;
    let vm = Vm::new();
    let c = vm.c();
    let files = tempfile::tempdir().unwrap();
    let (vms, ds) = (vm.id.to_string(), IMAGE_DS.to_string());
    let disk = format!("localhost:{}/disk.0", vm.sysdir.display());

    // A disk with a carrier (snapshot 0, reverted) and a save-as child.
    let (child, child_bytes) = vm.reverted_with_save_as_child(MIB);

    // Two increments; the state of the second is what the restore brings back.
    vm.set_backup_config("INCREMENT", -1, None);
    vm.backup(files.path());
    vm.write(5 * MIB, MIB, 3);
    vm.set_backup_config("INCREMENT", 0, None);
    vm.backup(files.path());
    let want = bytes(c, &vm.img);
    // What the rsync downloader streams for a chain: the links rebased and merged.
    let merged = files.path().join("merged.qcow2");
    let raw = chain_bytes(files.path(), &["disk.0.0", "disk.0.1"]);
    assert_eq!(raw, want);
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        files.path().join("disk.0.1").to_str().unwrap(),
        merged.to_str().unwrap(),
    ]);

    // The disk moves on: new data, a new snapshot.
    vm.write(0, 4 * MIB, 4);
    assert_ok(&vm.e.tm("snap_create", &[&disk, "1", &vms, &ds]));
    assert_ne!(bytes(c, &vm.img), want);

    let url = format!("rsync://{BACKUP_DS}/0/0:aa,1:bb/{}", merged.display());
    let remotes = backup_remotes(files.path(), &format!("{{\"0\":\"{url}\",\"tpm\":\"{url}.tpm\"}}"));
    vm.e.oned.set_datastore(
        BACKUP_DS,
        rbdx_tests::one::ds_doc(
            BACKUP_DS,
            "backups",
            2,
            &[("DS_MAD", "rsync".into()), ("TM_MAD", "-".into())],
        ),
    );
    vm.e.oned.set_image(
        BACKUP_IMAGE,
        format!("<IMAGE><ID>{BACKUP_IMAGE}</ID><DATASTORE_ID>{BACKUP_DS}</DATASTORE_ID><FORMAT>raw</FORMAT></IMAGE>"),
    );
    let restore = |disk_id: &str| {
        let mut cmd = vm.e.command(&["tm", "restore"]);
        cmd.args([
            format!("localhost:{}", vm.sysdir.display()),
            vms.clone(),
            BACKUP_IMAGE.to_string(),
            "-1".into(),
            disk_id.into(),
        ])
        .env("RBDX_REMOTES", &remotes);
        rbdx_tests::run_with_stdin(&mut cmd, b"")
    };
    let out = restore("0");
    assert_ok(&out);
    assert_eq!(std::fs::read_to_string(files.path().join("ls.log")).unwrap().trim(), "-i -1");
    assert_eq!(bytes(c, &vm.img), want, "the disk reads as the backup");
    assert!(vm.snapshots(&vm.img).is_empty(), "the restored disk starts with no snapshots");
    assert_eq!(bytes(c, &child), child_bytes, "the save-as child still reads the same bytes");
    let left: Vec<String> = c
        .ioctx(&vm.img.pool)
        .unwrap()
        .list_images()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| {
            n.starts_with(&format!("{}.", vm.img.name)) || n.starts_with(&format!("{}-", vm.img.name))
        })
        .collect();
    assert!(left.is_empty(), "nothing of the old disk left in the pool: {left:?}");

    // Restored as a new image instead: the backup datastore's `restore` has
    // oned register the URL in an image datastore, whose `cp` fetches it.
    let new_id = fresh_id();
    let msg = format!(
        "<IMAGE><ID>{new_id}</ID><PATH><![CDATA[{url}]]></PATH><SIZE>{SIZE_MB}</SIZE></IMAGE>{}",
        vm.e.image_ds(IMAGE_DS, true, &[])
    );
    let b64 =
        rbdx_one::base64::encode(format!("<DS_DRIVER_ACTION_DATA>{msg}</DS_DRIVER_ACTION_DATA>").as_bytes());
    let mut cmd = vm.e.command(&["ds", "cp", &new_id.to_string()]);
    cmd.env("RBDX_REMOTES", &remotes);
    let out = rbdx_tests::run_with_stdin(&mut cmd, b64.as_bytes());
    assert_ok(&out);
    let new_img = ImageSpec::new(&vm.img.pool, &format!("one-{new_id}")).unwrap();
    assert_eq!(bytes(c, &new_img), want, "the new image reads as the backup");
    ops::remove(c, &new_img, ops::RemoveOptions::default()).unwrap();

    // A download that fails changes nothing, and leaves no image behind.
    vm.write(0, MIB, 5);
    let before = bytes(c, &vm.img);
    std::fs::remove_file(&merged).unwrap();
    let out = restore("-1");
    assert_fails(&out, "downloading");
    assert_eq!(bytes(c, &vm.img), before);
    assert!(ops::stat(c, &vm.img.sibling(&format!("{}.rbdx-restore", vm.img.name)).unwrap()).is_err());

    let _ = ops::disk::Disk::new(c, child, &rbdx_one::naming::ONE).remove(None, ops::disk::Reclaim::Flatten);
    ops::disk::reclaim(c, &vm.img).unwrap();
    vm.finish();
}
