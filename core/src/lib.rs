//! rbdx-core: everything rbdx knows about Ceph, and nothing about OpenNebula or
//! Proxmox.
//!
//! - [`rados`]: the cluster connection ([`Cluster`]), pool I/O contexts
//!   ([`IoCtx`]), mon commands. Timeouts are set before connecting.
//! - [`rbd`]: librbd's safe API ([`Image`], [`ImageOptions`], pool-level calls),
//!   free of policy.
//! - [`lock`]: rbdx's locks: read-write opens and removals that take an image's
//!   lock ([`lock::LockedImage`]), and a disk operation's [`lock::Guard`].
//! - [`ops`]: the RBD domain operations the drivers are built from (create with a
//!   data pool, clone with the right format, safe copy, safe removal, trash, usage,
//!   pool capacity).
//! - [`spare`]: a connection made ahead of time (by the warm agent's next run),
//!   taken by the first connect with the same settings while the files it read
//!   are unchanged.
//! - [`trace`]: where an action's time goes (named spans, off unless enabled).
//! - [`error`]: [`CephError`] keeps the errno, the C call and the object;
//!   [`Error`] adds what the domain operations refuse.
//!
//! `unsafe` code lives only in `ffi`, [`rados`], [`rbd`], [`lock`] (cls_lock calls)
//! and [`krbd`] (the kernel keyring); each block states the invariant it relies on.

#![deny(missing_docs)]

pub mod crash;
pub mod doctor;
pub mod error;
mod ffi;
pub mod krbd;
pub mod lock;
pub mod ops;
pub mod rados;
pub mod rbd;
pub mod spare;
pub mod trace;

pub use error::{CephError, Error, ErrorKind, Result};

/// The instant `limit` from now; a limit too large to represent (a hostile or
/// mistaken timeout of centuries) is as good as no limit, never a panic.
pub fn deadline(limit: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(limit).unwrap_or_else(|| now + std::time::Duration::from_secs(1 << 32))
}
pub use rados::{Cluster, ConnectConfig, IoCtx, Timeouts};
pub use rbd::{Image, ImageOptions};
