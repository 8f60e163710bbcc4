//! A VM directory removed from its host (TM delete of the VM directory).

use super::Done;
use crate::error::{Error, Result};
use crate::hostfs::VmPath;

/// Removes `path` (confined to a VM directory); one that is gone is fine.
///
/// # Errors
/// A path outside the VM directories; file errors.
pub fn run(path: &VmPath, log: &mut Vec<String>) -> Result<Done> {
    match std::fs::remove_dir_all(path.check_dir()?) {
        Ok(()) => log.push(format!("removed {}", path.path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io { context: format!("removing {}", path.path), source: e }),
    }
    Done::nothing()
}
