//! The import engine's errors: what kind of failure, with the core error (or
//! I/O error) it came from and what was being done. Rendered as one line only
//! at the edge (the action's answer to oned, the CLI's stderr).

use std::io;

/// An import failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Ceph call failed.
    #[error(transparent)]
    Ceph(#[from] rbdx_core::Error),
    /// A Ceph call failed while doing `context`.
    #[error("{context}: {source}")]
    CephIn {
        /// What was being done.
        context: String,
        /// The core error.
        #[source]
        source: rbdx_core::Error,
    },
    /// The content or a request about it is refused: an image file that names
    /// other files, a bad backup, a checksum mismatch, a size above the cap.
    #[error("{0}")]
    Refused(String),
    /// Reading or writing a local file or stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A download failed: unreachable, an HTTP error, no data for too long.
    #[error("{0}")]
    Download(String),
    /// A program rbdx runs (qemu-img, tar, prlimit…) failed.
    #[error("{0}")]
    Tool(String),
    /// A program rbdx runs did not finish in time and was stopped.
    #[error("{0}")]
    TimedOut(String),
    /// The staging file system has no room left above its reserve.
    #[error("{0}")]
    NoSpace(String),
}

/// The import engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// The same failure, its message prefixed with `prefix` (and a space), e.g.
    /// the program that failed.
    #[must_use]
    pub fn prefixed(self, prefix: &str) -> Self {
        let p = |m: String| format!("{prefix} {m}");
        match self {
            Self::Ceph(source) => Self::CephIn { context: prefix.to_string(), source },
            Self::CephIn { context, source } => Self::CephIn { context: p(context), source },
            Self::Io { context, source } => Self::Io { context: p(context), source },
            Self::Refused(m) => Self::Refused(p(m)),
            Self::Download(m) => Self::Download(p(m)),
            Self::Tool(m) => Self::Tool(p(m)),
            Self::TimedOut(m) => Self::TimedOut(p(m)),
            Self::NoSpace(m) => Self::NoSpace(p(m)),
        }
    }

    /// The core error inside, if this is a Ceph failure.
    pub fn ceph(&self) -> Option<&rbdx_core::Error> {
        match self {
            Self::Ceph(e) | Self::CephIn { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// Adds what was being done to a core error.
pub trait Context<T> {
    /// `context: <the core error>`.
    ///
    /// # Errors
    /// The error, with its context.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for rbdx_core::Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::CephIn { context: context.into(), source })
    }
}
