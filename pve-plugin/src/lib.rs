//! rbdx-pve: the Rust helper behind the Proxmox VE plugin
//! (`pve-plugin/perl/PVE/Storage/Custom/RBDXPlugin.pm`). It knows Proxmox's
//! volume names and units; everything Ceph goes through rbdx-core: images with
//! the storage's data pool on every path, the disk snapshot scheme (O(1)
//! rollback, snapshots deletable with clones), CoW clones of templates and of
//! snapshots with a bounded clone chain, EC-aware status.
//!
//! - [`protocol`]: the JSON request and answer ([`serve`] reads one and writes
//!   the other);
//! - [`methods`]: one module per Proxmox method, each with its result type;
//! - [`helper`]: the request's connection and what the methods share;
//! - [`error`]: the one error type, whose [`error::Kind`] the answer carries;
//! - [`volname`]: the volume name grammar shared with the Perl plugin;
//! - [`doctor`]: `rbdx doctor` on a Proxmox VE node.

#![deny(missing_docs)]

pub mod doctor;
pub mod error;
pub mod helper;
pub mod methods;
pub mod protocol;
mod serve;
pub mod volname;

use rbdx_core::ops::disk::Naming;

pub use error::{Error, Kind, Result};
pub use helper::{Helper, pve_device_path};
pub use serve::serve;
pub use volname::owner;

/// The snapshot a template's linked clones are made from, as PVE names it.
pub const BASE_SNAP: &str = "__base__";

/// How Proxmox VE disks are named: rbdx's own carrier names; snapshots that
/// qemu takes of a running disk on its image (`volume_qemu_snapshot_method`
/// `qemu`) join the disk's snapshots, except the template snapshot and rbdx's
/// own.
#[derive(Debug, Clone, Copy)]
pub struct PveNaming;

impl Naming for PveNaming {
    fn adopts_snapshots(&self) -> bool {
        true
    }

    fn adopts_snapshot(&self, name: &str) -> bool {
        name != BASE_SNAP && !name.starts_with("rbdx.")
    }
}

/// The naming of every Proxmox VE disk.
pub static PVE_NAMING: PveNaming = PveNaming;

/// The RBD image of a volname and its owner ([`volname::parse`]):
/// `base-X-disk-n/vm-Y-disk-m` is a linked clone whose image is `vm-Y-disk-m`.
///
/// # Errors
/// [`Error::VolumeName`] for a volname outside the grammar.
pub fn image_of(volname: &str) -> Result<(String, u32)> {
    volname::parse(volname).map(|v| (v.image, v.vmid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volnames_map_to_images_and_owners() {
        assert_eq!(image_of("vm-100-disk-0").unwrap(), ("vm-100-disk-0".into(), 100));
        assert_eq!(image_of("base-9-disk-1/vm-100-disk-0").unwrap(), ("vm-100-disk-0".into(), 100));
        assert_eq!(image_of("base-9-disk-1").unwrap(), ("base-9-disk-1".into(), 9));
        for bad in ["", "vm-x-disk-0", "disk-0", "vm-100-", "vm--disk", "vm-100-disk-0.rbdx-c5", "vm-1-a@b"] {
            assert!(image_of(bad).is_err(), "{bad:?}");
        }
        assert!(image_of("vm-100-disk 0").is_err(), "no whitespace, as the plugin's parse_volname");
        let e = image_of("vm-1-a@b").unwrap_err();
        assert_eq!((e.to_string(), e.kind()), ("invalid volume name \"vm-1-a@b\"".into(), Kind::Invalid));
        assert_eq!(owner("vm-100-state-snap1"), Some(100));
        assert_eq!(owner("vm-100-disk-0.rbdx-new"), None, "internal images are never listed");
    }
}
