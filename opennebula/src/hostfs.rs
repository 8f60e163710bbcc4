//! The host-side file work of the ssh-system-datastore actions (`*.ssh`) and of
//! VM directory moves: disk files, `tar` streams, directories. Paths come from
//! oned's arguments and are checked before use; subprocesses get argument
//! vectors, never shell text.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};

use crate::job::BASE_SNAP;

use crate::error::{Context, Error, Result};

/// A path in a VM's directory on a host, with the ids it must carry: the VM
/// directory `<base>/<ds>/<vm>` or a file in it `<base>/<ds>/<vm>/disk.<n>`
/// (`<base>` at least two levels deep). The front-end builds it from oned's
/// arguments; the host checks it again before touching anything, so a job can
/// only ever reach the directory of the VM it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmPath {
    /// The path.
    pub path: String,
    /// The system datastore id.
    pub ds: u32,
    /// The VM id.
    pub vm: u32,
}

impl VmPath {
    /// The VM directory `path` of VM `vm` in system datastore `ds`.
    ///
    /// # Errors
    /// One line when the path is not that directory.
    pub fn dir(path: &str, ds: u32, vm: u32) -> Result<Self> {
        let p = Self { path: path.to_string(), ds, vm };
        p.check_dir()?;
        Ok(p)
    }

    /// A disk file `path` (`…/<ds>/<vm>/disk.<n>`) of VM `vm`.
    ///
    /// # Errors
    /// One line when the path is not such a file.
    pub fn file(path: &str, ds: u32, vm: u32) -> Result<Self> {
        let p = Self { path: path.to_string(), ds, vm };
        p.check_file()?;
        Ok(p)
    }

    fn parts(&self) -> Result<Vec<&str>> {
        check_path(&self.path)?;
        if self.path.contains("//") || self.path.ends_with('/') || self.path.split('/').any(|c| c == ".") {
            return Err(Error::Failed(format!("refusing unnormalised path {:?}", self.path)));
        }
        Ok(self.path.split('/').skip(1).collect())
    }

    /// The directory, checked.
    ///
    /// # Errors
    /// One line when it is not `<base>/<ds>/<vm>`.
    pub fn check_dir(&self) -> Result<&Path> {
        let parts = self.parts()?;
        let n = parts.len();
        let ok = n >= 4 && parts[n - 2] == self.ds.to_string() && parts[n - 1] == self.vm.to_string();
        if ok {
            Ok(Path::new(&self.path))
        } else {
            Err(Error::Failed(format!(
                "refusing {:?}: not the directory of VM {} in datastore {}",
                self.path, self.vm, self.ds
            )))
        }
    }

    /// The file, checked.
    ///
    /// # Errors
    /// One line when it is not `<base>/<ds>/<vm>/disk.<n>`.
    pub fn check_file(&self) -> Result<&Path> {
        let parts = self.parts()?;
        let n = parts.len();
        let disk = parts
            .last()
            .and_then(|l| l.strip_prefix("disk."))
            .is_some_and(|d| !d.is_empty() && d.len() <= 10 && d.bytes().all(|b| b.is_ascii_digit()));
        let ok = n >= 5 && disk && parts[n - 3] == self.ds.to_string() && parts[n - 2] == self.vm.to_string();
        if ok {
            Ok(Path::new(&self.path))
        } else {
            Err(Error::Failed(format!(
                "refusing {:?}: not a disk of VM {} in datastore {}",
                self.path, self.vm, self.ds
            )))
        }
    }

    /// The VM directory holding this file.
    pub fn parent_dir(&self) -> Self {
        let dir =
            Path::new(&self.path).parent().map_or_else(String::new, |p| p.to_string_lossy().into_owned());
        Self { path: dir, ds: self.ds, vm: self.vm }
    }
}

/// Checks a path on a host: absolute, no `..`, no control characters, and at
/// least three components deep (never `/` or `/var`).
///
/// # Errors
/// A message naming the path.
pub fn check_path(p: &str) -> Result<&Path> {
    let path = Path::new(p);
    let deep = path.components().count() >= 4;
    let ok = p.starts_with('/')
        && deep
        && p.len() <= crate::datastore::PATH_MAX
        && !p.chars().any(char::is_control)
        && !p.split('/').any(|c| c == "..");
    if ok { Ok(path) } else { Err(Error::Failed(format!("refusing unsafe path {p:?}"))) }
}

