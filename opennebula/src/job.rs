//! The Ceph work of one driver action, as data: the front-end decides everything
//! that needs oned (names, pools, data pool, credential paths, sizes) and builds a
//! [`Job`]; the job runs in-process or on a host through one ssh round trip
//! ([`crate::exec`]), where it is read from stdin as JSON. It never carries a
//! secret: only the paths of the host's ceph.conf and key file.

use std::time::Duration;

use rbdx_core::ops::disk::{self, Disk, DiskConfig, Reclaim};
use rbdx_core::ops::{self, CloneFormat, CloneOptions, CreateOptions, ImageSpec, Removal, RemoveOptions};
use rbdx_core::{Cluster, ConnectConfig, Timeouts};
use serde::{Deserialize, Serialize};

use crate::hostfs::VmPath;
use crate::oned::{Attrs, Datastore};

/// Version of the job protocol between the front-end and the hosts.
pub const PROTOCOL: u32 = 2;

/// How to reach Ceph on the host that runs the job (the DISK's or datastore's
/// CEPH_CONF, CEPH_USER, CEPH_KEY).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CephAccess {
    /// ceph.conf path on that host.
    pub conf: Option<String>,
    /// cephx user (without `client.`).
    pub user: Option<String>,
    /// Path of a key file on that host.
    pub key_file: Option<String>,
    /// Seconds one Ceph call may take.
    pub timeout_secs: u64,
}

impl CephAccess {
    /// CEPH_CONF, CEPH_USER and CEPH_KEY of a datastore; a VM's DISK supplies only
    /// what the datastore does not set (the datastore is the operator's, the DISK
    /// a copy oned made that a user's template may have shaped), checked as the
    /// datastore's are.
    ///
    /// # Errors
    /// One line naming a malformed DISK attribute.
    pub fn of(ds: &Datastore, disk: Option<Attrs<'_>>, timeout: Duration) -> Result<Self, String> {
        use crate::datastore::{ceph_user, path};
        let s = ds.settings();
        let from_disk = |k: &str, check: fn(&str, &str) -> Result<String, String>| {
            disk.and_then(|d| d.get(k)).map(|v| check(&format!("DISK {k}"), v)).transpose()
        };
        Ok(Self {
            conf: match &s.ceph_conf {
                Some(c) => Some(c.clone()),
                None => from_disk("CEPH_CONF", path)?,
            },
            user: match &s.ceph_user {
                Some(u) => Some(u.clone()),
                None => from_disk("CEPH_USER", ceph_user)?,
            },
            key_file: match &s.ceph_key {
                Some(k) => Some(k.clone()),
                None => from_disk("CEPH_KEY", path)?,
            },
            timeout_secs: timeout.as_secs(),
        })
    }

    /// The connection settings.
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig {
            conf_file: self.conf.as_ref().map(Into::into),
            client_id: self.user.clone(),
            keyring: None,
            key_file: self.key_file.as_ref().map(Into::into),
            mon_host: None,
            timeouts: Timeouts::uniform(Duration::from_secs(self.timeout_secs.max(1))),
            auth_none: false,
        }
    }

    fn connect(&self) -> Result<Cluster, String> {
        Cluster::connect(&self.config()).map_err(|e| format!("cannot connect to Ceph: {e}"))
    }
}

/// A guest to freeze around a snapshot (`snap_create_live`). Only the domain:
/// the virsh command, the libvirt URI and the time limit are the settings of the
/// host that runs the job, never the job's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// The libvirt domain (`one-<vmid>`).
    pub domain: String,
}

