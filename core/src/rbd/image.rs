//! [`Image`]: an open RBD image (`rbd_image_t`), closed on drop, and the owned
//! types its calls return.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use crate::error::{CephError, Error, Result, check};
use crate::ffi::rbd as sys;
use crate::rados::{IoCtx, cstring};

use super::list::{CList, grow_list};
use super::options::ImageOptions;

/// Size, layout and identity of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Virtual size in bytes (at the open snapshot, if any).
    pub size: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// log2 of the object size.
    pub order: u32,
    /// Feature bits (see [`super::features`]).
    pub features: u64,
    /// Flags (`RBD_FLAG_OBJECT_MAP_INVALID` = 1, `RBD_FLAG_FAST_DIFF_INVALID` = 2).
    pub flags: u64,
    /// Id of the pool holding data objects (the image's own pool without a data pool).
    pub data_pool_id: i64,
    /// The image id (stable across renames).
    pub id: String,
}

impl ImageInfo {
    /// Whether fast-diff is on and its object maps are valid: the diff and the
    /// usage then come from the object maps without reading data.
    pub fn fast_diff_valid(&self) -> bool {
        const INVALID_MAPS: u64 = 1 | 2; // RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID
        self.features & super::features::FAST_DIFF != 0 && self.flags & INVALID_MAPS == 0
    }
}

/// An image in a pool listing or a parent/child link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedImage {
    /// Pool name.
    pub pool: String,
    /// Rados namespace (`""` for the default).
    pub namespace: String,
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
    /// True if the image is in the trash.
    pub trash: bool,
}

impl LinkedImage {
    /// `pool/image` or `pool/namespace/image`.
    pub fn spec(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.pool, self.name)
        } else {
            format!("{}/{}/{}", self.pool, self.namespace, self.name)
        }
    }
}

/// Which snapshot namespace a snapshot lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapNamespace {
    /// Made by a user (`rbd snap create`, rbdx).
    User,
    /// Part of a group snapshot.
    Group,
    /// Removed while clone-v2 children still use it; freed with its last child.
    Trash,
    /// Made by rbd-mirror.
    Mirror,
    /// A namespace this librbd does not know.
    Other(i32),
}

impl SnapNamespace {
    pub(super) fn from_raw(t: libc::c_int) -> Self {
        match t {
            sys::RBD_SNAP_NAMESPACE_TYPE_USER => Self::User,
            sys::RBD_SNAP_NAMESPACE_TYPE_GROUP => Self::Group,
            sys::RBD_SNAP_NAMESPACE_TYPE_TRASH => Self::Trash,
            sys::RBD_SNAP_NAMESPACE_TYPE_MIRROR => Self::Mirror,
            other => Self::Other(other),
        }
    }
}

/// The parent of a CoW clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The parent image.
    pub image: LinkedImage,
    /// The parent snapshot's id.
    pub snap_id: u64,
    /// The parent snapshot's name (empty in the trash namespace on old releases).
    pub snap_name: String,
    /// The parent snapshot's namespace.
    pub snap_namespace: SnapNamespace,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Snapshot id.
    pub id: u64,
    /// Snapshot name.
    pub name: String,
    /// Image size at the snapshot.
    pub size: u64,
}

/// A client that has the image open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// `ip:port/nonce`.
    pub addr: String,
    /// The client's global id (`client.<id>`).
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

/// librbd calls progress callbacks without checking for NULL: pass this one
/// instead of none.
unsafe extern "C" fn no_progress(_offset: u64, _total: u64, _arg: *mut libc::c_void) -> libc::c_int {
    0
}

pub(crate) fn owned(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librbd hands out NUL-terminated strings that stay valid until the
    // matching cleanup call, which the callers make only after this copy.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub(crate) fn linked(s: &sys::rbd_linked_image_spec_t) -> LinkedImage {
    LinkedImage {
        pool: owned(s.pool_name),
        namespace: owned(s.pool_namespace),
        name: owned(s.image_name),
        id: owned(s.image_id),
        trash: s.trash,
    }
}

/// Metadata keys librbd reads as settings of the image (`conf_rbd_cache_policy`):
/// written through librbd, which tells the image's clients to re-read them.
const LIBRBD_CONF_PREFIX: &str = "conf_";

