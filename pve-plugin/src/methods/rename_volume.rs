//! `rename_volume`: gives a volume to another VM (disk reassign) or another
//! name, with its snapshots.

use crate::error::{Error, Result};
use crate::helper::{Helper, same_base};
use crate::image_of;

/// The new volname.
pub type Output = String;

/// Renames `volname` to `target_volname` (or `target_vmid`'s lowest free
/// name), unmapping its kernel devices first.
///
/// # Errors
/// [`Error::NotOwner`], [`Error::VolumeExists`]; Ceph and kernel errors.
pub fn run(h: &Helper, volname: &str, target_vmid: u32, target_volname: Option<&str>) -> Result<Output> {
    let target = match target_volname {
        Some(t) => {
            let (name, owner) = image_of(t)?;
            if owner != target_vmid {
                return Err(Error::NotOwner { name, vmid: target_vmid });
            }
            if h.name_taken(&name)? {
                return Err(Error::VolumeExists(name));
            }
            name
        }
        None => h.free_name(target_vmid)?,
    };
    h.release(volname)?;
    h.disk(volname)?.rename(&target)?;
    Ok(same_base(volname, &target))
}