/// One action's Ceph work. Image names are `pool[/namespace]/image` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// TM clone: a non-persistent VM disk as a CoW clone of `source@snap`.
    CloneDisk {
        /// Ceph access.
        ceph: CephAccess,
        /// The image (`pool/one-<id>`).
        source: String,
        /// The VM disk to create (`<source>-<vmid>-<diskid>`).
        target: String,
        /// Data pool for the disk.
        data_pool: Option<String>,
        /// Grow to this many MiB if larger than the image.
        size_mb: Option<u64>,
        /// Clone-depth bound.
        max_depth: u32,
    },
    /// TM ln: a persistent image used in place; drop its stale base snapshot.
    LinkDisk {
        /// Ceph access.
        ceph: CephAccess,
        /// The image.
        source: String,
    },
    /// TM mkimage / mkswap: a volatile disk.
    MakeImage {
        /// Ceph access.
        ceph: CephAccess,
        /// `pool/one-sys-<vmid>-<diskid>`.
        target: String,
        /// Size in MiB.
        size_mb: u64,
        /// Data pool.
        data_pool: Option<String>,
        /// File system to format (`ext4`, `xfs`, …), `swap`, or none.
        fs: Option<String>,
    },
    /// TM delete of a disk: remove it with every image and snapshot it owns.
    DeleteDisk {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk (head).
        head: String,
        /// The image it was cloned from: its base snapshot is dropped once unused.
        base: Option<String>,
        /// Move to the trash with this deferment instead (CEPH_TRASH).
        trash_delay: Option<u64>,
        /// What happens to images that save-as clones still read from.
        #[serde(default)]
        reclaim: Reclaim,
    },
    /// Remove one image if it exists (the VM's suspend checkpoint).
    RemoveImage {
        /// Ceph access.
        ceph: CephAccess,
        /// The image.
        image: String,
        /// Move to the trash with this deferment instead.
        trash_delay: Option<u64>,
    },
    /// TM `snap_create` and `snap_create_live`.
    SnapCreate {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk.
        head: String,
        /// Snapshot name (oned's snapshot id).
        snap: String,
        /// Freeze the guest around the snapshot.
        freeze: Option<Freeze>,
    },
    /// TM snap_delete / DS snap_delete.
    SnapDelete {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk.
        head: String,
        /// Snapshot name.
        snap: String,
    },
    /// TM snap_revert / DS snap_revert.
    SnapRevert {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk.
        head: String,
        /// Snapshot name.
        snap: String,
        /// Data pool for the new head.
        data_pool: Option<String>,
        /// Clone-depth bound.
        max_depth: u32,
    },
    /// TM cpds: save a disk (or one of its snapshots) as a new image, CoW.
    SaveAs {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk.
        head: String,
        /// The snapshot to save, or the disk's current state.
        snap: Option<String>,
        /// The new image.
        target: String,
        /// Its data pool.
        data_pool: Option<String>,
        /// Clone-depth bound.
        max_depth: u32,
    },
    /// TM clone.ssh / ln.ssh: copy an image (at a snapshot) into a file on the host
    /// (an ssh system datastore), sparse.
    ExportToFile {
        /// Ceph access.
        ceph: CephAccess,
        /// The image.
        source: String,
        /// Take (if missing) and copy this snapshot; `None` copies the head.
        snap: Option<String>,
        /// Drop the image's stale base snapshot first (ln.ssh).
        drop_base_snap: bool,
        /// The file to write.
        path: VmPath,
        /// Grow the file to this many MiB.
        size_mb: Option<u64>,
    },
    /// TM mvds.ssh / cpds.ssh: write a file on the host into an image.
    ImportFile {
        /// Ceph access.
        ceph: CephAccess,
        /// The file.
        path: VmPath,
        /// The image.
        target: String,
        /// Create the image (with this data pool) rather than overwrite it.
        create: bool,
        /// Its data pool when created.
        data_pool: Option<String>,
        /// Grow the image to at least this many MiB first.
        size_mb: Option<u64>,
        /// Remove the file afterwards (mvds.ssh).
        remove_file: bool,
        /// Freeze the guest while reading the file.
        freeze: Option<Freeze>,
    },
    /// TM resize.ssh: grow a raw disk file on the host.
    ResizeFile {
        /// The file.
        path: VmPath,
        /// New size in MiB.
        size_mb: u64,
    },
    /// Remove a VM directory on the host.
    RemoveDir {
        /// The directory.
        path: VmPath,
    },
    /// Stream a VM directory to stdout as tar (the sending half of a move).
    SendDir {
        /// The directory.
        path: VmPath,
    },
    /// Replace a VM directory with the tar stream that follows the request on
    /// stdin (the receiving half of a move).
    ReceiveDir {
        /// The directory.
        path: VmPath,
    },
    /// Whether a VM directory exists on its host; `mark` leaves a marker in it,
    /// `find` reports (and removes) a marker left there: the probe that tells two
    /// names for one directory apart. The output is `{"exists":…,"found":…}`.
    ProbeDir {
        /// The directory.
        path: VmPath,
        /// A marker to leave (`.rbdx-probe-<mark>`).
        mark: Option<String>,
        /// A marker to look for.
        find: Option<String>,
    },
    /// Write a file in a VM directory (the context ISO) from the `size` bytes that
    /// follow the request on stdin: into a temporary file, renamed into place once
    /// complete.
    PutFile {
        /// The file.
        path: VmPath,
        /// Its size.
        size: u64,
    },
    /// DS / TM monitor: capacity and usage of a datastore's pools (EC-aware), and
    /// reclaim of trashed images whose clones are gone.
    Monitor {
        /// Ceph access.
        ceph: CephAccess,
        /// The pool (POOL_NAME).
        pool: String,
        /// The EC data pool (EC_POOL_NAME), if any.
        ec_pool: Option<String>,
        /// Also measure every VM disk in the pool (MONITOR_VM_DISKS).
        #[serde(default)]
        vm_disks: bool,
    },
    /// DS cp: import an image. The data follows the request on stdin (`size`
    /// bytes) when `url` is `None`.
    Import {
        /// Ceph access.
        ceph: CephAccess,
        /// The image to create (`pool/one-<id>`).
        target: String,
        /// Its data pool.
        data_pool: Option<String>,
        /// Download from here (on this host) instead of reading stdin.
        url: Option<String>,
        /// Bytes that follow on stdin.
        size: u64,
        /// Make the image at least this many MiB.
        min_size_mb: Option<u64>,
        /// Expected MD5.
        md5: Option<String>,
        /// Expected SHA1.
        sha1: Option<String>,
        /// Bytes per second at most.
        limit_bps: Option<u64>,
        /// Where non-raw data is staged for qemu-img.
        staging_dir: Option<String>,
        /// Seconds a download may go without data.
        #[serde(default)]
        idle_secs: Option<u64>,
        /// Largest virtual size accepted, MiB.
        #[serde(default)]
        max_size_mb: Option<u64>,
    },
    /// DS snap_flatten: the image becomes snapshot `snap`, alone.
    Flatten {
        /// Ceph access.
        ceph: CephAccess,
        /// The image.
        head: String,
        /// The snapshot.
        snap: String,
        /// Data pool for the new head.
        data_pool: Option<String>,
        /// Clone-depth bound.
        max_depth: u32,
    },
    /// DS export: the MD5 of an image's contents.
    Checksum {
        /// Ceph access.
        ceph: CephAccess,
        /// The image.
        image: String,
    },
    /// `rbdx doctor`: the checks a host (or the front-end) runs; the findings
    /// come back as JSON in the outcome's output.
    Doctor {
        /// What to check.
        checks: crate::doctor::HostChecks,
    },
    /// TM resize: grow a disk.
    Resize {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk.
        image: String,
        /// New size in MiB.
        size_mb: u64,
    },
}