/// An open image. Closed on drop.
#[derive(Debug)]
pub struct Image<'io> {
    raw: sys::rbd_image_t,
    io: &'io IoCtx<'io>,
    name: String,
    snap: Option<String>,
    /// Opened read-only (or at a snapshot): metadata writes are refused.
    read_only: bool,
}

// SAFETY: librbd image handles may be used from any thread; rbdx never calls one
// from two threads at once because every call takes `&self` on a type that is not
// `Sync`.
unsafe impl Send for Image<'_> {}

/// A `pool/image@snap` string for errors.
pub(crate) fn spec(io: &IoCtx<'_>, name: &str, snap: Option<&str>) -> String {
    match snap {
        Some(s) => format!("{}/{name}@{s}", io.spec()),
        None => format!("{}/{name}", io.spec()),
    }
}

impl<'io> Image<'io> {
    pub(crate) fn open(
        io: &'io IoCtx<'io>,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
        by_id: bool,
    ) -> Result<Self> {
        let _span = crate::trace::span(if read_only { "open read-only" } else { "open" });
        let n = cstring("image name", name)?;
        let s = snap.map(|s| cstring("snapshot name", s)).transpose()?;
        let sp = s.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let mut raw: sys::rbd_image_t = ptr::null_mut();
        let (op, r) = if by_id {
            // SAFETY: as below; `name` is an image id here.
            ("rbd_open_by_id_read_only", unsafe {
                sys::rbd_open_by_id_read_only(io.raw(), n.as_ptr(), &mut raw, sp)
            })
        } else if read_only {
            // SAFETY: `io.raw()` is a live I/O context borrowed for `'io`; the
            // strings outlive the call; `raw` is a valid out-pointer.
            ("rbd_open_read_only", unsafe { sys::rbd_open_read_only(io.raw(), n.as_ptr(), &mut raw, sp) })
        } else {
            // SAFETY: as above.
            ("rbd_open", unsafe { sys::rbd_open(io.raw(), n.as_ptr(), &mut raw, sp) })
        };
        check(r.into(), op, || spec(io, name, snap))?;
        let read_only = read_only || by_id || snap.is_some();
        Ok(Self { raw, io, name: name.to_string(), snap: snap.map(str::to_string), read_only })
    }

    /// The librbd handle, for the other safe wrappers of this module.
    pub(super) fn raw(&self) -> sys::rbd_image_t {
        self.raw
    }

    /// The image name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The I/O context the image was opened in.
    pub fn ioctx(&self) -> &'io IoCtx<'io> {
        self.io
    }

    /// `pool/image` or `pool/image@snap` as opened.
    pub fn spec(&self) -> String {
        spec(self.io, &self.name, self.snap.as_deref())
    }

    fn snap_spec(&self, snap: &str) -> String {
        spec(self.io, &self.name, Some(snap))
    }

    /// Size, layout, features and ids.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_stat`, `rbd_get_features`, `rbd_get_flags` or
    /// `rbd_get_id`.
    pub fn info(&self) -> Result<ImageInfo> {
        let mut st = sys::rbd_image_info_t {
            size: 0,
            obj_size: 0,
            num_objs: 0,
            order: 0,
            block_name_prefix: [0; sys::RBD_MAX_BLOCK_NAME_SIZE],
            parent_pool: 0,
            parent_name: [0; sys::RBD_MAX_IMAGE_NAME_SIZE],
        };
        // SAFETY: `self.raw` came from `rbd_open*` and is closed only in `Drop`; `st`
        // is a valid out-pointer whose size we pass.
        let r = unsafe { sys::rbd_stat(self.raw, &mut st, size_of::<sys::rbd_image_info_t>()) };
        check(r.into(), "rbd_stat", || self.spec())?;
        let mut features = 0u64;
        // SAFETY: `self.raw` is open; `features` is a valid out-pointer.
        let r = unsafe { sys::rbd_get_features(self.raw, &mut features) };
        check(r.into(), "rbd_get_features", || self.spec())?;
        let mut flags = 0u64;
        // SAFETY: `self.raw` is open; `flags` is a valid out-pointer.
        let r = unsafe { sys::rbd_get_flags(self.raw, &mut flags) };
        check(r.into(), "rbd_get_flags", || self.spec())?;
        // SAFETY: `self.raw` is open.
        let data_pool_id = unsafe { sys::rbd_get_data_pool_id(self.raw) };
        check(data_pool_id, "rbd_get_data_pool_id", || self.spec())?;
        let id = self.id()?;
        Ok(ImageInfo {
            size: st.size,
            object_size: st.obj_size,
            order: u32::try_from(st.order).unwrap_or(0),
            features,
            flags,
            data_pool_id,
            id,
        })
    }

