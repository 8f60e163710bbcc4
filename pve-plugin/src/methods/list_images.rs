//! `list_images`: every volume of the storage (or of one VM), linked clones
//! named after their template.

use rbdx_core::ops;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::helper::Helper;
use crate::methods::Format;
use crate::{BASE_SNAP, owner};

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedImage {
    /// The volname (`base-X/vm-Y-…` for a linked clone).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The owner.
    pub vmid: u32,
    /// `image@snap` the volume is a clone of.
    pub parent: Option<String>,
    /// Always raw.
    pub format: Format,
}

/// The volumes.
pub type Output = Vec<ListedImage>;

/// The storage's volumes, or `vmid`'s. rbdx's internal images are not listed;
/// an image removed while listing is left out. Each image's size and parent
/// come from its header, not an open (which would open its parents too).
///
/// # Errors
/// Ceph errors.
pub fn run(h: &Helper, vmid: Option<u32>) -> Result<Output> {
    let io = ops::ioctx(&h.cluster, &h.spec("-")?)?;
    let mut listed = Vec::new();
    let mut owners = Vec::new();
    for e in io.list_images()? {
        let Some(owner) = owner(&e.name) else { continue };
        if vmid.is_none_or(|v| v == owner) {
            owners.push(owner);
            listed.push(e);
        }
    }
    let views = io.head_views(&listed)?;
    let mut out = Vec::new();
    for ((e, owner), view) in listed.into_iter().zip(owners).zip(views) {
        // An image removed while we list is simply not listed.
        let Some(view) = view else { continue };
        let parent =
            view.parent.filter(|p| !p.image.trash).map(|p| format!("{}@{}", p.image.name, p.snap_name));
        let volname = match parent.as_deref().and_then(|p| p.strip_suffix(&format!("@{BASE_SNAP}"))) {
            Some(base) => format!("{base}/{}", e.name),
            None => e.name,
        };
        out.push(ListedImage { name: volname, size: view.size, vmid: owner, parent, format: Format::Raw });
    }
    Ok(out)
}
