//! The Ceph work of one driver action, as data: the front-end decides everything
//! that needs oned (names, pools, data pool, credential paths, sizes) and builds a
//! [`Job`]; the job runs in-process or on a host through one ssh round trip
//! ([`crate::exec`]), where it is read from stdin as JSON. It never carries a
//! secret: only the paths of the host's ceph.conf and key file.

use rbdx_core::ops::disk::Reclaim;
use serde::{Deserialize, Serialize};

pub use crate::access::CephAccess;
use crate::error::Result;
use crate::hostfs::{BackupDir, VmPath};
use crate::jobs;
pub use crate::jobs::backup::{BackupDisk, BackupKind};
pub use crate::jobs::import::ImportJob;

/// Version of the job protocol between the front-end and the hosts.
pub const PROTOCOL: u32 = 3;

/// A guest to freeze around a snapshot (`snap_create_live`). Only the domain:
/// the virsh command, the libvirt URI and the time limit are the settings of the
/// host that runs the job, never the job's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// The libvirt domain or LXC container (`one-<vmid>`).
    pub domain: String,
    /// An LXC container (`lxc-freeze`), not a libvirt domain.
    #[serde(default)]
    pub lxc: bool,
    /// Suspend the VM when its file systems cannot be frozen, and fail when
    /// neither works (a save-as of a running disk must be consistent).
    #[serde(default)]
    pub or_suspend: bool,
}

/// A `SaveAs` from a front-end that predates `copy_max_mb`: the default.
fn default_copy_max_mb() -> u64 {
    rbdx_core::ops::disk::DEFAULT_COPY_MAX_BYTES >> 20
}

/// A `SnapRevert` from a front-end that predates `rollback_max_mb`: the default.
fn default_rollback_max_mb() -> u64 {
    rbdx_core::ops::disk::DEFAULT_ROLLBACK_MAX_BYTES >> 20
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
    /// TM restore: image `new` (restored from a backup beside the disk) put in
    /// the disk's place; the old disk moves to `old` and is removed, what
    /// clones outside it read from kept in the trash for reclaim.
    ReplaceDisk {
        /// Ceph access.
        ceph: CephAccess,
        /// The disk (head).
        head: String,
        /// The restored image (same pool).
        new: String,
        /// Where the old disk goes before it is removed (same pool).
        old: String,
        /// Move to the trash with this deferment instead (CEPH_TRASH).
        trash_delay: Option<u64>,
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
        /// Roll back in place when that visits at most this many MiB (0: never).
        #[serde(default = "default_rollback_max_mb")]
        rollback_max_mb: u64,
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
        /// Copy the disk's own data, no snapshot, when it holds at most this
        /// many MiB (see [`rbdx_core::ops::disk::DiskConfig::copy_max_bytes`]).
        #[serde(default = "default_copy_max_mb")]
        copy_max_mb: u64,
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
    /// TM prebackup(_live): the VM's disks written into its backup directory on
    /// the host (see [`crate::jobs::backup`]).
    Backup {
        /// The backup directory (emptied first).
        dir: BackupDir,
        /// `vm.xml`: the VM document, base64, as the stock driver writes it.
        vm_xml: String,
        /// The disks.
        disks: Vec<BackupDisk>,
        /// A running VM: snapshot it rather than read the head.
        live: bool,
        /// Quiesce the guest around the snapshots.
        freeze: Option<Freeze>,
    },
    /// TM postbackup(_live): the backup directory removed and each disk's
    /// backup snapshots but the next increment's base.
    BackupCleanup {
        /// The backup directory.
        dir: BackupDir,
        /// The disks.
        disks: Vec<BackupDisk>,
        /// Whether the backup reached the datastore.
        success: bool,
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
    /// Stream an image (at a snapshot) to stdout: its size as 8 bytes
    /// little-endian, then its bytes (the sending half of an `rbd://` import).
    SendImage {
        /// Ceph access (this host's paths).
        ceph: CephAccess,
        /// `pool[/namespace]/image[@snap]`.
        image: String,
        /// Send the size only.
        size_only: bool,
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
    Import(ImportJob),
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
    /// `rbdx one detach`: the pool's images that depend on another disk's
    /// snapshot, listed, or flattened with `flatten`.
    Detach {
        /// Ceph access.
        ceph: CephAccess,
        /// The pool.
        pool: String,
        /// Flatten them (else only list them).
        flatten: bool,
    },
    /// `rbdx one ping`: connect to Ceph and open the pool, nothing else (the
    /// floor every action pays).
    Ping {
        /// Ceph access.
        ceph: CephAccess,
        /// The pool.
        pool: String,
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

pub use crate::outcome::Outcome;

pub use crate::naming::BASE_SNAP;

impl Job {
    /// Runs the job here; the outcome carries the log, the output and any
    /// error. Jobs that stream (`SendDir`, `ReceiveDir`, `PutFile`, and
    /// `Import` from stdin) run through [`crate::exec::serve`]; here an import
    /// has no data but its URL's.
    pub fn run(&self) -> Outcome {
        if let Self::Import(job) = self {
            return Self::import_outcome(jobs::import::run(
                job,
                crate::exec::Input::Stream(Box::new(std::io::empty())),
                &mut |_, _| {},
            ));
        }
        let mut log = Vec::new();
        match jobs::dispatch(self, &mut log) {
            Ok(done) => {
                Outcome { log, output: done.output, vm_disks: done.vm_disks, error: None, trace: Vec::new() }
            }
            Err(e) => Outcome { log, error: Some(e.to_string()), ..Outcome::default() },
        }
    }

    /// Runs an `Import` job, reading the data (when no URL) from `input`, and
    /// reporting progress.
    pub fn import(
        &self,
        input: crate::exec::Input,
        progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> Outcome {
        match self {
            Self::Import(job) => Self::import_outcome(jobs::import::run(job, input, progress)),
            _ => Outcome { error: Some("not an import job".into()), ..Outcome::default() },
        }
    }

    fn import_outcome(r: Result<String, crate::Error>) -> Outcome {
        match r {
            Ok(msg) => Outcome { log: vec![msg], ..Outcome::default() },
            Err(e) => Outcome { error: Some(e.to_string()), ..Outcome::default() },
        }
    }
}
