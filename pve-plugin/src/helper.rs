//! The connection a request works with and what the methods share: the
//! storage's image specs, disks and free names, and the kernel's rbd devices.

use std::path::PathBuf;
use std::time::Duration;

use rbdx_core::krbd::Krbd;
use rbdx_core::ops::disk::{Disk, DiskConfig};
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_core::rbd::Unfinished;
use rbdx_core::{Cluster, ConnectConfig, Timeouts};

use crate::error::{Error, Result};
use crate::protocol::Ceph;
use crate::{PVE_NAMING, image_of};

/// An RBD image's name.
pub(crate) type ImageName = String;

/// A request's connection to its storage's cluster, with the storage's
/// settings.
#[derive(Debug)]
pub struct Helper {
    pub(crate) cluster: Cluster,
    pub(crate) ceph: Ceph,
}

/// The kernel's rbd bus and `/dev`: under `/`, or, in test builds only, under
/// `RBDX_KRBD_ROOT` (a stand-in for the kernel driver and udev).
pub(crate) fn kernel() -> (Krbd, PathBuf) {
    #[cfg(debug_assertions)]
    let root = PathBuf::from(std::env::var_os("RBDX_KRBD_ROOT").unwrap_or_else(|| "/".into()));
    #[cfg(not(debug_assertions))]
    let root = PathBuf::from("/");
    (Krbd::at(root.join("sys/bus/rbd")), root.join("dev"))
}

/// Where PVE's udev rule links a mapped image, relative to `/dev`:
/// `rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`.
pub fn pve_device_path(fsid: &str, spec: &ImageSpec) -> PathBuf {
    let mut p = PathBuf::from("rbd-pve").join(fsid).join(&spec.pool);
    if !spec.namespace.is_empty() {
        p.push(&spec.namespace);
    }
    p.push(match &spec.snap {
        Some(s) => format!("{}@{s}", spec.name),
        None => spec.name.clone(),
    });
    p
}

/// `image` as a volname of the same template as `volname`: `base-X/image` for
/// a linked clone's `base-X/…`, else `image`.
pub(crate) fn same_base(volname: &str, image: &str) -> String {
    let prefix = volname.rsplit_once('/').map(|(p, _)| format!("{p}/")).unwrap_or_default();
    format!("{prefix}{image}")
}

impl Helper {
    /// Connects to the storage's cluster.
    ///
    /// # Errors
    /// [`Error::Connect`] with why the cluster could not be reached.
    pub fn connect(ceph: &Ceph) -> Result<Self> {
        let cfg = ConnectConfig {
            conf_file: ceph.conf.as_ref().map(Into::into),
            client_id: ceph.id.clone(),
            keyring: ceph.keyring.as_ref().map(Into::into),
            key_file: None,
            mon_host: ceph.mon_host.clone(),
            timeouts: Timeouts {
                connect: Duration::from_secs(ceph.connect_timeout.or(ceph.timeout).unwrap_or(60).max(1)),
                ..Timeouts::uniform(Duration::from_secs(ceph.timeout.unwrap_or(60).max(1)))
            },
            auth_none: ceph.auth_none,
        };
        let cluster = Cluster::connect(&cfg).map_err(Error::Connect)?;
        Ok(Self { cluster, ceph: ceph.clone() })
    }

    /// Image `name` in the storage's pool and namespace.
    pub(crate) fn spec(&self, name: &str) -> Result<ImageSpec> {
        Ok(ImageSpec::new(&self.ceph.pool, name)?
            .in_namespace(self.ceph.namespace.as_deref().unwrap_or(""))?)
    }

    /// The head image of `volname`.
    pub(crate) fn volume_spec(&self, volname: &str) -> Result<ImageSpec> {
        self.spec(&image_of(volname)?.0)
    }

    /// How new images are made: with the storage's data pool.
    pub(crate) fn create_options(&self) -> CreateOptions {
        CreateOptions::with_data_pool(self.ceph.data_pool.as_deref())
    }

