//! `free_image`: removes a volume with its snapshots; its images that clones
//! still read from wait in the trash until the last clone is gone.

use rbdx_core::ops;
use rbdx_core::ops::disk::{self, Disk, Reclaim};

use crate::error::{Error, Result};
use crate::helper::Helper;
use crate::{BASE_SNAP, PVE_NAMING};

/// Nothing (`null`).
pub type Output = ();

/// Removes `volname`, unmapping its kernel devices first. A template is kept
/// while linked clones use it.
///
/// # Errors
/// [`Error::BaseInUse`]; Ceph errors (the volume is in use).
pub fn run(h: &Helper, volname: &str) -> Result<Output> {
    let spec = h.volume_spec(volname)?;
    let name = &spec.name;
    if name.starts_with("base-") {
        // Only a missing base snapshot skips the check (a timeout must not).
        match ops::ioctx(&h.cluster, &spec)?.open_read_only(name, Some(BASE_SNAP)) {
            Ok(at) => {
                let clones: Vec<String> =
                    at.children()?.into_iter().filter(|c| !c.trash).map(|c| c.name).collect();
                if !clones.is_empty() {
                    return Err(Error::BaseInUse { name: name.clone(), clones });
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    h.release(volname)?;
    Disk::new(&h.cluster, spec.clone(), &PVE_NAMING).remove(None, Reclaim::Trash)?;
    // The volume is gone; what reclaim meets belongs to other images and the
    // next free_image retries it.
    if let Err(e) = disk::reclaim(&h.cluster, &spec) {
        eprintln!("warning: reclaiming trashed images failed: {e}");
    }
    Ok(())
}
