//! The RBD domain operations the drivers are built from. Each takes a connected
//! [`Cluster`] and [`ImageSpec`]s. The procedures ([`disk`], [`clone_from_snapshot`],
//! [`make_image`], [`remove`], [`copy`]) are safe to re-run: a step an earlier,
//! interrupted run already did is detected and not repeated. The single calls
//! ([`create`], [`clone`], [`rename`]) report what is in the way (`Exists`,
//! `NotFound`) for their caller to decide.
//!
//! Rules that come from Ceph's behaviour (see `docs/ceph-behaviour.md`):
//! - a clone never inherits its parent's data pool, so every create, clone and copy
//!   takes the data pool explicitly;
//! - `rbd_copy3` from a snapshot of a clone loses parent data, so [`copy`] never
//!   uses it there;
//! - clone format 1 needs a protected parent snapshot; [`clone`] picks the format
//!   the cluster allows and protects only when needed.

mod build;
pub mod changes;
pub mod disk;
mod pool;
mod read;
mod spec;

pub use build::{Cloned, clone_from_snapshot, make_image, make_temp_name};
pub use pool::{PoolKind, PoolUsage, pool_usage};
pub use read::ImageReader;
pub use spec::{ImageSpec, MAX_NAME_LEN, validate_name};

use crate::error::{Error, ErrorKind, Result};
use crate::rados::{Cluster, IoCtx};
use crate::rbd::{
    CloneAs, CloneSource, Image, ImageOptions, LinkedImage, SnapNamespace, Snapshot, TrashEntry, TrashSource,
    Unfinished, Writes,
};

/// Prefix of every image metadata key rbdx writes.
pub const RBDX_KEY_PREFIX: &str = "rbdx.";

/// Opens an I/O context on the spec's pool and namespace.
///
/// # Errors
/// `NotFound` for a missing pool.
pub fn ioctx<'c>(cluster: &'c Cluster, spec: &ImageSpec) -> Result<IoCtx<'c>> {
    let mut io = cluster.ioctx(&spec.pool)?;
    if !spec.namespace.is_empty() {
        io.set_namespace(&spec.namespace)?;
    }
    Ok(io)
}

/// How to create an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// The data pool (EC pool), if any.
    pub data_pool: Option<String>,
    /// Exact features; `None` uses the cluster's `rbd_default_features`.
    pub features: Option<u64>,
    /// Object size as log2; `None` uses the default (22, 4 MiB).
    pub order: Option<u32>,
}

impl CreateOptions {
    /// Options with just a data pool.
    pub fn with_data_pool(data_pool: Option<&str>) -> Self {
        Self { data_pool: data_pool.map(str::to_string), ..Self::default() }
    }

    fn image_options(&self) -> Result<ImageOptions> {
        let mut o = ImageOptions::new().format(2)?.maybe_data_pool(self.data_pool.as_deref())?;
        if let Some(f) = self.features {
            o = o.features(f)?;
        }
        if let Some(order) = self.order {
            o = o.order(order.into())?;
        }
        Ok(o)
    }
}

/// Creates a format-2 image of `size` bytes.
///
/// # Errors
/// `Exists` if the name is taken; `NotFound` for a missing pool or data pool.
pub fn create(cluster: &Cluster, spec: &ImageSpec, size: u64, opts: &CreateOptions) -> Result<()> {
    let io = ioctx(cluster, spec)?;
    io.create_image(&spec.name, size, &opts.image_options()?)
}

/// A clone's parent, as [`stat`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    /// The parent image.
    pub image: LinkedImage,
    /// The parent snapshot's name.
    pub snap: String,
    /// The parent snapshot's namespace (`Trash` once removed while in use).
    pub snap_namespace: SnapNamespace,
    /// Bytes still read from the parent.
    pub overlap: u64,
}

/// What [`stat`] reports about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStatus {
    /// Image id.
    pub id: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// Feature bits.
    pub features: u64,
    /// Flags (object map / fast diff invalid).
    pub flags: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// The data pool's name, if the image has one.
    pub data_pool: Option<String>,
    /// The parent, for a clone.
    pub parent: Option<ParentLink>,
    /// Every snapshot (all namespaces).
    pub snapshots: Vec<Snapshot>,
}

