//! `snapshot_image`: the image that holds a snapshot of a volume.

use crate::error::Result;
use crate::helper::Helper;

/// The image's name.
pub type Output = String;

/// The image that holds `volname`'s `snap`: the volume's own, or, after a
/// rollback, the older image of the disk that kept it.
///
/// # Errors
/// [`crate::Error::SnapshotNotFound`]; Ceph errors.
pub fn run(h: &Helper, volname: &str, snap: &str) -> Result<Output> {
    Ok(h.existing_kernel_spec(volname, Some(snap))?.name)
}