fn io(what: &str, p: &str) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(format!("{what} {p}"))
}

/// Writes image `src` (at `snap`) to file `path`, creating its directory.
///
/// # Errors
/// One line.
pub fn export(
    c: &Cluster,
    src: &ImageSpec,
    snap: Option<&str>,
    drop_base_snap: bool,
    file: &VmPath,
    size_mb: Option<u64>,
    log: &mut Vec<String>,
) -> Result<()> {
    let p = file.check_file()?;
    let path = file.path.as_str();
    let io_ctx = ops::ioctx(c, src).map_err(Error::from)?;
    if drop_base_snap {
        match io_ctx.open(&src.name).and_then(|i| i.snap_remove(BASE_SNAP)) {
            Ok(()) | Err(_) => {}
        }
    }
    if let Some(s) = snap {
        rbdx_core::ops::disk::ensure_snapshot(&io_ctx, &src.name, s).context(format!("snapshot of {src}"))?;
    }
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).map_err(io("creating", &dir.display().to_string()))?;
    }
    let img = io_ctx.open_read_only(&src.name, snap).map_err(Error::from)?;
    let mut f =
        OpenOptions::new().write(true).create(true).truncate(true).open(p).map_err(io("creating", path))?;
    let n = ops::export_sparse(&img, &mut f).context(format!("copying {src} to {path}"))?;
    log.push(format!("copied {} MiB of {src} to {path}", n >> 20));
    if let Some(mb) = size_mb {
        if f.metadata().map_err(io("reading", path))?.len() < mb << 20 {
            f.set_len(mb << 20).map_err(io("resizing", path))?;
        }
    }
    Ok(())
}

/// Writes file `path` into image `target` (created with `data_pool` when `create`).
///
/// # Errors
/// One line.
pub fn import(
    c: &Cluster,
    file: &VmPath,
    target: &ImageSpec,
    create: bool,
    data_pool: Option<&str>,
    size_mb: Option<u64>,
) -> Result<()> {
    let p = file.check_file()?;
    let path = file.path.as_str();
    let f = File::open(p).map_err(io("opening", path))?;
    let len = f.metadata().map_err(io("reading", path))?.len();
    let size = len.max(size_mb.unwrap_or(0) << 20);
    if create {
        match ops::create(c, target, size, &CreateOptions::with_data_pool(data_pool)) {
            Ok(()) => {}
            // A re-run: the earlier run's image is overwritten below.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(Error::Failed(format!("creating {target}: {e}"))),
        }
    } else if ops::stat(c, target).map_err(Error::from)?.size < size {
        ops::resize(c, target, size, false).map_err(Error::from)?;
    }
    let io_ctx = ops::ioctx(c, target).map_err(Error::from)?;
    let img = io_ctx.open(&target.name).map_err(Error::from)?;
    ops::write_file_sparse(&img, &f, true).context(format!("copying {path} into {target}"))?;
    Ok(())
}

/// Removes a disk file; a missing one is fine.
///
/// # Errors
/// One line.
pub fn remove_file(file: &VmPath) -> Result<()> {
    match fs::remove_file(file.check_file()?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Failed(format!("removing {}: {e}", file.path))),
    }
}

/// Writes `size` bytes of `input` to `file`: into `<file>.rbdx-part` in the VM
/// directory (made if missing), synced, then renamed into place; nothing is left
/// under either name when the input ends short.
///
/// # Errors
/// One line.
pub fn put_file(file: &VmPath, size: u64, input: impl std::io::Read) -> Result<()> {
    use std::io::Write;
    let p = file.check_file()?;
    let dir = file.parent_dir();
    fs::create_dir_all(dir.check_dir()?).map_err(io("creating", &dir.path))?;
    let part = format!("{}.rbdx-part", file.path);
    let write = || -> Result<()> {
        let mut f = File::create(&part).map_err(io("creating", &part))?;
        let n = std::io::copy(&mut input.take(size), &mut f).map_err(io("writing", &part))?;
        if n != size {
            return Err(Error::Failed(format!(
                "writing {}: the stream ended after {n} of {size} bytes",
                file.path
            )));
        }
        f.flush().and_then(|()| f.sync_all()).map_err(io("writing", &part))?;
        fs::rename(&part, p).map_err(io("renaming", &part))
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&part);
    })
}

