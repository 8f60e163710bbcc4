//! `volume_snapshot_delete`: deletes a snapshot, clones of it or not.

use crate::error::Result;
use crate::helper::Helper;

/// Nothing (`null`).
pub type Output = ();

/// Unmaps `volname@snap`'s kernel device, if any, and deletes the snapshot.
///
/// # Errors
/// Ceph and kernel errors.
pub fn run(h: &Helper, volname: &str, snap: &str) -> Result<Output> {
    h.release_snapshot(volname, snap)?;
    h.disk(volname)?.snapshot_delete(snap)?;
    Ok(())
}
