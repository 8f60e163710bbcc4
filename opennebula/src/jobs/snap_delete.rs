//! TM / DS snap_delete: a snapshot deleted wherever it lives (clones or not).

use rbdx_core::Cluster;
use rbdx_core::ops::disk::Disk;

use super::{Done, spec};
use crate::error::{Context, Result};

/// Deletes snapshot `snap` of `head`.
///
/// # Errors
/// Ceph errors.
pub fn run(c: &Cluster, head: &str, snap: &str) -> Result<Done> {
    let h = spec(head)?;
    Disk::new(c, h.clone(), &crate::naming::ONE)
        .snapshot_delete(snap)
        .context(format!("deleting snapshot {snap} of {h}"))?;
    Done::nothing()
}
