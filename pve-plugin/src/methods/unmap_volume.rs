//! `unmap_volume`: unmaps a volume's (or snapshot's) kernel device.

use crate::error::Result;
use crate::helper::{Helper, kernel};
use crate::image_of;

/// Whether a device was unmapped.
pub type Output = bool;

/// Unmaps `volname`'s (or `snap`'s) device if there is one.
///
/// # Errors
/// Ceph and kernel errors.
pub fn run(h: &Helper, volname: &str, snap: Option<&str>) -> Result<Output> {
    image_of(volname)?;
    let (krbd, _) = kernel();
    if !krbd.loaded() {
        return Ok(false);
    }
    // Nothing of a missing snapshot can be mapped.
    let Some(spec) = h.kernel_spec(volname, snap)? else { return Ok(false) };
    Ok(krbd.unmap(&h.cluster.fsid()?, &spec, h.timeout())?)
}
