//! The host-side file work of the ssh-system-datastore actions (`*.ssh`) and of
//! VM directory moves: disk files, `tar` streams, directories. Paths come from
//! oned's arguments and are checked before use; subprocesses get argument
//! vectors, never shell text.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};

use crate::job::{BASE_SNAP, Job};

/// Checks a path on a host: absolute, no `..`, no control characters, and at
/// least three components deep (never `/` or `/var`).
///
/// # Errors
/// A message naming the path.
pub fn check_path(p: &str) -> Result<&Path, String> {
    let path = Path::new(p);
    let deep = path.components().count() >= 4;
    let ok =
        p.starts_with('/') && deep && !p.chars().any(char::is_control) && !p.split('/').any(|c| c == "..");
    if ok { Ok(path) } else { Err(format!("refusing unsafe path {p:?}")) }
}

fn io(what: &str, p: &str) -> impl Fn(std::io::Error) -> String {
    let m = format!("{what} {p}");
    move |e| format!("{m}: {e}")
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
    path: &str,
    size_mb: Option<u64>,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let p = check_path(path)?;
    let io_ctx = ops::ioctx(c, src).map_err(|e| e.to_string())?;
    if drop_base_snap {
        match io_ctx.open(&src.name).and_then(|i| i.snap_remove(BASE_SNAP)) {
            Ok(()) | Err(_) => {}
        }
    }
    if let Some(s) = snap {
        rbdx_core::ops::disk::ensure_snapshot(&io_ctx, &src.name, s)
            .map_err(|e| format!("snapshot of {src}: {e}"))?;
    }
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).map_err(io("creating", &dir.display().to_string()))?;
    }
    let img = io_ctx.open_read_only(&src.name, snap).map_err(|e| e.to_string())?;
    let mut f =
        OpenOptions::new().write(true).create(true).truncate(true).open(p).map_err(io("creating", path))?;
    let n = ops::export_sparse(&img, &mut f).map_err(|e| format!("copying {src} to {path}: {e}"))?;
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
    path: &str,
    target: &ImageSpec,
    create: bool,
    data_pool: Option<&str>,
    size_mb: Option<u64>,
) -> Result<(), String> {
    let p = check_path(path)?;
    let f = File::open(p).map_err(io("opening", path))?;
    let len = f.metadata().map_err(io("reading", path))?.len();
    let size = len.max(size_mb.unwrap_or(0) << 20);
    if create {
        match ops::create(c, target, size, &CreateOptions::with_data_pool(data_pool)) {
            Ok(()) => {}
            // A re-run: the earlier run's image is overwritten below.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(format!("creating {target}: {e}")),
        }
    } else if ops::stat(c, target).map_err(|e| e.to_string())?.size < size {
        ops::resize(c, target, size, false).map_err(|e| e.to_string())?;
    }
    let io_ctx = ops::ioctx(c, target).map_err(|e| e.to_string())?;
    let img = io_ctx.open(&target.name).map_err(|e| e.to_string())?;
    ops::overwrite(&img, f).map_err(|e| format!("copying {path} into {target}: {e}"))?;
    Ok(())
}

/// Removes a file; a missing one is fine.
///
/// # Errors
/// One line.
pub fn remove_file(path: &str) -> Result<(), String> {
    match fs::remove_file(check_path(path)?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {path}: {e}")),
    }
}

/// Runs the jobs that only touch files.
///
/// # Errors
/// One line.
pub fn run_file_job(job: &Job, log: &mut Vec<String>) -> Result<(), String> {
    match job {
        Job::ResizeFile { path, size_mb } => {
            let f = OpenOptions::new().write(true).open(check_path(path)?).map_err(io("opening", path))?;
            if f.metadata().map_err(io("reading", path))?.len() < size_mb << 20 {
                f.set_len(size_mb << 20).map_err(io("resizing", path))?;
            }
            Ok(())
        }
        Job::RemoveDir { path } => match fs::remove_dir_all(check_path(path)?) {
            Ok(()) => {
                log.push(format!("removed {path}"));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {path}: {e}")),
        },
        _ => Err("this job streams data: it runs through `rbdx remote`".into()),
    }
}

/// `tar` sending directory `path` (sparse) to `out`.
///
/// # Errors
/// One line.
pub fn send_dir(path: &str, out: Stdio) -> Result<(), String> {
    let p = check_path(path)?;
    let st = Command::new("tar")
        .args(["--sparse", "-C"])
        .arg(p)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(out)
        .status()
        .map_err(|e| format!("running tar: {e}"))?;
    if st.success() { Ok(()) } else { Err(format!("tar of {path} failed ({st})")) }
}

/// Replaces directory `path` with the tar stream read from `input`.
///
/// # Errors
/// One line.
pub fn receive_dir(path: &str, mut input: impl std::io::Read) -> Result<(), String> {
    let p = check_path(path)?;
    match fs::remove_dir_all(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("clearing {path}: {e}")),
    }
    fs::create_dir_all(p).map_err(io("creating", path))?;
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(p)
        .args(["-xf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running tar: {e}"))?;
    let copied = tar.stdin.take().map(|mut w| std::io::copy(&mut input, &mut w));
    let out = tar.wait_with_output().map_err(|e| format!("running tar: {e}"))?;
    // tar stops reading at the end-of-archive blocks and may leave the padding
    // after them unread: a broken pipe then is no error if tar succeeded.
    if let Some(Err(e)) = copied {
        if e.kind() != std::io::ErrorKind::BrokenPipe || !out.status.success() {
            return Err(format!("receiving {path}: {e}"));
        }
    }
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("unpacking into {path} failed: {}", err.split_whitespace().collect::<Vec<_>>().join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_deep_paths() {
        assert!(check_path("/var/lib/one/datastores/0/12/disk.0").is_ok());
        assert!(check_path("/var/lib/one/datastores/0/12").is_ok());
        for p in ["/", "/var", "/var/lib", "relative/a/b/c", "/var/lib/one/../../etc", "/var/lib/one/a\nb"] {
            assert!(check_path(p).is_err(), "{p:?}");
        }
    }
}
