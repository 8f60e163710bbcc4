//! The host-side file work of the ssh-system-datastore actions (`*.ssh`) and of
//! VM directory moves: disk files, `tar` streams, directories. Paths come from
//! oned's arguments and are checked before use; subprocesses get argument
//! vectors, never shell text.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};

use crate::job::BASE_SNAP;

use crate::error::{Context, Error, Result};
pub use crate::hostdir::{probe_dir, receive_dir, send_dir};

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

/// A VM's backup directory on a host: `<sysdir>/backup` (`…/<ds>/<vm>/backup`)
/// or, with `BACKUP_BASE_PATH`, `<base>/<vm>/backup`, where `<base>/<vm>` is
/// the VM's own and removed with it. Checked again on the host before use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupDir {
    /// The path.
    pub path: String,
    /// The VM id.
    pub vm: u32,
    /// Under BACKUP_BASE_PATH: `<base>/<vm>` goes with the backup directory.
    pub own_parent: bool,
}

impl BackupDir {
    /// The backup directory of VM `vm`: `<sysdir>/backup`, or
    /// `<base>/<vm>/backup` with a BACKUP_BASE_PATH.
    ///
    /// # Errors
    /// One line when the result is not such a directory.
    pub fn new(sysdir: &str, base: Option<&str>, vm: u32) -> Result<Self> {
        let d = match base {
            Some(b) => {
                Self { path: format!("{}/{vm}/backup", b.trim_end_matches('/')), vm, own_parent: true }
            }
            None => Self { path: format!("{}/backup", sysdir.trim_end_matches('/')), vm, own_parent: false },
        };
        d.check()?;
        Ok(d)
    }

    /// The directory, checked: normalised, deep enough, ending in `<vm>/backup`.
    ///
    /// # Errors
    /// One line naming the path.
    pub fn check(&self) -> Result<&Path> {
        check_path(&self.path)?;
        let normal = !self.path.contains("//") && !self.path.split('/').any(|c| c == ".");
        let parts: Vec<&str> = self.path.split('/').collect();
        let n = parts.len();
        if normal && n >= 4 && parts[n - 1] == "backup" && parts[n - 2] == self.vm.to_string() {
            Ok(Path::new(&self.path))
        } else {
            Err(Error::Failed(format!(
                "refusing {:?}: not the backup directory of VM {}",
                self.path, self.vm
            )))
        }
    }

    /// What is removed after the backup: the directory, or `<base>/<vm>`.
    ///
    /// # Errors
    /// One line naming the path.
    pub fn removable(&self) -> Result<&Path> {
        let p = self.check()?;
        match (self.own_parent, p.parent()) {
            (true, Some(parent)) => Ok(check_path(parent.to_str().unwrap_or(""))?),
            _ => Ok(p),
        }
    }
}

/// Removes `path` and what is under it, without following a symlink at any
/// level (a link in its place is removed, not its target); a missing path is
/// fine.
///
/// # Errors
/// File errors.
pub fn remove_tree(path: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io { context: format!("removing {}", path.display()), source: e })
        }
        _ => Ok(()),
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

pub(crate) fn io(what: &str, p: &str) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(format!("{what} {p}"))
}

/// Writes image `src` (at `snap`) to file `path`, creating its directory, and
/// marks the datastore directory for local monitoring.
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
    enable_local_monitoring(p)
}

/// Marks the system datastore as monitored by its hosts (`<ds dir>/.monitor`
/// holding `ssh`), as the stock ssh actions do: the disk files live there, so
/// the host reports their sizes.
fn enable_local_monitoring(disk: &Path) -> Result<()> {
    let Some(ds_dir) = disk.parent().and_then(Path::parent) else { return Ok(()) };
    let marker = ds_dir.join(".monitor");
    let now = fs::read_to_string(&marker).unwrap_or_default();
    if now.trim_end_matches('\n') != "ssh" {
        fs::write(&marker, "ssh\n").map_err(io("writing", &marker.display().to_string()))?;
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
