//! `volume_snapshot`: takes a snapshot of the disk.

use crate::error::Result;
use crate::helper::Helper;

/// Nothing (`null`).
pub type Output = ();

/// Takes snapshot `snap` of `volname`.
///
/// # Errors
/// Ceph errors (an invalid or taken name).
pub fn run(h: &Helper, volname: &str, snap: &str) -> Result<Output> {
    h.disk(volname)?.snapshot_create(snap)?;
    Ok(())
}