/// Opens `spec` read-only and reports size, features, data pool, parent and snapshots.
///
/// # Errors
/// `NotFound` if the image does not exist.
pub fn stat(cluster: &Cluster, spec: &ImageSpec) -> Result<ImageStatus> {
    let io = ioctx(cluster, spec)?;
    let img = io.open_read_only(&spec.name, spec.snap.as_deref())?;
    status_of(cluster, &io, &img)
}

/// [`stat`] for an image that is already open.
///
/// # Errors
/// A Ceph error from the calls it makes.
pub fn status_of(cluster: &Cluster, io: &IoCtx<'_>, img: &Image<'_>) -> Result<ImageStatus> {
    let info = img.info()?;
    let data_pool =
        if info.data_pool_id != io.pool_id() { Some(cluster.pool_name(info.data_pool_id)?) } else { None };
    let parent = match img.parent()? {
        Some(p) => Some(ParentLink {
            image: p.image,
            snap: p.snap_name,
            snap_namespace: p.snap_namespace,
            overlap: img.overlap()?,
        }),
        None => None,
    };
    Ok(ImageStatus {
        id: info.id,
        size: info.size,
        features: info.features,
        flags: info.flags,
        object_size: info.object_size,
        data_pool,
        parent,
        snapshots: img.snapshots()?,
    })
}

/// Which clone format to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloneFormat {
    /// Format 2 when the cluster's `require_min_compat_client` is mimic or later,
    /// else format 1.
    #[default]
    Auto,
    /// Format 1: the parent snapshot is protected first.
    V1,
    /// Format 2: no protection; needs mimic clients.
    V2,
}

/// Releases in order; format-2 clones need `mimic` or later.
const RELEASES: [&str; 14] = [
    "argonaut",
    "bobtail",
    "cuttlefish",
    "dumpling",
    "emperor",
    "firefly",
    "giant",
    "hammer",
    "infernalis",
    "jewel",
    "kraken",
    "luminous",
    "mimic",
    "nautilus",
];

/// The clone format a cluster with this `require_min_compat_client` accepts: 2 from
/// mimic on (including releases newer than this table), else 1.
pub fn clone_format_for(require_min_compat_client: &str) -> u64 {
    let mimic = RELEASES.iter().position(|r| *r == "mimic").unwrap_or(usize::MAX);
    match RELEASES.iter().position(|r| *r == require_min_compat_client) {
        Some(i) if i < mimic => 1,
        Some(_) => 2,
        // Unknown: a newer release name, or empty (no requirement set, treat as
        // the oldest).
        None if require_min_compat_client.is_empty() => 1,
        None => 2,
    }
}

/// The clone format the cluster accepts, from its `require_min_compat_client`
/// in the OSD map the client holds ([`Cluster::require_min_compat_client`]).
///
/// # Errors
/// A Ceph error.
pub fn cluster_clone_format(cluster: &Cluster) -> Result<u64> {
    // Release numbers count from argonaut = 1 (mimic = 13); 0 is none set.
    const MIMIC: i8 = 13;
    Ok(if cluster.require_min_compat_client()? >= MIMIC { 2 } else { 1 })
}

/// Checks that the data pool `dp` (if any) exists, before anything is changed
/// (a create or clone would otherwise fail half-way through a multi-step action).
///
/// # Errors
/// [`Error::Invalid`] naming a missing pool; Ceph errors.
pub fn check_data_pool(cluster: &Cluster, dp: Option<&str>) -> Result<()> {
    let Some(dp) = dp else { return Ok(()) };
    match cluster.pool_id(dp) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(Error::NotFound(format!("data pool {dp} does not exist"))),
        Err(e) => Err(e),
    }
}

/// How to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneOptions {
    /// The child's data pool. Never inherited from the parent: pass it.
    pub data_pool: Option<String>,
    /// Clone format.
    pub format: CloneFormat,
    /// Exact features for the child; `None` uses the defaults.
    pub features: Option<u64>,
}

