//! The host side of VM directory moves: the same-directory probe, the tar
//! stream that sends a directory, and the one that receives it beside the
//! directory and swaps it into place only once whole and synced.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use crate::hostfs::{VmPath, io};

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
