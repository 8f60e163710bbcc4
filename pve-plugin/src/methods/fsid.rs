//! `fsid`: the cluster's fsid, as krbd device paths name it.

use crate::error::Result;
use crate::helper::Helper;

/// The fsid.
pub type Output = String;

/// The cluster's fsid.
///
/// # Errors
/// Ceph errors.
pub fn run(h: &Helper) -> Result<Output> {
    Ok(h.cluster.fsid()?)
}