/// What a job reports: log lines for oned, its output, and its failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// INFO lines for oned's log.
    pub log: Vec<String>,
    /// What the action prints on stdout for oned (monitor data, …).
    #[serde(default)]
    pub output: Option<String>,
    /// Per VM disk: (VM id, disk id, MiB allocated), for MONITOR_VM_DISKS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_disks: Vec<(u32, u32, u64)>,
    /// The failure, if it failed: one line.
    pub error: Option<String>,
}

/// The snapshot a save-as of the current disk state takes, named after the new image.
pub fn saveas_snapshot(target: &ImageSpec) -> String {
    crate::naming::saveas_snapshot(&target.name)
}

/// What the clone of a save-as would refuse, refused before its snapshot is
/// taken (so a failed save-as leaves nothing): a target that exists and is not
/// this save-as's own clone (a re-run), or a data pool that does not exist.
fn saveas_precheck(
    c: &Cluster,
    target: &ImageSpec,
    snap: &str,
    data_pool: Option<&str>,
) -> Result<(), String> {
    if let Some(dp) = data_pool {
        c.pool_id(dp).map_err(|err| format!("data pool {dp}: {err}"))?;
    }
    let io = ops::ioctx(c, target).map_err(|err| format!("{target}: {err}"))?;
    let t = match io.open_read_only(&target.name, None) {
        Ok(t) => t,
        Err(err) if err.is_not_found() => return Ok(()),
        Err(err) => return Err(format!("{target}: {err}")),
    };
    let from_parent = t.parent().ok().flatten().is_some_and(|p| p.snap_name == snap);
    let from_marker = t
        .metadata_get("rbdx.cloned-from")
        .ok()
        .flatten()
        .is_some_and(|m| m.rsplit_once('@').is_some_and(|(_, s)| s == snap));
    if from_parent || from_marker { Ok(()) } else { Err(format!("{target} already exists")) }
}

