//! TM snap_create / snap_create_live: a snapshot of a disk, the guest frozen
//! around it when asked (and thawed on every path).

use rbdx_core::Cluster;
use rbdx_core::ops::disk::Disk;

use super::{Done, spec};
use crate::error::{Context, Result};
use crate::job::Freeze;

/// Takes snapshot `snap` of `head`.
///
/// # Errors
/// Ceph errors (a failed freeze is only logged).
pub fn run(
    c: &Cluster,
    head: &str,
    snap: &str,
    freeze: Option<&Freeze>,
    log: &mut Vec<String>,
) -> Result<Done> {
    let h = spec(head)?;
    let thaw = match freeze {
        Some(f) => crate::freeze::freeze(f, log)?,
        None => None,
    };
    let r = Disk::new(c, h.clone(), &crate::naming::ONE).snapshot_create(snap);
    if let Some(t) = thaw {
        t.thaw(log);
    }
    r.context(format!("creating snapshot {snap} of {h}"))?;
    Done::nothing()
}
