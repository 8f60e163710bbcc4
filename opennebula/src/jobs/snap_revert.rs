//! TM / DS snap_revert: a disk reverted to a snapshot in time independent of its
//! size (rolled back in place when that is cheaper).

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, DiskConfig};

use super::{Done, disk_config, spec};
use crate::error::{Context, Result};

/// Reverts `head` to `snap`; a rollback in place visits at most
/// `rollback_max_mb` MiB.
///
/// # Errors
/// Ceph errors.
pub fn run(
    c: &Cluster,
    head: &str,
    snap: &str,
    data_pool: &Option<String>,
    max_depth: u32,
    rollback_max_mb: u64,
) -> Result<Done> {
    let h = spec(head)?;
    let cfg = DiskConfig { rollback_max_bytes: rollback_max_mb << 20, ..disk_config(data_pool, max_depth) };
    Disk::new(c, h.clone(), &crate::naming::ONE)
        .revert(snap, &cfg)
        .context(format!("reverting {h} to snapshot {snap}"))?;
    Done::nothing()
}