fn spec(s: &str) -> Result<ImageSpec, String> {
    s.parse().map_err(|e: rbdx_core::Error| e.to_string())
}

impl Job {
    fn ceph(&self) -> Option<&CephAccess> {
        match self {
            Self::ResizeFile { .. }
            | Self::RemoveDir { .. }
            | Self::SendDir { .. }
            | Self::ReceiveDir { .. }
            | Self::PutFile { .. }
            | Self::ProbeDir { .. }
            | Self::Doctor { .. } => None,
            Self::CloneDisk { ceph, .. }
            | Self::LinkDisk { ceph, .. }
            | Self::MakeImage { ceph, .. }
            | Self::DeleteDisk { ceph, .. }
            | Self::RemoveImage { ceph, .. }
            | Self::SnapCreate { ceph, .. }
            | Self::SnapDelete { ceph, .. }
            | Self::SnapRevert { ceph, .. }
            | Self::SaveAs { ceph, .. }
            | Self::ExportToFile { ceph, .. }
            | Self::ImportFile { ceph, .. }
            | Self::Monitor { ceph, .. }
            | Self::Import { ceph, .. }
            | Self::Flatten { ceph, .. }
            | Self::Checksum { ceph, .. }
            | Self::Resize { ceph, .. } => Some(ceph),
        }
    }