    /// What the kernel maps for `volname` (at `snap`): the head, or the image
    /// of the disk that holds the snapshot (after a rollback, an older one).
    /// `None` for a snapshot (or the volume of a snapshot) that does not exist.
    pub(crate) fn kernel_spec(&self, volname: &str, snap: Option<&str>) -> Result<Option<ImageSpec>> {
        let Some(snap) = snap else { return self.volume_spec(volname).map(Some) };
        let snaps = match self.disk(volname)?.snapshots() {
            Err(e) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        if let Some(s) = snaps.into_iter().find(|s| s.name == snap) {
            return Ok(Some(self.spec(&s.holder)?.at(snap)?));
        }
        // Not a disk snapshot (a template's `__base__`): on the head, if there.
        let head = self.volume_spec(volname)?;
        match ops::ioctx(&self.cluster, &head)?.open_read_only(&head.name, Some(snap)) {
            Ok(_) => Ok(Some(head.at(snap)?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::kernel_spec`] of a volume or snapshot that must exist.
    pub(crate) fn existing_kernel_spec(&self, volname: &str, snap: Option<&str>) -> Result<ImageSpec> {
        self.kernel_spec(volname, snap)?.ok_or_else(|| Error::SnapshotNotFound {
            volname: volname.to_string(),
            snap: snap.unwrap_or_default().to_string(),
        })
    }

    /// Unmaps every kernel device of `volname`'s disk (head, snapshots, the
    /// images holding older snapshots), as a removal or rename needs.
    pub(crate) fn release(&self, volname: &str) -> Result<()> {
        let (krbd, _) = kernel();
        if !krbd.loaded() {
            return Ok(());
        }
        let disk = self.disk(volname)?;
        let mut images = vec![disk.head().name.clone()];
        match disk.snapshots() {
            Ok(snaps) => images.extend(snaps.into_iter().map(|s| s.holder)),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        images.sort_unstable();
        images.dedup();
        let fsid = self.cluster.fsid()?;
        for name in images {
            let spec = self.spec(&name)?;
            for d in krbd.mapped_any_snapshot(&fsid, &spec)? {
                krbd.remove(&d, &spec.to_string(), self.timeout())?;
            }
        }
        Ok(())
    }

    /// Unmaps `volname@snap`'s kernel device, if any.
    pub(crate) fn release_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
        let (krbd, _) = kernel();
        if !krbd.loaded() {
            return Ok(());
        }
        if let Some(spec) = self.kernel_spec(volname, Some(snap))? {
            krbd.unmap(&self.cluster.fsid()?, &spec, self.timeout())?;
        }
        Ok(())
    }

    /// How long one kernel or udev step may take: the storage's Ceph timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.ceph.timeout.unwrap_or(60))
    }

    /// The disk of `volname`.
    pub(crate) fn disk(&self, volname: &str) -> Result<Disk<'_>> {
        Ok(Disk::new(&self.cluster, self.volume_spec(volname)?, &PVE_NAMING))
    }

    /// How the disk scheme makes images: with the storage's data pool.
    pub(crate) fn disk_config(&self) -> DiskConfig {
        let d = DiskConfig::default();
        DiskConfig {
            data_pool: self.ceph.data_pool.clone(),
            rollback_max_bytes: self
                .ceph
                .rollback_max_mb
                .map_or(d.rollback_max_bytes, |mb| mb.saturating_mul(1 << 20)),
            ..d
        }
    }

    /// The images of the storage's pool and namespace whose names start with
    /// `prefix`: the pool directory read from the prefix on, so a pool of any
    /// size costs the same.
    fn names_starting(&self, prefix: &str) -> Result<Vec<ImageName>> {
        let io = ops::ioctx(&self.cluster, &self.spec("-")?)?;
        Ok(io.list_images_prefixed(prefix)?.into_iter().map(|e| e.name).collect())
    }

    /// Whether the storage's pool and namespace has an image named `name`.
    pub(crate) fn name_taken(&self, name: &str) -> Result<bool> {
        Ok(self.names_starting(name)?.iter().any(|n| n == name))
    }

    /// `vm-<vmid>-disk-<n>` with the lowest free `n` (as PVE's find_free_diskname).
    /// A clone an interrupted call left unfinished under one of the VM's names
    /// (PVE's retry asks for a new name, never that one) is finished, or
    /// removed where nothing links it yet, first: nothing half-made stays. PVE
    /// makes volumes under its storage lock: no call is making that clone now.
    pub(crate) fn free_name(&self, vmid: u32) -> Result<ImageName> {
        let mut names = self.names_starting(&format!("vm-{vmid}-disk-"))?;
        names.extend(self.names_starting(&format!("base-{vmid}-disk-"))?);
        let io = ops::ioctx(&self.cluster, &self.spec("-")?)?;
        let mut removed = Vec::new();
        for name in &names {
            if io.settle_unfinished_clone(name)? == Unfinished::Removed {
                removed.push(name.clone());
            }
        }
        names.retain(|n| !removed.contains(n));
        (0..1024)
            .map(|n| (format!("vm-{vmid}-disk-{n}"), format!("base-{vmid}-disk-{n}")))
            .find(|(a, b)| !names.contains(a) && !names.contains(b))
            .map(|(a, _)| a)
            .ok_or(Error::NoFreeName(vmid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_and_base_prefixes() {
        let spec = ImageSpec::new("rbd", "vm-1-disk-0").unwrap();
        assert_eq!(pve_device_path("f", &spec), PathBuf::from("rbd-pve/f/rbd/vm-1-disk-0"));
        let spec = spec.in_namespace("ns").unwrap().at("s").unwrap();
        assert_eq!(pve_device_path("f", &spec), PathBuf::from("rbd-pve/f/rbd/ns/vm-1-disk-0@s"));
        assert_eq!(same_base("base-9-disk-0/vm-1-disk-0", "vm-1-disk-2"), "base-9-disk-0/vm-1-disk-2");
        assert_eq!(same_base("vm-1-disk-0", "vm-1-disk-2"), "vm-1-disk-2");
    }
}