/// Clones `parent` (which must name a snapshot) into `child`. With format 1 the
/// parent snapshot is protected first (if it is not already). Returns the format
/// used.
///
/// # Errors
/// [`Error::Invalid`] if `parent` names no snapshot; `Exists` if `child` exists;
/// `NotFound` for a missing parent or snapshot.
pub fn clone(cluster: &Cluster, parent: &ImageSpec, child: &ImageSpec, opts: &CloneOptions) -> Result<u64> {
    clone_of(cluster, parent, child, opts, None, None, &[])
}

/// [`clone`]; `source`: the parent's header as the caller read it (`None`:
/// read here); `inherited`: the parent's rbdx keys the clone sheds (read by the
/// caller just before: removed in one call, the child never opened; empty:
/// none, or the caller strips them in its own open of the child), or `None`
/// to list the child's own. Book keys a clone inherits all the same (written
/// on the parent in between) are shed when the clone's own book is first read,
/// as it names another head. `marks`: rbdx keys the clone gets, written with
/// its parent link where rbdx writes the clone, else just after librbd's
/// clone (with every inherited rbdx key shed: [`book_fresh_clone`]).
pub(crate) fn clone_of(
    cluster: &Cluster,
    parent: &ImageSpec,
    child: &ImageSpec,
    opts: &CloneOptions,
    inherited: Option<&[String]>,
    source: Option<&CloneSource>,
    marks: &[(&str, &str)],
) -> Result<u64> {
    let snap = parent.require_snap()?;
    let format = match opts.format {
        CloneFormat::Auto => cluster_clone_format(cluster)?,
        CloneFormat::V1 => 1,
        CloneFormat::V2 => 2,
    };
    let pio = ioctx(cluster, parent)?;
    let cio = ioctx(cluster, child)?;
    if format == 1 {
        let img = pio.open(&parent.name)?;
        if !img.snap_is_protected(snap)? {
            match img.snap_protect(snap) {
                // Another clone protected it between our check and our call.
                Err(e) if e.kind() == Some(ErrorKind::Busy) => {}
                other => other?,
            }
        }
    }
    if format == 2 {
        // Written directly, rbdx's own keys left with the parent.
        let how = CloneAs {
            data_pool: opts.data_pool.as_deref(),
            features: opts.features,
            shed: RBDX_KEY_PREFIX,
            marks,
        };
        let direct = match source {
            Some(source) => pio.clone_directly_from(source, snap, &cio, &child.name, &how)?,
            None => pio.clone_directly(&parent.name, snap, &cio, &child.name, &how)?,
        };
        if direct {
            return Ok(format);
        }
    }
    let mut o = ImageOptions::new().clone_format(format)?.maybe_data_pool(opts.data_pool.as_deref())?;
    if let Some(f) = opts.features {
        o = o.features(f)?;
    }
    pio.clone_image(&parent.name, snap, &cio, &child.name, &o)?;
    // librbd copies the parent's image metadata into the clone; rbdx's own keys
    // describe the parent's disk, never the child's.
    if !marks.is_empty() {
        book_fresh_clone(&cio, &child.name, marks)?;
        return Ok(format);
    }
    match inherited {
        None => strip_inherited(&cio, &child.name)?,
        Some(keys) => match remove_fresh_metadata(&cio, &child.name, keys) {
            // The parent lost a key since it was read: list the clone's own.
            Err(e) if e.is_not_found() => strip_inherited(&cio, &child.name)?,
            other => other?,
        },
    }
    Ok(format)
}

/// Removes `keys` from the image metadata of `name`, an image nobody has open
/// (a clone just made): one compound `rbd.metadata_remove` call on its header,
/// as librbd makes it, instead of an open (which opens every parent too), a
/// listing and a call per key. Nothing watches the header to be told.
fn remove_fresh_metadata(io: &IoCtx<'_>, name: &str, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    io.edit_metadata_by_id(&id_of(io, name)?, &keys, &[])
}

