//! The helper's one error type: what Ceph (through rbdx-core) reported, and
//! what the helper itself refuses. Its message is the `error` line of the JSON
//! answer and its [`Kind`] the `kind`, so the plugin and PVE can tell a missing
//! volume from a busy one without reading the message.

use std::fmt;

use rbdx_core::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::protocol::VERSION;

/// The helper's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Ceph or kernel operation of rbdx-core failed.
    #[error(transparent)]
    Ceph(#[from] rbdx_core::Error),
    /// The cluster could not be reached with the storage's settings.
    #[error("cannot connect to Ceph: {0}")]
    Connect(#[source] rbdx_core::Error),
    /// The request line could not be read.
    #[error("reading the request: {0}")]
    ReadRequest(#[source] std::io::Error),
    /// The request line is longer than any request.
    #[error("the request is too large")]
    RequestTooLarge,
    /// The request is not one of the protocol's.
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The plugin speaks another protocol version.
    #[error("request version {0} but this helper speaks {VERSION}: update the plugin and rbdx together")]
    Version(u32),
    /// A volume name outside the grammar ([`crate::volname`]).
    #[error("invalid volume name {0:?}")]
    VolumeName(String),
    /// A new volume's name that is not one of its VM's.
    #[error("illegal name {name:?} - should be 'vm-{vmid}-*'")]
    IllegalName {
        /// The name asked for.
        name: String,
        /// The VM it was asked for.
        vmid: u32,
    },
    /// A volume name that belongs to another VM than the one named.
    #[error("{name} does not belong to VM {vmid}")]
    NotOwner {
        /// The image name.
        name: String,
        /// The VM named.
        vmid: u32,
    },
    /// A size in KiB whose bytes do not fit in 64 bits.
    #[error("size too large")]
    SizeTooLarge,
    /// Every `vm-<vmid>-disk-<n>` name is taken.
    #[error("no free disk name for VM {0}")]
    NoFreeName(u32),
    /// The volume name is taken.
    #[error("volume {0} already exists")]
    VolumeExists(String),
    /// The snapshot of the volume does not exist.
    #[error("snapshot {snap} of {volname} not found")]
    SnapshotNotFound {
        /// The volume name.
        volname: String,
        /// The snapshot.
        snap: String,
    },
    /// A template that linked clones still read from.
    #[error("base volume {name} is still in use by linked clones: {}", clones.join(", "))]
    BaseInUse {
        /// The template's image.
        name: String,
        /// Its clones.
        clones: Vec<String>,
    },
    /// A volume with snapshots cannot become a template.
    #[error("remove the snapshots of {name} ({}) before making it a template", snaps.join(", "))]
    HasSnapshots {
        /// The image.
        name: String,
        /// Its snapshots.
        snaps: Vec<String>,
    },
    /// A volume that cannot be made a template.
    #[error("{0} cannot be a template")]
    NotTemplatable(String),
    /// A clone of a volume that is not a template names no snapshot.
    #[error("{0} is not a template: name the snapshot to clone")]
    NotATemplate(String),
    /// The kernel mapped the image but udev made no link within the timeout.
    #[error(
        "{spec} is mapped, but udev did not create {} (is pve-storage's rbd udev rule installed?)",
        path.display()
    )]
    NoUdevLink {
        /// The mapped image (`pool/[ns/]image[@snap]`).
        spec: String,
        /// The link PVE's udev rule makes.
        path: std::path::PathBuf,
    },
    /// Reading or writing a `raw+size` stream failed.
    #[error("{what}: {source}")]
    Stream {
        /// What was being read or written.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The import stream ended before the size its header gave.
    #[error("the stream ended after {got} of {size} bytes")]
    StreamShort {
        /// Bytes read.
        got: u64,
        /// Bytes the header announced.
        size: u64,
    },
}

/// What kind of failure an answer reports, stable for the plugin to match on:
/// the answer's `kind` (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The volume, snapshot, pool or image does not exist.
    NotFound,
    /// The name is taken.
    Exists,
    /// Another action holds the image; retrying later may succeed.
    Busy,
    /// Clients (VMs, linked clones) use the volume.
    InUse,
    /// The volume still has snapshots, or the snapshot clones.
    NotEmpty,
    /// The request or the storage's settings cannot work.
    Invalid,
    /// The cephx client may not do it.
    PermissionDenied,
    /// The cluster (or the kernel) did not answer in time.
    TimedOut,
    /// No usable connection to the cluster.
    Unreachable,
    /// The pool is full or over quota.
    NoSpace,
    /// Reading or writing a local stream failed.
    Io,
    /// Anything else.
    Other,
}

