//! TM mvds.ssh / cpds.ssh: a file on the host written into an image (the guest
//! frozen meanwhile, when asked).

use rbdx_core::Cluster;

use super::{Done, spec};
use crate::error::Result;
use crate::hostfs::VmPath;
use crate::job::Freeze;

/// Writes `path` into `target`, then removes the file if `remove_file`.
///
/// # Errors
/// Ceph and file errors.
#[allow(clippy::too_many_arguments)]
pub fn run(
    c: &Cluster,
    path: &VmPath,
    target: &str,
    create: bool,
    data_pool: Option<&str>,
    size_mb: Option<u64>,
    remove_file: bool,
    freeze: Option<&Freeze>,
    log: &mut Vec<String>,
) -> Result<Done> {
    let thaw = match freeze {
        Some(f) => crate::freeze::freeze(f, log)?,
        None => None,
    };
    let r = crate::hostfs::import(c, path, &spec(target)?, create, data_pool, size_mb);
    if let Some(t) = thaw {
        t.thaw(log);
    }
    r?;
    if remove_file {
        crate::hostfs::remove_file(path)?;
    }
    Done::nothing()
}