/// The id of image `name`; `NotFound` when there is none.
pub(crate) fn id_of(io: &IoCtx<'_>, name: &str) -> Result<String> {
    io.image_id(name)?.ok_or_else(|| Error::NotFound(format!("{}/{name}", io.spec())))
}

/// Gives `name`, a clone rbdx made that nobody has open (just made, or under
/// a temporary name), the rbdx metadata `set` and no other: the `rbdx.` keys it
/// inherited from its parent (or an interrupted run wrote) go. Three round trips (its id, its keys, one compound write on its header)
/// where an open costs many more: it opens every image above the clone, and
/// the first write through it takes the clone's exclusive lock.
///
/// # Errors
/// `NotFound` for a missing image; Ceph errors.
pub(crate) fn book_fresh_clone(io: &IoCtx<'_>, name: &str, set: &[(&str, &str)]) -> Result<()> {
    let id = id_of(io, name)?;
    let inherited: Vec<String> = io
        .metadata_by_id(&id, RBDX_KEY_PREFIX)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !set.iter().any(|(s, _)| s == k))
        .collect();
    let inherited: Vec<&str> = inherited.iter().map(String::as_str).collect();
    io.edit_metadata_by_id(&id, &inherited, set)
}

/// Refuses with [`Error::InUse`], naming the watchers, while another client (a
/// VM, a kernel mapping) has `img` open: removing or replacing it would pull it
/// from under them. This client's own handles (`img` itself, opened read-write)
/// do not count.
///
/// # Errors
/// [`Error::InUse`]; Ceph errors listing the watchers.
pub fn refuse_in_use(img: &Image<'_>, spec: &ImageSpec) -> Result<()> {
    let watchers = other_watchers(img)?;
    if watchers.is_empty() {
        return Ok(());
    }
    Err(Error::InUse { image: spec.to_string(), watchers: watchers.into_iter().map(|w| w.addr).collect() })
}

/// The clients other than this one that have `img` open (a VM, a kernel
/// mapping): its watchers, less this client's own handles.
///
/// # Errors
/// Ceph errors listing the watchers.
pub(crate) fn other_watchers(img: &Image<'_>) -> Result<Vec<crate::rbd::Watcher>> {
    let me = i64::try_from(img.ioctx().instance_id()).unwrap_or(-1);
    Ok(img.watchers()?.into_iter().filter(|w| w.id != me).collect())
}

/// Removes the rbdx metadata an image inherited from its parent when it was
/// cloned: every `rbdx.` key, unless the image's own `rbdx.disk` names it (then
/// the keys are its own book). Called right after a clone, and again by a re-run
/// that finds the clone made by an interrupted one.
///
/// # Errors
/// Ceph errors.
pub fn strip_inherited(io: &IoCtx<'_>, name: &str) -> Result<()> {
    strip_inherited_of(&*io.open(name)?)
}

/// [`strip_inherited`] of an image already open read-write.
///
/// # Errors
/// Ceph errors.
pub fn strip_inherited_of(img: &Image<'_>) -> Result<()> {
    let name = img.name();
    if img.metadata_get(disk::KEY_DISK)?.as_deref() == Some(name) {
        return Ok(());
    }
    let keys = img.metadata_list(RBDX_KEY_PREFIX)?;
    let keys: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    img.edit_metadata(&keys, &[])
}

/// Copies the data of `src` (its head, or the snapshot it names) into a new image
/// `dst` with no parent and no snapshots, in `data_pool`.
///
/// A snapshot of a clone is copied as clone-then-flatten, because `rbd_copy3` loses
/// the parent's data on that path (librbd 16, object-map); everything else goes
/// through `rbd_copy3`.
///
/// # Errors
/// `Exists` if `dst` exists; `NotFound` for a missing source.
pub fn copy(cluster: &Cluster, src: &ImageSpec, dst: &ImageSpec, data_pool: Option<&str>) -> Result<()> {
    let sio = ioctx(cluster, src)?;
    let dio = ioctx(cluster, dst)?;
    let img = sio.open_read_only(&src.name, src.snap.as_deref())?;
    if src.snap.is_some() && img.parent()?.is_some() {
        drop(img);
        let opts = CloneOptions { data_pool: data_pool.map(str::to_string), ..CloneOptions::default() };
        clone(cluster, src, dst, &opts)?;
        let child = dio.open(&dst.name)?;
        child.flatten()?;
        return Ok(());
    }
    let opts = ImageOptions::new().format(2)?.maybe_data_pool(data_pool)?;
    img.copy_to(&dio, &dst.name, &opts)
}

