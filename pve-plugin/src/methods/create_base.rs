//! `create_base`: makes a volume a template (`base-…`, with the `__base__`
//! snapshot its linked clones are made from).

use rbdx_core::ops;
use rbdx_core::ops::disk::{self, Disk};

use crate::error::{Error, Result};
use crate::helper::Helper;
use crate::{BASE_SNAP, PVE_NAMING, image_of};

/// The template's volname.
pub type Output = String;

/// Renames `volname` to its `base-` name and takes `__base__`; refuses a volume with snapshots.
///
/// # Errors
/// [`Error::HasSnapshots`]; Ceph and kernel errors.
pub fn run(h: &Helper, volname: &str) -> Result<Output> {
    let (name, _) = image_of(volname)?;
    let base = match name.strip_prefix("vm-") {
        Some(rest) => format!("base-{rest}"),
        None if name.starts_with("base-") => name.clone(),
        None => return Err(Error::NotTemplatable(volname.to_string())),
    };
    // PVE retries a call that failed: after one interrupted once the volume was renamed, it is the base.
    let name = if name != base && renamed_to_base(h, &name, &base)? { base.clone() } else { name };
    let disk = Disk::new(&h.cluster, h.spec(&name)?, &PVE_NAMING);
    let snaps: Vec<String> =
        disk.snapshots()?.into_iter().map(|s| s.name).filter(|n| n != BASE_SNAP).collect();
    if !snaps.is_empty() {
        return Err(Error::HasSnapshots { name, snaps });
    }
    let disk = if name == base {
        disk
    } else {
        h.release(&name)?;
        disk.rename(&base)?
    };
    let io = ops::ioctx(&h.cluster, disk.head())?;
    disk::ensure_snapshot(&io, &base, BASE_SNAP)?;
    Ok(base)
}

/// True if `vm` is gone because a `create_base` renamed it to `base` (and was interrupted before it
/// answered): `base` exists and belongs to the disk of one of the two (the bookkeeping moves to the
/// new name after the rename).
fn renamed_to_base(h: &Helper, vm: &str, base: &str) -> Result<bool> {
    let io = ops::ioctx(&h.cluster, &h.spec(base)?)?;
    match io.open_read_only(vm, None) {
        Ok(_) => return Ok(false),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let owner = match disk::owner_of(&io, base) {
        Ok(owner) => owner,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(owner.as_deref() == Some(vm) || owner.as_deref() == Some(base))
}
