//! rbdx-pve: the Rust helper behind the Proxmox VE plugin
//! (`pve-plugin/perl/PVE/Storage/Custom/RBDXPlugin.pm`). It knows Proxmox's
//! volume names and units; everything Ceph goes through rbdx-core: images with
//! the storage's data pool on every path, the disk snapshot scheme (O(1)
//! rollback, snapshots deletable with clones), CoW clones of templates and of
//! snapshots, EC-aware status.

#![deny(missing_docs)]

pub mod doctor;
pub mod protocol;
pub mod volname;

use std::io::{Read, Write};
use std::time::Duration;

use rbdx_core::ops::disk::{Disk, DiskConfig, KEY_DISK, Naming, Reclaim};
use rbdx_core::ops::{self, CloneOptions, CreateOptions, ImageSpec};
use rbdx_core::{Cluster, ConnectConfig, Timeouts};
use serde_json::{Value, json};

use protocol::{Call, Ceph, Request, Response, VERSION};

/// The snapshot a template's linked clones are made from, as PVE names it.
pub const BASE_SNAP: &str = "__base__";

/// A failure: one line.
type Result<T> = std::result::Result<T, String>;

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
/// A volname outside the grammar.
pub fn image_of(volname: &str) -> Result<(String, u32)> {
    volname::parse(volname).map(|v| (v.image, v.vmid))
}

pub use volname::owner;

/// The kernel's rbd bus and `/dev`: under `/`, or, in test builds only, under
/// `RBDX_KRBD_ROOT` (a stand-in for the kernel driver and udev).
fn kernel() -> (rbdx_core::krbd::Krbd, std::path::PathBuf) {
    #[cfg(debug_assertions)]
    let root = std::path::PathBuf::from(std::env::var_os("RBDX_KRBD_ROOT").unwrap_or_else(|| "/".into()));
    #[cfg(not(debug_assertions))]
    let root = std::path::PathBuf::from("/");
    (rbdx_core::krbd::Krbd::at(root.join("sys/bus/rbd")), root.join("dev"))
}

/// Where PVE's udev rule links a mapped image, relative to `/dev`:
/// `rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`.
pub fn pve_device_path(fsid: &str, spec: &ImageSpec) -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from("rbd-pve").join(fsid).join(&spec.pool);
    if !spec.namespace.is_empty() {
        p.push(&spec.namespace);
    }
    p.push(match &spec.snap {
        Some(s) => format!("{}@{s}", spec.name),
        None => spec.name.clone(),
    });
    p
}

struct Helper {
    cluster: Cluster,
    ceph: Ceph,
}

impl Helper {
    fn connect(ceph: &Ceph) -> Result<Self> {
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
        let cluster = Cluster::connect(&cfg).map_err(|e| format!("cannot connect to Ceph: {e}"))?;
        Ok(Self { cluster, ceph: ceph.clone() })
    }

    fn spec(&self, name: &str) -> Result<ImageSpec> {
        Ok(ImageSpec::new(&self.ceph.pool, name)?
            .in_namespace(self.ceph.namespace.as_deref().unwrap_or(""))?)
    }

