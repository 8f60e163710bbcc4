//! TM cpds and DS clone: a disk (or one of its snapshots) saved as a new image,
//! CoW. Saving the current state clones the disk's newest save-as (or base)
//! snapshot when the disk has not changed since (no OSD map update to wait for), and otherwise
//! takes a snapshot named after the new image; what the clone would refuse is
//! refused before that snapshot is taken.

use rbdx_core::Cluster;
use rbdx_core::ops::ImageSpec;
use rbdx_core::ops::disk::Disk;

use super::{Done, disk_config, spec};
use crate::error::{Context, Result};

/// Saves `head` (at `snap`, or now) as `target`.
///
/// # Errors
/// A target that exists and is something else, a missing data pool; Ceph errors.
pub fn run(
    c: &Cluster,
    head: &str,
    snap: Option<&str>,
    target: &str,
    data_pool: &Option<String>,
    max_depth: u32,
    log: &mut Vec<String>,
) -> Result<Done> {
    let (h, t) = (spec(head)?, spec(target)?);
    let d = Disk::new(c, h.clone(), &crate::naming::ONE);
    let snap = match snap {
        Some(s) => s.to_string(),
        None => now(&d, &t, data_pool, log)?,
    };
    d.clone_snapshot(&snap, &t, &disk_config(data_pool, max_depth))
        .context(format!("saving {h}@{snap} as {t}"))?;
    log.push(format!("saved {h}@{snap} as {t} (copy-on-write)"));
    Done::nothing()
}

/// The snapshot that holds `d` as it is now: the one a re-run's clone already
/// reads, an unchanged save-as or base snapshot, or a new one named after `t`.
fn now(d: &Disk<'_>, t: &ImageSpec, data_pool: &Option<String>, log: &mut Vec<String>) -> Result<String> {
    let h = d.head();
    if let Some(s) = d.cloned_into(t)? {
        return Ok(s);
    }
    if let Some(s) = d.unchanged_snapshot(crate::naming::is_reusable_snapshot)? {
        log.push(format!("{h} is unchanged since {h}@{s}: no new snapshot"));
        return Ok(s);
    }
    let s = crate::naming::saveas_snapshot(&t.name);
    d.check_clone_target(&s, t, data_pool.as_deref())?;
    d.snapshot_create(&s).context(format!("taking a snapshot of {h}"))?;
    Ok(s)
}
