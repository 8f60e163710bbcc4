//! The C interfaces rbdx calls, and nothing else.
//!
//! - [`rados`]: librados, as declared by the `ceph` crate (3.2.5, `ceph::rados`).
//!   That crate's own safe `Rados` type cannot set options before connecting, so
//!   rbdx owns the handles itself ([`crate::rados`]) and uses only its declarations.
//! - [`rados_more`]: the librados functions that crate does not declare.
//! - [`rbd`]: librbd, declared here by hand; no usable crate exists.

pub mod rbd;

pub use ceph::rados;

/// librados functions the `ceph` crate does not declare (from `librados.h`,
/// present since Mimic).
pub mod rados_more {
    use libc::c_int;

    use super::rados::rados_t;

    #[link(name = "rados")]
    unsafe extern "C" {
        /// The cluster's minimum client release and `require_min_compat_client`
        /// (`ceph_release_t` numbers), from the OSD map the client holds.
        pub fn rados_get_min_compatible_client(
            cluster: rados_t,
            min_compat_client: *mut i8,
            require_min_compat_client: *mut i8,
        ) -> c_int;
    }
}