impl Kind {
    /// The snake_case name, as in the answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Exists => "exists",
            Self::Busy => "busy",
            Self::InUse => "in_use",
            Self::NotEmpty => "not_empty",
            Self::Invalid => "invalid",
            Self::PermissionDenied => "permission_denied",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::NoSpace => "no_space",
            Self::Io => "io",
            Self::Other => "other",
        }
    }

    /// The kind of an rbdx-core error: its Ceph kind, else what the error says
    /// it is.
    pub fn of_core(e: &rbdx_core::Error) -> Self {
        if let rbdx_core::Error::InUse { .. } = e {
            return Self::InUse;
        }
        match e.kind() {
            Some(k) => Self::of_ceph(k),
            None => match e {
                rbdx_core::Error::Invalid(_) | rbdx_core::Error::Config(_) => Self::Invalid,
                rbdx_core::Error::Io { .. } => Self::Io,
                _ => Self::Other,
            },
        }
    }

    /// The kind of a Ceph error kind.
    pub fn of_ceph(k: ErrorKind) -> Self {
        match k {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Exists => Self::Exists,
            ErrorKind::Busy => Self::Busy,
            ErrorKind::NotEmpty => Self::NotEmpty,
            ErrorKind::TimedOut => Self::TimedOut,
            ErrorKind::PermissionDenied => Self::PermissionDenied,
            ErrorKind::InvalidArgument => Self::Invalid,
            ErrorKind::NoSpace => Self::NoSpace,
            ErrorKind::Unreachable => Self::Unreachable,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Ceph(e) | Self::Connect(e) => Kind::of_core(e),
            Self::ReadRequest(_) | Self::Stream { .. } | Self::StreamShort { .. } => Kind::Io,
            Self::RequestTooLarge
            | Self::Malformed(_)
            | Self::Version(_)
            | Self::VolumeName(_)
            | Self::IllegalName { .. }
            | Self::NotOwner { .. }
            | Self::SizeTooLarge
            | Self::NotTemplatable(_)
            | Self::NotATemplate(_) => Kind::Invalid,
            Self::NoFreeName(_) | Self::VolumeExists(_) => Kind::Exists,
            Self::SnapshotNotFound { .. } => Kind::NotFound,
            Self::BaseInUse { .. } => Kind::InUse,
            Self::HasSnapshots { .. } => Kind::NotEmpty,
            Self::NoUdevLink { .. } => Kind::TimedOut,
        }
    }

    /// The error of reading an image through [`rbdx_core::ops::ImageReader`]:
    /// the Ceph error it carries, else the I/O error.
    pub fn reading_image(e: std::io::Error) -> Self {
        const WHAT: &str = "reading the image";
        if !e.get_ref().is_some_and(|inner| inner.is::<rbdx_core::Error>()) {
            return Self::Stream { what: WHAT, source: e };
        }
        let io_kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<rbdx_core::Error>()) {
            Some(Ok(core)) => Self::Ceph(*core),
            // Not reached: the check above saw a core error inside.
            Some(Err(inner)) => Self::Stream { what: WHAT, source: std::io::Error::new(io_kind, inner) },
            None => Self::Stream { what: WHAT, source: io_kind.into() },
        }
    }

    /// The answer's message: one line.
    pub fn line(&self) -> String {
        self.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_core_and_read_as_snake_case() {
        let in_use = Error::Ceph(rbdx_core::Error::InUse { image: "rbd/x".into(), watchers: vec![] });
        assert_eq!(in_use.kind(), Kind::InUse);
        let missing = Error::Ceph(rbdx_core::Error::NotFound("gone".into()));
        assert_eq!(missing.kind(), Kind::NotFound);
        // -110: ETIMEDOUT.
        let conn = Error::Connect(rbdx_core::CephError::new("rados_connect", -110, "").into());
        assert_eq!(conn.kind(), Kind::TimedOut);
        assert!(conn.line().starts_with("cannot connect to Ceph: "), "{}", conn.line());
        assert_eq!(Error::VolumeName("a b".into()).kind().as_str(), "invalid");
        for k in [Kind::NotFound, Kind::PermissionDenied, Kind::TimedOut, Kind::InUse, Kind::NoSpace] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
            assert_eq!(k.to_string(), k.as_str());
        }
    }

    #[test]
    fn an_image_read_error_keeps_its_ceph_kind() {
        let core = rbdx_core::Error::Ceph(rbdx_core::CephError::new("rbd_read2", -2, "rbd/x"));
        let e = Error::reading_image(std::io::Error::other(core));
        assert!(matches!(e, Error::Ceph(_)), "{e:?}");
        assert_eq!(e.kind(), Kind::NotFound);
        let eof = Error::reading_image(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short"));
        assert_eq!((eof.kind(), eof.line()), (Kind::Io, "reading the image: short".to_string()));
    }
}
