//! The contract between the Perl plugin and the Rust helper: one JSON request on
//! stdin (one line; for `volume_import` the raw stream follows it), one JSON
//! answer on stdout (for `volume_export` the stream *is* stdout and errors go to
//! stderr). Versioned; every method tagged. Golden files in `pve-plugin/golden/`
//! are read by both the Rust and the Perl tests: one request and one answer
//! per method (`volume_export` answers with its stream).
//!
//! ```json
//! {"version":1,"storeid":"ec","ceph":{"pool":"rbd","data_pool":"rbd-ec","id":"admin",
//!  "conf":"/etc/pve/ceph.conf","keyring":"/etc/pve/priv/ceph/ec.keyring"},
//!  "method":"alloc_image","params":{"vmid":100,"name":null,"size_kib":4194304}}
//! {"ok":true,"result":"vm-100-disk-0"}
//! {"ok":false,"error":"rbd/vm-100-disk-0 is in use by 1 client(s): 10.0.0.5:0/123","kind":"in_use"}
//! ```
//!
//! A result is the method's own type (`crate::methods`); a failure is one line
//! and its [`Kind`]. The plugin dies with the line; `kind` tells a missing
//! volume from a busy one without reading it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind};

/// The protocol version this helper speaks.
pub const VERSION: u32 = 1;

/// How to reach the storage's pool (built by the plugin from `storage.cfg`; file
/// paths only, never a key). Serialized as the plugin sends it: keys it has no
/// value for are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceph {
    /// `pool` (default `rbd`).
    pub pool: String,
    /// `data-pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_pool: Option<String>,
    /// `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `username` (default `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The ceph.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<String>,
    /// The keyring file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<String>,
    /// `monhost`, for external clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mon_host: Option<String>,
    /// Seconds one Ceph call may take (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds connecting may take (default: `timeout`); `status` asks for a
    /// short one, so that a dead cluster never blocks pvestatd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    /// `rbdx-rollback-max-mb`: a rollback visiting at most this many MiB is done
    /// in place (default 2048; 0: always the clone swap; see
    /// [`rbdx_core::ops::disk::DiskConfig::rollback_max_bytes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_max_mb: Option<u64>,
    /// No keyring: connect without cephx, as the built-in type's
    /// `auth_supported none`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth_none: bool,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Protocol version ([`VERSION`]).
    pub version: u32,
    /// The storage id.
    pub storeid: String,
    /// Where the storage is.
    pub ceph: Ceph,
    /// The method and its parameters.
    #[serde(flatten)]
    pub call: Call,
}

