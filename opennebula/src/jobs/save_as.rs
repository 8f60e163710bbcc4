//! TM cpds and DS clone: a disk (or one of its snapshots) saved as a new image,
//! CoW. Saving the current state clones the disk's newest save-as (or base)
//! snapshot when the disk has not changed since (no OSD map update to wait
//! for), and otherwise takes a snapshot named after the new image; what the
//! clone would refuse is refused before that snapshot is taken. One disk
//! operation does it all ([`Disk::save_now`]).

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, Saved};

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
    let cfg = disk_config(data_pool, max_depth);
    let snap = match snap {
        Some(s) => {
            d.clone_snapshot(s, &t, &cfg).context(format!("saving {h}@{s} as {t}"))?;
            s.to_string()
        }
        None => {
            let saved = d
                .save_now(
                    &crate::naming::saveas_snapshot(&t.name),
                    &t,
                    crate::naming::is_reusable_snapshot,
                    &cfg,
                )
                .context(format!("saving {h} as {t}"))?;
            if let Saved::Unchanged(s) = &saved {
                log.push(format!("{h} is unchanged since {h}@{s}: no new snapshot"));
            }
            saved.snapshot().to_string()
        }
    };
    log.push(format!("saved {h}@{snap} as {t} (copy-on-write)"));
    Done::nothing()
}
