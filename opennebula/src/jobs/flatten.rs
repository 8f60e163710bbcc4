//! DS snap_flatten: the image becomes snapshot `snap`, alone.

use rbdx_core::Cluster;
use rbdx_core::ops::disk::Disk;

use super::{Done, disk_config, spec};
use crate::error::{Context, Result};

/// Flattens `head` to `snap`.
///
/// # Errors
/// Ceph errors, with what was being done.
pub fn run(c: &Cluster, head: &str, snap: &str, data_pool: &Option<String>, max_depth: u32) -> Result<Done> {
    let h = spec(head)?;
    Disk::new(c, h.clone(), &crate::naming::ONE)
        .flatten_to(snap, &disk_config(data_pool, max_depth))
        .context(format!("flattening {h} to snapshot {snap}"))?;
    Done::nothing()
}