/// Deep-copies `src` (with its snapshots up to the one it names) into `dst` in
/// `data_pool`; `flatten` drops the parent link.
///
/// # Errors
/// `Exists` if `dst` exists; `NotFound` for a missing source.
pub fn deep_copy(
    cluster: &Cluster,
    src: &ImageSpec,
    dst: &ImageSpec,
    data_pool: Option<&str>,
    flatten: bool,
) -> Result<()> {
    let sio = ioctx(cluster, src)?;
    let dio = ioctx(cluster, dst)?;
    let img = sio.open_read_only(&src.name, src.snap.as_deref())?;
    let opts = ImageOptions::new().format(2)?.maybe_data_pool(data_pool)?.flatten(flatten)?;
    img.deep_copy_to(&dio, &dst.name, &opts)
}

/// Resizes `spec` to `size` bytes. A shrink is refused unless `allow_shrink`,
/// before anything is changed.
///
/// # Errors
/// [`Error::Invalid`] for a shrink not asked for; `NotFound`.
pub fn resize(cluster: &Cluster, spec: &ImageSpec, size: u64, allow_shrink: bool) -> Result<()> {
    let io = ioctx(cluster, spec)?;
    let img = io.open(&spec.name)?;
    let current = img.info()?.size;
    if size < current && !allow_shrink {
        return Err(Error::Invalid(format!(
            "refusing to shrink {spec} from {current} to {size} bytes (shrinking loses data)"
        )));
    }
    if size != current {
        img.resize(size, allow_shrink)?;
    }
    Ok(())
}

/// Renames `spec` to `new_name` in the same pool and namespace.
///
/// # Errors
/// `NotFound`, `Exists`, [`Error::Invalid`] for a bad name.
pub fn rename(cluster: &Cluster, spec: &ImageSpec, new_name: &str) -> Result<()> {
    validate_name("image", new_name)?;
    ioctx(cluster, spec)?.rename_image(&spec.name, new_name)
}

/// Finishes a rename of `spec` to `new_name` that an interrupted run stopped
/// half-way ([`IoCtx::finish_stopped_rename`]); `false` when there was none.
///
/// # Errors
/// Ceph errors.
pub fn finish_stopped_rename(cluster: &Cluster, spec: &ImageSpec, new_name: &str) -> Result<bool> {
    ioctx(cluster, spec)?.finish_stopped_rename(&spec.name, new_name)
}

/// Flattens `spec` if it still has a parent.
///
/// # Errors
/// `NotFound`.
pub fn flatten(cluster: &Cluster, spec: &ImageSpec) -> Result<()> {
    ioctx(cluster, spec)?.flatten_image(&spec.name)
}

/// How to remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Move to the RBD trash instead, for at least this many seconds.
    pub trash_delay: Option<u64>,
}

/// What [`remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Removed for good.
    Removed,
    /// Moved to the trash under this id.
    Trashed {
        /// The trash id.
        id: String,
    },
    /// There was nothing to remove.
    AlreadyGone,
}