    /// What the kernel maps for `volname` (at `snap`): the head, or the image
    /// of the disk that holds the snapshot (after a rollback, an older one).
    /// `None` for a snapshot (or the volume of a snapshot) that does not exist.
    fn kernel_spec(&self, volname: &str, snap: Option<&str>) -> Result<Option<ImageSpec>> {
        let Some(snap) = snap else { return self.spec(&image_of(volname)?.0).map(Some) };
        let snaps = match self.disk(volname)?.snapshots() {
            Err(e) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        if let Some(s) = snaps.into_iter().find(|s| s.name == snap) {
            return Ok(Some(self.spec(&s.holder)?.at(snap)?));
        }
        // Not a disk snapshot (a template's `__base__`): on the head, if there.
        let head = self.spec(&image_of(volname)?.0)?;
        match ops::ioctx(&self.cluster, &head)?.open_read_only(&head.name, Some(snap)) {
            Ok(_) => Ok(Some(head.at(snap)?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::kernel_spec`] of a volume or snapshot that must exist.
    fn existing_kernel_spec(&self, volname: &str, snap: Option<&str>) -> Result<ImageSpec> {
        self.kernel_spec(volname, snap)?
            .ok_or_else(|| format!("snapshot {} of {volname} not found", snap.unwrap_or_default()))
    }

    /// Unmaps every kernel device of `volname`'s disk (head, snapshots, the
    /// images holding older snapshots), as a removal or rename needs.
    fn release(&self, volname: &str) -> Result<()> {
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
    fn release_snapshot(&self, volname: &str, snap: &str) -> Result<()> {
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
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.ceph.timeout.unwrap_or(60))
    }

    fn disk(&self, volname: &str) -> Result<Disk<'_>> {
        Ok(Disk::new(&self.cluster, self.spec(&image_of(volname)?.0)?, &PVE_NAMING))
    }

    fn disk_config(&self) -> DiskConfig {
        DiskConfig { data_pool: self.ceph.data_pool.clone(), ..DiskConfig::default() }
    }

    fn names(&self) -> Result<Vec<String>> {
        let io = ops::ioctx(&self.cluster, &self.spec("-")?)?;
        Ok(io.list_images()?.into_iter().map(|e| e.name).collect())
    }

    /// True if `vm` is gone because a `create_base` renamed it to `base` (and was
    /// interrupted before it answered): `base` exists and its `rbdx.disk` names
    /// one of the two (the bookkeeping moves to the new name after the rename).
    fn renamed_to_base(&self, vm: &str, base: &str) -> Result<bool> {
        let io = ops::ioctx(&self.cluster, &self.spec(base)?)?;
        let owner = match io.open_read_only(vm, None) {
            Ok(_) => return Ok(false),
            Err(e) if e.is_not_found() => match io.open_read_only(base, None) {
                Ok(img) => img.metadata_get(KEY_DISK)?,
                Err(e) if e.is_not_found() => return Ok(false),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(owner.as_deref() == Some(vm) || owner.as_deref() == Some(base))
    }

    /// `vm-<vmid>-disk-<n>` with the lowest free `n` (as PVE's find_free_diskname).
    fn free_name(&self, vmid: u32) -> Result<String> {
        let names = self.names()?;
        (0..1024)
            .map(|n| (format!("vm-{vmid}-disk-{n}"), format!("base-{vmid}-disk-{n}")))
            .find(|(a, b)| !names.contains(a) && !names.contains(b))
            .map(|(a, _)| a)
            .ok_or_else(|| format!("no free disk name for VM {vmid}"))
    }

    fn run(&self, call: &Call) -> Result<Value> {
        match call {
            Call::Status {} => {
                let mut pools = vec![self.ceph.pool.as_str()];
                pools.extend(self.ceph.data_pool.as_deref());
                let u = ops::pool_usage(&self.cluster, &pools)?;
                let (used, avail) = match u.get(1) {
                    Some(ec) => (u[0].stored + ec.stored, ec.available()),
                    None => (u[0].stored, u[0].available()),
                };
                Ok(json!({"total": used + avail, "avail": avail, "used": used, "active": 1}))
            }
            Call::AllocImage { vmid, name, size_kib } => {
                let name = match name {
                    Some(n) => {
                        if owner(n) != Some(*vmid) || n.starts_with("base-") {
                            return Err(format!("illegal name {n:?} - should be 'vm-{vmid}-*'"));
                        }
                        n.clone()
                    }
                    None => self.free_name(*vmid)?,
                };
                let size = size_kib.checked_mul(1024).ok_or("size too large")?;
                ops::create(
                    &self.cluster,
                    &self.spec(&name)?,
                    size,
                    &CreateOptions::with_data_pool(self.ceph.data_pool.as_deref()),
                )?;
                Ok(json!(name))
            }
            Call::FreeImage { volname } => {
                let (name, _) = image_of(volname)?;
                let spec = self.spec(&name)?;
                if name.starts_with("base-") {
                    // Only a missing base snapshot skips the check (a timeout must not).
                    match ops::ioctx(&self.cluster, &spec)?.open_read_only(&name, Some(BASE_SNAP)) {
                        Ok(at) => {
                            let kids: Vec<String> =
                                at.children()?.into_iter().filter(|c| !c.trash).map(|c| c.name).collect();
                            if !kids.is_empty() {
                                return Err(format!(
                                    "base volume {name} is still in use by linked clones: {}",
                                    kids.join(", ")
                                ));
                            }
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.release(volname)?;
                Disk::new(&self.cluster, spec.clone(), &PVE_NAMING).remove(None, Reclaim::Trash)?;
                // The volume is gone; what reclaim meets belongs to other images
                // and the next free_image retries it.
                if let Err(e) = rbdx_core::ops::disk::reclaim(&self.cluster, &spec) {
                    eprintln!("warning: reclaiming trashed images failed: {e}");
                }
                Ok(Value::Null)
            }
            Call::ListImages { vmid } => {
                let io = ops::ioctx(&self.cluster, &self.spec("-")?)?;
                let mut out = Vec::new();
                for name in self.names()? {
                    let Some(owner) = owner(&name) else { continue };
                    if vmid.is_some_and(|v| v != owner) {
                        continue;
                    }
                    // An image removed while we list is simply not listed.
                    let Ok(img) = io.open_read_only(&name, None) else { continue };
                    let size = img.info()?.size;
                    let parent = img
                        .parent()?
                        .filter(|p| !p.image.trash)
                        .map(|p| format!("{}@{}", p.image.name, p.snap_name));
                    let volname = match &parent {
                        Some(p) if p.ends_with(&format!("@{BASE_SNAP}")) => {
                            format!("{}/{name}", p.trim_end_matches(&format!("@{BASE_SNAP}")))
                        }
                        _ => name.clone(),
                    };
                    out.push(json!({"name": volname, "size": size, "vmid": owner, "parent": parent, "format": "raw"}));
                }
                Ok(Value::Array(out))
            }
            Call::VolumeSizeInfo { volname } => {
                let (name, _) = image_of(volname)?;
                let io = ops::ioctx(&self.cluster, &self.spec(&name)?)?;
                let img = io.open_read_only(&name, None)?;
                let used = ops::used_bytes(&img, None)?;
                let parent = img.parent()?.map(|p| format!("{}@{}", p.image.name, p.snap_name));
                let st = ops::status_of(&self.cluster, &io, &img)?;
                Ok(
                    json!({"size": st.size, "used": used, "parent": parent, "format": "raw", "data_pool": st.data_pool}),
                )
            }
            Call::VolumeResize { volname, size } => {
                ops::resize(&self.cluster, &self.spec(&image_of(volname)?.0)?, *size, false)?;
                Ok(Value::Null)
            }
            Call::VolumeSnapshot { volname, snap } => {
                self.disk(volname)?.snapshot_create(snap)?;
                Ok(Value::Null)
            }
            Call::VolumeSnapshotRollback { volname, snap } => {
                self.disk(volname)?.revert(snap, &self.disk_config())?;
                Ok(Value::Null)
            }
            Call::VolumeSnapshotDelete { volname, snap } => {
                self.release_snapshot(volname, snap)?;
                self.disk(volname)?.snapshot_delete(snap)?;
                Ok(Value::Null)
            }
            Call::VolumeSnapshotInfo { volname } => {
                let d = self.disk(volname)?;
                let io = ops::ioctx(&self.cluster, d.head())?;
                let mut info = serde_json::Map::new();
                let snaps = match d.snapshots() {
                    // A volume that is gone has no snapshots (PVE asks after a removal).
                    Err(e) if e.is_not_found() => return Ok(Value::Object(info)),
                    other => other?,
                };
                for s in snaps {
                    if s.name.starts_with("rbdx.") || s.name == BASE_SNAP {
                        continue;
                    }
                    let img = io.open_read_only(&s.holder, None)?;
                    if let Some(rs) = img.snapshots()?.into_iter().find(|x| x.name == s.name) {
                        let ts = img.snap_timestamp(rs.id)?;
                        info.insert(s.name, json!({"id": rs.id, "timestamp": ts, "virtual-size": rs.size}));
                    }
                }
                Ok(Value::Object(info))
            }
            Call::CreateBase { volname } => {
                let (name, _) = image_of(volname)?;
                let base = match name.strip_prefix("vm-") {
                    Some(rest) => format!("base-{rest}"),
                    None if name.starts_with("base-") => name.clone(),
                    None => return Err(format!("{volname} cannot be a template")),
                };
                // PVE retries a call that failed: after one interrupted once the
                // volume was renamed, the volume is the base.
                let name =
                    if name != base && self.renamed_to_base(&name, &base)? { base.clone() } else { name };
                let disk = Disk::new(&self.cluster, self.spec(&name)?, &PVE_NAMING);
                let user_snaps: Vec<String> =
                    disk.snapshots()?.into_iter().map(|s| s.name).filter(|n| n != BASE_SNAP).collect();
                if !user_snaps.is_empty() {
                    return Err(format!(
                        "remove the snapshots of {name} ({}) before making it a template",
                        user_snaps.join(", ")
                    ));
                }
                let disk = if name == base {
                    disk
                } else {
                    self.release(&name)?;
                    disk.rename(&base)?
                };
                let io = ops::ioctx(&self.cluster, disk.head())?;
                rbdx_core::ops::disk::ensure_snapshot(&io, &base, BASE_SNAP)?;
                Ok(json!(base))
            }
            Call::CloneImage { volname, vmid, snap } => {
                let (name, _) = image_of(volname)?;
                let is_base = name.starts_with("base-");
                let snap = match (snap, is_base) {
                    (Some(s), _) => s.clone(),
                    (None, true) => BASE_SNAP.to_string(),
                    (None, false) => {
                        return Err(format!("{volname} is not a template: name the snapshot to clone"));
                    }
                };
                let target = self.free_name(*vmid)?;
                let tspec = self.spec(&target)?;
                if snap == BASE_SNAP {
                    let opts =
                        CloneOptions { data_pool: self.ceph.data_pool.clone(), ..CloneOptions::default() };
                    ops::clone(&self.cluster, &self.spec(&name)?.at(BASE_SNAP)?, &tspec, &opts)?;
                    Ok(json!(format!("{name}/{target}")))
                } else {
                    self.disk(volname)?.clone_snapshot(&snap, &tspec, &self.disk_config())?;
                    Ok(json!(target))
                }
            }
            Call::RenameVolume { volname, target_vmid, target_volname } => {
                let target = match target_volname {
                    Some(t) => {
                        let (t, owner) = image_of(t)?;
                        if owner != *target_vmid {
                            return Err(format!("{t} does not belong to VM {target_vmid}"));
                        }
                        if self.names()?.contains(&t) {
                            return Err(format!("volume {t} already exists"));
                        }
                        t
                    }
                    None => self.free_name(*target_vmid)?,
                };
                self.release(volname)?;
                self.disk(volname)?.rename(&target)?;
                let prefix = volname.rsplit_once('/').map(|(p, _)| format!("{p}/")).unwrap_or_default();
                Ok(json!(format!("{prefix}{target}")))
            }
            Call::Fsid {} => Ok(json!(self.cluster.fsid()?)),
            Call::SnapshotImage { volname, snap } => {
                Ok(json!(self.existing_kernel_spec(volname, Some(snap))?.name))
            }
            Call::QemuSnapshotMethod { volname } => {
                let d = self.disk(volname)?;
                let head = d.head().name.clone();
                let elsewhere = d.snapshots()?.into_iter().any(|s| s.holder != head);
                Ok(json!(if elsewhere { "storage" } else { "qemu" }))
            }
            Call::CacheWriteback { volname } => {
                let spec = self.spec(&image_of(volname)?.0)?;
                let io = ops::ioctx(&self.cluster, &spec)?;
                io.open(&spec.name)?.metadata_set("conf_rbd_cache_policy", "writeback")?;
                Ok(Value::Null)
            }
            Call::DevicePath { volname, snap } => {
                let spec = self.existing_kernel_spec(volname, snap.as_deref())?;
                let (_, dev) = kernel();
                Ok(json!(dev.join(pve_device_path(&self.cluster.fsid()?, &spec)).to_string_lossy()))
            }
            Call::MapVolume { volname, snap, options, may_remap } => {
                let spec = self.existing_kernel_spec(volname, snap.as_deref())?;
                let opts: Vec<&str> = options.iter().map(String::as_str).collect();
                let (krbd, dev) = kernel();
                let fsid = self.cluster.fsid()?;
                // Mapped without an option it now needs (rxbounce for a Windows
                // guest): mapped again, if PVE says deactivating is safe.
                if let Some(d) = krbd.mapped(&fsid, &spec)?.into_iter().next() {
                    let has = krbd.options(&d).unwrap_or_default();
                    let missing: Vec<&str> =
                        opts.iter().copied().filter(|o| !has.iter().any(|h| h == o)).collect();
                    if !missing.is_empty() {
                        if *may_remap {
                            if let Err(e) = krbd.remove(&d, &spec.to_string(), self.timeout()) {
                                eprintln!("could not unmap {spec} to apply {}: {e}", missing.join(","));
                            }
                        } else {
                            eprintln!(
                                "not unmapping {spec} to apply {} since it is not safe",
                                missing.join(",")
                            );
                        }
                    }
                }
                krbd.map(&self.cluster, &spec, &opts, self.timeout())?;
                let path = dev.join(pve_device_path(&self.cluster.fsid()?, &spec));
                // The symlink is udev's (pve-storage's 50-rbd-pve.rules).
                let deadline = rbdx_core::deadline(self.timeout());
                while !path.exists() {
                    if std::time::Instant::now() >= deadline {
                        return Err(format!(
                            "{spec} is mapped, but udev did not create {} (is pve-storage's rbd udev rule installed?)",
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(json!(path.to_string_lossy()))
            }
            Call::UnmapVolume { volname, snap } => {
                image_of(volname)?;
                let (krbd, _) = kernel();
                if !krbd.loaded() {
                    return Ok(json!(false));
                }
                // Nothing of a missing snapshot can be mapped.
                let Some(spec) = self.kernel_spec(volname, snap.as_deref())? else { return Ok(json!(false)) };
                Ok(json!(krbd.unmap(&self.cluster.fsid()?, &spec, self.timeout())?))
            }
            Call::VolumeExport { .. } | Call::VolumeImport { .. } => Err("this method streams".into()),
        }
    }

    fn export(&self, volname: &str, snap: Option<&str>, out: &mut impl Write) -> Result<()> {
        // A snapshot is read where it is kept (after a rollback, an older image).
        let spec = self.existing_kernel_spec(volname, snap)?;
        let io = ops::ioctx(&self.cluster, &spec)?;
        let img = io.open_read_only(&spec.name, snap)?;
        let size = img.info()?.size;
        out.write_all(&size.to_le_bytes()).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4 << 20];
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64) as usize;
            img.read_at(pos, &mut buf[..n])?;
            out.write_all(&buf[..n]).map_err(|e| format!("writing the stream: {e}"))?;
            pos += n as u64;
        }
        out.flush().map_err(|e| e.to_string())
    }

    fn import(&self, volname: &str, allow_rename: bool, input: &mut impl Read) -> Result<Value> {
        let (mut name, vmid) = image_of(volname)?;
        if self.names()?.contains(&name) {
            if !allow_rename {
                return Err(format!("volume {name} already exists"));
            }
            name = self.free_name(vmid)?;
        }
        let mut header = [0u8; 8];
        input.read_exact(&mut header).map_err(|e| format!("reading the size header: {e}"))?;
        let size = u64::from_le_bytes(header);
        let spec = self.spec(&name)?;
        ops::create(
            &self.cluster,
            &spec,
            size,
            &CreateOptions::with_data_pool(self.ceph.data_pool.as_deref()),
        )?;
        let written = (|| -> Result<()> {
            let io = ops::ioctx(&self.cluster, &spec)?;
            let img = io.open(&name)?;
            let mut body = input.take(size);
            ops::write_sparse(&img, &mut body)?;
            // A stream cut short (the sender died) must not pass for the volume.
            if body.limit() > 0 {
                return Err(format!("the stream ended after {} of {size} bytes", size - body.limit()));
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = ops::remove(&self.cluster, &spec, ops::RemoveOptions::default());
            return Err(e);
        }
        let prefix = volname.rsplit_once('/').map(|(p, _)| format!("{p}/")).unwrap_or_default();
        Ok(json!(format!("{prefix}{name}")))
    }
}

/// Serves one request: reads it from `input` (one line) — or from `request` when
/// given (an import, whose stdin is the stream) — and writes the answer (or, for
/// an export, the stream) to `output`. Returns the exit code.
pub fn serve(
    request: Option<&str>,
    input: &mut impl Read,
    output: &mut impl Write,
    errors: &mut impl Write,
) -> i32 {
    let mut line = request.map(|r| r.as_bytes().to_vec()).unwrap_or_default();
    let mut byte = [0u8; 1];
    while request.is_none() {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return answer(output, Err(format!("reading the request: {e}"))),
        }
        if line.len() > 1 << 20 {
            return answer(output, Err("the request is too large".into()));
        }
    }
    let req: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return answer(output, Err(format!("malformed request: {e}"))),
    };
    if req.version != VERSION {
        return answer(
            output,
            Err(format!(
                "request version {} but this helper speaks {VERSION}: update the plugin and rbdx together",
                req.version
            )),
        );
    }
    if let Err(e) = ImageSpec::new(&req.ceph.pool, "-") {
        return answer(output, Err(e.to_string()));
    }
    let helper = match Helper::connect(&req.ceph) {
        Ok(h) => h,
        Err(e) => return answer(output, Err(e)),
    };
    match &req.call {
        Call::VolumeExport { volname, snap } => match helper.export(volname, snap.as_deref(), output) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(errors, "{e}");
                1
            }
        },
        Call::VolumeImport { volname, allow_rename } => {
            answer(output, helper.import(volname, *allow_rename, input))
        }
        call => answer(output, helper.run(call)),
    }
}

fn answer(out: &mut impl Write, r: Result<Value>) -> i32 {
    let (resp, code) = match r {
        Ok(v) => (Response { ok: true, result: Some(v), error: None }, 0),
        Err(e) => (
            Response {
                ok: false,
                result: None,
                error: Some(e.split_whitespace().collect::<Vec<_>>().join(" ")),
            },
            1,
        ),
    };
    let _ = writeln!(out, "{}", serde_json::to_string(&resp).unwrap_or_default());
    code
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
        assert_eq!(owner("vm-100-state-snap1"), Some(100));
        assert_eq!(owner("vm-100-disk-0.rbdx-new"), None, "internal images are never listed");
    }

    #[test]
    fn malformed_requests_and_unknown_methods_fail_in_one_line() {
        for (input, want) in [
            ("not json\n", "malformed request"),
            ("{\"version\":1}\n", "malformed request"),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"rbd"},"method":"format_disk","params":{}}"#,
                "malformed request",
            ),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"rbd"},"method":"status","params":{},"extra":1}"#,
                "malformed request",
            ),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"rbd"},"method":"fsid","params":{"extra":1}}"#,
                "malformed request",
            ),
            (
                r#"{"version":7,"storeid":"s","ceph":{"pool":"rbd"},"method":"status","params":{}}"#,
                "update the plugin and rbdx together",
            ),
            (
                r#"{"version":1,"storeid":"s","ceph":{"pool":"a/b"},"method":"status","params":{}}"#,
                "invalid pool name",
            ),
        ] {
            let mut out = Vec::new();
            let code = serve(None, &mut input.as_bytes(), &mut out, &mut Vec::new());
            assert_eq!(code, 1, "{input}");
            let resp: Response = serde_json::from_slice(&out).unwrap();
            let e = resp.error.unwrap();
            assert!(!resp.ok && e.contains(want), "{input}: {e}");
            assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
        }
    }

    #[test]
    fn golden_requests_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.to_string_lossy().ends_with(".request.json") {
                let text = std::fs::read_to_string(&p).unwrap();
                let r: Request =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
                assert_eq!(r, back);
                n += 1;
            } else if p.to_string_lossy().ends_with(".response.json") {
                let text = std::fs::read_to_string(&p).unwrap();
                let r: Response =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert_eq!(r.ok, r.error.is_none(), "{}: ok xor error", p.display());
            }
        }
        assert!(n >= 5, "golden files present");
    }
}
