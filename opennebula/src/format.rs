//! Formatting a new volatile disk: the file system is made on a sparse temporary
//! file (removed on every path); only the extents mkfs wrote are read, and only
//! their non-zero blocks are written to RBD.

use std::fs::File;
use std::process::Command;

use rbdx_core::Image;

use crate::error::{Context, Error, Result};

/// File systems (and `swap`) this driver can format.
pub const SUPPORTED: [&str; 6] = ["ext2", "ext3", "ext4", "xfs", "vfat", "swap"];

/// Checks that `fs` is one this driver formats.
///
/// # Errors
/// One line naming the supported ones.
pub fn check_supported(fs: &str) -> Result<()> {
    if SUPPORTED.contains(&fs) {
        Ok(())
    } else {
        Err(Error::Failed(format!("unsupported file system {fs:?} (supported: {})", SUPPORTED.join(", "))))
    }
}

/// The mkfs command line for `fs` on `path`: arguments, never a shell string.
fn mkfs_command(fs: &str, path: &str) -> Result<Command> {
    let mut cmd = match fs {
        "swap" => {
            let mut c = Command::new("mkswap");
            c.args(["-L", "swap"]);
            c
        }
        "xfs" => {
            let mut c = Command::new("mkfs.xfs");
            c.arg("-f");
            c
        }
        "ext2" | "ext3" | "ext4" => {
            let mut c = Command::new(format!("mkfs.{fs}"));
            c.args(["-F", "-q"]);
            c
        }
        "vfat" => Command::new("mkfs.vfat"),
        _ => {
            return Err(Error::Failed(format!(
                "unsupported file system {fs:?} (supported: {})",
                SUPPORTED.join(", ")
            )));
        }
    };
    cmd.arg(path);
    Ok(cmd)
}

/// How long mkfs may take.
const MKFS_LIMIT: std::time::Duration = std::time::Duration::from_secs(1800);

/// Makes file system `fs` in `img` (of `size` bytes).
///
/// # Errors
/// A message for an unsupported file system, a failed mkfs, or a failed write.
pub fn format_image(img: &Image<'_>, size: u64, fs: &str) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("rbdx-mkfs-").tempfile().context("temporary file")?;
    tmp.as_file().set_len(size).context("temporary file")?;
    let path = tmp.path().to_string_lossy().into_owned();
    let mut cmd = mkfs_command(fs, &path)?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let out = rbdx_import::child::run(&mut cmd, MKFS_LIMIT).context(format!("mkfs for {fs}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Failed(format!("mkfs for {fs} failed: {}", crate::log::one_line(&err))));
    }
    let f = File::open(tmp.path()).context("reading the formatted file")?;
    // Only what mkfs wrote is read: a 1 TiB file system is a few MiB of data.
    rbdx_core::ops::write_file_sparse(img, &f, false).map_err(Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_file_systems_and_no_shell() {
        assert!(mkfs_command("ext4; rm -rf /", "/tmp/x").is_err());
        let c = mkfs_command("ext4", "/tmp/a b").unwrap();
        assert_eq!(c.get_program(), "mkfs.ext4");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["-F", "-q", "/tmp/a b"]);
    }
}