/// How long sending or receiving a VM directory may take (the action's deadline
/// bounds it too).
const TAR_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The marker the same-directory probe leaves: `.rbdx-probe-<mark>`.
fn marker(dir: &Path, mark: &str) -> Result<std::path::PathBuf> {
    if mark.is_empty() || mark.len() > 64 || !mark.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::Failed(format!("invalid probe marker {mark:?}")));
    }
    Ok(dir.join(format!(".rbdx-probe-{mark}")))
}

/// Whether VM directory `dir` exists; leaves marker `mark` in it, and reports
/// (and removes) marker `find`.
///
/// # Errors
/// One line.
pub fn probe_dir(dir: &VmPath, mark: Option<&str>, find: Option<&str>) -> Result<(bool, bool)> {
    let p = dir.check_dir()?;
    let exists = p.is_dir();
    if let (Some(m), true) = (mark, exists) {
        File::create(marker(p, m)?).map_err(io("marking", &dir.path))?;
    }
    let found = match find {
        Some(f) if exists => {
            let m = marker(p, f)?;
            let there = m.exists();
            if there {
                fs::remove_file(&m).map_err(io("unmarking", &dir.path))?;
            }
            there
        }
        _ => false,
    };
    Ok((exists, found))
}

/// `tar` sending directory `path` (sparse, without probe markers) to `out`.
///
/// # Errors
/// One line.
pub fn send_dir(dir: &VmPath, out: Stdio) -> Result<()> {
    let p = dir.check_dir()?;
    let mut cmd = Command::new("tar");
    cmd.args(["--sparse", "--exclude=./.rbdx-probe-*", "-C"])
        .arg(p)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped());
    let o = rbdx_import::child::run(&mut cmd, crate::deadline::bound(TAR_LIMIT))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "tar of {} failed: {}",
            dir.path,
            crate::log::one_line(&String::from_utf8_lossy(&o.stderr))
        )))
    }
}

/// The siblings a move uses next to VM directory `p`: where the tree arrives,
/// and where the directory it replaces waits until the swap is done.
fn siblings(p: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (p.with_file_name(format!("{name}.rbdx-incoming")), p.with_file_name(format!("{name}.rbdx-old")))
}

/// Removes a directory tree; a missing one is fine.
fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Failed(format!("removing {}: {e}", p.display())))
        }
        _ => Ok(()),
    }
}