/// Removes `spec` with its snapshots, or moves it to the trash.
///
/// Refuses, before changing anything, while another client has the image open
/// ([`Error::InUse`], naming the watchers) and while a snapshot has CoW children
/// ([`Error::HasChildren`]) — unless moving to the trash with format-2 children,
/// where the snapshots go to the trash namespace and the image stays in the trash
/// until its last child is gone.
///
/// # Errors
/// [`Error::InUse`], [`Error::HasChildren`], and Ceph errors.
pub fn remove(cluster: &Cluster, spec: &ImageSpec, opts: RemoveOptions) -> Result<Removal> {
    let io = ioctx(cluster, spec)?;
    // A read-only open registers no watch of its own, so every watcher listed is
    // another client.
    let probe = match io.open_read_only(&spec.name, None) {
        Err(e) if e.is_not_found() => {
            return match io.settle_unfinished_clone(&spec.name)? {
                // A clone stopped before its last step: finished, then removed
                // as a whole, or removed where nothing linked it yet.
                Unfinished::Finished => remove(cluster, spec, opts),
                Unfinished::Removed => Ok(Removal::Removed),
                // A name an interrupted rename or removal left goes too.
                Unfinished::No => io.clear_ghost(&spec.name).map(|_| Removal::AlreadyGone),
            };
        }
        other => other?,
    };
    refuse_in_use(&probe, spec)?;
    drop(probe);
    let img = match io.open(&spec.name) {
        Err(e) if e.is_not_found() => return Ok(Removal::AlreadyGone),
        other => other?,
    };
    let snaps = img.snapshots()?;
    let mut with_children = Vec::new();
    for s in &snaps {
        let children = children_of(&io, &spec.name, &s.name)?;
        if !children.is_empty() {
            with_children.push((s, children));
        }
    }
    if !with_children.is_empty() {
        let v1 = with_children.iter().any(|(s, _)| img.snap_is_protected(&s.name).unwrap_or(false));
        if opts.trash_delay.is_none() || v1 {
            let (s, children) = &with_children[0];
            return Err(Error::HasChildren {
                image: format!("{spec}@{}", s.name),
                children: children.iter().map(LinkedImage::spec).collect(),
            });
        }
    }
    for s in &snaps {
        if img.snap_namespace(s.id)? != SnapNamespace::User {
            continue;
        }
        match img.snap_remove(&s.name) {
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
    }
    let id = img.info()?.id;
    drop(img);
    match opts.trash_delay {
        Some(delay) => {
            match io.trash_move(&spec.name, delay) {
                Err(e) if e.is_not_found() => return Ok(Removal::AlreadyGone),
                other => other?,
            }
            Ok(Removal::Trashed { id })
        }
        None => match io.remove_image(&spec.name) {
            Err(e) if e.is_not_found() => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
            Ok(()) => Ok(Removal::Removed),
        },
    }
}

/// The children of `image@snap` (read-only open; no watch registered for writes).
fn children_of(io: &IoCtx<'_>, image: &str, snap: &str) -> Result<Vec<LinkedImage>> {
    io.open_read_only(image, Some(snap))?.children()
}

/// What [`trash_purge`] did with each expired entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// Removed for good.
    pub removed: Vec<TrashEntry>,
    /// Kept because clones still depend on them.
    pub kept: Vec<TrashEntry>,
}

