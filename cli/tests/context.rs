//! The native `context` action in an OpenNebula tree laid out as a package install
//! lays it (`/var/lib/one/{remotes,vms,datastores}` under a test root, the stock
//! remotes that rbdx replaces present as traps that record being run): the ISO is
//! built from oned's argv (context.sh, FILES_DS images with `path:'name'`
//! renames, http(s) sources) and written as `disk.N` of the VM's directory,
//! locally and over ssh; OpenNebula's shell script is never run; hostile file
//! names are data; sources outside their places, FIFOs, duplicate names and
//! destinations outside the VM's directory are refused with one line, and nothing
//! outside that directory changes.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbdx_tests::http::FileServer;
use rbdx_tests::one::{OneEnv, assert_fails, assert_ok, ds_doc};
use rbdx_tests::sshd::Sshd;

const BIN: &str = env!("CARGO_BIN_EXE_rbdx");
const SYS_DS: u32 = 0;
const FILE_DS: u32 = 2;
const VM: u32 = 5;

/// A package-install layout under `root`: the remotes the stock context uses,
/// each a trap that records being run in `root/ran`.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new(root: &Path) -> Self {
        let one = root.join("var/lib/one");
        for stock in [
            "remotes/tm/common/context",
            "remotes/tm/ceph/context",
            "remotes/tm/tm_common.sh",
            "remotes/scripts_common.sh",
            "remotes/datastore/downloader.sh",
        ] {
            let p = one.join(stock);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(
                &p,
                format!("#!/bin/sh\necho \"{stock} $*\" >> '{}'\n", root.join("ran").display()),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir_all(one.join(format!("vms/{VM}"))).unwrap();
        std::fs::write(one.join(format!("vms/{VM}/context.sh")), "# Context variables\nHOSTNAME='vm5'\n")
            .unwrap();
        std::fs::create_dir_all(one.join(format!("datastores/{FILE_DS}"))).unwrap();
        std::fs::write(one.join(format!("datastores/{FILE_DS}/3f2a9c")), "#!/bin/sh\necho init\n").unwrap();
        std::fs::create_dir_all(one.join(format!("datastores/{SYS_DS}/{VM}"))).unwrap();
        std::fs::create_dir_all(one.join(".one")).unwrap();
        std::fs::write(one.join(".one/one_auth"), "oneadmin:secret\n").unwrap();
        Self { root: root.to_path_buf() }
    }

    fn one(&self, p: &str) -> String {
        self.root.join("var/lib/one").join(p).display().to_string()
    }

    fn vm_dir(&self) -> PathBuf {
        self.root.join(format!("var/lib/one/datastores/{SYS_DS}/{VM}"))
    }

    /// Every file under the root with its content, the VM directory left out.
    fn snapshot(&self) -> BTreeSet<(String, Vec<u8>)> {
        let mut out = BTreeSet::new();
        let mut todo = vec![self.root.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p == self.vm_dir() {
                    continue;
                }
                let kind = std::fs::symlink_metadata(&p).unwrap().file_type();
                if kind.is_dir() {
                    todo.push(p);
                } else if kind.is_file() {
                    out.insert((p.display().to_string(), std::fs::read(&p).unwrap()));
                } else {
                    out.insert((p.display().to_string(), format!("{kind:?}").into_bytes()));
                }
            }
        }
        out
    }

    fn ran(&self) -> String {
        std::fs::read_to_string(self.root.join("ran")).unwrap_or_default()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn context(e: &OneEnv, tree: &Tree, args: &[String]) -> Output {
    e.command(&["tm", "context"])
        .args(args)
        .env("RBDX_REMOTES", tree.root.join("var/lib/one/remotes"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The files of an ISO, extracted with xorriso.
fn iso_files(iso: &Path) -> Vec<(String, Vec<u8>)> {
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

fn volume_id(iso: &Path) -> String {
    let b = std::fs::read(iso).unwrap();
    String::from_utf8_lossy(&b[32768 + 40..32768 + 72]).trim().to_string()
}

fn env_for(tree: &Tree, config: &str) -> OneEnv {
    let e = OneEnv::new(Path::new(BIN), config);
    let base = tree.one(&format!("datastores/{SYS_DS}"));
    e.oned.set_datastore(
        SYS_DS,
        ds_doc(SYS_DS, "system", 1, &[("TM_MAD", "ceph".into()), ("BASE_PATH", base)]),
    );
    e
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn the_context_iso_is_built_natively_and_written_to_the_vm_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::new(dir.path());
    let e = env_for(&tree, "EXECUTION = local\nSSH = /bin/false\n");
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("motd"), "hello from the web\n").unwrap();
    let server = FileServer::start(web.path());
    // A file whose name is shell text: plain data.
    let odd = format!("vms/{VM}/x$(touch PWNED)`id`");
    std::fs::write(tree.one(&odd), "odd\n").unwrap();
    let before = tree.snapshot();
    let dst = format!("{}:{}/disk.3", hostname(), tree.vm_dir().display());
    let args = s(&[
        &tree.one(&format!("vms/{VM}/context.sh")),
        &format!("{}:'init.sh'", tree.one(&format!("datastores/{FILE_DS}/3f2a9c"))),
        &format!("{}:'it''s'", tree.one(&odd)),
        &format!("{}/motd", server.base),
        &dst,
        &VM.to_string(),
        &SYS_DS.to_string(),
    ]);
    assert_ok(&context(&e, &tree, &args));
    let iso = tree.vm_dir().join("disk.3");
    assert_eq!(volume_id(&iso), "CONTEXT");
    let names: Vec<String> = iso_files(&iso).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["context.sh", "init.sh", "it''s", "motd"]);
    let files = iso_files(&iso);
    assert_eq!(files[0].1, b"# Context variables\nHOSTNAME='vm5'\n");
    assert_eq!(files[3].1, b"hello from the web\n");
    assert_eq!(tree.ran(), "", "no stock script was run");
    assert!(!tree.root.join("PWNED").exists() && !Path::new("PWNED").exists(), "a file name was executed");
    let after = tree.snapshot();
    assert_eq!(before, after, "nothing outside the VM directory changed");
    let leftovers: Vec<String> = std::fs::read_dir(tree.vm_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["disk.3"], "only the ISO in the VM directory");
    // A re-run replaces it.
    assert_ok(&context(&e, &tree, &args));
    assert_eq!(iso_files(&iso).len(), 4);
}

#[test]
fn hostile_sources_and_destinations_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::new(dir.path());
    let e = env_for(&tree, "EXECUTION = local\nSSH = /bin/false\n");
    let host = hostname();
    let ctx_sh = tree.one(&format!("vms/{VM}/context.sh"));
    let vm_dir = tree.vm_dir().display().to_string();
    let disk = format!("{host}:{vm_dir}/disk.3");
    let (vm, sys) = (VM.to_string(), SYS_DS.to_string());
    std::fs::create_dir_all(tree.one("vms/6")).unwrap();
    std::fs::write(tree.one("vms/6/context.sh"), "OTHER_VM=1\n").unwrap();
    let fifo = tree.one(&format!("vms/{VM}/pipe"));
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink(tree.one(".one/one_auth"), tree.one(&format!("vms/{VM}/innocent"))).unwrap();
    let before = tree.snapshot();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (s(&[&ctx_sh, &tree.one(".one/one_auth"), &disk, &vm, &sys]), "outside the directories"),
        (
            s(&[&ctx_sh, &tree.one(&format!("vms/{VM}/innocent")), &disk, &vm, &sys]),
            "outside the directories",
        ),
        (s(&[&ctx_sh, &tree.one("vms/6/context.sh"), &disk, &vm, &sys]), "two context files"),
        (s(&[&tree.one("vms/6/context.sh"), &disk, &vm, &sys]), "outside the directories"),
        (s(&[&ctx_sh, "/etc/passwd", &disk, &vm, &sys]), "outside the directories"),
        (s(&[&ctx_sh, &fifo, &disk, &vm, &sys]), "not a regular file"),
        (s(&[&ctx_sh, &format!("{ctx_sh}:'../../x'"), &disk, &vm, &sys]), "invalid file name"),
        (s(&[&ctx_sh, &format!("{ctx_sh}:'a/b'"), &disk, &vm, &sys]), "invalid file name"),
        (s(&[&ctx_sh, "relative/file", &disk, &vm, &sys]), "absolute path"),
        (s(&[&ctx_sh, &format!("{host}:{vm_dir}/../../../../../tmp/disk.3"), &vm, &sys]), "`..`"),
        (s(&[&ctx_sh, &format!("{host}:{vm_dir}/deployment.0"), &vm, &sys]), "not a disk"),
        (s(&[&ctx_sh, &format!("{host}:{vm_dir}/disk.3"), "6", &sys]), "not a disk of VM 6"),
        (
            s(&[&ctx_sh, &format!("{host}:/tmp/rbdx-elsewhere/0/{VM}/disk.3"), &vm, &sys]),
            "not in the directory",
        ),
        (s(&[&ctx_sh, &format!("{host}:{vm_dir}/disk.3"), &vm, "7"]), "not a disk of VM"),
        (s(&[&ctx_sh, &format!("-oProxyCommand=x:{vm_dir}/disk.3"), &vm, &sys]), "invalid host"),
        (s(&[&disk, &vm, &sys]), "wrong number of arguments"),
    ];
    for (args, want) in &cases {
        assert_fails(&context(&e, &tree, args), want);
    }
    assert_eq!(tree.ran(), "", "no stock script was run");
    assert_eq!(before, tree.snapshot(), "nothing changed outside the VM directory");
    assert_eq!(std::fs::read_dir(tree.vm_dir()).unwrap().count(), 0, "nothing written for a refused action");
}

#[test]
fn the_iso_reaches_a_remote_host_over_the_job_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::new(dir.path());
    let sshd = Sshd::start(dir.path());
    let remotes = dir.path().join("host-remotes");
    std::fs::create_dir_all(remotes.join("rbdx")).unwrap();
    std::os::unix::fs::symlink(BIN, remotes.join("rbdx/rbdx")).unwrap();
    let config =
        format!("EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = {}\n", sshd.ssh_setting(), remotes.display());
    let e = env_for(&tree, &config);
    let ctx_sh = tree.one(&format!("vms/{VM}/context.sh"));
    let dst = format!("127.0.0.1:{}/disk.2", tree.vm_dir().display());
    assert_ok(&context(&e, &tree, &s(&[&ctx_sh, &dst, &VM.to_string(), &SYS_DS.to_string()])));
    let files = iso_files(&tree.vm_dir().join("disk.2"));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "context.sh");
    let log = std::fs::read_to_string(&sshd.log).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "one ssh round trip: {log}");
}
