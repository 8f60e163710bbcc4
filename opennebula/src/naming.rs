//! Every RBD name rbdx derives for OpenNebula, as the stock drivers name them
//! (oned and libvirt hard-code the disk names; the carriers keep the stock form
//! so that either driver can read a disk the other made). Pure functions.

use rbdx_core::ops::disk::{self, Naming};

/// The base snapshot non-persistent disks are cloned from, as the stock drivers name it.
pub const BASE_SNAP: &str = "snap";

/// The image an image datastore gives image `id`: `<pool>/one-<id>`.
pub fn image_source(pool: &str, id: u32) -> String {
    format!("{pool}/one-{id}")
}

/// A non-persistent disk: the CoW clone of `source` for disk `disk` of VM `vm`.
pub fn clone_target(source: &str, vm: u32, disk: u32) -> String {
    format!("{source}-{vm}-{disk}")
}

/// A volatile (or swap) disk: `<pool>/one-sys-<vm>-<disk>`.
pub fn volatile_image(pool: &str, vm: u32, disk: u32) -> String {
    format!("{pool}/one-sys-{vm}-{disk}")
}

/// A VM's suspend checkpoint: `<pool>/one-sys-<vm>-checkpoint`.
pub fn checkpoint(pool: &str, vm: u32) -> String {
    format!("{pool}/one-sys-{vm}-checkpoint")
}

/// The snapshot a save-as of a disk's current state takes, named after the new image.
pub fn saveas_snapshot(target_image: &str) -> String {
    format!("rbdx.saveas.{target_image}")
}

/// Whether a save-as may clone `snap` in place of a new snapshot when the disk
/// has not changed since it: an earlier save-as's snapshot, or [`BASE_SNAP`]
/// (never a user's snapshot, which the user may delete or revert to).
pub fn is_reusable_snapshot(snap: &str) -> bool {
    snap.starts_with("rbdx.saveas.") || snap == BASE_SNAP
}

/// OpenNebula's naming of a disk's carriers: `<head>-<id>[:<id>…]` when every
/// snapshot name is numeric (oned's snapshot ids), as the stock drivers rename a
/// reverted head; otherwise rbdx's `<head>.rbdx-c<id>`. Stock carriers (no rbdx
/// metadata, exactly that form) are adopted.
#[derive(Debug, Clone, Copy)]
pub struct OneNaming;

/// The naming of every OpenNebula disk.
pub static ONE: OneNaming = OneNaming;

impl Naming for OneNaming {
    fn carrier(&self, head: &str, snaps: &[(u64, String)]) -> String {
        let numeric: Vec<&str> = snaps
            .iter()
            .map(|(_, n)| n.as_str())
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        if !numeric.is_empty() && numeric.len() == snaps.len() {
            format!("{head}-{}", numeric.join(":"))
        } else {
            disk::rbdx_carrier(head, snaps)
        }
    }

    fn is_foreign_carrier(&self, head: &str, name: &str) -> bool {
        is_stock_carrier(head, name)
    }
}

/// True if `name` has the form of a stock carrier of `head`:
/// `<head>-<digits>[:<digits>…]`.
pub fn is_stock_carrier(head: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(head).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    !rest.is_empty() && rest.split(':').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriers_are_named_like_the_stock_drivers_when_snapshots_are_numeric() {
        let s = |v: &[(u64, &str)]| v.iter().map(|(i, n)| (*i, n.to_string())).collect::<Vec<_>>();
        assert_eq!(ONE.carrier("one-3-13-0", &s(&[(4, "1"), (9, "2")])), "one-3-13-0-1:2");
        assert_eq!(ONE.carrier("one-3", &s(&[(4, "1"), (7, "rbdx.saveas")])), "one-3.rbdx-c7");
    }

    #[test]
    fn disk_names_follow_the_stock_scheme() {
        assert_eq!(image_source("one", 5), "one/one-5");
        assert_eq!(clone_target("one/one-5", 12, 0), "one/one-5-12-0");
        assert_eq!(volatile_image("rbd", 12, 3), "rbd/one-sys-12-3");
        assert_eq!(checkpoint("one", 7), "one/one-sys-7-checkpoint");
        assert_eq!(saveas_snapshot("one-42"), "rbdx.saveas.one-42");
        assert!(is_reusable_snapshot(&saveas_snapshot("one-42")) && is_reusable_snapshot(BASE_SNAP));
        for user in ["rbdx.saveas", "0", "12", "one_backup_1", "snap2"] {
            assert!(!is_reusable_snapshot(user), "{user}");
        }
    }

    #[test]
    fn stock_carrier_form_is_exact() {
        assert!(is_stock_carrier("one-3-13-0", "one-3-13-0-1"));
        assert!(is_stock_carrier("one-3-13-0", "one-3-13-0-1:2:3"));
        assert!(!is_stock_carrier("one-5", "one-50-1"), "a prefix is not enough");
        assert!(!is_stock_carrier("one-5", "one-5-12-0"), "a VM clone of image 5 is not a carrier");
        assert!(!is_stock_carrier("one-5", "one-5-"));
        assert!(!is_stock_carrier("one-5", "one-5-1::2"));
        assert!(!is_stock_carrier("one-5", "one-5"));
        assert!(ONE.is_foreign_carrier("one-3-13-0", "one-3-13-0-1:2"));
    }
}