/// Receives the tar stream read from `input` as directory `dir`, without ever
/// losing either tree: it arrives in `<dir>.rbdx-incoming`, is synced to disk,
/// and only then replaces `<dir>` (which waits as `<dir>.rbdx-old` until the
/// swap is done). A run interrupted anywhere leaves `<dir>` or its replacement
/// whole, and the next run finishes or redoes the swap.
///
/// # Errors
/// One line.
pub fn receive_dir(dir: &VmPath, mut input: impl std::io::Read) -> Result<()> {
    let p = dir.check_dir()?;
    let path = dir.path.as_str();
    let (incoming, old) = siblings(p);
    remove_tree(&incoming)?;
    fs::create_dir_all(&incoming).map_err(io("creating", &incoming.display().to_string()))?;
    let mut cmd = Command::new("tar");
    cmd.arg("-C")
        .arg(&incoming)
        .args(["-xf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tar = rbdx_import::child::spawn(&mut cmd).context("running tar")?;
    let mut stdin = tar.stdin.take().ok_or_else(|| Error::Failed("no stdin".into()))?;
    let errors = rbdx_import::child::drain(
        tar.stderr.take().ok_or_else(|| Error::Failed("no stderr".into()))?,
        1 << 16,
    );
    // Fed from here: a tar that stalls is killed by the deadline, which ends
    // this copy with a broken pipe.
    let copied = std::io::copy(&mut input, &mut stdin);
    drop(stdin);
    let status = rbdx_import::child::wait(&mut tar, crate::deadline::bound(TAR_LIMIT))
        .map_err(|e| Error::Failed(format!("tar {e}")))?;
    let out = std::process::Output { status, stdout: Vec::new(), stderr: errors.join().unwrap_or_default() };
    // tar stops reading at the end-of-archive blocks and may leave the padding
    // after them unread: a broken pipe then is no error if tar succeeded.
    if let Err(e) = copied {
        if e.kind() != std::io::ErrorKind::BrokenPipe || !out.status.success() {
            return Err(Error::Failed(format!("receiving {path}: {e}")));
        }
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Failed(format!("unpacking into {path} failed: {}", crate::log::one_line(&err))));
    }
    sync_tree(&incoming)?;
    rbdx_core::crash::point("receive_dir: received");
    if p.exists() {
        remove_tree(&old)?;
        fs::rename(p, &old).map_err(io("moving aside", path))?;
        rbdx_core::crash::point("receive_dir: old moved aside");
    }
    fs::rename(&incoming, p).map_err(io("moving into place", path))?;
    sync_dir(p.parent().unwrap_or(p))?;
    rbdx_core::crash::point("receive_dir: swapped");
    remove_tree(&old)
}

/// Flushes every file of the tree under `root` and the directories themselves.
fn sync_tree(root: &Path) -> Result<()> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).map_err(io("reading", &d.display().to_string()))? {
            let e = e.map_err(io("reading", &d.display().to_string()))?;
            let kind = e.file_type().map_err(io("reading", &e.path().display().to_string()))?;
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                File::open(e.path())
                    .and_then(|f| f.sync_all())
                    .map_err(io("syncing", &e.path().display().to_string()))?;
            }
        }
        sync_dir(&d)?;
    }
    Ok(())
}

fn sync_dir(d: &Path) -> Result<()> {
    File::open(d).and_then(|f| f.sync_all()).map_err(io("syncing", &d.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_paths_reach_only_the_vm_they_name() {
        assert!(VmPath::dir("/var/lib/one/datastores/0/42", 0, 42).is_ok());
        assert!(VmPath::file("/var/lib/one/datastores/0/42/disk.3", 0, 42).is_ok());
        for (p, ds, vm) in [
            ("/var/lib/one/datastores/0/42", 0, 43),
            ("/var/lib/one/datastores/0/42", 1, 42),
            ("/var/lib/one/datastores/0", 0, 0),
            ("/var/lib/one", 0, 0),
            ("/0/42", 0, 42),
            ("/var/lib/one/datastores/0/42/", 0, 42),
            ("/var/lib/one//datastores/0/42", 0, 42),
            ("/var/lib/one/datastores/0/42/..", 0, 42),
            ("/var/lib/one/datastores/0/042", 0, 42),
        ] {
            assert!(VmPath::dir(p, ds, vm).is_err(), "{p} as VM {vm} of datastore {ds}");
        }
        for p in [
            "/var/lib/one/datastores/0/42",
            "/var/lib/one/datastores/0/42/deployment.0",
            "/var/lib/one/datastores/0/42/disk.x",
            "/var/lib/one/datastores/0/43/disk.1",
        ] {
            assert!(VmPath::file(p, 0, 42).is_err(), "{p}");
        }
        let f = VmPath::file("/var/lib/one/datastores/0/42/disk.3", 0, 42).unwrap();
        assert_eq!(f.parent_dir(), VmPath::dir("/var/lib/one/datastores/0/42", 0, 42).unwrap());
    }

    #[test]
    fn only_safe_deep_paths() {
        assert!(check_path("/var/lib/one/datastores/0/12/disk.0").is_ok());
        assert!(check_path("/var/lib/one/datastores/0/12").is_ok());
        for p in ["/", "/var", "/var/lib", "relative/a/b/c", "/var/lib/one/../../etc", "/var/lib/one/a\nb"] {
            assert!(check_path(p).is_err(), "{p:?}");
        }
    }
}
