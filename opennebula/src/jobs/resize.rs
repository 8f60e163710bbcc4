//! TM resize: a disk grown. A shrink would lose data: refused, as `rbd resize`
//! without --allow-shrink refuses it.

use rbdx_core::Cluster;
use rbdx_core::ops;

use super::{Done, spec};
use crate::error::{Context, Result};

/// Grows `image` to `size_mb` MiB.
///
/// # Errors
/// A shrink; Ceph errors.
pub fn run(c: &Cluster, image: &str, size_mb: u64) -> Result<Done> {
    let i = spec(image)?;
    ops::resize(c, &i, size_mb.saturating_mul(1 << 20), false).context(format!("resizing {i}"))?;
    Done::nothing()
}
