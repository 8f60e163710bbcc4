//! Errors: one type for a failed librados/librbd call ([`CephError`]), one for the
//! core library ([`Error`]) that adds what the domain operations refuse to do.
//!
//! Callers decide on [`ErrorKind`], never on message text.

use std::fmt;

use nix::errno::Errno;

/// What kind of failure a Ceph call reported, for callers to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `ENOENT`: the image, snapshot, pool or key does not exist.
    NotFound,
    /// `EEXIST`: the name is taken.
    Exists,
    /// `EBUSY`: in use (watchers, protected snapshot with children, lock held).
    Busy,
    /// `ENOTEMPTY`: the image still has snapshots or the snapshot has children.
    NotEmpty,
    /// `ETIMEDOUT`: the cluster did not answer within the configured timeout.
    TimedOut,
    /// `EPERM`/`EACCES`: the cephx client's capabilities do not allow it.
    PermissionDenied,
    /// `EINVAL`: the request is malformed for this image or cluster.
    InvalidArgument,
    /// `ENOSPC`/`EDQUOT`: the pool is full or over quota.
    NoSpace,
    /// `ERANGE`: a buffer was too small (handled inside list calls).
    Range,
    /// `ENOTCONN`, `ECONNREFUSED`, `ESHUTDOWN`: no usable connection.
    Unreachable,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Classifies a positive errno value.
    pub fn from_errno(errno: i32) -> Self {
        match Errno::from_raw(errno) {
            Errno::ENOENT => Self::NotFound,
            Errno::EEXIST => Self::Exists,
            Errno::EBUSY => Self::Busy,
            Errno::ENOTEMPTY => Self::NotEmpty,
            Errno::ETIMEDOUT => Self::TimedOut,
            Errno::EPERM | Errno::EACCES => Self::PermissionDenied,
            Errno::EINVAL => Self::InvalidArgument,
            Errno::ENOSPC | Errno::EDQUOT => Self::NoSpace,
            Errno::ERANGE => Self::Range,
            Errno::ENOTCONN | Errno::ECONNREFUSED | Errno::ESHUTDOWN => Self::Unreachable,
            _ => Self::Other,
        }
    }
}

/// A librados or librbd call that returned a negative errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephError {
    /// The C function that failed, e.g. `rbd_clone3`.
    pub op: &'static str,
    /// The positive errno value.
    pub errno: i32,
    /// What it was called on, e.g. `one/one-7@snap`.
    pub object: String,
}

impl CephError {
    /// Builds the error for `op` on `object` from a negative return value.
    pub fn new(op: &'static str, ret: i64, object: impl Into<String>) -> Self {
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX);
        Self { op, errno, object: object.into() }
    }

    /// The kind of failure, for matching.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_errno(self.errno)
    }
}

impl fmt::Display for CephError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind() {
            ErrorKind::TimedOut => "the cluster did not answer in time".to_string(),
            ErrorKind::PermissionDenied => "permission denied (check the cephx client's caps)".to_string(),
            _ => Errno::from_raw(self.errno).desc().to_lowercase(),
        };
        if self.object.is_empty() {
            write!(f, "{}: {what}", self.op)
        } else {
            write!(f, "{} {}: {what}", self.op, self.object)
        }
    }
}

impl std::error::Error for CephError {}

