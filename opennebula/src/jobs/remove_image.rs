//! One image removed if it exists (a VM's suspend checkpoint).

use rbdx_core::Cluster;
use rbdx_core::ops::{self, Removal, RemoveOptions};

use super::{Done, spec};
use crate::error::{Context, Result};

/// Removes `image` (to the trash with `trash_delay`).
///
/// # Errors
/// Ceph errors.
pub fn run(c: &Cluster, image: &str, trash_delay: Option<u64>, log: &mut Vec<String>) -> Result<Done> {
    let i = spec(image)?;
    match ops::remove(c, &i, RemoveOptions { trash_delay }).context(format!("removing {i}"))? {
        Removal::AlreadyGone => {}
        _ => log.push(format!("removed {i}")),
    }
    Done::nothing()
}