/// Removes every trash entry of the spec's pool and namespace whose deferment
/// ended at or before `now` (seconds since the epoch). Entries that clones still
/// depend on are kept, not failed on. Only entries moved there by users
/// (`User`, `UserParent`) are touched.
///
/// # Errors
/// Ceph errors other than "still has children".
pub fn trash_purge(cluster: &Cluster, pool: &ImageSpec, now: i64) -> Result<Purge> {
    let io = ioctx(cluster, pool)?;
    let mut purge = Purge::default();
    for e in io.trash_list()? {
        let ours = matches!(e.source, TrashSource::User | TrashSource::UserParent);
        if !ours || e.deferment_end_time > now {
            continue;
        }
        match io.trash_remove(&e.id, true) {
            Ok(()) => purge.removed.push(e),
            Err(err) if matches!(err.kind(), Some(ErrorKind::Busy | ErrorKind::NotEmpty)) => {
                purge.kept.push(e);
            }
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(purge)
}

/// Bytes allocated to `img` itself (not its parent), at object granularity, from
/// the object map when fast-diff is on (no data is read). With `since`, only what
/// changed after that snapshot.
///
/// # Errors
/// A Ceph error from `rbd_diff_iterate2`.
pub fn used_bytes(img: &Image<'_>, since: Option<&str>) -> Result<u64> {
    let mut used = 0u64;
    img.diff_iterate(since, false, true, |_, len, exists| {
        if exists {
            used += len;
        }
        Ok(())
    })?;
    Ok(used)
}

/// Chunk size of [`write_sparse`]: one default RBD object.
pub const SPARSE_CHUNK: usize = 4 << 20;

/// Writes [`write_sparse`] and [`write_file_sparse`] keep in flight (as many as
/// `rbd import`'s concurrent operations, near enough; 32 MiB of buffers).
pub const WRITE_WINDOW: usize = 8;

/// Copies `src` into `img` from offset 0, skipping chunks that are all zeros (a
/// new image reads zeros there already). Returns the bytes actually written.
///
/// # Errors
/// Read errors (as [`Error::Invalid`]) and Ceph write errors.
pub fn write_sparse(img: &Image<'_>, mut src: impl std::io::Read) -> Result<u64> {
    let mut writes = Writes::new(img, WRITE_WINDOW);
    let (mut off, mut written) = (0u64, 0u64);
    loop {
        let mut buf = writes.buffer(SPARSE_CHUNK);
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io { what: "reading the source".into(), source: e }),
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if !is_zero(&buf) {
            writes.write(off, buf)?;
            written += n as u64;
        } else {
            writes.recycle(buf);
        }
        off += n as u64;
        if n < SPARSE_CHUNK {
            break;
        }
    }
    writes.finish()?;
    img.flush()?;
    Ok(written)
}

/// Copies file `src` into `img` from offset 0, reading only where the file has
/// data (`SEEK_DATA`/`SEEK_HOLE`) and skipping all-zero chunks there too: a
/// 1 TiB file that holds 50 MiB reads 50 MiB. With `discard`, what the file does
/// not hold (holes, zero chunks) is discarded in `img` (an image being
/// overwritten); without, it is left alone (a new image reads zeros there).
/// A file system without `SEEK_DATA` is read whole. Returns the bytes written.
///
/// # Errors
/// Read errors (as [`Error::Invalid`]) and Ceph write errors.
pub fn write_file_sparse(img: &Image<'_>, src: &std::fs::File, discard: bool) -> Result<u64> {
    use nix::unistd::{Whence, lseek};
    let read_err = |e: std::io::Error| Error::Io { what: "reading the source".into(), source: e };
    let len = src.metadata().map_err(read_err)?.len();
    let mut writes = Writes::new(img, WRITE_WINDOW);
    let (mut pos, mut written) = (0u64, 0u64);
    let as_off = |p: u64| i64::try_from(p).map_err(|_| Error::Invalid("the source is too large".into()));
    let as_pos = |o: i64| u64::try_from(o).unwrap_or(0);
    while pos < len {
        // The next extent with data: [data, hole).
        let data = match lseek(src, as_off(pos)?, Whence::SeekData) {
            Ok(d) => as_pos(d),
            Err(nix::errno::Errno::ENXIO) => len,
            Err(nix::errno::Errno::EINVAL) => pos,
            Err(e) => return Err(read_err(std::io::Error::from(e))),
        };
        let hole = if data >= len {
            len
        } else {
            match lseek(src, as_off(data)?, Whence::SeekHole) {
                Ok(h) => as_pos(h).min(len),
                Err(nix::errno::Errno::EINVAL) => len,
                Err(e) => return Err(read_err(std::io::Error::from(e))),
            }
        };
        if discard && data > pos {
            img.discard(pos, data - pos)?;
        }
        written += copy_range(&mut writes, src, Extent { at: data, from: data, len: hole - data }, discard)?;
        pos = hole.max(pos + 1);
    }
    writes.finish()?;
    img.flush()?;
    Ok(written)
}

/// Where a part of an image's data lies in a file: `len` bytes read at `from`
/// belong at offset `at` of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the image.
    pub at: u64,
    /// Offset in the file.
    pub from: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Copies the `extents` of file `src` into the new image `img` (which reads
/// zeros everywhere else), skipping all-zero chunks; `progress` is told how far
/// into the file the copy is after each extent. Returns the bytes written.
///
/// # Errors
/// Read errors (as [`Error::Io`]; a file shorter than an extent is one) and
/// Ceph write errors.
pub fn write_extents_sparse(
    img: &Image<'_>,
    src: &std::fs::File,
    extents: &[Extent],
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut writes = Writes::new(img, WRITE_WINDOW);
    let (mut written, mut reached) = (0, 0);
    for e in extents {
        written += copy_range(&mut writes, src, *e, false)?;
        reached = reached.max(e.from + e.len);
        progress(reached);
    }
    writes.finish()?;
    img.flush()?;
    Ok(written)
}

/// Copies one extent of `src` into the image `writes` goes to, in chunks of
/// [`SPARSE_CHUNK`], skipping all-zero chunks (discarded in the image with
/// `discard`). Returns the bytes written.
fn copy_range(writes: &mut Writes<'_, '_>, src: &std::fs::File, e: Extent, discard: bool) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut written = 0;
    let mut done = 0u64;
    while done < e.len {
        let n = usize::try_from((e.len - done).min(SPARSE_CHUNK as u64)).unwrap_or(SPARSE_CHUNK);
        let mut chunk = writes.buffer(n);
        src.read_exact_at(&mut chunk, e.from + done)
            .map_err(|err| Error::Io { what: "reading the source".into(), source: err })?;
        let at = e.at + done;
        if is_zero(&chunk) {
            writes.recycle(chunk);
            if discard {
                writes.image().discard(at, n as u64)?;
            }
        } else {
            writes.write(at, chunk)?;
            written += n as u64;
        }
        done += n as u64;
    }
    Ok(written)
}

/// Whether `buf` holds only zeros (64 bytes at a time, which the compiler
/// vectorises).
fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0u8, |acc, x| acc | x) == 0) && blocks.remainder().iter().all(|b| *b == 0)
}

