//! A format-2 clone written as librbd 16 writes it, without opening either
//! image. librbd's clone opens the parent at its snapshot, creates the child,
//! opens it and links the two: about 35 round trips, one after another. The
//! same records written directly take ten: three reads of the parent (its id,
//! its header, its snapshots), the old-format name check, then the pool
//! directory, the object map, the header, the header's parent link, the
//! parent's child link and, last, the id object that makes the name open.
//!
//! Every step is written so that a run stopped after any of them converges
//! when run again: the name only opens once everything else is there, and a
//! run that finds the name in the directory without its id object finishes
//! what the directory names (see [`IoCtx::clone_directly`]).

use crate::error::Result;
use crate::rados::{IoCtx, WriteOn, put_string};

use super::{
    ClsReader, HEAD_SNAP, HeaderSnap, ParentRef, RBD_DIRECTORY, SnapNamespace, decode_metadata,
    decode_snap_ids, features, header_oid, object_map_oid,
};

/// librbd's `RBD_FEATURE_OPERATIONS`, `_MIGRATING`, `_NON_PRIMARY`,
/// `_DIRTY_CACHE` (`include/rbd/features.h`).
pub(super) const OPERATIONS: u64 = 1 << 8;
const MIGRATING: u64 = 1 << 9;
const NON_PRIMARY: u64 = 1 << 10;
const DIRTY_CACHE: u64 = 1 << 11;
/// `RBD_FEATURES_ALL`.
const ALL_FEATURES: u64 = (1 << 12) - 1;
/// `RBD_FEATURES_IMPLICIT_ENABLE`: what a clone never takes from its parent.
const IMPLICIT_ENABLE: u64 = features::STRIPINGV2
    | features::DATA_POOL
    | features::FAST_DIFF
    | OPERATIONS
    | MIGRATING
    | NON_PRIMARY
    | DIRTY_CACHE;
/// `RBD_OPERATION_FEATURE_CLONE_CHILD`, and every operation feature librbd 16
/// knows (an image with another is not for it, or rbdx, to change).
pub(super) const OP_CLONE_CHILD: u64 = 1 << 1;
pub(super) const OP_FEATURES_ALL: u64 = 0b1111;
/// cls `rbd`'s `MAX_OBJECT_MAP_OBJECT_COUNT`.
const MAX_OBJECT_MAP_OBJECTS: u64 = 256_000_000;
/// librbd's `RBD_MAX_IMAGE_ID_LENGTH`.
const MAX_IMAGE_ID_LENGTH: usize = 14;
/// The object prefix librbd accepts at most (`RBD_MAX_BLOCK_NAME_PREFIX_LENGTH`).
const MAX_OBJECT_PREFIX_LENGTH: usize = 43;
/// The trash's object in a pool (namespace).
const RBD_TRASH: &str = "rbd_trash";

/// What [`IoCtx::settle_unfinished_clone`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// No unfinished clone.
    No,
    /// Its header linked its parent: it is a whole clone now.
    Finished,
    /// Nothing linked it: it is gone.
    Removed,
}

/// How [`IoCtx::clone_directly`] makes the child.
#[derive(Debug, Clone, Copy)]
pub struct CloneAs<'a> {
    /// The child's data pool (`None`: librbd's `rbd_default_data_pool`).
    pub data_pool: Option<&'a str>,
    /// Exact features (`None`: the parent's, as librbd takes them).
    pub features: Option<u64>,
    /// Image metadata keys with this prefix stay with the parent (librbd
    /// copies all of them; empty: copy all).
    pub shed: &'a str,
    /// Image metadata the child gets besides the parent's (over a parent key
    /// of the same name), written with its link to the parent.
    pub marks: &'a [(&'a str, &'a str)],
}

/// A clone's source as its header says it, read without opening it
/// ([`IoCtx::read_clone_source`]): what a clone of one of its snapshots
/// takes, and what a caller needs to know first (its snapshots, the chain
/// above it, its metadata).
#[derive(Debug, Clone)]
pub(crate) struct CloneSource {
    /// The image's id.
    pub id: String,
    features: u64,
    op_features: u64,
    order: u8,
    /// The pool its data lives in.
    data_pool_id: i64,
    /// Its snapshots, each with its namespace.
    pub snaps: Vec<HeaderSnap>,
    /// Its image metadata, values as stored.
    metadata: Vec<(String, Vec<u8>)>,
    /// The parent its head reads from (as an open sees it).
    pub head_parent: Option<ParentRef>,
}

