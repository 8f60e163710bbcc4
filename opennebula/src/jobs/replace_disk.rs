//! TM restore: a disk replaced by the image restored beside it.

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, Reclaim};

use super::{Done, spec};
use crate::error::{Context, Error, Result};

/// Puts `new` in the place of disk `head`, the old disk moved to `old` and
/// removed (see [`Disk::replace_with`]).
///
/// # Errors
/// Ceph errors; [`rbdx_core::Error::InUse`] while the disk is open.
pub fn run(
    c: &Cluster,
    head: &str,
    new: &str,
    old: &str,
    trash_delay: Option<u64>,
    log: &mut Vec<String>,
) -> Result<Done> {
    let h = spec(head)?;
    let (n, o) = (spec(new)?, spec(old)?);
    for s in [&n, &o] {
        if s.pool != h.pool || s.namespace != h.namespace || s.snap.is_some() {
            return Err(Error::Invalid(format!("{s} is not an image beside {h}")));
        }
    }
    Disk::new(c, h.clone(), &crate::naming::ONE)
        .replace_with(&n.name, &o.name, trash_delay, Reclaim::Trash)
        .context(format!("putting {new} in the place of {h}"))?;
    log.push(format!("{h} is now the restored image; the old disk is removed"));
    Done::nothing()
}
