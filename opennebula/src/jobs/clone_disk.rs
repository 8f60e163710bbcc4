//! TM clone: a non-persistent VM disk as a CoW clone of the image's base
//! snapshot (taken once however many VMs deploy at once), grown to the disk's
//! size.

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CloneOptions};

use super::{Done, spec};
use crate::error::{Context, Result};
use crate::naming::BASE_SNAP;

/// Clones `source@BASE_SNAP` into `target` (a re-run finds it made), bounded
/// to `max_depth`, then grows it to `size_mb`.
///
/// # Errors
/// Ceph errors, with what was being done.
pub fn run(
    c: &Cluster,
    source: &str,
    target: &str,
    data_pool: Option<&str>,
    size_mb: Option<u64>,
    max_depth: u32,
    log: &mut Vec<String>,
) -> Result<Done> {
    let (src, dst) = (spec(source)?, spec(target)?);
    let opts = CloneOptions { data_pool: data_pool.map(str::to_string), ..CloneOptions::default() };
    let done = ops::clone_from_snapshot(c, &src, BASE_SNAP, &dst, &opts, true, max_depth)
        .context(format!("cloning {src} to {dst}"))?;
    if done.existed {
        log.push(format!("{dst} exists already"));
    }
    if done.took_snapshot {
        log.push(format!("took the base snapshot {src}@{BASE_SNAP}"));
    }
    if done.flattened {
        log.push(format!("flattened {dst}: clone chain longer than {max_depth}"));
    }
    if let Some(mb) = size_mb {
        let size = mb << 20;
        let now = match done.size {
            Some(s) => s,
            None => ops::stat(c, &dst).context(format!("resizing {dst}"))?.size,
        };
        if now < size {
            ops::resize(c, &dst, size, false).context(format!("resizing {dst}"))?;
        }
    }
    Done::nothing()
}