impl CloneSource {
    /// Its user snapshot `name`.
    pub(crate) fn snapshot(&self, name: &str) -> Option<&HeaderSnap> {
        self.snaps.iter().find(|s| s.snap.name == name && s.namespace == SnapNamespace::User)
    }

    /// Its image metadata whose keys start with `prefix`, values as text.
    pub(crate) fn metadata_prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        let keys = self.metadata.iter().filter(|(k, _)| k.starts_with(prefix));
        keys.map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect()
    }

    /// The keys of its image metadata that start with `prefix`.
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        self.metadata.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect()
    }
}

/// What a clone of one snapshot takes from its parent.
struct Source {
    spec: ParentRef,
    size: u64,
    order: u8,
    features: u64,
    /// The pool the parent's data lives in.
    data_pool_id: i64,
    metadata: Vec<(String, Vec<u8>)>,
}

/// The child as it will be written.
struct Child<'a> {
    name: &'a str,
    size: u64,
    order: u8,
    features: u64,
    data_pool_id: Option<i64>,
    objects: u64,
}

impl IoCtx<'_> {
    /// Clones `parent@snap` (a user snapshot of a format-2 image in this
    /// pool) into `child` in `child_io` as a format-2 clone, writing what
    /// librbd 16's clone writes (the same header keys, object map, links and
    /// names; its tests compare them) without opening either image. `false`,
    /// with nothing written, for what it leaves to librbd's clone: a parent
    /// of the old format or missing, a snapshot that is not there, features
    /// librbd would refuse or that journal the child (mirroring), striping
    /// set in the configuration, a data pool librbd has not yet checked, a parent being migrated or with operation features it
    /// does not know.
    ///
    /// A run that finds the name in the pool directory but no id object for
    /// it (an earlier run stopped half-way, or one running now) finishes the
    /// clone the directory names, unless that image is in the trash or its
    /// header links another parent.
    ///
    /// # Errors
    /// `Exists` (as librbd says it) for a name taken; Ceph errors.
    pub fn clone_directly(
        &self,
        parent: &str,
        snap: &str,
        child_io: &IoCtx<'_>,
        child: &str,
        how: &CloneAs<'_>,
    ) -> Result<bool> {
        let Some(source) = self.read_clone_source(parent)? else { return Ok(false) };
        self.clone_directly_from(&source, snap, child_io, child, how)
    }

    /// [`IoCtx::clone_directly`] from `source`, the parent's header as the
    /// caller read it ([`IoCtx::read_clone_source`]; a snapshot taken since
    /// is not in it: `false`).
    ///
    /// # Errors
    /// As [`IoCtx::clone_directly`].
    pub(crate) fn clone_directly_from(
        &self,
        source: &CloneSource,
        snap: &str,
        child_io: &IoCtx<'_>,
        child: &str,
        how: &CloneAs<'_>,
    ) -> Result<bool> {
        let _span = crate::trace::span("clone");
        let Some(src) = self.snapshot_source(source, snap, how) else { return Ok(false) };
        let Some(made) = child_io.child_layout(child, &src, how)? else { return Ok(false) };
        // A format-1 image of that name (librbd checks too).
        if child_io.object_exists(&format!("{child}.rbd"))? {
            return Err(name_taken(child_io, child));
        }
        for _ in 0..3 {
            let id = new_image_id(child_io.instance_id());
            match child_io.add_to_directory(child, &id) {
                Ok(()) => {
                    crate::crash::point("clone: the directory");
                    child_io.build_clone(self, &src, &made, &id, false)?;
                    return Ok(true);
                }
                // Another image has that id: draw again.
                Err(crate::Error::Ceph(c)) if c.errno == libc::EBADF => {}
                Err(e) if e.is_exists() => {
                    if child_io.object_exists(&format!("rbd_id.{child}"))? {
                        return Err(name_taken(child_io, child));
                    }
                    let Some(id) = child_io.directory_id(child)? else { continue };
                    if child_io.in_trash(&id)? {
                        return Err(name_taken(child_io, child));
                    }
                    child_io.build_clone(self, &src, &made, &id, true)?;
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        Err(name_taken(child_io, child))
    }

    /// Settles what a clone stopped before its last step left under `name`
    /// (the pool directory lists it, no id object names it): a header that
    /// links its parent is finished into the clone (the parent snapshot's
    /// link to it, then its id object); anything short of that, which nothing
    /// links, is removed (object map, header, directory entry). A name with
    /// its id object, one the directory does not list, or an image in the
    /// trash is left alone.
    ///
    /// # Errors
    /// Ceph errors.
    pub fn settle_unfinished_clone(&self, name: &str) -> Result<Unfinished> {
        if self.object_exists(&format!("rbd_id.{name}"))? {
            return Ok(Unfinished::No);
        }
        let Some(id) = self.directory_id(name)? else { return Ok(Unfinished::No) };
        if self.in_trash(&id)? {
            return Ok(Unfinished::No);
        }
        if let Some(parent) = self.parent_ref(&id)?
            && let Some(pio) = self.parent_ioctx(&parent)?
            && self.link_child(&pio, &parent, &id)?
        {
            self.write_id_object(name, &id, true)?;
            return Ok(Unfinished::Finished);
        }
        self.remove_object(&object_map_oid(&id))?;
        self.remove_object(&header_oid(&id))?;
        crate::crash::point("unfinished clone: its header");
        self.remove_from_directory(name, &id)?;
        crate::crash::point("unfinished clone: the directory");
        Ok(Unfinished::Removed)
    }

    /// Takes `name` (image `id`) out of the pool directory, if it is there.
    pub(super) fn remove_from_directory(&self, name: &str, id: &str) -> Result<()> {
        let mut input = Vec::new();
        put_string(&mut input, name.as_bytes());
        put_string(&mut input, id.as_bytes());
        match self.exec_write_existing(RBD_DIRECTORY, c"rbd", &[(c"dir_remove_image", input)]) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// The input of cls `rbd.child_attach` and `rbd.child_detach` for the
    /// clone with id `id` in this pool of the parent's snapshot `snap_id`.
    pub(super) fn child_link(&self, snap_id: u64, id: &str) -> Vec<u8> {
        // A `ChildImageSpec`: pool, id, then (from version 2) namespace.
        let mut spec = Vec::new();
        spec.extend_from_slice(&self.pool_id().to_le_bytes());
        put_string(&mut spec, id.as_bytes());
        put_string(&mut spec, self.namespace().as_bytes());
        let mut input = snap_id.to_le_bytes().to_vec();
        put_struct(&mut input, 2, &spec);
        input
    }

    /// Links the clone with id `id` (in this pool) from its parent's
    /// snapshot, unless it is already: `false` when the snapshot is gone, or
    /// in the trash namespace without it (it can link no new clone).
    fn link_child(&self, pio: &IoCtx<'_>, parent: &ParentRef, id: &str) -> Result<bool> {
        let input = self.child_link(parent.snap_id, id);
        let parent_header = header_oid(&parent.image_id);
        match pio.exec_write_existing(&parent_header, c"rbd", &[(c"child_attach", input)]) {
            Ok(()) => crate::crash::point("clone: the child link"),
            Err(e) if e.is_exists() => {}
            // Gone, or in the trash namespace, where it may list this clone.
            Err(e) if e.is_not_found() => {
                let listed = match pio.exec_read(
                    &parent_header,
                    c"rbd",
                    c"children_list",
                    &parent.snap_id.to_le_bytes(),
                ) {
                    Ok(raw) => raw,
                    Err(e) if e.is_not_found() => return Ok(false),
                    Err(e) => return Err(e),
                };
                let mut r = ClsReader(&listed);
                let n = r.u32().unwrap_or(0);
                let mut found = false;
                for _ in 0..n {
                    let Some(len) = r.start() else { break };
                    let Some(mut one) = r.take(len).map(ClsReader) else { break };
                    let pool = one.i64();
                    let (child, ns) = (one.string(), one.string().unwrap_or_default());
                    found |= pool == Some(self.pool_id())
                        && child.as_deref() == Some(id)
                        && ns == self.namespace();
                }
                return Ok(found);
            }
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Writes the id object that makes `name` open the image with id `id`
    /// (`Exists` unless `tolerate` and it names `id` already).
    fn write_id_object(&self, name: &str, id: &str, tolerate: bool) -> Result<()> {
        let mut set_id = Vec::new();
        put_string(&mut set_id, id.as_bytes());
        match self.exec_write(&format!("rbd_id.{name}"), WriteOn::New, c"rbd", &[(c"set_id", set_id)]) {
            Ok(()) => {}
            Err(e) if e.is_exists() && tolerate && self.image_id_untraced(name)?.as_deref() == Some(id) => {}
            Err(e) => return Err(e),
        }
        crate::crash::point("rbd_clone3");
        Ok(())
    }

    /// Image `name`'s header as a clone of it needs it, read without opening
    /// it: its id object, then one compound read of its header (features,
    /// operation features, object size, data pool, snapshot ids, parent link,
    /// the first page of its metadata) and one of its snapshots. `None` for
    /// an image without an id object (the old format, or none) or whose
    /// header does not answer these (librbd then says what it is).
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn read_clone_source(&self, name: &str) -> Result<Option<CloneSource>> {
        let _span = crate::trace::span("headers");
        let Some(id) = self.image_id_untraced(name)? else { return Ok(None) };
        let oid = header_oid(&id);
        let mut first_page = Vec::new();
        put_string(&mut first_page, b"");
        first_page.extend_from_slice(&METADATA_PAGE.to_le_bytes());
        let head = HEAD_SNAP.to_le_bytes().to_vec();
        let calls = [
            (c"get_features", head.clone()),
            (c"op_features_get", Vec::new()),
            (c"get_size", head.clone()),
            (c"get_data_pool", Vec::new()),
            (c"get_snapcontext", Vec::new()),
            (c"metadata_list", first_page),
            (c"parent_get", Vec::new()),
            (c"parent_overlap_get", head),
        ];
        // Gone, without layering, or a header without these.
        let Some(replies) = self.header_reads(&oid, &calls)? else { return Ok(None) };
        let bad = |what: &str| crate::Error::BadReply {
            command: format!("{}/{oid} rbd.{what}", self.spec()),
            detail: "does not decode".into(),
        };
        let reply = |i: usize| ClsReader(replies.get(i).map_or(&[][..], Vec::as_slice));
        let features = reply(0).u64().ok_or_else(|| bad("get_features"))?;
        let op_features = reply(1).u64().ok_or_else(|| bad("op_features_get"))?;
        let order = reply(2).take(1).map(|b| b[0]).ok_or_else(|| bad("get_size"))?;
        let data_pool_id = reply(3).i64().filter(|&p| p >= 0).unwrap_or_else(|| self.pool_id());
        let snap_ids = decode_snap_ids(&mut reply(4)).ok_or_else(|| bad("get_snapcontext"))?;
        let mut metadata = Vec::new();
        let mut page = decode_metadata(&reply(5)).ok_or_else(|| bad("metadata_list"))?;
        loop {
            let full = page.len() as u64 == METADATA_PAGE;
            let last = page.last().map(|(k, _)| k.clone());
            metadata.append(&mut page);
            match last {
                Some(last) if full => page = self.metadata_page_raw(&oid, &last, METADATA_PAGE)?,
                _ => break,
            }
        }
        let head_parent =
            ParentRef::decode_head(replies.get(6), replies.get(7)).ok_or_else(|| bad("parent_get"))?;
        // A snapshot removed meanwhile: librbd looks again.
        let Some(snaps) = self.snapshots_listed(&id, &snap_ids)? else { return Ok(None) };
        Ok(Some(CloneSource { id, features, op_features, order, data_pool_id, snaps, metadata, head_parent }))
    }

    /// What a clone of `source`'s user snapshot `snap` takes from it as `how`
    /// says: its metadata less the keys starting with `how.shed` (none when
    /// empty), and `how.marks`. `None` for what [`IoCtx::clone_directly`]
    /// leaves to librbd.
    fn snapshot_source(&self, source: &CloneSource, snap: &str, how: &CloneAs<'_>) -> Option<Source> {
        let features = source.features;
        if features & features::LAYERING == 0
            || features & MIGRATING != 0
            || source.op_features & !OP_FEATURES_ALL != 0
        {
            return None;
        }
        let found = source.snapshot(snap)?;
        let marked = |k: &str| how.marks.iter().any(|(m, _)| *m == k);
        let metadata = source
            .metadata
            .iter()
            .filter(|(k, _)| (how.shed.is_empty() || !k.starts_with(how.shed)) && !marked(k))
            .cloned()
            .chain(how.marks.iter().map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec())))
            .collect();
        let spec = ParentRef {
            pool_id: self.pool_id(),
            namespace: self.namespace().to_string(),
            image_id: source.id.clone(),
            snap_id: found.snap.id,
        };
        Some(Source {
            spec,
            size: found.snap.size,
            order: source.order,
            features,
            data_pool_id: source.data_pool_id,
            metadata,
        })
    }

    /// A page of image metadata (cls `rbd.metadata_list`), values as stored.
    fn metadata_page_raw(&self, oid: &str, start: &str, max: u64) -> Result<Vec<(String, Vec<u8>)>> {
        let mut input = Vec::new();
        put_string(&mut input, start.as_bytes());
        input.extend_from_slice(&max.to_le_bytes());
        let reply = self.exec_read(oid, c"rbd", c"metadata_list", &input)?;
        decode_metadata(&ClsReader(&reply)).ok_or_else(|| crate::Error::BadReply {
            command: format!("{}/{oid} rbd.metadata_list", self.spec()),
            detail: "does not decode".into(),
        })
    }

    /// What librbd's clone would make of `src` for `child` in this pool:
    /// `None` where it is not for [`IoCtx::clone_directly`].
    fn child_layout<'n>(&self, name: &'n str, src: &Source, how: &CloneAs<'_>) -> Result<Option<Child<'n>>> {
        let conf = |k: &str| self.cluster().conf_get(k);
        // Striping from the configuration (a clone takes its parent's object
        // size, and the features asked or its parent's).
        if ["rbd_default_stripe_unit", "rbd_default_stripe_count"]
            .iter()
            .any(|k| conf(k).is_ok_and(|v| v != "0"))
        {
            return Ok(None);
        }
        let mut f = how.features.unwrap_or(src.features & !IMPLICIT_ENABLE);
        if f & features::OBJECT_MAP != 0 {
            f |= features::FAST_DIFF;
        }
        f &= !features::STRIPINGV2;
        let data_pool = match how.data_pool {
            Some(p) => Some(p.to_string()),
            None => conf("rbd_default_data_pool").ok().filter(|p| !p.is_empty()),
        };
        let data_pool_id = match data_pool.filter(|p| p != self.pool()) {
            Some(p) => {
                f |= features::DATA_POOL;
                Some(self.cluster().pool_id(&p)?)
            }
            None => {
                f &= !features::DATA_POOL;
                None
            }
        };
        // librbd refuses these, or enables mirroring with journaling.
        let refused = f & !ALL_FEATURES != 0
            || f & (OPERATIONS | MIGRATING | NON_PRIMARY | DIRTY_CACHE | features::JOURNALING) != 0
            || f & features::LAYERING == 0
            || (f & features::FAST_DIFF != 0 && f & features::OBJECT_MAP == 0)
            || (f & features::OBJECT_MAP != 0 && f & features::EXCLUSIVE_LOCK == 0)
            || !(12..=25).contains(&src.order);
        let objects = src.size.div_ceil(1 << src.order);
        if refused || (f & features::OBJECT_MAP != 0 && objects > MAX_OBJECT_MAP_OBJECTS) {
            return Ok(None);
        }
        // A data pool librbd has not checked yet (it checks a pool's
        // snapshots and overwrites once, and leaves a note in it).
        let data_home = data_pool_id.unwrap_or_else(|| self.pool_id());
        if data_home != src.data_pool_id && !self.pool_checked(data_home)? {
            return Ok(None);
        }
        Ok(Some(Child { name, size: src.size, order: src.order, features: f, data_pool_id, objects }))
    }

    /// Whether librbd's pool check left its note (`rbd_info`) in pool `id`.
    fn pool_checked(&self, id: i64) -> Result<bool> {
        let name = self.cluster().pool_name(id)?;
        let io = self.cluster().ioctx(&name)?;
        match io.read_object("rbd_info", 64) {
            Ok(note) => Ok(note == b"overwrite validated"),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists `name` with `id` in the pool directory (librbd's first step,
    /// which claims the name): `Exists` for a name listed, `EBADF` for an id.
    fn add_to_directory(&self, name: &str, id: &str) -> Result<()> {
        let mut calls = Vec::new();
        if !self.namespace().is_empty() {
            // The namespace must be ready (`DIRECTORY_STATE_READY`).
            calls.push((c"dir_state_assert", vec![0u8]));
        }
        let mut input = Vec::new();
        put_string(&mut input, name.as_bytes());
        put_string(&mut input, id.as_bytes());
        calls.push((c"dir_add_image", input));
        self.exec_write(RBD_DIRECTORY, WriteOn::Any, c"rbd", &calls)
    }

    /// The id the pool directory lists for `name`, if any (cls `rbd.dir_get_id`).
    pub(crate) fn directory_id(&self, name: &str) -> Result<Option<String>> {
        let mut input = Vec::new();
        put_string(&mut input, name.as_bytes());
        match self.exec_read(RBD_DIRECTORY, c"rbd", c"dir_get_id", &input) {
            Ok(raw) => Ok(ClsReader(&raw).string()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the image with id `id` is in the trash.
    fn in_trash(&self, id: &str) -> Result<bool> {
        let mut input = Vec::new();
        put_string(&mut input, id.as_bytes());
        match self.exec_read(RBD_TRASH, c"rbd", c"trash_get", &input) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the clone with id `id`, listed in the directory already, in
    /// librbd's records: its object map, its header, the header's link to
    /// the parent (with the clone-child operation feature and the parent's
    /// metadata), the parent snapshot's link to it, and its id object, which
    /// makes the name open. `resuming`: an earlier run may have written any
    /// of these; each is then taken as it is (a header must link this
    /// parent, or none).
    fn build_clone(
        &self,
        pio: &IoCtx<'_>,
        src: &Source,
        child: &Child<'_>,
        id: &str,
        resuming: bool,
    ) -> Result<()> {
        let header = header_oid(id);
        if child.features & features::OBJECT_MAP != 0 {
            let mut input = child.objects.to_le_bytes().to_vec();
            // `OBJECT_NONEXISTENT`: a clone has no object of its own yet.
            input.push(0);
            self.exec_write(&object_map_oid(id), WriteOn::Any, c"rbd", &[(c"object_map_resize", input)])?;
            crate::crash::point("clone: the object map");
        }
        let mut prefix = String::from("rbd_data.");
        if child.data_pool_id.is_some() {
            prefix.push_str(&format!("{}.", self.pool_id()));
        }
        prefix.push_str(id);
        if prefix.len() > MAX_OBJECT_PREFIX_LENGTH {
            return Err(crate::Error::Invalid(format!("object prefix {prefix} too long")));
        }
        let mut create = child.size.to_le_bytes().to_vec();
        create.push(child.order);
        create.extend_from_slice(&child.features.to_le_bytes());
        put_string(&mut create, prefix.as_bytes());
        create.extend_from_slice(&child.data_pool_id.unwrap_or(-1).to_le_bytes());
        let mut attach = true;
        match self.exec_write(&header, WriteOn::New, c"rbd", &[(c"create", create)]) {
            Ok(()) => crate::crash::point("clone: the header"),
            Err(e) if e.is_exists() && resuming => attach = !self.links_parent(id, &src.spec, child.name)?,
            Err(e) => return Err(e),
        }
        match self.link_parent(id, src, attach) {
            // Linked meanwhile by a run finishing the same clone.
            Err(e) if e.is_exists() && resuming && self.links_parent(id, &src.spec, child.name)? => {
                self.link_parent(id, src, false)?;
            }
            other => other?,
        }
        crate::crash::point("clone: the parent link");
        if !self.link_child(pio, &src.spec, id)? {
            // The snapshot went meanwhile: nothing to clone from any more.
            return Err(crate::Error::NotFound(format!("{}@{}", src.spec.image_id, src.spec.snap_id)));
        }
        self.write_id_object(child.name, id, resuming)?;
        Ok(())
    }

    /// The header's link to the parent (`attach`: the header has none yet),
    /// the clone-child operation feature, and the parent's metadata: one write.
    fn link_parent(&self, id: &str, src: &Source, attach: bool) -> Result<()> {
        let mut calls = Vec::new();
        if attach {
            // A `ParentImageSpec`: pool, namespace, id, snapshot.
            let mut spec = Vec::new();
            spec.extend_from_slice(&src.spec.pool_id.to_le_bytes());
            put_string(&mut spec, src.spec.namespace.as_bytes());
            put_string(&mut spec, src.spec.image_id.as_bytes());
            spec.extend_from_slice(&src.spec.snap_id.to_le_bytes());
            let mut input = Vec::new();
            put_struct(&mut input, 1, &spec);
            input.extend_from_slice(&src.size.to_le_bytes());
            // Not a re-attach.
            input.push(0);
            calls.push((c"parent_attach", input));
        }
        let mut op = OP_CLONE_CHILD.to_le_bytes().to_vec();
        op.extend_from_slice(&OP_CLONE_CHILD.to_le_bytes());
        calls.push((c"op_features_set", op));
        if !src.metadata.is_empty() {
            let mut input = u32::try_from(src.metadata.len()).unwrap_or(u32::MAX).to_le_bytes().to_vec();
            for (k, v) in &src.metadata {
                put_string(&mut input, k.as_bytes());
                put_string(&mut input, v);
            }
            calls.push((c"metadata_set", input));
        }
        self.exec_write_existing(&header_oid(id), c"rbd", &calls)
    }

    /// Whether the header of `id` links `parent` (`false`: no parent);
    /// `Exists` for the name when it links another.
    fn links_parent(&self, id: &str, parent: &ParentRef, name: &str) -> Result<bool> {
        match self.parent_ref(id)? {
            None => Ok(false),
            Some(p) if &p == parent => Ok(true),
            Some(_) => Err(name_taken(self, name)),
        }
    }
}

/// Metadata keys a page asks for: librbd asks 64 at a time; the OSD answers
/// up to this many in one reply.
const METADATA_PAGE: u64 = 256;

/// Appends `body` as a struct of `version` readable from version 1
/// (`ENCODE_START(version, 1, bl)`).
fn put_struct(out: &mut Vec<u8>, version: u8, body: &[u8]) {
    out.extend_from_slice(&[version, 1]);
    put_string(out, body);
}

/// A new image id as librbd draws one: the client's instance id and a random
/// 32-bit number, in hex, the last 14 characters of that.
fn new_image_id(instance_id: u64) -> String {
    let mut b = [0u8; 4];
    // SAFETY: `b` is writable for its length.
    let got = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let extra = if got == 4 {
        u32::from_le_bytes(b)
    } else {
        // No entropy to be had: the clock's nanoseconds stand in.
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    };
    let id = format!("{instance_id:x}{extra:x}");
    id[id.len().saturating_sub(MAX_IMAGE_ID_LENGTH)..].to_string()
}

/// librbd's error for a clone whose name is taken.
fn name_taken(io: &IoCtx<'_>, name: &str) -> crate::Error {
    let what = || super::spec(io, name, None);
    crate::error::check(-i64::from(libc::EEXIST), "rbd_clone3", what)
        .err()
        .unwrap_or_else(|| crate::Error::Invalid(format!("{} exists", what())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_hex_and_at_most_fourteen_characters() {
        // The instance id in hex, then 1 to 8 hex digits of a random u32.
        for _ in 0..64 {
            let id = new_image_id(0x10434);
            assert!(id.starts_with("10434") && (6..=13).contains(&id.len()), "{id}");
        }
        let long = new_image_id(u64::MAX);
        assert_eq!(long.len(), MAX_IMAGE_ID_LENGTH);
        assert!(long.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_image_id(1), new_image_id(1), "two draws alike (1 in 2^32)");
    }

    #[test]
    fn metadata_decodes_raw_values() {
        let mut b = 2u32.to_le_bytes().to_vec();
        put_string(&mut b, b"a");
        put_string(&mut b, b"\xff\x00");
        put_string(&mut b, b"b");
        put_string(&mut b, b"");
        let m = decode_metadata(&ClsReader(&b)).unwrap();
        assert_eq!(m, [("a".to_string(), vec![0xff, 0]), ("b".to_string(), vec![])]);
        assert!(decode_metadata(&ClsReader(&b[..b.len() - 1])).is_none());
    }
}
