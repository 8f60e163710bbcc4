//! The C interfaces rbdx calls, and nothing else.
//!
//! - [`rados`]: librados, as declared by the `ceph` crate (3.2.5, `ceph::rados`).
//!   That crate's own safe `Rados` type cannot set options before connecting, so
//!   rbdx owns the handles itself ([`crate::rados`]) and uses only its declarations.
//! - [`rbd`]: librbd, declared here by hand; no usable crate exists.

pub mod rbd;

pub use ceph::rados;
