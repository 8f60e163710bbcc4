//! librbd's safe API: pool-level calls on an [`IoCtx`] (create, clone, remove,
//! rename, list, trash) and [`Image`] for everything done on an open image.

mod aio;
mod clone;
mod image;
mod list;
mod options;
mod remove;
mod rollback;

pub use aio::{Reads, Writes};
pub use clone::CloneAs;
pub(crate) use clone::CloneSource;
pub use clone::Unfinished;
pub use image::{Image, ImageInfo, LinkedImage, Parent, SnapNamespace, Snapshot, Watcher};
pub use options::{ImageOptions, features};

use std::ffi::CStr;

use crate::error::{Result, check};
use crate::ffi::rbd as sys;
use crate::rados::{ClsRead, IoCtx, cstring};

use image::{owned, spec};
use list::{CList, grow_list};

/// Largest image size accepted (2^63 - 1 bytes). librbd refuses larger sizes
/// except near 2^64, where its arithmetic overflows and it accepts them (an image
/// of 16 EiB); no real image comes close.
pub const MAX_IMAGE_SIZE: u64 = i64::MAX as u64;

/// Refuses sizes past [`MAX_IMAGE_SIZE`] before librbd sees them.
pub(crate) fn check_size(size: u64) -> Result<()> {
    if size > MAX_IMAGE_SIZE {
        return Err(crate::Error::Invalid(format!("invalid size {size} bytes: larger than 2^63-1")));
    }
    Ok(())
}

/// An image as a pool listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: String,
}

/// Why an image is in the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashSource {
    /// Moved there by a user or driver.
    User,
    /// By rbd-mirror.
    Mirroring,
    /// By a live migration.
    Migration,
    /// A removal in progress.
    Removing,
    /// Moved there by librbd because it still had clone-v2 children.
    UserParent,
    /// Unknown to this librbd.
    Other(i32),
}

/// One trash entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Image id (what restore and remove take).
    pub id: String,
    /// The name it had.
    pub name: String,
    /// Why it is there.
    pub source: TrashSource,
    /// When it was moved there (seconds since the epoch).
    pub deletion_time: i64,
    /// Before this time, removal needs `force`.
    pub deferment_end_time: i64,
}

/// The librbd version as (major, minor, extra), e.g. (1, 16, 0) for Pacific.
pub fn version() -> (i32, i32, i32) {
    let (mut a, mut b, mut c) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    unsafe { sys::rbd_version(&mut a, &mut b, &mut c) };
    (a, b, c)
}

