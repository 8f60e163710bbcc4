//! `volume_size_info`: size, allocated bytes, parent and data pool.

use rbdx_core::ops;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::helper::Helper;
use crate::methods::Format;

/// A volume's size and use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeInfo {
    /// Virtual size in bytes.
    pub size: u64,
    /// Allocated bytes.
    pub used: u64,
    /// `image@snap` the volume is a clone of.
    pub parent: Option<String>,
    /// Always raw.
    pub format: Format,
    /// The image's data pool, if it has one.
    pub data_pool: Option<String>,
}

/// What `volume_size_info` answers.
pub type Output = SizeInfo;

/// `volname`'s size and use.
///
/// # Errors
/// Ceph errors (a missing volume).
pub fn run(h: &Helper, volname: &str) -> Result<Output> {
    let spec = h.volume_spec(volname)?;
    let io = ops::ioctx(&h.cluster, &spec)?;
    let img = io.open_read_only(&spec.name, None)?;
    let used = ops::used_bytes(&img, None)?;
    let parent = img.parent()?.map(|p| format!("{}@{}", p.image.name, p.snap_name));
    let st = ops::status_of(&h.cluster, &io, &img)?;
    Ok(SizeInfo { size: st.size, used, parent, format: Format::Raw, data_pool: st.data_pool })
}
