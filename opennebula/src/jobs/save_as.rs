//! TM cpds and DS clone: a disk (or one of its snapshots) saved as a new image,
//! CoW. Saving the current state clones the disk's newest save-as (or base)
//! snapshot when the disk has not changed since; else, when the disk holds
//! little data of its own and nothing has it open, copies that data onto a
//! clone of what the disk was cloned from (neither waits for an OSD map
//! update); and otherwise takes a snapshot named after the new image. What the
//! clone would refuse is refused before that snapshot is taken. One disk
//! operation does it all ([`Disk::save_now`]).

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, DiskConfig, Saved};

use super::{Done, spec};
use crate::error::{Context, Result};

/// Saves `head` (at `snap`, or now) as `target`, as `cfg` says.
///
/// # Errors
/// A target that exists and is something else, a missing data pool; Ceph errors.
pub fn run(
    c: &Cluster,
    head: &str,
    snap: Option<&str>,
    target: &str,
    cfg: &DiskConfig,
    log: &mut Vec<String>,
) -> Result<Done> {
    let (h, t) = (spec(head)?, spec(target)?);
    let d = Disk::new(c, h.clone(), &crate::naming::ONE);
    let snap = match snap {
        Some(s) => {
            d.clone_snapshot(s, &t, cfg).context(format!("saving {h}@{s} as {t}"))?;
            s.to_string()
        }
        None => {
            let saved = d
                .save_now(
                    &crate::naming::saveas_snapshot(&t.name),
                    &t,
                    crate::naming::is_reusable_snapshot,
                    cfg,
                )
                .context(format!("saving {h} as {t}"))?;
            match saved {
                Saved::Unchanged(s) => {
                    log.push(format!("{h} is unchanged since {h}@{s}: no new snapshot"));
                    s
                }
                Saved::Copied => {
                    log.push(format!(
                        "saved {h} as {t}: its own data copied (little, and nothing has it open)"
                    ));
                    return Done::nothing();
                }
                Saved::Again(s) | Saved::Taken(s) => s,
            }
        }
    };
    log.push(format!("saved {h}@{snap} as {t} (copy-on-write)"));
    Done::nothing()
}