impl<'c> IoCtx<'c> {
    /// Opens image `name` at its head, read-write, *without* the `rbdx_action`
    /// lock: as a hypervisor (qemu, the kernel driver) opens a disk. Only for
    /// stand-ins of those; rbdx actions use [`IoCtx::open`] (see [`crate::lock`]).
    ///
    /// # Errors
    /// `NotFound` if there is no such image.
    pub fn open_as_client<'io>(&'io self, name: &str) -> Result<Image<'io>> {
        Image::open(self, name, None, false, false)
    }

    /// Opens image `name` read-only, at snapshot `snap` or the head.
    ///
    /// # Errors
    /// `NotFound` if there is no such image or snapshot.
    pub fn open_read_only<'io>(&'io self, name: &str, snap: Option<&str>) -> Result<Image<'io>> {
        Image::open(self, name, snap, true, false)
    }

    /// Opens the image with id `id` read-only at its head; this works for images
    /// in the trash too.
    ///
    /// # Errors
    /// `NotFound` if there is no such image.
    pub fn open_by_id_read_only<'io>(&'io self, id: &str) -> Result<Image<'io>> {
        Image::open(self, id, None, true, true)
    }

    /// Opens the image with id `id` read-only at snapshot `snap` (images in the
    /// trash too).
    ///
    /// # Errors
    /// `NotFound` if there is no such image or snapshot.
    pub fn open_by_id_read_only_at<'io>(&'io self, id: &str, snap: &str) -> Result<Image<'io>> {
        Image::open(self, id, Some(snap), true, true)
    }

    /// Creates image `name` of `size` bytes.
    ///
    /// # Errors
    /// `Exists` if the name is taken; `NotFound` for a missing data pool;
    /// [`crate::Error::Invalid`] for a size past [`MAX_IMAGE_SIZE`].
    pub fn create_image(&self, name: &str, size: u64, opts: &ImageOptions) -> Result<()> {
        check_size(size)?;
        let _span = crate::trace::span("create");
        let n = cstring("image name", name)?;
        // SAFETY: `self.raw()` is a live I/O context; `n` and `opts` outlive the call.
        let r = unsafe { sys::rbd_create4(self.raw(), n.as_ptr(), size, opts.raw()) };
        check(r.into(), "rbd_create4", || spec(self, name, None))?;
        crate::crash::point("rbd_create4");
        Ok(())
    }

    /// Clones `parent@snap` (in this pool) into `child` in `child_io` through
    /// librbd (traced as `clone (librbd)`; [`IoCtx::clone_directly`] writes a
    /// format-2 clone without it).
    ///
    /// # Errors
    /// `Exists` if `child` exists; `InvalidArgument` for an unprotected snapshot
    /// with clone format 1.
    pub fn clone_image(
        &self,
        parent: &str,
        snap: &str,
        child_io: &IoCtx<'_>,
        child: &str,
        opts: &ImageOptions,
    ) -> Result<()> {
        let _span = crate::trace::span("clone (librbd)");
        let (p, s, c) =
            (cstring("image name", parent)?, cstring("snapshot name", snap)?, cstring("image name", child)?);
        // SAFETY: both I/O contexts are live; every string and `opts` outlive the call.
        let r = unsafe {
            sys::rbd_clone3(self.raw(), p.as_ptr(), s.as_ptr(), child_io.raw(), c.as_ptr(), opts.raw())
        };
        check(r.into(), "rbd_clone3", || {
            format!("{} -> {}", spec(self, parent, Some(snap)), spec(child_io, child, None))
        })?;
        crate::crash::point("rbd_clone3");
        Ok(())
    }

    /// Removes image `name` (librbd refuses with `Busy` while it has watchers and
    /// `NotEmpty` while it has snapshots).
    ///
    /// # Errors
    /// `NotFound`, `Busy`, `NotEmpty`.
    pub(crate) fn remove_image_unlocked(&self, name: &str) -> Result<()> {
        let _span = self.removal(|| self.image_id(name).ok().flatten());
        let n = cstring("image name", name)?;
        // SAFETY: `self.raw()` is live; `n` outlives the call.
        let r = unsafe { sys::rbd_remove(self.raw(), n.as_ptr()) };
        check(r.into(), "rbd_remove", || spec(self, name, None))?;
        crate::crash::point("rbd_remove");
        Ok(())
    }

    /// Renames image `from` (id `id`, read by the caller) to `to` within this
    /// pool. A format-2 image without journaling is renamed as librbd renames
    /// it, without opening it: `to`'s id object created (`Exists` if taken),
    /// the pool directory moved, `from`'s id object removed (four round trips
    /// with the features read; an open alone takes more). Anything else
    /// (format 1, journaling, a header that does not answer) goes through
    /// librbd (traced as `rename (librbd)`). librbd also tells the image's
    /// watchers to refresh their header, which holds no name: nothing a
    /// watcher reads changes.
    ///
    /// A process stopped between those writes leaves both names opening the
    /// image: [`IoCtx::finish_rename`] finishes that.
    ///
    /// # Errors
    /// `NotFound`, `Exists`.
    pub(crate) fn rename_image_unlocked(&self, from: &str, to: &str, id: Option<&str>) -> Result<()> {
        let (f, t) = (cstring("image name", from)?, cstring("image name", to)?);
        if let Some(id) = id {
            let _span = crate::trace::span("rename");
            if self.renames_directly(id, to)? {
                return self.rename_directly(from, to, id);
            }
        }
        let _span = crate::trace::span("rename (librbd)");
        // SAFETY: `self.raw()` is live; both strings outlive the call.
        let r = unsafe { sys::rbd_rename(self.raw(), f.as_ptr(), t.as_ptr()) };
        check(r.into(), "rbd_rename", || format!("{} -> {to}", spec(self, from, None)))?;
        crate::crash::point("rbd_rename");
        Ok(())
    }

    /// Whether the image with id `id` can be renamed to `to` without librbd:
    /// its header answers, without journaling (whose renames are journaled
    /// for mirroring), and no format-1 image holds the name `to`.
    fn renames_directly(&self, id: &str, to: &str) -> Result<bool> {
        let head = HEAD_SNAP.to_le_bytes().to_vec();
        let features = match self.exec_reads(&header_oid(id), c"rbd", &[(c"get_features", head)]) {
            Ok(r) => r.first().and_then(|r| ClsReader(r).u64()),
            Err(e) if e.is_not_found() => None,
            Err(crate::Error::Ceph(c)) if [libc::ENOEXEC, libc::EOPNOTSUPP].contains(&c.errno) => None,
            Err(e) => return Err(e),
        };
        let Some(features) = features else { return Ok(false) };
        Ok(features & features::JOURNALING == 0 && !self.object_exists(&format!("{to}.rbd"))?)
    }

    /// librbd's three writes of a format-2 rename, each a crash point.
    fn rename_directly(&self, from: &str, to: &str, id: &str) -> Result<()> {
        let mut id_object = Vec::new();
        crate::rados::put_string(&mut id_object, id.as_bytes());
        let to_oid = format!("rbd_id.{to}");
        let mut created = self.create_object(&to_oid, &id_object);
        if created.as_ref().is_err_and(crate::Error::is_exists) && self.clear_ghost(to)? {
            // The name was a ghost of a removed image (an interrupted rename
            // or removal): free now.
            created = self.create_object(&to_oid, &id_object);
        }
        match created {
            // As librbd says it.
            Err(e) if e.is_exists() => {
                let what = || format!("{} -> {to}", spec(self, from, None));
                return check(-i64::from(libc::EEXIST), "rbd_rename", what).map(drop);
            }
            other => other?,
        }
        crate::crash::point("rename: the new id object");
        let mut input = Vec::new();
        for s in [from, to, id] {
            crate::rados::put_string(&mut input, s.as_bytes());
        }
        match self.exec_write_existing(RBD_DIRECTORY, c"rbd", &[(c"dir_rename_image", input)]) {
            Ok(()) => {}
            // The directory does not list `from` for this image, or lists
            // `to`: nothing moved, and the new id object goes again.
            Err(crate::Error::Ceph(c)) if [libc::ENOENT, libc::ESTALE, libc::EEXIST].contains(&c.errno) => {
                self.remove_object(&to_oid)?;
                return Err(crate::Error::Ceph(c));
            }
            // Moved or not (a timeout): a re-run finishes it.
            Err(e) => return Err(e),
        }
        crate::crash::point("rename: the directory");
        self.remove_object(&format!("rbd_id.{from}"))?;
        crate::crash::point("rbd_rename");
        Ok(())
    }

    /// Finishes a rename of image `from` to `to` that stopped after it wrote
    /// the new name's id object (rbdx's own or inside librbd): both names then
    /// open the same image, and a rename again finds the new name taken. The
    /// pool directory moves to `to` unless it already has, and the old name's
    /// id object goes, as a rename's last two steps do. `false`, with nothing
    /// changed, unless both names' id objects hold the same image id.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a directory that lists
    /// neither name for the image.
    pub(crate) fn finish_rename(&self, from: &str, to: &str) -> Result<bool> {
        let (Some(id), Some(to_id)) = (self.image_id(from)?, self.image_id(to)?) else { return Ok(false) };
        if id != to_id {
            return Ok(false);
        }
        let mut input = Vec::new();
        for s in [from, to, id.as_str()] {
            crate::rados::put_string(&mut input, s.as_bytes());
        }
        match self.exec_write_existing(RBD_DIRECTORY, c"rbd", &[(c"dir_rename_image", input)]) {
            Ok(()) => crate::crash::point("rename: the directory"),
            // The directory moved already: it must list the new name for this image.
            Err(e) if e.is_not_found() => {
                if self.directory_id(to)?.as_deref() != Some(id.as_str()) {
                    return Err(crate::Error::BadReply {
                        command: format!(
                            "{}/{RBD_DIRECTORY} rbd.dir_rename_image {from} -> {to}",
                            self.spec()
                        ),
                        detail: format!("the directory lists neither name for image {id}"),
                    });
                }
            }
            Err(e) => return Err(e),
        }
        self.remove_object(&format!("rbd_id.{from}"))?;
        crate::crash::point("rbd_rename");
        Ok(true)
    }

    /// The images of the pool (namespace) whose names start with `prefix`, by
    /// name, from the pool directory: cls `rbd.dir_list` from the prefix on, a
    /// page at a time, so the cost follows the names that match where
    /// [`IoCtx::list_images`] reads the whole directory (a round trip per 1024
    /// images). Format-2 images: the only ones the directory's map lists, and
    /// the only ones librbd has made since Ceph 12.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a page that does not decode.
    pub fn list_images_prefixed(&self, prefix: &str) -> Result<Vec<ImageEntry>> {
        let _span = crate::trace::span("list");
        let found = image::keys_prefixed(prefix, |start, max| {
            let mut input = Vec::new();
            crate::rados::put_string(&mut input, start.as_bytes());
            input.extend_from_slice(&max.to_le_bytes());
            let reply = match self.exec_read(RBD_DIRECTORY, c"rbd", c"dir_list", &input) {
                // No image was ever made in the pool (namespace).
                Err(e) if e.is_not_found() => return Ok(Vec::new()),
                other => other?,
            };
            // A `map<string, string>`: the count, then each name and its id.
            let mut r = ClsReader(&reply);
            let page = (|| {
                let n = r.u32()?;
                let mut out = Vec::with_capacity(usize::try_from(n.min(4096)).ok()?);
                for _ in 0..n {
                    out.push((r.string()?, r.string()?));
                }
                Some(out)
            })();
            page.ok_or_else(|| crate::Error::BadReply {
                command: format!("{}/rbd_directory rbd.dir_list", self.spec()),
                detail: "not a map of names to ids".into(),
            })
        })?;
        Ok(found.into_iter().map(|(name, id)| ImageEntry { id, name }).collect())
    }

    /// Every image in the pool (namespace), in librbd's order.
    ///
    /// # Errors
    /// A [`crate::CephError`] from `rbd_list2`.
    pub fn list_images(&self) -> Result<Vec<ImageEntry>> {
        let _span = crate::trace::span("list");
        // SAFETY: `rbd_list2` fills at most `*n` entries and sets `*n` to the count.
        let raw = unsafe {
            grow_list("rbd_list2", &|| self.spec(), |buf, n| {
                // SAFETY: `self.raw()` is live; `buf` has room for `*n` entries.
                i64::from(sys::rbd_list2(self.raw(), buf, n))
            })
        }?;
        // SAFETY: the entries were filled by `rbd_list2`.
        let list = unsafe { CList::new(raw, sys::rbd_image_spec_list_cleanup) };
        Ok(list.iter().map(|e| ImageEntry { id: owned(e.id), name: owned(e.name) }).collect())
    }

    /// Creates RBD namespace `ns` in this pool (a re-run finds it: no error).
    ///
    /// # Errors
    /// `PermissionDenied` for clients that may not; others.
    pub fn namespace_create(&self, ns: &str) -> Result<()> {
        let n = cstring("namespace", ns)?;
        // SAFETY: `self.raw()` is live; `n` outlives the call.
        let r = unsafe { sys::rbd_namespace_create(self.raw(), n.as_ptr()) };
        if r == -libc::EEXIST {
            return Ok(());
        }
        check(r.into(), "rbd_namespace_create", || format!("{}/{ns}", self.pool()))?;
        Ok(())
    }

    /// Removes RBD namespace `ns` (it must be empty; a missing one is no error).
    ///
    /// # Errors
    /// `Busy`/`NotEmpty` while images remain.
    pub fn namespace_remove(&self, ns: &str) -> Result<()> {
        let n = cstring("namespace", ns)?;
        // SAFETY: `self.raw()` is live; `n` outlives the call.
        let r = unsafe { sys::rbd_namespace_remove(self.raw(), n.as_ptr()) };
        if r == -libc::ENOENT {
            return Ok(());
        }
        check(r.into(), "rbd_namespace_remove", || format!("{}/{ns}", self.pool()))?;
        Ok(())
    }

    /// Moves image `name` to the trash; it cannot be removed from there before
    /// `delay_secs` have passed (without `force`).
    ///
    /// # Errors
    /// `NotFound`; `Busy` while it has watchers.
    pub(crate) fn trash_move_unlocked(&self, name: &str, delay_secs: u64) -> Result<()> {
        let _span = crate::trace::span("remove");
        let n = cstring("image name", name)?;
        // SAFETY: `self.raw()` is live; `n` outlives the call.
        let r = unsafe { sys::rbd_trash_move(self.raw(), n.as_ptr(), delay_secs) };
        check(r.into(), "rbd_trash_move", || spec(self, name, None))?;
        crate::crash::point("rbd_trash_move");
        Ok(())
    }

    /// Every trash entry of the pool (namespace).
    ///
    /// # Errors
    /// A [`crate::CephError`] from `rbd_trash_list`.
    pub fn trash_list(&self) -> Result<Vec<TrashEntry>> {
        // SAFETY: `rbd_trash_list` fills at most `*n` entries and sets `*n`.
        let raw = unsafe {
            grow_list("rbd_trash_list", &|| self.spec(), |buf, n| {
                // SAFETY: `self.raw()` is live; `buf` has room for `*n` entries.
                i64::from(sys::rbd_trash_list(self.raw(), buf, n))
            })
        }?;
        // SAFETY: the entries were filled by `rbd_trash_list`.
        let list = unsafe { CList::new(raw, sys::rbd_trash_list_cleanup) };
        Ok(list
            .iter()
            .map(|e| TrashEntry {
                id: owned(e.id),
                name: owned(e.name),
                source: match e.source {
                    sys::RBD_TRASH_IMAGE_SOURCE_USER => TrashSource::User,
                    sys::RBD_TRASH_IMAGE_SOURCE_MIRRORING => TrashSource::Mirroring,
                    sys::RBD_TRASH_IMAGE_SOURCE_MIGRATION => TrashSource::Migration,
                    sys::RBD_TRASH_IMAGE_SOURCE_REMOVING => TrashSource::Removing,
                    sys::RBD_TRASH_IMAGE_SOURCE_USER_PARENT => TrashSource::UserParent,
                    other => TrashSource::Other(other),
                },
                deletion_time: e.deletion_time,
                deferment_end_time: e.deferment_end_time,
            })
            .collect())
    }

    /// Removes trash entry `id` for good; `force` ignores the deferment time.
    ///
    /// # Errors
    /// `NotFound`; `PermissionDenied` before the deferment end without `force`;
    /// `NotEmpty`/`Busy` while it has snapshots with children.
    pub(crate) fn trash_remove_unlocked(&self, id: &str, force: bool) -> Result<()> {
        let _span = self.removal(|| Some(id.to_string()));
        let i = cstring("image id", id)?;
        // SAFETY: `self.raw()` is live; `i` outlives the call.
        let r = unsafe { sys::rbd_trash_remove(self.raw(), i.as_ptr(), force) };
        check(r.into(), "rbd_trash_remove", || format!("{} trash id {id}", self.spec()))?;
        crate::crash::point("rbd_trash_remove");
        Ok(())
    }

    /// Restores trash entry `id` under `name`.
    ///
    /// # Errors
    /// `NotFound`; `Exists` if `name` is taken.
    pub fn trash_restore(&self, id: &str, name: &str) -> Result<()> {
        let (i, n) = (cstring("image id", id)?, cstring("image name", name)?);
        // SAFETY: `self.raw()` is live; both strings outlive the call.
        let r = unsafe { sys::rbd_trash_restore(self.raw(), i.as_ptr(), n.as_ptr()) };
        check(r.into(), "rbd_trash_restore", || format!("{} trash id {id} -> {name}", self.spec()))?;
        crate::crash::point("rbd_trash_restore");
        Ok(())
    }
}

