//! `volume_resize`: grows a volume (never shrinks it).

use rbdx_core::ops;

use crate::error::Result;
use crate::helper::Helper;

/// Nothing (`null`).
pub type Output = ();

/// Grows `volname` to `size` bytes.
///
/// # Errors
/// Ceph errors; a smaller size is refused.
pub fn run(h: &Helper, volname: &str, size: u64) -> Result<Output> {
    ops::resize(&h.cluster, &h.volume_spec(volname)?, size, false)?;
    Ok(())
}