    /// Runs the job here; the outcome carries the log and any error. Jobs that
    /// stream (`SendDir`, `ReceiveDir`) need [`crate::exec::serve`].
    pub fn run(&self) -> Outcome {
        let mut log = Vec::new();
        if let Self::Import { .. } = self {
            return self.import(Box::new(std::io::empty()), &mut |_, _| {});
        }
        if let Self::Checksum { ceph, image } = self {
            let r = ceph.connect().and_then(|c| checksum(&c, &spec(image)?));
            return match r {
                Ok(out) => Outcome { log, output: Some(out), ..Outcome::default() },
                Err(e) => Outcome { log, error: Some(e), ..Outcome::default() },
            };
        }
        if let Self::ProbeDir { path, mark, find } = self {
            return match crate::hostfs::probe_dir(path, mark.as_deref(), find.as_deref()) {
                Ok((exists, found)) => Outcome {
                    output: Some(serde_json::json!({"exists": exists, "found": found}).to_string()),
                    ..Outcome::default()
                },
                Err(e) => Outcome { error: Some(e), ..Outcome::default() },
            };
        }
        if let Self::Doctor { checks } = self {
            let findings = crate::doctor::run_host(checks);
            return Outcome { output: Some(crate::doctor::to_output(&findings)), ..Outcome::default() };
        }
        if let Self::Monitor { ceph, pool, ec_pool, vm_disks } = self {
            let r = ceph.connect().and_then(|c| {
                let report = crate::monitor::measure(&c, pool, ec_pool.as_deref(), &mut log)?;
                let disks = if *vm_disks { crate::monitor::vm_disks(&c, pool)? } else { Vec::new() };
                Ok((report, disks))
            });
            return match r {
                Ok((out, vm_disks)) => Outcome { log, output: Some(out), error: None, vm_disks },
                Err(e) => Outcome { log, error: Some(e), ..Outcome::default() },
            };
        }
        let result = match self.ceph() {
            Some(access) => access.connect().and_then(|c| self.run_on(&c, &mut log)),
            None => crate::hostfs::run_file_job(self, &mut log),
        };
        Outcome { log, error: result.err(), ..Outcome::default() }
    }

