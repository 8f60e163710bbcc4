//! `clone_image`: a CoW clone of a template (a linked clone) or of a
//! snapshot, with the storage's data pool; its clone chain is bounded.

use rbdx_core::ops::disk::DEFAULT_MAX_DEPTH;
use rbdx_core::ops::{self, CloneOptions};

use crate::error::{Error, Result};
use crate::helper::Helper;
use crate::{BASE_SNAP, image_of};

/// The clone's volname (`base-X/vm-Y-disk-n` for a linked clone).
pub type Output = String;

/// Clones `volname`'s `snap` (a template's `__base__` if none) for `vmid`,
/// as the VM's lowest free `vm-<vmid>-disk-<n>`. A clone whose chain would be
/// longer than the default bound is flattened (and named without its base).
///
/// # Errors
/// [`Error::NotATemplate`] for no snapshot of a volume that is not a
/// template; Ceph errors (a missing snapshot).
pub fn run(h: &Helper, volname: &str, vmid: u32, snap: Option<&str>) -> Result<Output> {
    let (name, _) = image_of(volname)?;
    let snap = match (snap, name.starts_with("base-")) {
        (Some(s), _) => s,
        (None, true) => BASE_SNAP,
        (None, false) => return Err(Error::NotATemplate(volname.to_string())),
    };
    let target = h.free_name(vmid)?;
    let tspec = h.spec(&target)?;
    if snap == BASE_SNAP {
        let opts = CloneOptions { data_pool: h.ceph.data_pool.clone(), ..CloneOptions::default() };
        let src = h.spec(&name)?;
        let cloned =
            ops::clone_from_snapshot(&h.cluster, &src, BASE_SNAP, &tspec, &opts, false, DEFAULT_MAX_DEPTH)?;
        // Flattened, it is no linked clone: named as list_images will list it.
        Ok(if cloned.flattened { target } else { format!("{name}/{target}") })
    } else {
        h.disk(volname)?.clone_snapshot(snap, &tspec, &h.disk_config())?;
        Ok(target)
    }
}
