//! `cache_writeback`: an EFI disk's cache policy.

use rbdx_core::ops;

use crate::error::Result;
use crate::helper::Helper;

/// Nothing (`null`).
pub type Output = ();

/// Sets `volname`'s `rbd_cache_policy` to writeback (an EFI disk's flash does
/// many read-modify-writes), as `rbd image config set` does.
///
/// # Errors
/// Ceph errors.
pub fn run(h: &Helper, volname: &str) -> Result<Output> {
    let spec = h.volume_spec(volname)?;
    let io = ops::ioctx(&h.cluster, &spec)?;
    io.open(&spec.name)?.metadata_set("conf_rbd_cache_policy", "writeback")?;
    Ok(())
}
