//! `volume_snapshot_info`: the disk's snapshots, wherever each is kept.

use std::collections::BTreeMap;

use rbdx_core::ops;
use serde::{Deserialize, Serialize};

use crate::BASE_SNAP;
use crate::error::Result;
use crate::helper::Helper;

/// One snapshot, as PVE's `volume_snapshot_info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    /// The RBD snapshot id on the image that holds it.
    pub id: u64,
    /// When it was taken (seconds since the epoch).
    pub timestamp: i64,
    /// The volume's size then, in bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

/// `{ name => info }`; `{}` for a volume that is gone.
pub type Output = BTreeMap<String, SnapshotInfo>;

/// `volname`'s snapshots (not a template's `__base__`, not rbdx's own).
///
/// # Errors
/// Ceph errors.
pub fn run(h: &Helper, volname: &str) -> Result<Output> {
    let d = h.disk(volname)?;
    let io = ops::ioctx(&h.cluster, d.head())?;
    let mut info = BTreeMap::new();
    let snaps = match d.snapshots() {
        // A volume that is gone has no snapshots (PVE asks after a removal).
        Err(e) if e.is_not_found() => return Ok(info),
        other => other?,
    };
    for s in snaps {
        if s.name.starts_with("rbdx.") || s.name == BASE_SNAP {
            continue;
        }
        let img = io.open_read_only(&s.holder, None)?;
        if let Some(rs) = img.snapshots()?.into_iter().find(|x| x.name == s.name) {
            let timestamp = img.snap_timestamp(rs.id)?;
            info.insert(s.name, SnapshotInfo { id: rs.id, timestamp, virtual_size: rs.size });
        }
    }
    Ok(info)
}
