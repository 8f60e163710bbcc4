//! TM delete of a disk: the disk with every image and snapshot it owns (and the
//! trashed ancestors it was the last clone of); then the base snapshot of the
//! image it was cloned from, once no clone uses it.

use rbdx_core::Cluster;
use rbdx_core::ops;
use rbdx_core::ops::disk::{self, Disk, Reclaim};

use super::{Done, spec};
use crate::error::{Context, Result};
use crate::naming::BASE_SNAP;

/// Removes disk `head` (to the trash with `trash_delay`).
///
/// # Errors
/// Ceph errors, with what was being done.
pub fn run(
    c: &Cluster,
    head: &str,
    base: Option<&str>,
    trash_delay: Option<u64>,
    reclaim: Reclaim,
    log: &mut Vec<String>,
) -> Result<Done> {
    let h = spec(head)?;
    Disk::new(c, h.clone(), &crate::naming::ONE)
        .remove(trash_delay, reclaim)
        .context(format!("deleting {h}"))?;
    if let Some(b) = base {
        let b = spec(b)?;
        let io = ops::ioctx(c, &b).context(b.to_string())?;
        match disk::drop_unused_snapshot(&io, &b.name, BASE_SNAP) {
            Ok(true) => log.push(format!("removed the unused base snapshot {b}@{BASE_SNAP}")),
            Ok(false) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e).context(format!("dropping {b}@{BASE_SNAP}")),
        }
    }
    // The ancestors the disk kept in the trash were freed with it; the rest of
    // the pool is the monitor's periodic reclaim.
    Done::nothing()
}
