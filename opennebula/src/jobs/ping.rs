//! `rbdx one ping`: Ceph reached and the pool opened, nothing changed.

use rbdx_core::Cluster;

use super::Done;
use crate::error::{Context, Result};

/// Opens `pool` on the connected cluster `c`.
///
/// # Errors
/// A pool that does not exist or that the client may not use.
pub fn run(c: &Cluster, pool: &str) -> Result<Done> {
    c.ioctx(pool).context(format!("opening pool {pool}"))?;
    Done::nothing()
}
