//! TM clone.ssh / ln.ssh: an image (at a snapshot) copied into a file on the
//! host, sparse.

use rbdx_core::Cluster;

use super::{Done, spec};
use crate::error::Result;
use crate::hostfs::VmPath;

/// Writes `source` (at `snap`) to `path`, grown to `size_mb`.
///
/// # Errors
/// Ceph and file errors.
pub fn run(
    c: &Cluster,
    source: &str,
    snap: Option<&str>,
    drop_base_snap: bool,
    path: &VmPath,
    size_mb: Option<u64>,
    log: &mut Vec<String>,
) -> Result<Done> {
    crate::hostfs::export(c, &spec(source)?, snap, drop_base_snap, path, size_mb, log)?;
    Done::nothing()
}
