//! `status`: the storage's size and use, EC-aware (with a data pool, what the
//! images store is counted in both pools and what is free is the data pool's).

use rbdx_core::ops;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::helper::Helper;

/// PVE's `($total, $avail, $used, $active)`, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// `used + avail`.
    pub total: u64,
    /// Free.
    pub avail: u64,
    /// Stored by the images.
    pub used: u64,
    /// 1: the storage answered.
    pub active: u8,
}

/// What `status` answers.
pub type Output = Status;

/// The storage's size and use.
///
/// # Errors
/// Ceph errors (a missing pool or data pool).
pub fn run(h: &Helper) -> Result<Output> {
    let mut pools = vec![h.ceph.pool.as_str()];
    pools.extend(h.ceph.data_pool.as_deref());
    let u = ops::pool_usage(&h.cluster, &pools)?;
    let (used, avail) = match u.get(1) {
        Some(ec) => (u[0].stored + ec.stored, ec.available()),
        None => (u[0].stored, u[0].available()),
    };
    Ok(Status { total: used + avail, avail, used, active: 1 })
}
