//! TM / DS snap_revert: a disk reverted to a snapshot in time independent of its
//! size.

use rbdx_core::Cluster;
use rbdx_core::ops::disk::Disk;

use super::{Done, disk_config, spec};
use crate::error::{Context, Result};

/// Reverts `head` to `snap`.
///
/// # Errors
/// Ceph errors.
pub fn run(c: &Cluster, head: &str, snap: &str, data_pool: &Option<String>, max_depth: u32) -> Result<Done> {
    let h = spec(head)?;
    Disk::new(c, h.clone(), &crate::naming::ONE)
        .revert(snap, &disk_config(data_pool, max_depth))
        .context(format!("reverting {h} to snapshot {snap}"))?;
    Done::nothing()
}
