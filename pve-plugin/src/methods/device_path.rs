//! `device_path`: where a volume's (or snapshot's) kernel device is linked.

use crate::error::Result;
use crate::helper::{Helper, kernel};
use crate::pve_device_path;

/// `/dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`.
pub type Output = String;

/// The link PVE's udev rule makes for `volname` (at `snap`), with the image
/// that holds the snapshot.
///
/// # Errors
/// [`crate::Error::SnapshotNotFound`]; Ceph errors.
pub fn run(h: &Helper, volname: &str, snap: Option<&str>) -> Result<Output> {
    let spec = h.existing_kernel_spec(volname, snap)?;
    let (_, dev) = kernel();
    Ok(dev.join(pve_device_path(&h.cluster.fsid()?, &spec)).to_string_lossy().into_owned())
}