/// The pool's image directory (names to ids and back), format-2 images.
pub(crate) const RBD_DIRECTORY: &str = "rbd_directory";

/// The cls `rbd` calls (method, input) that remove the metadata keys `remove`
/// and set `set` on an image header, in that order.
///
/// # Errors
/// [`crate::Error::Invalid`] for a key or value with a NUL.
pub(crate) fn metadata_calls(remove: &[&str], set: &[(&str, &str)]) -> Result<Vec<(&'static CStr, Vec<u8>)>> {
    // As librbd reads them back: C strings (a NUL would cut a key short).
    for k in remove.iter().chain(set.iter().map(|(k, _)| k)) {
        crate::rados::cstring("metadata key", k)?;
    }
    for (_, v) in set {
        crate::rados::cstring("metadata value", v)?;
    }
    let put = |b: &mut Vec<u8>, s: &str| crate::rados::put_string(b, s.as_bytes());
    let mut calls: Vec<(&'static CStr, Vec<u8>)> = remove
        .iter()
        .map(|k| {
            let mut b = Vec::new();
            put(&mut b, k);
            (c"metadata_remove", b)
        })
        .collect();
    if !set.is_empty() {
        // A `map<string, bufferlist>`.
        let mut b = u32::try_from(set.len()).unwrap_or(u32::MAX).to_le_bytes().to_vec();
        for (k, v) in set {
            put(&mut b, k);
            put(&mut b, v);
        }
        calls.push((c"metadata_set", b));
    }
    Ok(calls)
}

/// The header object of the image with id `id`.
pub(crate) fn header_oid(id: &str) -> String {
    format!("rbd_header.{id}")
}

impl IoCtx<'_> {
    /// The id of image `name` (read from its id object, as librbd does), or
    /// `None` if there is no such image.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for an id object that holds no id.
    pub(crate) fn image_id(&self, name: &str) -> Result<Option<String>> {
        let _span = crate::trace::span("id");
        self.image_id_untraced(name)
    }

    /// [`IoCtx::image_id`] without its trace span (inside another's).
    fn image_id_untraced(&self, name: &str) -> Result<Option<String>> {
        let oid = format!("rbd_id.{name}");
        let raw = match self.read_object(&oid, 256) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        // An encoded string: a little-endian u32 length, then the bytes.
        let id = raw.get(..4).and_then(|l| {
            let len = usize::try_from(u32::from_le_bytes(l.try_into().ok()?)).ok()?;
            std::str::from_utf8(raw.get(4..4 + len)?).ok()
        });
        match id {
            Some(id) if !id.is_empty() => Ok(Some(id.to_string())),
            _ => Err(crate::Error::BadReply {
                command: format!("read {}/{oid}", self.spec()),
                detail: "not an image id".into(),
            }),
        }
    }
}

