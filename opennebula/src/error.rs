//! What can go wrong in an OpenNebula action, by kind, with the core or import
//! error it came from and what was being done. Rendered as one line only at the
//! edge: the action's last line for oned (`log::fail`), a remote job's outcome.

use std::io;

/// An action's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Ceph call failed.
    #[error(transparent)]
    Ceph(rbdx_core::Error),
    /// A Ceph call failed while doing `context`.
    #[error("{context}: {source}")]
    CephIn {
        /// What was being done.
        context: String,
        /// The core error.
        #[source]
        source: rbdx_core::Error,
    },
    /// Importing an image failed.
    #[error(transparent)]
    Import(#[from] rbdx_import::Error),
    /// Input refused before anything was changed: argv, a template attribute,
    /// a setting, a name or path outside what rbdx accepts.
    #[error("{0}")]
    Invalid(String),
    /// oned could not be reached, refused the call, or answered something
    /// unreadable.
    #[error("{0}")]
    Oned(String),
    /// Reading or writing a local file, directory or stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A job (run on a host, or here in its place) failed, with the one-line
    /// message its outcome carries; or the host could not be reached.
    #[error("{0}")]
    Host(String),
    /// A program the action runs (mkfs, tar, virsh, xorriso…) failed.
    #[error("{0}")]
    Failed(String),
    /// A step did not finish within its limit.
    #[error("{0}")]
    TimedOut(String),
}

/// The result type of the OpenNebula layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// An input refusal.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// The same failure, its message prefixed with `context: ` (its kind kept).
    #[must_use]
    pub fn within(self, context: impl Into<String>) -> Self {
        let c = context.into();
        let p = |m: String| format!("{c}: {m}");
        match self {
            Self::Ceph(source) => Self::CephIn { context: c, source },
            Self::CephIn { context, source } => Self::CephIn { context: p(context), source },
            Self::Import(e) => Self::Import(e.prefixed(&format!("{c}:"))),
            Self::Invalid(m) => Self::Invalid(p(m)),
            Self::Oned(m) => Self::Oned(p(m)),
            Self::Io { context, source } => Self::Io { context: p(context), source },
            Self::Host(m) => Self::Host(p(m)),
            Self::Failed(m) => Self::Failed(p(m)),
            Self::TimedOut(m) => Self::TimedOut(p(m)),
        }
    }

    /// The Ceph error inside, if this is (or wraps) one.
    pub fn ceph(&self) -> Option<&rbdx_core::Error> {
        match self {
            Self::Ceph(e) | Self::CephIn { source: e, .. } => Some(e),
            Self::Import(i) => i.ceph(),
            _ => None,
        }
    }

    /// True if a Ceph call found nothing.
    pub fn is_not_found(&self) -> bool {
        self.ceph().is_some_and(rbdx_core::Error::is_not_found)
    }
}

/// Core's refusals of a name or setting (before any Ceph call) are refused
/// input here too; every other core error is a Ceph failure.
impl From<rbdx_core::Error> for Error {
    fn from(e: rbdx_core::Error) -> Self {
        match e {
            rbdx_core::Error::Invalid(m) | rbdx_core::Error::Config(m) => Self::Invalid(m),
            e => Self::Ceph(e),
        }
    }
}

/// A malformed document (oned's, or the driver message) is refused input.
impl From<crate::xml::XmlError> for Error {
    fn from(e: crate::xml::XmlError) -> Self {
        Self::Invalid(e.0)
    }
}

/// Adds what was being done to a core error.
pub trait Context<T> {
    /// `context: <the error>`.
    ///
    /// # Errors
    /// The error, with its context.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for rbdx_core::Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::from(e).within(context))
    }
}

impl<T> Context<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.within(context))
    }
}

impl<T> Context<T> for rbdx_import::Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Import(e).within(context))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(Error::io(context))
    }
}
