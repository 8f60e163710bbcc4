//! `alloc_image`: a new image with the storage's data pool.

use rbdx_core::ops;

use crate::error::{Error, Result};
use crate::helper::Helper;
use crate::owner;

/// The new volume's volname.
pub type Output = String;

/// Makes `name` (or the VM's lowest free `vm-<vmid>-disk-<n>`) of `size_kib`
/// KiB.
///
/// # Errors
/// [`Error::IllegalName`] for a name that is not the VM's, or a template's;
/// [`Error::SizeTooLarge`]; Ceph errors (the name is taken).
pub fn run(h: &Helper, vmid: u32, name: Option<&str>, size_kib: u64) -> Result<Output> {
    let name = match name {
        Some(n) => {
            if owner(n) != Some(vmid) || n.starts_with("base-") {
                return Err(Error::IllegalName { name: n.to_string(), vmid });
            }
            n.to_string()
        }
        None => h.free_name(vmid)?,
    };
    let size = size_kib.checked_mul(1024).ok_or(Error::SizeTooLarge)?;
    ops::create(&h.cluster, &h.spec(&name)?, size, &h.create_options())?;
    Ok(name)
}
