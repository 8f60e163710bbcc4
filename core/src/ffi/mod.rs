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

    use super::rados::{rados_completion_t, rados_ioctx_t, rados_t};

    #[link(name = "rados")]
    unsafe extern "C" {
        /// The cluster's minimum client release and `require_min_compat_client`
        /// (`ceph_release_t` numbers), from the OSD map the client holds.
        pub fn rados_get_min_compatible_client(
            cluster: rados_t,
            min_compat_client: *mut i8,
            require_min_compat_client: *mut i8,
        ) -> c_int;
        /// `rados_notify2` without waiting: the completion fires once every
        /// watcher answered or `timeout_ms` passed (at the OSD), the reply
        /// (freed with `rados_buffer_free`) written before.
        pub fn rados_aio_notify(
            io: rados_ioctx_t,
            o: *const libc::c_char,
            completion: rados_completion_t,
            buf: *const libc::c_char,
            buf_len: c_int,
            timeout_ms: u64,
            reply_buffer: *mut *mut libc::c_char,
            reply_buffer_len: *mut libc::size_t,
        ) -> c_int;
    }
}