/// A method and its parameters, with PVE's units (KiB for `alloc_image`, bytes for
/// `volume_resize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// `($total, $avail, $used, $active)`.
    Status {},
    /// A new image; `name` undef picks `vm-<vmid>-disk-<n>`. Returns the volname.
    AllocImage {
        /// Owner.
        vmid: u32,
        /// Wanted name.
        #[serde(default)]
        name: Option<String>,
        /// Size in KiB.
        size_kib: u64,
    },
    /// Remove a volume with its snapshots.
    FreeImage {
        /// The volname.
        volname: String,
    },
    /// Every image (optionally of one VM).
    ListImages {
        /// Only this VM's (left out, as the plugin does, for every VM's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vmid: Option<u32>,
    },
    /// Size, usage, parent.
    VolumeSizeInfo {
        /// The volname.
        volname: String,
    },
    /// Grow to `size` bytes.
    VolumeResize {
        /// The volname.
        volname: String,
        /// New size in bytes.
        size: u64,
    },
    /// Take a snapshot.
    VolumeSnapshot {
        /// The volname.
        volname: String,
        /// Snapshot name.
        snap: String,
    },
    /// Roll back (O(1): a clone of the snapshot becomes the volume).
    VolumeSnapshotRollback {
        /// The volname.
        volname: String,
        /// Snapshot name.
        snap: String,
    },
    /// Delete a snapshot, clones or not.
    VolumeSnapshotDelete {
        /// The volname.
        volname: String,
        /// Snapshot name.
        snap: String,
    },
    /// `{ name => {id, timestamp, virtual-size} }`.
    VolumeSnapshotInfo {
        /// The volname.
        volname: String,
    },
    /// Convert to a template image. Returns the new volname.
    CreateBase {
        /// The volname.
        volname: String,
    },
    /// A CoW clone of a template (or of `snap`). Returns the new volname.
    CloneImage {
        /// The volname.
        volname: String,
        /// The new owner.
        vmid: u32,
        /// The snapshot to clone (required unless the volume is a template).
        #[serde(default)]
        snap: Option<String>,
    },
    /// Rename (disk reassign). Returns the new volname.
    RenameVolume {
        /// The volname.
        volname: String,
        /// The new owner.
        target_vmid: u32,
        /// Wanted name.
        #[serde(default)]
        target_volname: Option<String>,
    },
    /// The cluster fsid (krbd device paths).
    Fsid {},
    /// Where the volume's (or snapshot's) kernel device is linked:
    /// `/dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`, with the image that
    /// holds the snapshot.
    DevicePath {
        /// The volname.
        volname: String,
        /// The snapshot.
        #[serde(default)]
        snap: Option<String>,
    },
    /// Map the volume (or its snapshot, read-only) with the kernel rbd driver.
    /// Returns the device path PVE's udev rule makes,
    /// `/dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`. Already mapped: the
    /// same path.
    MapVolume {
        /// The volname.
        volname: String,
        /// Map this snapshot.
        #[serde(default)]
        snap: Option<String>,
        /// Extra kernel map options (`rxbounce` for Windows guests).
        #[serde(default)]
        options: Vec<String>,
        /// An existing mapping without `options` may be unmapped and mapped
        /// again with them (PVE's `plugin-may-deactivate-volume` hint).
        #[serde(default)]
        may_remap: bool,
    },
    /// Unmap the volume's (or snapshot's) kernel device if there is one. Returns
    /// whether one was unmapped.
    UnmapVolume {
        /// The volname.
        volname: String,
        /// The snapshot's device.
        #[serde(default)]
        snap: Option<String>,
    },
    /// The image that holds snapshot `snap` of the volume: its own image, or,
    /// after a rollback, the older image of the disk that kept it.
    SnapshotImage {
        /// The volname.
        volname: String,
        /// The snapshot.
        snap: String,
    },
    /// `qemu` while every snapshot of the volume is on its own image (qemu can
    /// take and delete them there), else `storage`.
    QemuSnapshotMethod {
        /// The volname.
        volname: String,
    },
    /// Sets the image's `rbd_cache_policy` to writeback (an EFI disk's flash
    /// does many read-modify-writes), as `rbd image config set` does.
    CacheWriteback {
        /// The volname.
        volname: String,
    },
    /// `raw+size` to stdout.
    VolumeExport {
        /// The volname.
        volname: String,
        /// Export this snapshot.
        #[serde(default)]
        snap: Option<String>,
    },
    /// `raw+size` from stdin after the request line. Returns the volname.
    VolumeImport {
        /// The volname.
        volname: String,
        /// Pick another name if taken.
        #[serde(default)]
        allow_rename: bool,
    },
}

/// The answer: `result` (a method's result type, `null` for none) when `ok`,
/// else the one-line `error` and its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<T = serde_json::Value> {
    /// Success.
    pub ok: bool,
    /// The result when `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<T>,
    /// One line when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// What kind of failure, when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<Kind>,
}

impl<T> Response<T> {
    /// A success with `result`.
    pub fn success(result: T) -> Self {
        Self { ok: true, result: Some(result), error: None, kind: None }
    }

    /// A failure: its line and kind.
    pub fn failure(e: &Error) -> Self {
        Self { ok: false, result: None, error: Some(e.line()), kind: Some(e.kind()) }
    }
}