/// A snapshot as its image's header records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderSnap {
    pub snap: Snapshot,
    pub namespace: SnapNamespace,
    /// How many format-2 clones read from it (format-1 ones are listed
    /// elsewhere, and need it protected).
    pub children: u32,
}

/// A clone's parent as its header records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ParentRef {
    pub pool_id: i64,
    pub namespace: String,
    pub image_id: String,
    pub snap_id: u64,
}

impl HeaderSnap {
    /// A `SnapshotInfo` (cls `rbd.snapshot_get`): id, namespace (a versioned
    /// struct led by its type), name, size, the time it was taken, the count of
    /// format-2 clones.
    fn decode(r: &mut ClsReader<'_>) -> Option<Self> {
        r.start()?;
        let id = r.u64()?;
        let len = r.start()?;
        let kind = u32::from_le_bytes(r.take(len)?.get(..4)?.try_into().ok()?);
        let name = r.string()?;
        let size = r.u64()?;
        r.take(8)?;
        let children = r.u32()?;
        let namespace = SnapNamespace::from_raw(libc::c_int::try_from(kind).unwrap_or(-1));
        Some(Self { snap: Snapshot { id, name, size }, namespace, children })
    }
}

/// `CEPH_NOSNAP`: the head, where a cls method takes a snapshot id.
const HEAD_SNAP: u64 = u64::MAX - 1;

/// An image's head as a listing shows it ([`IoCtx::head_views`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadView {
    /// Bytes.
    pub size: u64,
    /// The snapshot the head reads through to: `None` for an image that is no
    /// clone, or whose head no longer overlaps its parent.
    pub parent: Option<Parent>,
}

impl ParentRef {
    /// The parent the head reads from, from the replies of `parent_get` and
    /// `parent_overlap_get` of the head: the link while the head overlaps it.
    /// `None` outside for replies that do not decode.
    fn decode_head(link: Option<&Vec<u8>>, overlap: Option<&Vec<u8>>) -> Option<Option<Self>> {
        let parent = Self::decode(&mut ClsReader(link?))?;
        // A `std::optional<uint64_t>`: present, then the overlap.
        let mut r = ClsReader(overlap?);
        let overlap = if r.take(1)?[0] != 0 { r.u64()? } else { 0 };
        Some(parent.filter(|_| overlap > 0))
    }

    /// A `ParentImageSpec` (pool id, namespace, image id, snapshot id): `None`
    /// inside for none (no pool), `None` outside for a reply that does not decode.
    fn decode(r: &mut ClsReader<'_>) -> Option<Option<Self>> {
        r.start()?;
        let pool_id = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let p = Self { pool_id, namespace: r.string()?, image_id: r.string()?, snap_id: r.u64()? };
        Some((p.pool_id >= 0 && !p.image_id.is_empty()).then_some(p))
    }
}

/// Reads the little-endian, length-prefixed encoding cls methods reply in.
struct ClsReader<'a>(&'a [u8]);

impl<'a> ClsReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// Enters a versioned struct (`ENCODE_START`: version, compat, length) and
    /// returns its length.
    fn start(&mut self) -> Option<usize> {
        self.take(2)?;
        usize::try_from(self.u32()?).ok()
    }
}

/// A header's facts a removal decides its common case from
/// ([`IoCtx::header_summary`]).
#[derive(Debug, Clone)]
pub(crate) struct HeaderSummary {
    /// Its image metadata with the keys asked for, values as text.
    pub metadata: Vec<(String, String)>,
    /// How many snapshots it has (all namespaces).
    pub snapshots: usize,
    /// Its parent link.
    pub parent: Option<ParentRef>,
}

/// What the caller of a removal read of the image's parent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ParentKnown<'a> {
    /// Nothing.
    Unread,
    /// It has none.
    NoParent,
    /// Its link, to a snapshot in the user namespace: the removal frees
    /// nothing of the parent, and takes no turn on it.
    Live(&'a ParentRef),
}

/// The replies of cls `rbd` reads on a header ([`IoCtx::header_reads`]);
/// `None` for a header that is gone, or that does not answer them (no
/// layering, or methods it does not know).
pub(crate) fn header_replies(r: Result<Vec<Vec<u8>>>) -> Result<Option<Vec<Vec<u8>>>> {
    match r {
        Ok(r) => Ok(Some(r)),
        Err(crate::Error::Ceph(c))
            if [libc::ENOENT, libc::ENOEXEC, libc::EOPNOTSUPP, libc::EIO].contains(&c.errno) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How many objects an object map covers, and the numbers of those that
/// exist ([`IoCtx::existing_objects`]).
pub(crate) type ExistingObjects = (u64, Vec<u64>);

/// The object map of the image with id `id`.
pub(crate) fn object_map_oid(id: &str) -> String {
    format!("rbd_object_map.{id}")
}

/// The call that reads an object map whole.
pub(crate) const OBJECT_MAP_LOAD: [(&std::ffi::CStr, Vec<u8>); 1] = [(c"object_map_load", Vec::new())];

/// A snapshot context (cls `rbd.get_snapcontext`): the sequence number, then
/// the snapshots' ids.
fn decode_snap_ids(r: &mut ClsReader<'_>) -> Option<Vec<u64>> {
    r.u64()?;
    let n = r.u32()?;
    (0..n).map(|_| r.u64()).collect()
}

/// A page of image metadata (cls `rbd.metadata_list`: a `map<string,
/// bufferlist>`), values as text.
fn decode_metadata_page(r: &mut ClsReader<'_>) -> Option<Vec<(String, String)>> {
    let page = decode_metadata(r)?;
    Some(page.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect())
}

/// A `map<string, bufferlist>` of image metadata, values as stored.
fn decode_metadata(r: &ClsReader<'_>) -> Option<Vec<(String, Vec<u8>)>> {
    let mut r = ClsReader(r.0);
    let n = r.u32()?;
    let mut out = Vec::with_capacity(usize::try_from(n.min(4096)).ok()?);
    for _ in 0..n {
        let k = r.string()?;
        let len = usize::try_from(r.u32()?).ok()?;
        out.push((k, r.take(len)?.to_vec()));
    }
    Some(out)
}

/// Header flags: the object map, or the fast-diff states in it, cannot be
/// trusted (librbd's `RBD_FLAG_*`).
const FLAG_OBJECT_MAP_INVALID: u64 = 1 << 0;
const FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;

/// Object states in an object map ([`ObjectStates`]): none; exists (written
/// since the newest snapshot, with fast-diff); being removed; exists and
/// unchanged since the newest snapshot.
const OBJECT_NONEXISTENT: u8 = 0;
const OBJECT_EXISTS: u8 = 1;
const OBJECT_PENDING: u8 = 2;
const OBJECT_EXISTS_CLEAN: u8 = 3;

/// An object map as cls `rbd.object_map_load` returns it: a bit vector of
/// two-bit object states (0: no object; 1, 2, 3: exists, pending removal,
/// exists and unchanged since the last snapshot), four to a byte, the first in
/// the high bits. Encoded as a length-prefixed header (a versioned struct
/// holding the element count), the data, then a footer of checksums (which
/// the OSD checked before answering).
struct ObjectStates<'a> {
    count: u64,
    data: &'a [u8],
}

impl<'a> ObjectStates<'a> {
    fn decode(reply: &'a [u8]) -> Option<Self> {
        let mut r = ClsReader(reply);
        let header = usize::try_from(r.u32()?).ok()?;
        let mut h = ClsReader(r.take(header)?);
        h.start()?;
        let count = h.u64()?;
        let bytes = usize::try_from(count.div_ceil(4)).ok()?;
        let data = r.take(bytes)?;
        // The footer, and nothing after it.
        let footer = usize::try_from(r.u32()?).ok()?;
        r.take(footer)?;
        r.0.is_empty().then_some(Self { count, data })
    }

    fn len(&self) -> u64 {
        self.count
    }

    /// Object `i`'s state (none past the end).
    fn state(&self, i: u64) -> u8 {
        let byte = usize::try_from(i / 4).ok().and_then(|b| self.data.get(b)).copied().unwrap_or(0);
        if i < self.count { (byte >> ((3 - i % 4) * 2)) & 0b11 } else { OBJECT_NONEXISTENT }
    }

    /// Every object's state, in order.
    fn states(&self) -> impl Iterator<Item = u8> + '_ {
        let four = self.data.iter().flat_map(|b| (0..4).map(move |j| (b >> ((3 - j) * 2)) & 0b11));
        four.take(usize::try_from(self.count).unwrap_or(usize::MAX))
    }

    /// The numbers of the objects that exist.
    fn existing(&self) -> impl Iterator<Item = u64> + '_ {
        let four = self.data.iter().zip((0u64..).step_by(4)).filter(|(b, _)| **b != 0);
        four.flat_map(move |(b, first)| {
            (0..4)
                .map(move |j| (first + j, (b >> ((3 - j) * 2)) & 0b11))
                .filter(|(i, s)| *s != 0 && *i < self.count)
        })
        .map(|(i, _)| i)
    }
}

