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

/// The snapshot a full live backup exports (removed after it), as the stock drivers name it.
pub const BACKUP_SNAP: &str = "one_backup";

/// The snapshot an incremental backup keeps as the base of the next one:
/// `one_backup_<n>` (the stock name, so a chain survives a driver switch).
pub fn backup_increment_snap(n: u32) -> String {
    format!("one_backup_{n}")
}

/// `n` if `snap` is an incremental backup's snapshot `one_backup_<n>`.
pub fn backup_increment_of(snap: &str) -> Option<u32> {
    let n = snap.strip_prefix("one_backup_")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Whether `snap` is a backup's snapshot (never a user's: it does not name the
/// carrier a revert makes).
pub fn is_backup_snapshot(snap: &str) -> bool {
    snap == BACKUP_SNAP || backup_increment_of(snap).is_some()
}

/// Where TM restore imports a disk's backup before it takes the disk's place:
/// `<head>.rbdx-restore` (an interrupted restore's leftover goes with the disk).
pub fn restore_target(head: &str) -> String {
    format!("{head}.rbdx-restore")
}

/// Where TM restore moves the disk it replaces before removing it.
pub fn restore_replaced(head: &str) -> String {
    format!("{head}.rbdx-replaced")
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
        // Backup snapshots ride along on the carrier without naming it.
        let named: Vec<&str> =
            snaps.iter().map(|(_, n)| n.as_str()).filter(|n| !is_backup_snapshot(n)).collect();
        let numeric = |n: &&str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        if !named.is_empty() && named.iter().all(numeric) {
            format!("{head}-{}", named.join(":"))
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
        assert_eq!(ONE.carrier("one-3", &s(&[(4, "1"), (5, "one_backup_3"), (6, "2")])), "one-3-1:2");
        assert_eq!(ONE.carrier("one-3", &s(&[(5, "one_backup")])), "one-3.rbdx-c5");
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
    fn backup_snapshots_keep_the_stock_names() {
        assert_eq!(backup_increment_snap(7), "one_backup_7");
        assert_eq!(backup_increment_of("one_backup_12"), Some(12));
        for other in ["one_backup", "one_backup_", "one_backup_x", "one_backup_-1", "1", "one_backup_1a"] {
            assert_eq!(backup_increment_of(other), None, "{other}");
        }
        assert!(is_backup_snapshot("one_backup") && is_backup_snapshot("one_backup_0"));
        assert!(!is_backup_snapshot("0") && !is_backup_snapshot("snap"));
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
