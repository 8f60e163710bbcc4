//! `volume_snapshot_rollback`: O(1): a clone of the snapshot becomes the
//! volume; the snapshots taken after it are kept.

use crate::error::Result;
use crate::helper::Helper;

/// Nothing (`null`).
pub type Output = ();

/// Rolls `volname` back to `snap`.
///
/// # Errors
/// Ceph errors (a missing snapshot, a volume in use).
pub fn run(h: &Helper, volname: &str, snap: &str) -> Result<Output> {
    h.disk(volname)?.revert(snap, &h.disk_config())?;
    Ok(())
}
