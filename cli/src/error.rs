//! The `rbdx` command's errors: a Ceph or import failure as core and the import
//! engine report it, or an argument the command refuses. `main` renders them,
//! one line each.

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Ceph call failed.
    #[error(transparent)]
    Ceph(#[from] rbdx_core::Error),
    /// An import failed.
    #[error(transparent)]
    Import(#[from] rbdx_import::Error),
    /// An argument, or a combination of them, the command refuses.
    #[error("{0}")]
    Usage(String),
}

/// The commands' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