    /// The parent of this clone, or `None` for an image without one (or flattened).
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_get_parent` other than `ENOENT`.
    pub fn parent(&self) -> Result<Option<Parent>> {
        // SAFETY: all-zero is a valid value for these plain C structs (null
        // pointers, zero ids).
        let mut img: sys::rbd_linked_image_spec_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut snap: sys::rbd_snap_spec_t = unsafe { std::mem::zeroed() };
        // SAFETY: `self.raw` is open; both out-pointers are valid.
        let r = unsafe { sys::rbd_get_parent(self.raw, &mut img, &mut snap) };
        if r == -libc::ENOENT {
            return Ok(None);
        }
        check(r.into(), "rbd_get_parent", || self.spec())?;
        let parent = Parent {
            image: linked(&img),
            snap_id: snap.id,
            snap_name: owned(snap.name),
            snap_namespace: SnapNamespace::from_raw(snap.namespace_type),
        };
        // SAFETY: both specs were filled by the successful `rbd_get_parent` above
        // and are freed exactly once, after their strings were copied.
        unsafe {
            sys::rbd_linked_image_spec_cleanup(&mut img);
            sys::rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(parent))
    }

    /// How many bytes of the parent this clone still reads through.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_get_overlap`.
    pub fn overlap(&self) -> Result<u64> {
        let mut o = 0u64;
        // SAFETY: `self.raw` is open; `o` is a valid out-pointer.
        let r = unsafe { sys::rbd_get_overlap(self.raw, &mut o) };
        check(r.into(), "rbd_get_overlap", || self.spec())?;
        Ok(o)
    }