    fn run_on(&self, c: &Cluster, log: &mut Vec<String>) -> Result<(), String> {
        let e = |what: &str| {
            let what = what.to_string();
            move |err: rbdx_core::Error| format!("{what}: {err}")
        };
        match self {
            Self::CloneDisk { source, target, data_pool, size_mb, max_depth, .. } => {
                let (src, dst) = (spec(source)?, spec(target)?);
                clone_disk(c, &src, &dst, data_pool.as_deref(), *max_depth, log)
                    .map_err(e(&format!("cloning {src} to {dst}")))?;
                if let Some(mb) = size_mb {
                    grow(c, &dst, *mb).map_err(e(&format!("resizing {dst}")))?;
                }
            }
            Self::LinkDisk { source, .. } => {
                let src = spec(source)?;
                let io = ops::ioctx(c, &src).map_err(e(&src.to_string()))?;
                // A base snapshot from a non-persistent past must not be cloned
                // again once the image changes in place; clones that still use it
                // keep it (format 2 moves it to the trash namespace).
                match io.open(&src.name).and_then(|img| img.snap_remove(BASE_SNAP)) {
                    Ok(()) => log.push(format!("removed the base snapshot {src}@{BASE_SNAP}")),
                    Err(err) if err.is_not_found() => {}
                    Err(err) => return Err(format!("dropping {src}@{BASE_SNAP}: {err}")),
                }
            }
            Self::MakeImage { target, size_mb, data_pool, fs, .. } => {
                let dst = spec(target)?;
                make_image(c, &dst, *size_mb, data_pool.as_deref(), fs.as_deref(), log)?;
            }
            Self::DeleteDisk { head, base, trash_delay, reclaim, .. } => {
                let h = spec(head)?;
                Disk::new(c, h.clone(), &crate::naming::ONE)
                    .remove(*trash_delay, *reclaim)
                    .map_err(e(&format!("deleting {h}")))?;
                if let Some(b) = base {
                    let b = spec(b)?;
                    let io = ops::ioctx(c, &b).map_err(e(&b.to_string()))?;
                    match disk::drop_unused_snapshot(&io, &b.name, BASE_SNAP) {
                        Ok(true) => log.push(format!("removed the unused base snapshot {b}@{BASE_SNAP}")),
                        Ok(false) => {}
                        Err(err) if err.is_not_found() => {}
                        Err(err) => return Err(format!("dropping {b}@{BASE_SNAP}: {err}")),
                    }
                }
                // The disk is gone; what reclaim meets belongs to other images and
                // the monitor retries it.
                match disk::reclaim(c, &h) {
                    Ok((0, _)) => {}
                    Ok((freed, _)) => log.push(format!("reclaimed {freed} image(s) whose clones are gone")),
                    Err(err) => {
                        log.push(format!("reclaiming trashed images failed (the monitor retries): {err}"))
                    }
                }
            }
            Self::RemoveImage { image, trash_delay, .. } => {
                let i = spec(image)?;
                match ops::remove(c, &i, RemoveOptions { trash_delay: *trash_delay })
                    .map_err(e(&format!("removing {i}")))?
                {
                    Removal::AlreadyGone => {}
                    _ => log.push(format!("removed {i}")),
                }
            }
            Self::SnapCreate { head, snap, freeze, .. } => {
                let h = spec(head)?;
                let thaw = match freeze {
                    Some(f) => crate::freeze::freeze(f, log),
                    None => None,
                };
                let r = Disk::new(c, h.clone(), &crate::naming::ONE).snapshot_create(snap);
                if let Some(t) = thaw {
                    t.thaw(log);
                }
                r.map_err(e(&format!("creating snapshot {snap} of {h}")))?;
            }
            Self::SnapDelete { head, snap, .. } => {
                let h = spec(head)?;
                Disk::new(c, h.clone(), &crate::naming::ONE)
                    .snapshot_delete(snap)
                    .map_err(e(&format!("deleting snapshot {snap} of {h}")))?;
            }
            Self::SnapRevert { head, snap, data_pool, max_depth, .. } => {
                let h = spec(head)?;
                let cfg = disk_config(data_pool, *max_depth);
                Disk::new(c, h.clone(), &crate::naming::ONE)
                    .revert(snap, &cfg)
                    .map_err(e(&format!("reverting {h} to snapshot {snap}")))?;
            }
            Self::SaveAs { head, snap, target, data_pool, max_depth, .. } => {
                let (h, t) = (spec(head)?, spec(target)?);
                let d = Disk::new(c, h.clone(), &crate::naming::ONE);
                let snap = match snap {
                    Some(s) => s.clone(),
                    None => {
                        let s = saveas_snapshot(&t);
                        saveas_precheck(c, &t, &s, data_pool.as_deref())?;
                        d.snapshot_create(&s).map_err(e(&format!("taking a snapshot of {h}")))?;
                        s
                    }
                };
                let cfg = disk_config(data_pool, *max_depth);
                d.clone_snapshot(&snap, &t, &cfg).map_err(e(&format!("saving {h}@{snap} as {t}")))?;
                log.push(format!("saved {h}@{snap} as {t} (copy-on-write)"));
            }
            Self::ExportToFile { source, snap, drop_base_snap, path, size_mb, .. } => {
                let src = spec(source)?;
                crate::hostfs::export(c, &src, snap.as_deref(), *drop_base_snap, path, *size_mb, log)?;
            }
            Self::ImportFile { path, target, create, data_pool, size_mb, remove_file, freeze, .. } => {
                let thaw = freeze.as_ref().and_then(|f| crate::freeze::freeze(f, log));
                let r =
                    crate::hostfs::import(c, path, &spec(target)?, *create, data_pool.as_deref(), *size_mb);
                if let Some(t) = thaw {
                    t.thaw(log);
                }
                r?;
                if *remove_file {
                    crate::hostfs::remove_file(path)?;
                }
            }
            Self::Flatten { head, snap, data_pool, max_depth, .. } => {
                let h = spec(head)?;
                let cfg = disk_config(data_pool, *max_depth);
                Disk::new(c, h.clone(), &crate::naming::ONE)
                    .flatten_to(snap, &cfg)
                    .map_err(e(&format!("flattening {h} to snapshot {snap}")))?;
            }
            Self::ResizeFile { .. }
            | Self::RemoveDir { .. }
            | Self::SendDir { .. }
            | Self::ReceiveDir { .. }
            | Self::PutFile { .. }
            | Self::ProbeDir { .. }
            | Self::Import { .. }
            | Self::Checksum { .. }
            | Self::Monitor { .. }
            | Self::Doctor { .. } => {
                return crate::hostfs::run_file_job(self, log);
            }
            Self::Resize { image, size_mb, .. } => {
                let i = spec(image)?;
                // A shrink would lose data: refused, as `rbd resize` without
                // --allow-shrink refuses it.
                ops::resize(c, &i, size_mb.saturating_mul(1 << 20), false)
                    .map_err(e(&format!("resizing {i}")))?;
            }
        }
        Ok(())
    }
}