impl IoCtx<'_> {
    /// The parent of the image with id `id`, read from its header (cls
    /// `rbd.parent_get`, one round trip; the head's link, else the oldest
    /// snapshot's): `None` for an image that is no clone, or that is gone.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn parent_ref(&self, id: &str) -> Result<Option<ParentRef>> {
        let parent = self.header_call(id, c"parent_get", &[], "a parent spec", ParentRef::decode)?;
        Ok(parent.flatten())
    }

    /// The parent the head of the image with id `id` reads from, as an open
    /// of the image sees it: the header's parent link while the head overlaps
    /// it (cls `rbd.parent_get` and `rbd.parent_overlap_get` in one read);
    /// `None` for an image that is no clone (or has no layering), or whose head
    /// no longer reads from its parent.
    ///
    /// # Errors
    /// `NotFound` for a missing header; Ceph errors; [`crate::Error::BadReply`]
    /// for a reply that does not decode.
    pub(crate) fn head_parent(&self, id: &str) -> Result<Option<ParentRef>> {
        let _span = crate::trace::span("parent");
        let oid = header_oid(id);
        let calls = [(c"parent_get", Vec::new()), (c"parent_overlap_get", HEAD_SNAP.to_le_bytes().to_vec())];
        let replies = match self.exec_reads(&oid, c"rbd", &calls) {
            // Without layering an image has no parent (the methods refuse).
            Err(crate::Error::Ceph(e)) if e.errno == libc::ENOEXEC => return Ok(None),
            other => other?,
        };
        ParentRef::decode_head(replies.first(), replies.get(1)).ok_or_else(|| crate::Error::BadReply {
            command: format!("{}/{oid} rbd.parent_get,parent_overlap_get", self.spec()),
            detail: "not a parent spec and overlap".into(),
        })
    }

    /// The size and parent of each image's head, as [`Image::info`] and
    /// [`Image::parent`] of an open would say, read from the headers without
    /// opening the images: one read an image, two a distinct parent. `None`
    /// for an image gone meanwhile. An image without an id object (format 1),
    /// or whose parent is no longer in its pool's directory (in the trash), is
    /// opened read-only instead.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub fn head_views(&self, images: &[ImageEntry]) -> Result<Vec<Option<HeadView>>> {
        let _span = crate::trace::span("headers");
        let mut parents = std::collections::HashMap::new();
        images.iter().map(|e| self.head_view(e, &mut parents)).collect()
    }

    fn head_view(
        &self,
        e: &ImageEntry,
        parents: &mut std::collections::HashMap<ParentRef, Option<Parent>>,
    ) -> Result<Option<HeadView>> {
        if e.id.is_empty() {
            return self.opened_view(&e.name);
        }
        let oid = header_oid(&e.id);
        let head = HEAD_SNAP.to_le_bytes().to_vec();
        let calls = [(c"get_size", head.clone()), (c"parent_get", Vec::new()), (c"parent_overlap_get", head)];
        // An image without layering answers an empty parent spec (releases
        // whose parent methods refuse it instead get the open).
        let replies = match self.exec_reads(&oid, c"rbd", &calls) {
            Err(e) if e.is_not_found() => return Ok(None),
            Err(crate::Error::Ceph(c)) if c.errno == libc::ENOEXEC => return self.opened_view(&e.name),
            other => other?,
        };
        let bad = |detail: &str| crate::Error::BadReply {
            command: format!("{}/{oid} rbd.get_size,parent_get,parent_overlap_get", self.spec()),
            detail: detail.into(),
        };
        // The order (one byte), then the size.
        let size = replies.first().and_then(|r| {
            let mut r = ClsReader(r);
            r.take(1)?;
            r.u64()
        });
        let size = size.ok_or_else(|| bad("not a size"))?;
        let link = ParentRef::decode_head(replies.get(1), replies.get(2))
            .ok_or_else(|| bad("not a parent spec and overlap"))?;
        let Some(link) = link else { return Ok(Some(HeadView { size, parent: None })) };
        let parent = match parents.get(&link) {
            Some(known) => known.clone(),
            None => {
                let found = self.resolve_parent(&link)?;
                parents.insert(link, found.clone());
                found
            }
        };
        match parent {
            Some(parent) => Ok(Some(HeadView { size, parent: Some(parent) })),
            None => self.opened_view(&e.name),
        }
    }

    /// The name the pool directory lists for image id `id`, if any.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that is no name.
    pub(crate) fn listed_name(&self, id: &str) -> Result<Option<String>> {
        let mut input = Vec::new();
        crate::rados::put_string(&mut input, id.as_bytes());
        match self.exec_read(RBD_DIRECTORY, c"rbd", c"dir_get_name", &input) {
            Ok(reply) => ClsReader(&reply).string().map(Some).ok_or_else(|| crate::Error::BadReply {
                command: format!("{}/rbd_directory rbd.dir_get_name", self.spec()),
                detail: "not a name".into(),
            }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The parent `p` names, from its pool's directory and its header; `None`
    /// where an open must tell (the parent is not in the directory: in the
    /// trash, or its pool gone).
    pub(crate) fn resolve_parent(&self, p: &ParentRef) -> Result<Option<Parent>> {
        let Some(pio) = self.parent_ioctx(p)? else { return Ok(None) };
        let Some(name) = pio.listed_name(&p.image_id)? else { return Ok(None) };
        let snap = pio.header_call(
            &p.image_id,
            c"snapshot_get",
            &p.snap_id.to_le_bytes(),
            "a snapshot",
            HeaderSnap::decode,
        )?;
        let Some(snap) = snap else { return Ok(None) };
        Ok(Some(Parent {
            image: LinkedImage {
                pool: pio.pool().to_string(),
                namespace: p.namespace.clone(),
                name,
                id: p.image_id.clone(),
                trash: false,
            },
            snap_id: p.snap_id,
            snap_name: snap.snap.name,
            snap_namespace: snap.namespace,
        }))
    }

    /// The bytes allocated to the head of image `entry`, its parent's not
    /// counted: whole objects, the last one cut at the image's end, as
    /// [`crate::ops::used_bytes`] counts them on the open image. Read from the
    /// header (size, features, flags) and the object map: two round trips,
    /// where an open reads the header, its snapshots and its parent's, and then
    /// the map. `None` for an image gone meanwhile. An image whose map cannot
    /// tell (no id object, no object map or fast-diff, a map flagged invalid or
    /// of another length than the image, fancy striping) is opened read-only
    /// and its extents listed instead.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub fn head_usage(&self, entry: &ImageEntry) -> Result<Option<u64>> {
        let _span = crate::trace::span("headers");
        if entry.id.is_empty() {
            return self.opened_usage(&entry.name);
        }
        let oid = header_oid(&entry.id);
        let head = HEAD_SNAP.to_le_bytes().to_vec();
        let calls = [(c"get_size", head.clone()), (c"get_features", head.clone()), (c"get_flags", head)];
        let replies = match self.exec_reads(&oid, c"rbd", &calls) {
            Err(e) if e.is_not_found() => return Ok(None),
            Err(crate::Error::Ceph(c)) if [libc::ENOEXEC, libc::EOPNOTSUPP].contains(&c.errno) => {
                return self.opened_usage(&entry.name);
            }
            other => other?,
        };
        let reader = |i: usize| replies.get(i).map(|r| ClsReader(r));
        // The order (one byte) and the size; the features (the incompatible
        // ones follow); the flags.
        let size = reader(0).and_then(|mut r| Some((r.take(1)?[0], r.u64()?)));
        let feats = reader(1).and_then(|mut r| r.u64());
        let flags = reader(2).and_then(|mut r| r.u64());
        let (Some((order, size)), Some(feats), Some(flags)) = (size, feats, flags) else {
            return Err(crate::Error::BadReply {
                command: format!("{}/{oid} rbd.get_size,get_features,get_flags", self.spec()),
                detail: "not a size, features and flags".into(),
            });
        };
        let mapped = features::OBJECT_MAP | features::FAST_DIFF;
        let invalid = FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID;
        if feats & mapped != mapped
            || feats & features::STRIPINGV2 != 0
            || flags & invalid != 0
            || !(12..=26).contains(&order)
        {
            return self.opened_usage(&entry.name);
        }
        // No map, or no image any more: the open tells which.
        let Some((count, existing)) = self.existing_objects(&entry.id)? else {
            return self.opened_usage(&entry.name);
        };
        let object = 1u64 << order;
        if count != size.div_ceil(object) {
            return self.opened_usage(&entry.name);
        }
        Ok(Some(existing.iter().map(|i| object.min(size - i * object)).sum()))
    }

    /// The object map of the image with id `id` (cls `rbd.object_map_load`,
    /// one round trip): how many objects it covers, and the numbers of those
    /// that exist. `None` when there is no map.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a map that does not decode.
    pub(crate) fn existing_objects(&self, id: &str) -> Result<Option<ExistingObjects>> {
        let map_oid = object_map_oid(id);
        self.existing_in(&map_oid, self.exec_reads(&map_oid, c"rbd", &OBJECT_MAP_LOAD))
    }

    /// [`IoCtx::existing_objects`] from the reply of `object_map_load` on
    /// object map `map_oid`.
    ///
    /// # Errors
    /// As [`IoCtx::existing_objects`].
    pub(crate) fn existing_in(
        &self,
        map_oid: &str,
        reply: Result<Vec<Vec<u8>>>,
    ) -> Result<Option<ExistingObjects>> {
        let map = match reply {
            Err(e) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        let states =
            map.first().and_then(|m| ObjectStates::decode(m)).ok_or_else(|| crate::Error::BadReply {
                command: format!("{}/{map_oid} rbd.object_map_load", self.spec()),
                detail: "not an object map".into(),
            })?;
        Ok(Some((states.len(), states.existing().collect())))
    }

    /// Calls the cls `rbd` methods `calls` on header `oid` in one read (see
    /// [`IoCtx::exec_reads`]); `None` for a header that is gone, or that does
    /// not answer them (no layering, or methods it does not know).
    ///
    /// # Errors
    /// Other Ceph errors.
    pub(crate) fn header_reads(
        &self,
        oid: &str,
        calls: &[(&std::ffi::CStr, Vec<u8>)],
    ) -> Result<Option<Vec<Vec<u8>>>> {
        header_replies(self.exec_reads(oid, c"rbd", calls))
    }

    /// [`IoCtx::head_usage`] through a read-only open.
    fn opened_usage(&self, name: &str) -> Result<Option<u64>> {
        match self.open_read_only(name, None) {
            Ok(img) => crate::ops::used_bytes(&img, None).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`HeadView`] through a read-only open.
    fn opened_view(&self, name: &str) -> Result<Option<HeadView>> {
        let img = match self.open_read_only(name, None) {
            Ok(img) => img,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(HeadView { size: img.info()?.size, parent: img.parent()? }))
    }

    /// The namespace of snapshot `snap_id` of the image with id `id` (cls
    /// `rbd.snapshot_get`, one round trip), or `None` if there is no such
    /// snapshot or image.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn snap_namespace_by_id(&self, id: &str, snap_id: u64) -> Result<Option<SnapNamespace>> {
        let snap =
            self.header_call(id, c"snapshot_get", &snap_id.to_le_bytes(), "a snapshot", HeaderSnap::decode)?;
        Ok(snap.map(|s| s.namespace))
    }

    /// The image metadata of the image with id `id` whose keys start with
    /// `prefix`, sorted by key, read from its header without opening the image
    /// (cls `rbd.metadata_list`: one round trip a page).
    ///
    /// # Errors
    /// `NotFound` for a missing header; Ceph errors; [`crate::Error::BadReply`]
    /// for a reply that does not decode.
    pub(crate) fn metadata_by_id(&self, id: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        let _span = crate::trace::span("metadata");
        image::keys_prefixed(prefix, |start, max| {
            let mut input = Vec::new();
            crate::rados::put_string(&mut input, start.as_bytes());
            input.extend_from_slice(&max.to_le_bytes());
            // A `map<string, bufferlist>`: the count, then each key and value.
            let page =
                self.header_call(id, c"metadata_list", &input, "a metadata listing", decode_metadata_page)?;
            page.ok_or_else(|| crate::Error::NotFound(format!("{}/{}", self.spec(), header_oid(id))))
        })
    }

    /// What a removal decides its common case from, read from the header of
    /// the image with id `id` in one round trip: its image metadata whose
    /// keys start with `prefix` (cls `rbd.metadata_list`; a further page, if
    /// any, in one more), how many snapshots it has (`rbd.get_snapcontext`)
    /// and its parent link (`rbd.parent_get`). `None` for a header that is
    /// gone or does not answer these (an image without layering).
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn header_summary(&self, id: &str, prefix: &str) -> Result<Option<HeaderSummary>> {
        let _span = crate::trace::span("headers");
        let oid = header_oid(id);
        let mut first = true;
        let mut summary = None;
        let metadata = image::keys_prefixed(prefix, |start, max| {
            let mut input = Vec::new();
            crate::rados::put_string(&mut input, start.as_bytes());
            input.extend_from_slice(&max.to_le_bytes());
            let bad = || crate::Error::BadReply {
                command: format!("{}/{oid} rbd.metadata_list", self.spec()),
                detail: "not a metadata listing".into(),
            };
            if !std::mem::take(&mut first) {
                return decode_metadata_page(&mut ClsReader(&self.exec_read(
                    &oid,
                    c"rbd",
                    c"metadata_list",
                    &input,
                )?))
                .ok_or_else(bad);
            }
            let calls =
                [(c"metadata_list", input), (c"get_snapcontext", Vec::new()), (c"parent_get", Vec::new())];
            let Some(replies) = self.header_reads(&oid, &calls)? else { return Ok(Vec::new()) };
            let reply = |i: usize| ClsReader(replies.get(i).map_or(&[][..], Vec::as_slice));
            let snapshots = decode_snap_ids(&mut reply(1)).ok_or_else(bad)?.len();
            let parent = ParentRef::decode(&mut reply(2)).ok_or_else(bad)?;
            summary = Some((snapshots, parent));
            decode_metadata_page(&mut reply(0)).ok_or_else(bad)
        })?;
        Ok(summary.map(|(snapshots, parent)| HeaderSummary { metadata, snapshots, parent }))
    }

    /// The snapshots of the image with id `id`, each with its namespace and
    /// its count of format-2 clones, read from its header without opening the image (cls `rbd.get_snapcontext`,
    /// then `rbd.snapshot_get` for each in one read: two round trips).
    ///
    /// # Errors
    /// `NotFound` for a missing header; Ceph errors; [`crate::Error::BadReply`]
    /// for a reply that does not decode.
    pub(crate) fn snapshots_by_id(&self, id: &str) -> Result<Vec<HeaderSnap>> {
        let _span = crate::trace::span("snapshots");
        let oid = header_oid(id);
        for _ in 0..3 {
            let ids = self
                .header_call(id, c"get_snapcontext", &[], "a snapshot context", decode_snap_ids)?
                .ok_or_else(|| crate::Error::NotFound(format!("{}/{oid}", self.spec())))?;
            // A snapshot removed between the two reads: read them again.
            if let Some(snaps) = self.snapshots_listed(id, &ids)? {
                return Ok(snaps);
            }
        }
        Err(crate::Error::NotFound(format!("{}/{oid}: its snapshots keep changing", self.spec())))
    }

    /// Snapshots `ids` of the image with id `id` (each with its namespace and
    /// count of format-2 clones), in one read (cls `rbd.snapshot_get` for
    /// each); `None` when one of them, or the header, is gone.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn snapshots_listed(&self, id: &str, ids: &[u64]) -> Result<Option<Vec<HeaderSnap>>> {
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let oid = header_oid(id);
        let calls: Vec<_> = ids.iter().map(|i| (c"snapshot_get", i.to_le_bytes().to_vec())).collect();
        let replies = match self.exec_reads(&oid, c"rbd", &calls) {
            Err(e) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        let bad = || crate::Error::BadReply {
            command: format!("{}/{oid} rbd.snapshot_get", self.spec()),
            detail: "does not decode".into(),
        };
        let snaps = replies.iter().map(|reply| HeaderSnap::decode(&mut ClsReader(reply)).ok_or_else(bad));
        snaps.collect::<Result<_>>().map(Some)
    }

    /// Whether the head of the image with id `id` is as its snapshot `snap_id`
    /// left it, told from the object maps (fast-diff) as librbd's diff tells
    /// it, without reading data or opening the image: when librbd takes a
    /// snapshot it marks every object of the head's map "unchanged since",
    /// and marks one "written" before the first write after; an object
    /// removed since is missing from the head's map. So the head is unchanged
    /// when its map has no object "written" (or being removed) and lists the
    /// same objects as the snapshot's. One round trip: the header (features,
    /// flags and sizes of both, the snapshot context) read beside both maps.
    /// `false` where that cannot tell: no fast-diff, a map marked invalid or
    /// missing, a snapshot newer than `snap_id`, another size.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn head_unchanged_since(&self, id: &str, snap_id: u64) -> Result<bool> {
        let _span = crate::trace::span("diff");
        let (oid, head_map) = (header_oid(id), object_map_oid(id));
        let snap_map = format!("{head_map}.{snap_id:016x}");
        let (head, snap) = (HEAD_SNAP.to_le_bytes().to_vec(), snap_id.to_le_bytes().to_vec());
        let header_calls = [
            (c"get_features", head.clone()),
            (c"get_flags", head.clone()),
            (c"get_flags", snap.clone()),
            (c"get_size", head),
            (c"get_size", snap),
            (c"get_snapcontext", Vec::new()),
        ];
        let [header, head_map_reply, snap_map_reply] = self.exec_reads_together([
            ClsRead { oid: &oid, class: c"rbd", calls: &header_calls },
            ClsRead { oid: &head_map, class: c"rbd", calls: &OBJECT_MAP_LOAD },
            ClsRead { oid: &snap_map, class: c"rbd", calls: &OBJECT_MAP_LOAD },
        ]);
        let replies = |r: Result<Vec<Vec<u8>>>| match r {
            // A map or a snapshot missing (gone meanwhile, or never made).
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        };
        let (Some(header), Some(head_map_reply), Some(snap_map_reply)) =
            (replies(header)?, replies(head_map_reply)?, replies(snap_map_reply)?)
        else {
            return Ok(false);
        };
        let bad = |what: &str| crate::Error::BadReply {
            command: format!("{}/{what}", self.spec()),
            detail: "does not decode".into(),
        };
        let reply = |i: usize| ClsReader(header.get(i).map_or(&[][..], Vec::as_slice));
        let features = reply(0).u64().ok_or_else(|| bad(&oid))?;
        let flags = [reply(1).u64(), reply(2).u64()];
        let sizes = [reply(3), reply(4)].map(|mut r| r.take(1).and_then(|_| r.u64()));
        let newest = decode_snap_ids(&mut reply(5)).ok_or_else(|| bad(&oid))?.into_iter().max();
        let (Some(head_flags), Some(snap_flags), Some(head_size), Some(snap_size)) =
            (flags[0], flags[1], sizes[0], sizes[1])
        else {
            return Err(bad(&oid));
        };
        let maps_valid = (head_flags | snap_flags) & (FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID) == 0;
        if features & features::FAST_DIFF == 0
            || !maps_valid
            || newest != Some(snap_id)
            || head_size != snap_size
        {
            return Ok(false);
        }
        let now =
            head_map_reply.first().and_then(|m| ObjectStates::decode(m)).ok_or_else(|| bad(&head_map))?;
        let then =
            snap_map_reply.first().and_then(|m| ObjectStates::decode(m)).ok_or_else(|| bad(&snap_map))?;
        Ok(now.len() == then.len()
            && now.states().zip(then.states()).all(|(n, t)| {
                (n == OBJECT_NONEXISTENT && t == OBJECT_NONEXISTENT)
                    || (n == OBJECT_EXISTS_CLEAN && (t == OBJECT_EXISTS || t == OBJECT_EXISTS_CLEAN))
            }))
    }

    /// Whether snapshot `snap_id` of the image with id `id` is protected (or
    /// being unprotected), read from its header (cls
    /// `rbd.get_protection_status`, one round trip).
    ///
    /// # Errors
    /// `NotFound` for a missing header or snapshot; Ceph errors;
    /// [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn snap_protected_by_id(&self, id: &str, snap_id: u64) -> Result<bool> {
        let _span = crate::trace::span("snapshots");
        let status =
            self.header_call(id, c"get_protection_status", &snap_id.to_le_bytes(), "a status", |r| {
                r.take(1).map(|b| b[0])
            })?;
        // 0: unprotected; 1: unprotecting; 2: protected.
        status.map(|s| s != 0).ok_or_else(|| {
            crate::Error::NotFound(format!("{}/{} snapshot {snap_id}", self.spec(), header_oid(id)))
        })
    }

    /// Removes the metadata keys `remove` of the image with id `id` and sets
    /// `set`, in one write on its header (cls `rbd.metadata_remove` for each,
    /// then `rbd.metadata_set`: one round trip, all or nothing), without
    /// opening the image. For an image nobody has open (a clone just made):
    /// no watcher is told.
    ///
    /// # Errors
    /// `NotFound` for a missing header; Ceph errors.
    pub(crate) fn edit_metadata_by_id(&self, id: &str, remove: &[&str], set: &[(&str, &str)]) -> Result<()> {
        let _span = crate::trace::span("metadata");
        self.edit_header_metadata(id, remove, set)?;
        crate::crash::point("rados_write_op_exec");
        Ok(())
    }

    /// [`IoCtx::edit_metadata_by_id`]'s write, with no trace span or crash
    /// point: the header must exist (a missing key to remove is not an
    /// error: the OSD's omap removal ignores it).
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] for a key or value with a NUL (nothing is
    /// written); `NotFound` for a missing header; Ceph errors.
    pub(crate) fn edit_header_metadata(&self, id: &str, remove: &[&str], set: &[(&str, &str)]) -> Result<()> {
        let calls = metadata_calls(remove, set)?;
        if calls.is_empty() {
            return Ok(());
        }
        self.exec_write_existing(&header_oid(id), c"rbd", &calls)
    }

    /// Calls cls `rbd.<method>` on the header of the image with id `id` and
    /// decodes the reply with `decode` (`what` it should be, for the error);
    /// `None` when the header (or what the method looks up) is missing.
    fn header_call<T>(
        &self,
        id: &str,
        method: &std::ffi::CStr,
        input: &[u8],
        what: &str,
        decode: impl FnOnce(&mut ClsReader<'_>) -> Option<T>,
    ) -> Result<Option<T>> {
        let oid = header_oid(id);
        let reply = match self.exec_read(&oid, c"rbd", method, input) {
            Ok(reply) => reply,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        decode(&mut ClsReader(&reply)).map(Some).ok_or_else(|| crate::Error::BadReply {
            command: format!("{}/{oid} rbd.{}", self.spec(), method.to_string_lossy()),
            detail: format!("not {what}"),
        })
    }
}

/// The span of an image removal (see [`IoCtx::removal`]).
pub(crate) struct Removal<'a, 'c> {
    io: &'a IoCtx<'c>,
    /// The clone's parent snapshot while it is in the trash namespace.
    trashed: Option<ParentRef>,
    start: std::time::Instant,
}

impl IoCtx<'_> {
    /// An I/O context on the pool and namespace of `parent`; `None` when its
    /// pool is gone.
    ///
    /// # Errors
    /// Ceph errors.
    pub(crate) fn parent_ioctx(&self, parent: &ParentRef) -> Result<Option<IoCtx<'_>>> {
        let cluster = self.cluster();
        let pool = match cluster.pool_name(parent.pool_id) {
            Ok(pool) => pool,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut io = cluster.ioctx(&pool)?;
        io.set_namespace(&parent.namespace)?;
        Ok(Some(io))
    }

    /// The parent of the image with id `id` when the image is a clone of a
    /// snapshot in the trash namespace (read from the headers, no open).
    ///
    /// # Errors
    /// Ceph errors.
    pub(crate) fn trashed_parent(&self, id: &str) -> Result<Option<ParentRef>> {
        let Some(p) = self.parent_ref(id)? else { return Ok(None) };
        let Some(pio) = self.parent_ioctx(&p)? else { return Ok(None) };
        let trashed = pio.snap_namespace_by_id(&p.image_id, p.snap_id)? == Some(SnapNamespace::Trash);
        Ok(trashed.then_some(p))
    }

    /// Times an image removal. While tracing, a removal that also frees the
    /// image's parent snapshot (librbd removes a trash-namespace snapshot with
    /// its last child: an OSD map update waited for inside the call) is named
    /// `snapshot remove (freed with its last clone)`, so that the wait is
    /// counted; `id` reads the id of the image about to go. Finding that out
    /// costs a traced run a few header reads (no open); nothing extra runs
    /// without tracing.
    fn removal(&self, id: impl FnOnce() -> Option<String>) -> Removal<'_, '_> {
        let trashed = crate::trace::enabled().then(|| self.trashed_parent(&id()?).ok().flatten()).flatten();
        Removal { io: self, trashed, start: std::time::Instant::now() }
    }
}

impl Drop for Removal<'_, '_> {
    fn drop(&mut self) {
        if !crate::trace::enabled() {
            return;
        }
        let took = self.start.elapsed();
        let freed = self.trashed.take().is_some_and(|p| {
            matches!(self.io.parent_ioctx(&p), Ok(Some(pio))
                if matches!(pio.snap_namespace_by_id(&p.image_id, p.snap_id), Ok(None)))
        });
        let name = if freed { "snapshot remove (freed with its last clone)" } else { "remove (librbd)" };
        crate::trace::record(name.to_string(), took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object map as the OSD encodes it: header, data, footer.
    fn encoded(count: u64, data: &[u8]) -> Vec<u8> {
        let mut v = 14u32.to_le_bytes().to_vec();
        v.extend([1, 1]);
        v.extend(8u32.to_le_bytes());
        v.extend(count.to_le_bytes());
        v.extend(data);
        v.extend(8u32.to_le_bytes());
        v.extend([0xaa; 8]);
        v
    }

    #[test]
    fn object_states_are_read_high_bits_first_and_stop_at_the_count() {
        // Objects 0..6: exists, none, clean, none | pending, none (then padding
        // that is not an object).
        let map = encoded(6, &[0b01_00_11_00, 0b10_00_11_11]);
        let states = ObjectStates::decode(&map).unwrap();
        assert_eq!(states.len(), 6);
        assert_eq!(states.existing().collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(ObjectStates::decode(&encoded(0, &[])).unwrap().existing().count(), 0);
        // Data shorter than the count says: not an object map.
        assert!(ObjectStates::decode(&encoded(9, &[0xff, 0xff])).is_none());
        assert!(ObjectStates::decode(&[14, 0, 0]).is_none());
    }
}
