//! [`ImageOptions`]: an owned `rbd_image_options_t` for create, clone and copy.

use std::ptr;

use crate::error::{Result, check};
use crate::ffi::rbd as sys;
use crate::rados::cstring;

/// RBD feature bits (`include/rbd/features.h`).
pub mod features {
    /// Copy-on-write cloning.
    pub const LAYERING: u64 = 1 << 0;
    /// Striping other than one object after the other ("fancy" striping).
    pub const STRIPINGV2: u64 = 1 << 1;
    /// Exclusive lock.
    pub const EXCLUSIVE_LOCK: u64 = 1 << 2;
    /// Object map (needs exclusive-lock).
    pub const OBJECT_MAP: u64 = 1 << 3;
    /// Fast diff (needs object-map).
    pub const FAST_DIFF: u64 = 1 << 4;
    /// Deep flatten.
    pub const DEEP_FLATTEN: u64 = 1 << 5;
    /// Journaling.
    pub const JOURNALING: u64 = 1 << 6;
    /// Set by librbd when the image has a separate data pool.
    pub const DATA_POOL: u64 = 1 << 7;
    /// What rbdx creates by default: the Ceph defaults (layering, exclusive-lock,
    /// object-map, fast-diff, deep-flatten). Object map keeps rollback and usage
    /// fast.
    pub const DEFAULT: u64 = LAYERING | EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF | DEEP_FLATTEN;

    /// Names of the bits set in `f`, as the `rbd` CLI prints them.
    pub fn names(f: u64) -> Vec<&'static str> {
        [
            (LAYERING, "layering"),
            (EXCLUSIVE_LOCK, "exclusive-lock"),
            (OBJECT_MAP, "object-map"),
            (FAST_DIFF, "fast-diff"),
            (DEEP_FLATTEN, "deep-flatten"),
            (JOURNALING, "journaling"),
            (DATA_POOL, "data-pool"),
        ]
        .into_iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| n)
        .collect()
    }
}

/// Options for creating an image (`rbd_create4`, `rbd_clone3`, copies).
/// Destroyed on drop.
#[derive(Debug)]
pub struct ImageOptions {
    raw: sys::rbd_image_options_t,
}

impl ImageOptions {
    /// Empty options: librbd uses the cluster's defaults for anything not set.
    pub fn new() -> Self {
        let mut raw: sys::rbd_image_options_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; librbd always allocates.
        unsafe { sys::rbd_image_options_create(&mut raw) };
        Self { raw }
    }

    fn set_u64(&mut self, opt: libc::c_int, name: &'static str, value: u64) -> Result<()> {
        // SAFETY: `self.raw` came from `rbd_image_options_create` and is destroyed
        // only in `Drop`.
        let r = unsafe { sys::rbd_image_options_set_uint64(self.raw, opt, value) };
        check(r.into(), "rbd_image_options_set_uint64", || name.to_string())?;
        Ok(())
    }

    /// Image format (always 2 for rbdx).
    ///
    /// # Errors
    /// `InvalidArgument` if librbd rejects the value.
    pub fn format(mut self, format: u64) -> Result<Self> {
        self.set_u64(sys::RBD_IMAGE_OPTION_FORMAT, "format", format)?;
        Ok(self)
    }

    /// The exact feature set (see [`features`]).
    ///
    /// # Errors
    /// `InvalidArgument` if librbd rejects the value.
    pub fn features(mut self, features: u64) -> Result<Self> {
        self.set_u64(sys::RBD_IMAGE_OPTION_FEATURES, "features", features)?;
        Ok(self)
    }

    /// Object size as a power of two (22 = 4 MiB).
    ///
    /// # Errors
    /// `InvalidArgument` if librbd rejects the value.
    pub fn order(mut self, order: u64) -> Result<Self> {
        self.set_u64(sys::RBD_IMAGE_OPTION_ORDER, "order", order)?;
        Ok(self)
    }

    /// Clone format: 1 (the parent snapshot must be protected) or 2.
    ///
    /// # Errors
    /// `InvalidArgument` if librbd rejects the value.
    pub fn clone_format(mut self, format: u64) -> Result<Self> {
        self.set_u64(sys::RBD_IMAGE_OPTION_CLONE_FORMAT, "clone_format", format)?;
        Ok(self)
    }

    /// For deep copies: produce an image without a parent.
    ///
    /// # Errors
    /// `InvalidArgument` if librbd rejects the value.
    pub fn flatten(mut self, flatten: bool) -> Result<Self> {
        self.set_u64(sys::RBD_IMAGE_OPTION_FLATTEN, "flatten", u64::from(flatten))?;
        Ok(self)
    }

    /// The pool that holds the image's data objects (an EC pool, typically).
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] for a NUL byte; `InvalidArgument` from librbd.
    pub fn data_pool(self, pool: &str) -> Result<Self> {
        let v = cstring("data pool", pool)?;
        // SAFETY: `self.raw` is live (see `set_u64`); `v` outlives the call and
        // librbd copies the string.
        let r = unsafe {
            sys::rbd_image_options_set_string(self.raw, sys::RBD_IMAGE_OPTION_DATA_POOL, v.as_ptr())
        };
        check(r.into(), "rbd_image_options_set_string", || "data_pool".to_string())?;
        Ok(self)
    }

    /// Sets the data pool when there is one.
    ///
    /// # Errors
    /// As [`ImageOptions::data_pool`].
    pub fn maybe_data_pool(self, pool: Option<&str>) -> Result<Self> {
        match pool {
            Some(p) => self.data_pool(p),
            None => Ok(self),
        }
    }

    pub(crate) fn raw(&self) -> sys::rbd_image_options_t {
        self.raw
    }
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ImageOptions {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from `rbd_image_options_create`; destroyed only here.
        unsafe { sys::rbd_image_options_destroy(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn options_accept_typed_values() {
        let o = ImageOptions::new()
            .format(2)
            .and_then(|o| o.features(features::DEFAULT))
            .and_then(|o| o.order(22))
            .and_then(|o| o.data_pool("ec"))
            .and_then(|o| o.clone_format(2));
        assert!(o.is_ok());
    }

    #[test]
    fn data_pool_with_nul_is_refused_before_librbd() {
        let e = ImageOptions::new().data_pool("ec\0pool").unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
    }

    #[test]
    fn feature_names_follow_the_bits() {
        assert_eq!(features::names(features::LAYERING | features::DATA_POOL), ["layering", "data-pool"]);
        assert!(features::names(0).is_empty());
    }

    #[test]
    fn librbd_enforces_option_types_and_the_error_keeps_its_errno() {
        // DATA_POOL is a string option: librbd answers -EINVAL to a number.
        let mut o = ImageOptions::new();
        let e = o.set_u64(sys::RBD_IMAGE_OPTION_DATA_POOL, "data_pool", 1).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::InvalidArgument), "{e}");
        assert_eq!(e.to_string(), "rbd_image_options_set_uint64 data_pool: invalid argument");
    }
}
