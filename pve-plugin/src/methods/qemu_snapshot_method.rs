//! `qemu_snapshot_method`: who takes a running librbd disk's snapshots.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::helper::Helper;

/// PVE's `volume_qemu_snapshot_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMethod {
    /// qemu, on the image it has open.
    Qemu,
    /// The storage (rbdx).
    Storage,
}

/// What `qemu_snapshot_method` answers.
pub type Output = SnapshotMethod;

/// `qemu` while every snapshot of `volname` is on its own image (qemu can take
/// and delete them there), else `storage`.
///
/// # Errors
/// Ceph errors.
pub fn run(h: &Helper, volname: &str) -> Result<Output> {
    let d = h.disk(volname)?;
    let head = &d.head().name;
    let elsewhere = d.snapshots()?.iter().any(|s| &s.holder != head);
    Ok(if elsewhere { SnapshotMethod::Storage } else { SnapshotMethod::Qemu })
}