/// Writes the whole of `img` (as opened: head or snapshot) to `dst`, leaving holes
/// where the image has none of its own or its parent's data.
///
/// # Errors
/// Ceph read errors; write errors (as [`Error::Invalid`]).
pub fn export_sparse(img: &Image<'_>, dst: &mut std::fs::File) -> Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let size = img.info()?.size;
    let mut extents = Vec::new();
    img.diff_iterate(None, true, false, |off, len, exists| {
        if exists {
            extents.push((off, len));
        }
        Ok(())
    })?;
    let io_err = |e: std::io::Error| Error::Io { what: "writing the file".into(), source: e };
    let mut buf = vec![0u8; SPARSE_CHUNK];
    let mut copied = 0;
    for (off, len) in extents {
        let mut pos = off;
        while pos < off + len {
            let n = (off + len - pos).min(buf.len() as u64) as usize;
            let got = img.read_at(pos, &mut buf[..n])?;
            dst.seek(SeekFrom::Start(pos)).map_err(io_err)?;
            dst.write_all(&buf[..got]).map_err(io_err)?;
            pos += n as u64;
            copied += got as u64;
        }
    }
    dst.set_len(size).map_err(io_err)?;
    dst.sync_all().map_err(io_err)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_format_follows_require_min_compat_client() {
        assert_eq!(clone_format_for("jewel"), 1);
        assert_eq!(clone_format_for("luminous"), 1);
        assert_eq!(clone_format_for("mimic"), 2);
        assert_eq!(clone_format_for("nautilus"), 2);
        assert_eq!(clone_format_for("reef"), 2, "releases newer than the table allow v2");
        assert_eq!(clone_format_for(""), 1, "no requirement set is the oldest");
    }

    #[test]
    fn zero_chunks_are_found_whatever_their_length() {
        for len in [0, 1, 63, 64, 65, 4096, 4097] {
            let mut b = vec![0u8; len];
            assert!(is_zero(&b), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    b[at] = 1;
                    assert!(!is_zero(&b), "{len} with a byte at {at}");
                    b[at] = 0;
                }
            }
        }
    }

    #[test]
    fn create_options_refuse_bad_data_pool_names_before_ceph() {
        let o = CreateOptions { data_pool: Some("ec\0".into()), ..CreateOptions::default() };
        assert!(o.image_options().is_err());
    }
}