/// Errors of the core library.
#[derive(Debug)]
pub enum Error {
    /// A Ceph call failed.
    Ceph(CephError),
    /// The image is open by other clients; removing or replacing it would pull it
    /// from under them.
    InUse {
        /// `pool/image`.
        image: String,
        /// The watchers' addresses, as librbd reports them (`ip:port/nonce`).
        watchers: Vec<String>,
    },
    /// Another rbdx action kept working on the image for as long as we could wait.
    Busy {
        /// `pool/image`.
        image: String,
        /// Who holds it: pid and host, client and address.
        holder: String,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// Another client took an rbdx lock from us (after fencing this client): what
    /// the operation did after that point may not have happened.
    LockLost {
        /// `pool/object` the lock was on.
        object: String,
    },
    /// The image or snapshot still has CoW children that depend on it.
    HasChildren {
        /// `pool/image` or `pool/image@snap`.
        image: String,
        /// The children, `pool/image` each.
        children: Vec<String>,
    },
    /// What the operation needs does not exist (a snapshot of a disk, a pool).
    NotFound(String),
    /// What the operation would make exists already and is something else.
    Exists(String),
    /// Reading or writing a local file or stream failed.
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Connection settings or arguments that cannot work.
    Config(String),
    /// A request that is well-formed but not valid for this state, e.g. a shrink
    /// that was not asked for.
    Invalid(String),
    /// A mon command answered with something we could not read.
    BadReply {
        /// The command prefix.
        command: String,
        /// What was wrong with the reply.
        detail: String,
    },
}

impl Error {
    /// The Ceph error kind, when this came from a Ceph call.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Ceph(e) => Some(e.kind()),
            Self::InUse { .. } | Self::Busy { .. } => Some(ErrorKind::Busy),
            Self::HasChildren { .. } => Some(ErrorKind::NotEmpty),
            Self::NotFound(_) => Some(ErrorKind::NotFound),
            Self::Exists(_) => Some(ErrorKind::Exists),
            _ => None,
        }
    }

    /// True if this is a Ceph call that found nothing.
    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(ErrorKind::NotFound)
    }

    /// True if this is a Ceph call that found the name taken.
    pub fn is_exists(&self) -> bool {
        self.kind() == Some(ErrorKind::Exists)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ceph(e) => e.fmt(f),
            Self::InUse { image, watchers } => {
                write!(f, "{image} is in use by {} client(s): {}", watchers.len(), watchers.join(", "))
            }
            Self::Busy { image, holder, waited } => write!(
                f,
                "{image} is busy: another rbdx action ({holder}) is still working on it after {} s; try again later",
                waited.as_secs()
            ),
            Self::HasChildren { image, children } => {
                write!(f, "{image} has CoW children: {}", children.join(", "))
            }
            Self::LockLost { object } => write!(
                f,
                "lost the rbdx lock on {object}: another client took it over after this one stopped answering; run the action again"
            ),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Config(m) | Self::Invalid(m) | Self::NotFound(m) | Self::Exists(m) => f.write_str(m),
            Self::BadReply { command, detail } => {
                write!(f, "unexpected reply to '{command}': {detail}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Ceph(e) => Some(e),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<CephError> for Error {
    fn from(e: CephError) -> Self {
        Self::Ceph(e)
    }
}

/// The core library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a C return value into a result: negative is an errno, anything else is
/// passed through.
pub(crate) fn check(ret: i64, op: &'static str, object: impl FnOnce() -> String) -> Result<u64> {
    if ret < 0 { Err(CephError::new(op, ret, object()).into()) } else { Ok(ret.unsigned_abs()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_errno_maps_to_kind_and_keeps_context() {
        let e = CephError::new("rbd_clone3", -17, "one/base@snap -> one/child");
        assert_eq!(e.errno, 17);
        assert_eq!(e.kind(), ErrorKind::Exists);
        assert_eq!(e.to_string(), "rbd_clone3 one/base@snap -> one/child: file exists");
    }

    #[test]
    fn every_kind_has_its_errno() {
        let cases = [
            (libc::ENOENT, ErrorKind::NotFound),
            (libc::EEXIST, ErrorKind::Exists),
            (libc::EBUSY, ErrorKind::Busy),
            (libc::ENOTEMPTY, ErrorKind::NotEmpty),
            (libc::ETIMEDOUT, ErrorKind::TimedOut),
            (libc::EPERM, ErrorKind::PermissionDenied),
            (libc::EACCES, ErrorKind::PermissionDenied),
            (libc::EINVAL, ErrorKind::InvalidArgument),
            (libc::ENOSPC, ErrorKind::NoSpace),
            (libc::EDQUOT, ErrorKind::NoSpace),
            (libc::ERANGE, ErrorKind::Range),
            (libc::ENOTCONN, ErrorKind::Unreachable),
            (libc::EIO, ErrorKind::Other),
        ];
        for (errno, kind) in cases {
            assert_eq!(CephError::new("op", -i64::from(errno), "x").kind(), kind, "errno {errno}");
        }
    }

    #[test]
    fn timeouts_and_permissions_read_as_sentences() {
        let t = CephError::new("rados_connect", -i64::from(libc::ETIMEDOUT), "");
        assert_eq!(t.to_string(), "rados_connect: the cluster did not answer in time");
        let p = CephError::new("rbd_create4", -i64::from(libc::EPERM), "one/x");
        assert!(p.to_string().contains("check the cephx client's caps"), "{p}");
    }

    #[test]
    fn check_passes_non_negative_values_through() {
        assert_eq!(check(0, "op", String::new).unwrap(), 0);
        assert_eq!(check(42, "op", String::new).unwrap(), 42);
        let e = check(-2, "rbd_open", || "one/img".into()).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "rbd_open one/img: no such file or directory");
    }

    #[test]
    fn domain_errors_name_what_blocks_them() {
        let e = Error::InUse { image: "one/one-1".into(), watchers: vec!["127.0.0.1:0/123".into()] };
        assert_eq!(e.to_string(), "one/one-1 is in use by 1 client(s): 127.0.0.1:0/123");
        assert_eq!(e.kind(), Some(ErrorKind::Busy));
    }
}
