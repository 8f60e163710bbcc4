//! DS / TM monitor: capacity and usage of a datastore's pools (EC-aware), the
//! reclaim of trashed images whose clones are gone, and the VM disks' sizes.

use rbdx_core::Cluster;

use super::Done;
use crate::error::Result;

/// Measures `pool` (with `ec_pool`), and every VM disk in it if `vm_disks`.
///
/// # Errors
/// Ceph errors.
pub fn run(
    c: &Cluster,
    pool: &str,
    ec_pool: Option<&str>,
    vm_disks: bool,
    log: &mut Vec<String>,
) -> Result<Done> {
    let report = crate::monitor::measure(c, pool, ec_pool, log)?;
    let disks = if vm_disks { crate::monitor::vm_disks(c, pool)? } else { Vec::new() };
    Ok(Done { output: Some(report), vm_disks: disks })
}