impl Job {
    /// Runs an `Import` job, reading the data (when no URL) from `input`, and
    /// reporting progress.
    pub fn import(
        &self,
        input: Box<dyn std::io::Read>,
        progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> Outcome {
        let Self::Import {
            ceph,
            target,
            data_pool,
            url,
            size,
            min_size_mb,
            md5,
            sha1,
            limit_bps,
            staging_dir,
            idle_secs,
            max_size_mb,
        } = self
        else {
            return Outcome { error: Some("not an import job".into()), ..Outcome::default() };
        };
        let run = || -> Result<String, String> {
            let t = spec(target)?;
            let c = ceph.connect()?;
            let source = match url {
                Some(u) => rbdx_import::Source::Url(u.clone()),
                None => rbdx_import::Source::Stream { reader: input, size: *size },
            };
            let opts = rbdx_import::Options {
                data_pool: data_pool.clone(),
                min_size: min_size_mb.map(|m| m << 20),
                md5: md5.clone(),
                sha1: sha1.clone(),
                limit_bps: *limit_bps,
                staging_dir: staging_dir.as_ref().map(Into::into),
                timeout: Some(Duration::from_secs(idle_secs.unwrap_or(60).max(1))),
                convert_timeout: None,
                max_size: max_size_mb.map(|m| m.saturating_mul(1 << 20)),
            };
            let r = rbdx_import::import(&c, source, &t, &opts, Some(progress))?;
            Ok(if r.already_done {
                format!("{t} was imported already")
            } else {
                format!("imported {} MiB ({}) into {t}", r.read >> 20, r.format.qemu_name())
            })
        };
        match run() {
            Ok(msg) => Outcome { log: vec![msg], ..Outcome::default() },
            Err(e) => Outcome { error: Some(e), ..Outcome::default() },
        }
    }
}

/// The MD5 (hex) of an image's whole contents.
fn checksum(c: &Cluster, image: &ImageSpec) -> Result<String, String> {
    use md5::Digest;
    let io = ops::ioctx(c, image).map_err(|e| e.to_string())?;
    let img = io.open_read_only(&image.name, None).map_err(|e| e.to_string())?;
    let size = img.info().map_err(|e| e.to_string())?.size;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        img.read_at(pos, &mut buf[..n]).map_err(|e| e.to_string())?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The scheme's settings for images a job creates.
fn disk_config(data_pool: &Option<String>, max_depth: u32) -> DiskConfig {
    DiskConfig { data_pool: data_pool.clone(), clone_format: CloneFormat::Auto, max_depth }
}

pub use crate::naming::BASE_SNAP;

fn grow(c: &Cluster, image: &ImageSpec, size_mb: u64) -> rbdx_core::Result<()> {
    let size = size_mb << 20;
    if ops::stat(c, image)?.size < size { ops::resize(c, image, size, false) } else { Ok(()) }
}

/// Clones `src@snap` into `dst`: re-running when `dst` exists (as that clone) is a
/// no-op; the base snapshot is taken once however many deploy at the same time; a
/// snapshot removed by a racing delete is taken again.
fn clone_disk(
    c: &Cluster,
    src: &ImageSpec,
    dst: &ImageSpec,
    data_pool: Option<&str>,
    max_depth: u32,
    log: &mut Vec<String>,
) -> rbdx_core::Result<()> {
    // Only "not found" means there is no such clone yet: any other failure (a
    // timeout) is the action's, not a reason to go on and wait again.
    match ops::stat(c, dst) {
        Ok(_) => {
            // Made by an earlier run (which may have stopped right after the clone).
            ops::strip_inherited(&ops::ioctx(c, dst)?, &dst.name)?;
            log.push(format!("{dst} exists already"));
            return Ok(());
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    ops::check_data_pool(c, data_pool)?;
    let io = ops::ioctx(c, src)?;
    let opts = CloneOptions { data_pool: data_pool.map(str::to_string), ..CloneOptions::default() };
    for attempt in 0..3 {
        if disk::ensure_snapshot(&io, &src.name, BASE_SNAP)? {
            log.push(format!("took the base snapshot {src}@{BASE_SNAP}"));
        }
        match ops::clone(c, &src.at(BASE_SNAP)?, dst, &opts) {
            Ok(_) => break,
            Err(e) if e.is_not_found() && attempt < 2 => continue, // snapshot removed under us
            Err(e) if e.is_exists() => break,                      // a concurrent run made it
            Err(e) => return Err(e),
        }
    }
    let dio = ops::ioctx(c, dst)?;
    if disk::depth(&dio, &dst.name)? > max_depth {
        dio.open(&dst.name)?.flatten()?;
        log.push(format!("flattened {dst}: clone chain longer than {max_depth}"));
    }
    Ok(())
}

/// A volatile disk: made under a temporary name (`<target>.rbdx-make`), formatted
/// there, and renamed into place only once complete. A re-run finds the finished
/// image and is done; what an interrupted run left under the temporary name is
/// removed and made again. An image already at the target name is never removed
/// or replaced: if it is not what this action makes, the action fails.
fn make_image(
    c: &Cluster,
    dst: &ImageSpec,
    size_mb: u64,
    data_pool: Option<&str>,
    fs: Option<&str>,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let size = size_mb.checked_mul(1 << 20).ok_or("invalid size: too large")?;
    // A file system this driver cannot make is refused before anything is created.
    if let Some(fs) = fs {
        crate::format::check_supported(fs)?;
    }
    ops::check_data_pool(c, data_pool).map_err(|e| e.to_string())?;
    // Only "not found" means there is none (a timeout fails the action at once).
    match ops::stat(c, dst) {
        Ok(st) if st.size == size => return Ok(()),
        Ok(st) => {
            return Err(format!("{dst} exists already ({} bytes, not {size}): not replacing it", st.size));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.to_string()),
    }
    let temp = dst.sibling(&format!("{}.rbdx-make", dst.name)).map_err(|e| e.to_string())?;
    ops::remove(c, &temp, RemoveOptions::default())
        .map_err(|e| format!("removing the unfinished {temp}: {e}"))?;
    ops::create(c, &temp, size, &CreateOptions::with_data_pool(data_pool))
        .map_err(|e| format!("creating {dst}: {e}"))?;
    if let Some(fs) = fs {
        let io = ops::ioctx(c, &temp).map_err(|e| e.to_string())?;
        let img = io.open(&temp.name).map_err(|e| e.to_string())?;
        crate::format::format_image(&img, size, fs).map_err(|e| format!("formatting {dst} as {fs}: {e}"))?;
        log.push(format!("formatted {dst} as {fs}"));
    }
    ops::rename(c, &temp, &dst.name).map_err(|e| format!("renaming {temp} to {dst}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_tagged_json() {
        let j =
            Job::SnapDelete { ceph: CephAccess::default(), head: "one/one-5-3-0".into(), snap: "2".into() };
        let s = serde_json::to_string(&j).unwrap();
        assert!(s.starts_with("{\"job\":\"snap_delete\""), "{s}");
        assert_eq!(serde_json::from_str::<Job>(&s).unwrap(), j);
        assert!(serde_json::from_str::<Job>("{\"job\":\"format_everything\"}").is_err());
    }

    #[test]
    fn saveas_snapshots_are_named_after_the_new_image() {
        assert_eq!(saveas_snapshot(&"one/one-42".parse().unwrap()), "rbdx.saveas.one-42");
    }
}