    /// The CoW children of the snapshot this image is open at (every snapshot's
    /// children when open at the head).
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_list_children3`.
    pub fn children(&self) -> Result<Vec<LinkedImage>> {
        let _span = crate::trace::span("children");
        // SAFETY: `rbd_list_children3` fills at most `*n` entries and on success
        // sets `*n` to the number filled.
        let raw = unsafe {
            grow_list("rbd_list_children3", &|| self.spec(), |buf, n| {
                // SAFETY: `self.raw` is open; `buf` has room for `*n` entries.
                i64::from(sys::rbd_list_children3(self.raw, buf, n))
            })
        }?;
        // SAFETY: the entries were filled by `rbd_list_children3`.
        let list = unsafe { CList::new(raw, sys::rbd_linked_image_spec_list_cleanup) };
        Ok(list.iter().map(linked).collect())
    }

    /// Every snapshot, in id order, of every namespace.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_snap_list`.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        // SAFETY: `rbd_snap_list` writes at most `*max` entries (the last a
        // terminator) and returns the number of snapshots, which we store in `*n`.
        let mut raw = unsafe {
            grow_list("rbd_snap_list", &|| self.spec(), |buf, n| {
                let mut max = libc::c_int::try_from(*n).unwrap_or(libc::c_int::MAX);
                // SAFETY: `self.raw` is open; `buf` has room for `*n` >= `max` entries.
                let r = sys::rbd_snap_list(self.raw, buf, &mut max);
                if r == -libc::ERANGE {
                    *n = usize::try_from(max).unwrap_or(0);
                } else if r >= 0 {
                    // Count the terminator as filled so it is part of the buffer
                    // `rbd_snap_list_end` walks.
                    *n = usize::try_from(r).unwrap_or(0) + 1;
                }
                i64::from(r)
            })
        }?;
        let snaps = raw[..raw.len() - 1]
            .iter()
            .map(|s| Snapshot { id: s.id, name: owned(s.name), size: s.size })
            .collect();
        // SAFETY: the buffer was filled by `rbd_snap_list`, up to and including its
        // terminator; `rbd_snap_list_end` frees the names once.
        unsafe { sys::rbd_snap_list_end(raw.as_mut_ptr()) };
        Ok(snaps)
    }

    /// The namespace of snapshot `id`.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_snap_get_namespace_type`.
    pub fn snap_namespace(&self, id: u64) -> Result<SnapNamespace> {
        let mut t: libc::c_int = 0;
        // SAFETY: `self.raw` is open; `t` is a valid out-pointer.
        let r = unsafe { sys::rbd_snap_get_namespace_type(self.raw, id, &mut t) };
        check(r.into(), "rbd_snap_get_namespace_type", || format!("{} snap id {id}", self.spec()))?;
        Ok(SnapNamespace::from_raw(t))
    }

    /// When snapshot `id` was taken, in seconds since the epoch.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_snap_get_timestamp`.
    pub fn snap_timestamp(&self, id: u64) -> Result<i64> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `self.raw` is open; `ts` is a valid out-pointer.
        let r = unsafe { sys::rbd_snap_get_timestamp(self.raw, id, &mut ts) };
        check(r.into(), "rbd_snap_get_timestamp", || format!("{} snap id {id}", self.spec()))?;
        Ok(ts.tv_sec)
    }

    fn snap_call(
        &self,
        op: &'static str,
        snap: &str,
        f: unsafe extern "C" fn(sys::rbd_image_t, *const libc::c_char) -> libc::c_int,
    ) -> Result<()> {
        let s = cstring("snapshot name", snap)?;
        // SAFETY: `self.raw` is open; `f` is one of librbd's `(image, snap_name)`
        // calls, which only read the string during the call.
        let r = unsafe { f(self.raw, s.as_ptr()) };
        check(r.into(), op, || self.snap_spec(snap))?;
        crate::crash::point(op);
        Ok(())
    }

    /// Takes snapshot `snap` (waits for the OSD map update, ~0.5–1 s).
    ///
    /// # Errors
    /// `Exists` if the name is taken.
    pub fn snap_create(&self, snap: &str) -> Result<()> {
        let _span = crate::trace::span("snapshot create");
        self.snap_call("rbd_snap_create", snap, sys::rbd_snap_create)
    }

    /// Removes snapshot `snap`, unprotecting it first if it is protected. With
    /// clone-v2 children, librbd moves it to the trash namespace instead.
    ///
    /// # Errors
    /// `NotFound`; `Busy` for a protected snapshot with clone-v1 children.
    pub fn snap_remove(&self, snap: &str) -> Result<()> {
        let _span = crate::trace::span("snapshot remove");
        let s = cstring("snapshot name", snap)?;
        // SAFETY: `self.raw` is open; `s` outlives the call; `no_progress` ignores
        // its (null) argument.
        let r = unsafe {
            sys::rbd_snap_remove2(
                self.raw,
                s.as_ptr(),
                sys::RBD_SNAP_REMOVE_UNPROTECT,
                Some(no_progress),
                ptr::null_mut(),
            )
        };
        check(r.into(), "rbd_snap_remove2", || self.snap_spec(snap))?;
        crate::crash::point("rbd_snap_remove2");
        Ok(())
    }

    /// Rolls the head back to snapshot `snap`.
    ///
    /// # Errors
    /// `NotFound`; `Busy`/`ReadOnly` when another client holds the exclusive lock.
    pub fn snap_rollback(&self, snap: &str) -> Result<()> {
        let _span = crate::trace::span("rollback (librbd)");
        self.snap_call("rbd_snap_rollback", snap, sys::rbd_snap_rollback)
    }

    /// Protects `snap` (needed for clone-v1 children).
    ///
    /// # Errors
    /// `Busy` if already protected.
    pub fn snap_protect(&self, snap: &str) -> Result<()> {
        self.snap_call("rbd_snap_protect", snap, sys::rbd_snap_protect)
    }

    /// Unprotects `snap`.
    ///
    /// # Errors
    /// `Busy` while clone-v1 children exist; `InvalidArgument` if not protected.
    pub fn snap_unprotect(&self, snap: &str) -> Result<()> {
        self.snap_call("rbd_snap_unprotect", snap, sys::rbd_snap_unprotect)
    }

    /// Whether `snap` is protected.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn snap_is_protected(&self, snap: &str) -> Result<bool> {
        let s = cstring("snapshot name", snap)?;
        let mut p: libc::c_int = 0;
        // SAFETY: `self.raw` is open; `s` and `p` are valid for the call.
        let r = unsafe { sys::rbd_snap_is_protected(self.raw, s.as_ptr(), &mut p) };
        check(r.into(), "rbd_snap_is_protected", || self.snap_spec(snap))?;
        Ok(p != 0)
    }

    /// Switches reads to snapshot `snap` (`None`: back to the head).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn snap_set(&mut self, snap: Option<&str>) -> Result<()> {
        let s = snap.map(|s| cstring("snapshot name", s)).transpose()?;
        // SAFETY: `self.raw` is open and `&mut self` excludes other calls; the
        // string (or NULL for the head) outlives the call.
        let r = unsafe { sys::rbd_snap_set(self.raw, s.as_ref().map_or(ptr::null(), |s| s.as_ptr())) };
        check(r.into(), "rbd_snap_set", || self.spec())?;
        self.snap = snap.map(str::to_string);
        Ok(())
    }

    /// Resizes to `size` bytes; refuses to shrink unless `allow_shrink`.
    ///
    /// # Errors
    /// `InvalidArgument` for a shrink that was not allowed; [`Error::Invalid`] for
    /// a size past [`super::MAX_IMAGE_SIZE`].
    pub fn resize(&self, size: u64, allow_shrink: bool) -> Result<()> {
        super::check_size(size)?;
        let _span = crate::trace::span("resize");
        // SAFETY: `self.raw` is open; `no_progress` ignores its (null) argument.
        let r = unsafe { sys::rbd_resize2(self.raw, size, allow_shrink, Some(no_progress), ptr::null_mut()) };
        check(r.into(), "rbd_resize2", || self.spec())?;
        crate::crash::point("rbd_resize2");
        Ok(())
    }

    /// Copies every block still read from the parent into this image and drops the
    /// parent link.
    ///
    /// # Errors
    /// `InvalidArgument` when the image has no parent.
    pub fn flatten(&self) -> Result<()> {
        let _span = crate::trace::span("flatten");
        // SAFETY: `self.raw` is open.
        let r = unsafe { sys::rbd_flatten(self.raw) };
        check(r.into(), "rbd_flatten", || self.spec())?;
        crate::crash::point("rbd_flatten");
        Ok(())
    }

    /// The value of metadata `key`, or `None`.
    ///
    /// # Errors
    /// A [`CephError`] other than `ENOENT`.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>, crate::Error> {
        let _span = crate::trace::span("metadata");
        let k = cstring("metadata key", key)?;
        let mut buf = vec![0 as libc::c_char; 256];
        loop {
            let mut len = buf.len();
            // SAFETY: `self.raw` is open; `buf` is writable for `len` bytes.
            let r = unsafe { sys::rbd_metadata_get(self.raw, k.as_ptr(), buf.as_mut_ptr(), &mut len) };
            if r == -libc::ERANGE && len > buf.len() && len <= 1 << 26 {
                buf.resize(len, 0);
                continue;
            }
            if r == -libc::ENOENT {
                return Ok(None);
            }
            check(r.into(), "rbd_metadata_get", || format!("{} key {key}", self.spec()))?;
            return Ok(Some(owned(buf.as_ptr())));
        }
    }

    /// Sets metadata `key` to `value`: [`Image::edit_metadata`].
    ///
    /// # Errors
    /// As [`Image::edit_metadata`].
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        self.edit_metadata(&[], &[(key, value)])
    }

    /// Removes metadata `key`; a missing key is not an error:
    /// [`Image::edit_metadata`].
    ///
    /// # Errors
    /// As [`Image::edit_metadata`].
    pub fn metadata_remove(&self, key: &str) -> Result<()> {
        self.edit_metadata(&[key], &[])
    }

    /// Removes the metadata keys `remove` (missing ones are not an error) and
    /// sets `set`, in one write on the image's header object (cls
    /// `rbd.metadata_remove` for each, then `rbd.metadata_set`: one round
    /// trip, all or nothing; the header must still exist).
    ///
    /// librbd's own `rbd_metadata_set` takes the image's exclusive lock first
    /// (or forwards the call to the client that holds it: a running VM), then
    /// tells every watcher to refresh: three round trips and more, for keys
    /// that only rbdx reads. Keys starting with `conf_` are librbd settings,
    /// which the image's clients must re-read: those go through librbd, one
    /// call each.
    ///
    /// # Errors
    /// A [`CephError`]: `EROFS` for an image opened read-only or at a
    /// snapshot (nothing is written), `NotFound` when the image was removed
    /// meanwhile; [`Error::Invalid`] for a key or value with a NUL (nothing is
    /// written).
    pub fn edit_metadata(&self, remove: &[&str], set: &[(&str, &str)]) -> Result<()> {
        if remove.is_empty() && set.is_empty() {
            return Ok(());
        }
        let _span = crate::trace::span("metadata");
        let what = if set.is_empty() { "rbd_metadata_remove" } else { "rbd_metadata_set" };
        if self.read_only {
            return Err(CephError::new(what, -i64::from(libc::EROFS), self.spec()).into());
        }
        let is_conf = |k: &str| k.starts_with(LIBRBD_CONF_PREFIX);
        if remove.iter().copied().chain(set.iter().map(|(k, _)| *k)).any(is_conf) {
            for k in remove {
                self.librbd_metadata_remove(k)?;
            }
            for (k, v) in set {
                self.librbd_metadata_set(k, v)?;
            }
            return Ok(());
        }
        let id = self.id()?;
        self.io.edit_header_metadata(&id, remove, set)?;
        crate::crash::point(what);
        Ok(())
    }

    /// The image's id (no round trip: librbd read it at the open).
    pub(crate) fn id(&self) -> Result<String> {
        let mut id = [0 as libc::c_char; 64];
        // SAFETY: `self.raw` is open; `id` is writable for its length.
        let r = unsafe { sys::rbd_get_id(self.raw, id.as_mut_ptr(), id.len()) };
        check(r.into(), "rbd_get_id", || self.spec())?;
        Ok(owned(id.as_ptr()))
    }

    fn librbd_metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let k = cstring("metadata key", key)?;
        let v = cstring("metadata value", value)?;
        // SAFETY: `self.raw` is open; both strings outlive the call.
        let r = unsafe { sys::rbd_metadata_set(self.raw, k.as_ptr(), v.as_ptr()) };
        check(r.into(), "rbd_metadata_set", || format!("{} key {key}", self.spec()))?;
        crate::crash::point("rbd_metadata_set");
        Ok(())
    }

    fn librbd_metadata_remove(&self, key: &str) -> Result<()> {
        let k = cstring("metadata key", key)?;
        // SAFETY: `self.raw` is open; `k` outlives the call.
        let r = unsafe { sys::rbd_metadata_remove(self.raw, k.as_ptr()) };
        if r == -libc::ENOENT {
            return Ok(());
        }
        check(r.into(), "rbd_metadata_remove", || format!("{} key {key}", self.spec()))?;
        crate::crash::point("rbd_metadata_remove");
        Ok(())
    }

    /// Every metadata key starting with `prefix`, with its value, sorted by key.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_metadata_list`.
    pub fn metadata_list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let _span = crate::trace::span("metadata");
        keys_prefixed(prefix, |start, max| self.metadata_page(start, max))
    }

    fn metadata_page(&self, start: &str, max: u64) -> Result<Vec<(String, String)>> {
        let s = cstring("metadata key", start)?;
        let (mut keys, mut vals) = (vec![0u8; 4096], vec![0u8; 16384]);
        loop {
            let (mut klen, mut vlen) = (keys.len(), vals.len());
            // SAFETY: `self.raw` is open; both buffers are writable for the lengths
            // passed; librbd sets the lengths to what it wrote, or needs on -ERANGE.
            let r = unsafe {
                sys::rbd_metadata_list(
                    self.raw,
                    s.as_ptr(),
                    max,
                    keys.as_mut_ptr().cast(),
                    &mut klen,
                    vals.as_mut_ptr().cast(),
                    &mut vlen,
                )
            };
            let grows = klen > keys.len() || vlen > vals.len();
            if r == -libc::ERANGE && grows && klen.max(vlen) <= 1 << 28 {
                keys.resize(klen.max(keys.len()), 0);
                vals.resize(vlen.max(vals.len()), 0);
                continue;
            }
            check(r.into(), "rbd_metadata_list", || self.spec())?;
            return Ok(pair_nul_separated(&keys[..klen.min(keys.len())], &vals[..vlen.min(vals.len())]));
        }
    }

    /// The clients that have this image open (a read-write handle of this
    /// client's is listed too).
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_watchers_list`.
    pub fn watchers(&self) -> Result<Vec<Watcher>> {
        // SAFETY: `rbd_watchers_list` fills at most `*n` entries and sets `*n`.
        let raw = unsafe {
            grow_list("rbd_watchers_list", &|| self.spec(), |buf, n| {
                // SAFETY: `self.raw` is open; `buf` has room for `*n` entries.
                i64::from(sys::rbd_watchers_list(self.raw, buf, n))
            })
        }?;
        // SAFETY: the entries were filled by `rbd_watchers_list`.
        let list = unsafe { CList::new(raw, sys::rbd_watchers_list_cleanup) };
        Ok(list.iter().map(|w| Watcher { addr: owned(w.addr), id: w.id, cookie: w.cookie }).collect())
    }

    /// Calls `f(offset, len, exists)` for each extent that changed since `from_snap`
    /// (since creation with `None`), at object granularity when `whole_object`.
    /// With fast-diff this reads the object map, not the data.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_diff_iterate2`, or the first error `f` returns.
    pub fn diff_iterate(
        &self,
        from_snap: Option<&str>,
        include_parent: bool,
        whole_object: bool,
        mut f: impl FnMut(u64, u64, bool) -> Result<()>,
    ) -> Result<()> {
        let _span = crate::trace::span("diff");
        struct State<'a> {
            f: &'a mut dyn FnMut(u64, u64, bool) -> Result<()>,
            failed: Option<Error>,
            panic: Option<Box<dyn std::any::Any + Send>>,
        }
        unsafe extern "C" fn trampoline(
            ofs: u64,
            len: libc::size_t,
            exists: libc::c_int,
            arg: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: `arg` is the `State` passed to `rbd_diff_iterate2` below, which
            // outlives the call and is not touched elsewhere while it runs.
            let st = unsafe { &mut *arg.cast::<State<'_>>() };
            // A panic must not unwind into librbd.
            match catch_unwind(AssertUnwindSafe(|| (st.f)(ofs, len as u64, exists != 0))) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    st.failed = Some(e);
                    -libc::ECANCELED
                }
                Err(p) => {
                    // Resumed once librbd has returned (as git2-rs does).
                    st.panic = Some(p);
                    -libc::ECANCELED
                }
            }
        }
        let size = self.info()?.size;
        let from = from_snap.map(|s| cstring("snapshot name", s)).transpose()?;
        let mut st = State { f: &mut f, failed: None, panic: None };
        // SAFETY: `self.raw` is open; `from` (or NULL) outlives the call; `st` lives
        // across the call and the trampoline is the only user of the pointer.
        let r = unsafe {
            sys::rbd_diff_iterate2(
                self.raw,
                from.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
                0,
                size,
                u8::from(include_parent),
                u8::from(whole_object),
                Some(trampoline),
                (&raw mut st).cast(),
            )
        };
        if let Some(p) = st.panic {
            std::panic::resume_unwind(p);
        }
        if let Some(e) = st.failed {
            return Err(e);
        }
        check(r.into(), "rbd_diff_iterate2", || self.spec())?;
        Ok(())
    }

    /// `rbd_copy3`: a full copy of the open image (or snapshot) into `dest`.
    /// Beware: from a snapshot of a clone with object-map, librbd 16 loses the
    /// parent's data — use [`crate::ops::copy`], which avoids that path.
    ///
    /// # Errors
    /// `Exists` if `dest` exists.
    pub fn copy_to(&self, dest_io: &IoCtx<'_>, dest: &str, opts: &ImageOptions) -> Result<()> {
        let d = cstring("image name", dest)?;
        // SAFETY: `self.raw` is open; `dest_io` is a live I/O context; `d` and `opts`
        // outlive the call.
        let r = unsafe { sys::rbd_copy3(self.raw, dest_io.raw(), d.as_ptr(), opts.raw()) };
        check(r.into(), "rbd_copy3", || format!("{} -> {}", self.spec(), spec(dest_io, dest, None)))?;
        Ok(())
    }

    /// `rbd_deep_copy`: copies the image with its snapshots (and parent link, unless
    /// `opts` says flatten) into `dest`.
    ///
    /// # Errors
    /// `Exists` if `dest` exists.
    pub fn deep_copy_to(&self, dest_io: &IoCtx<'_>, dest: &str, opts: &ImageOptions) -> Result<()> {
        let d = cstring("image name", dest)?;
        // SAFETY: as for `copy_to`.
        let r = unsafe { sys::rbd_deep_copy(self.raw, dest_io.raw(), d.as_ptr(), opts.raw()) };
        check(r.into(), "rbd_deep_copy", || format!("{} -> {}", self.spec(), spec(dest_io, dest, None)))?;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`; returns how many were read.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_read2`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: `self.raw` is open; `buf` is writable for its length.
        let r = unsafe { sys::rbd_read2(self.raw, offset, buf.len(), buf.as_mut_ptr().cast(), 0) };
        Ok(usize::try_from(check(r as i64, "rbd_read2", || self.spec())?).unwrap_or(0))
    }

    /// Writes `data` at `offset`.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_write2`, or a short write.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        // SAFETY: `self.raw` is open; `data` is readable for its length.
        let r = unsafe { sys::rbd_write2(self.raw, offset, data.len(), data.as_ptr().cast(), 0) };
        let n = check(r as i64, "rbd_write2", || self.spec())?;
        if n != data.len() as u64 {
            return Err(CephError::new("rbd_write2", -i64::from(libc::EIO), self.spec()).into());
        }
        Ok(())
    }

    /// Deallocates `len` bytes at `offset` (they read back as zeros).
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_discard`.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // SAFETY: `self.raw` is open.
        let r = unsafe { sys::rbd_discard(self.raw, offset, len) };
        check(r.into(), "rbd_discard", || self.spec())?;
        Ok(())
    }

    /// Waits until every write so far is on the OSDs.
    ///
    /// # Errors
    /// A [`CephError`] from `rbd_flush`.
    pub fn flush(&self) -> Result<()> {
        // SAFETY: `self.raw` is open.
        let r = unsafe { sys::rbd_flush(self.raw) };
        check(r.into(), "rbd_flush", || self.spec())?;
        Ok(())
    }
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _span = crate::trace::span("close");
        // SAFETY: `self.raw` came from `rbd_open*`; closed only here.
        unsafe { sys::rbd_close(self.raw) };
    }
}

/// The keys starting with `prefix`, with their values, sorted by key, read a
/// page at a time by `page(start, max)`: up to `max` keys strictly after
/// `start` in byte order (as `str` compares), as librbd and cls `rbd` list
/// image metadata and the pool directory's names. The prefix itself can be a
/// key: the listing starts from the prefix less its last character and skips
/// what sorts before the prefix.
pub(super) fn keys_prefixed(
    prefix: &str,
    mut page: impl FnMut(&str, u64) -> Result<Vec<(String, String)>>,
) -> Result<Vec<(String, String)>> {
    const PAGE: u64 = 256;
    let mut out = Vec::new();
    let mut start = prefix.char_indices().last().map_or("", |(i, _)| &prefix[..i]).to_string();
    loop {
        let keys = page(&start, PAGE)?;
        let full = keys.len() as u64 == PAGE;
        for (k, v) in keys {
            start.clone_from(&k);
            if k.starts_with(prefix) {
                out.push((k, v));
            } else if k.as_str() > prefix {
                return Ok(out);
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Pairs the NUL-terminated keys and values `rbd_metadata_list` returns; a value
/// may be empty (a lone NUL), a key may not.
fn pair_nul_separated(keys: &[u8], vals: &[u8]) -> Vec<(String, String)> {
    let ks: Vec<&[u8]> = keys.split(|c| *c == 0).collect();
    let vs: Vec<&[u8]> = vals.split(|c| *c == 0).collect();
    ks.iter()
        .zip(vs.iter())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pair_nul_separated;

    #[test]
    fn metadata_pairs_keep_empty_values() {
        let keys = b"a\0b\0c\0";
        let vals = b"1\0\x003\0";
        let p = pair_nul_separated(keys, vals);
        assert_eq!(p, [("a".into(), "1".into()), ("b".into(), String::new()), ("c".into(), "3".into())]);
    }
}
