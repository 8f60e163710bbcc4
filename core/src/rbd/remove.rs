//! A format-2 image removed as librbd 16's removal leaves the pool, without
//! opening it. librbd 16's removal opens the image three times (a check, the
//! move to the trash, the removal from it), each time taking its exclusive
//! lock, notifying and releasing it: about 95 round trips for a clone that
//! holds no data of its own. The same removal written directly takes at most
//! eight, one after another: one compound read of the header with the object
//! map read beside it, the parent snapshot's namespace (unless the caller
//! just read it), a notification that finds any watcher, then the data
//! objects the map lists (up to 64 in flight at once), the parent snapshot's
//! link to the clone, the header with its object map, the id object and the
//! directory entry: librbd's order.
//!
//! A run stopped after any step converges when run again: until the id
//! object goes the name opens the image (short of some data, as a librbd
//! removal stopped part-way leaves it) and this removal finishes it; a
//! directory entry without its id object or header is what an unfinished
//! clone leaves too, and [`IoCtx::settle_unfinished_clone`] removes it.

use std::time::Duration;

use crate::error::Result;
use crate::rados::{ClsRead, IoCtx, Watchers};

use super::clone::{OP_CLONE_CHILD, OPERATIONS};
use super::{
    ClsReader, ExistingObjects, FLAG_OBJECT_MAP_INVALID, HEAD_SNAP, OBJECT_MAP_LOAD, ParentKnown, ParentRef,
    SnapNamespace, features, header_oid, header_replies, object_map_oid,
};

/// How long a watcher of the header has to answer the notification that
/// finds it (a live client answers in milliseconds; one that died keeps its
/// watch for up to 30 s, and librbd refuses the removal then too).
const WATCHER_ANSWER: Duration = Duration::from_secs(2);

/// The features of an image this removal takes on: what rbdx and librbd 16
/// give an image by default (operation features: only a clone's), without journaling (a journal to remove),
/// striping (objects the map does not number) or anything newer.
pub(super) const REMOVABLE: u64 = OPERATIONS
    | features::LAYERING
    | features::EXCLUSIVE_LOCK
    | features::OBJECT_MAP
    | features::FAST_DIFF
    | features::DEEP_FLATTEN
    | features::DATA_POOL;

/// The header of an image about to go, as the removal needs it.
struct Header {
    /// Its data objects' names, less the object number.
    prefix: String,
    order: u8,
    size: u64,
    /// The pool its data lives in (`None`: the image's own).
    data_pool_id: Option<i64>,
    /// The parent snapshot it is a clone of (format 2).
    parent: Option<ParentRef>,
}

/// What a removal written directly removes.
struct Doomed<'c> {
    /// The pool its data lives in (`None`: the image's own).
    data_pool_id: Option<i64>,
    /// The parent snapshot, and an I/O context on its pool (a clone's).
    parent: Option<(ParentRef, IoCtx<'c>)>,
    /// The data objects the object map lists.
    data: Vec<String>,
}

impl IoCtx<'_> {
    /// Removes image `name`, whose id the caller read as `id` and whose lock
    /// it holds, as librbd 16's removal leaves the pool (its data objects,
    /// the parent snapshot's link to it, its object map, header, id object
    /// and directory entry) without opening it. `false`, with nothing
    /// removed, for what it leaves to librbd's removal: an image with
    /// snapshots or watchers (librbd refuses those), a header this cannot
    /// read or whose object map is invalid, features other than the
    /// defaults (journaling, striping, a migration, a group), a clone of the
    /// old format, or of a snapshot in the trash namespace (librbd removes
    /// that with its last clone). A parent the caller knows to be live
    /// (`parent`) is not looked up again.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn remove_directly(&self, name: &str, id: &str, parent: ParentKnown<'_>) -> Result<bool> {
        let Some(doomed) = self.doomed(id, parent)? else { return Ok(false) };
        let _span = crate::trace::span("remove");
        match doomed.data_pool_id {
            Some(pool) => self.data_ioctx(pool)?.remove_objects(&doomed.data)?,
            None => self.remove_objects(&doomed.data)?,
        }
        crate::crash::point("remove: the data");
        if let Some((p, pio)) = &doomed.parent {
            match pio.exec_write_existing(
                &header_oid(&p.image_id),
                c"rbd",
                &[(c"child_detach", self.child_link(p.snap_id, id))],
            ) {
                // Gone, or let go of by a run stopped after this.
                Err(e) if e.is_not_found() => {}
                other => other?,
            }
            crate::crash::point("remove: the child link");
        }
        self.remove_objects(&[header_oid(id), object_map_oid(id)])?;
        crate::crash::point("remove: the header");
        self.remove_object(&format!("rbd_id.{name}"))?;
        crate::crash::point("remove: the id object");
        self.remove_from_directory(name, id)?;
        crate::crash::point("remove: the directory");
        Ok(true)
    }

    /// What [`IoCtx::remove_directly`] removes of the image with id `id`, read
    /// (traced as `headers`): its header and object map, the parent
    /// snapshot's namespace, a notification to any watcher; `None` for an
    /// image it leaves to librbd.
    fn doomed(&self, id: &str, known: ParentKnown<'_>) -> Result<Option<Doomed<'_>>> {
        let _span = crate::trace::span("headers");
        let watchers = self.ask_header_watchers(id)?;
        let (header, map) = self.read_header(id);
        let Some(header) = header? else { return Ok(None) };
        let parent = match header.parent {
            Some(p) => {
                let Some(pio) = self.parent_ioctx(&p)? else { return Ok(None) };
                let live = matches!(known, ParentKnown::Live(k) if *k == p)
                    || pio.snap_namespace_by_id(&p.image_id, p.snap_id)? == Some(SnapNamespace::User);
                if !live {
                    return Ok(None);
                }
                Some((p, pio))
            }
            None => None,
        };
        if !watchers.nobody()? {
            return Ok(None);
        }
        let Some((count, existing)) = map? else { return Ok(None) };
        if count != header.size.div_ceil(1 << header.order) {
            return Ok(None);
        }
        let data = existing.iter().map(|i| format!("{}.{i:016x}", header.prefix)).collect();
        Ok(Some(Doomed { data_pool_id: header.data_pool_id, parent, data }))
    }

    /// The header of the image with id `id` as [`IoCtx::remove_directly`]
    /// takes it on, in one compound read (features, operation features,
    /// size, object prefix, data pool, snapshot context, flags, parent link),
    /// `None` for one it leaves to librbd; and beside it, in the same round
    /// trip, its object map's existing objects
    /// ([`IoCtx::existing_objects`]).
    fn read_header(&self, id: &str) -> (Result<Option<Header>>, Result<Option<ExistingObjects>>) {
        let (oid, map_oid) = (header_oid(id), object_map_oid(id));
        let head = HEAD_SNAP.to_le_bytes().to_vec();
        let calls = [
            (c"get_features", head.clone()),
            (c"op_features_get", Vec::new()),
            (c"get_size", head.clone()),
            (c"get_object_prefix", Vec::new()),
            (c"get_data_pool", Vec::new()),
            (c"get_snapcontext", Vec::new()),
            (c"get_flags", head),
            (c"parent_get", Vec::new()),
        ];
        let [header, map] = self.exec_reads_together([
            ClsRead { oid: &oid, class: c"rbd", calls: &calls },
            ClsRead { oid: &map_oid, class: c"rbd", calls: &OBJECT_MAP_LOAD },
        ]);
        (self.decode_header(id, &oid, header_replies(header)), self.existing_in(&map_oid, map))
    }

    /// [`IoCtx::read_header`]'s header from its replies.
    fn decode_header(
        &self,
        id: &str,
        oid: &str,
        replies: Result<Option<Vec<Vec<u8>>>>,
    ) -> Result<Option<Header>> {
        // Gone (librbd clears what names it), without layering, or a header
        // without these.
        let Some(replies) = replies? else { return Ok(None) };
        let bad = || crate::Error::BadReply {
            command: format!("{}/{oid} rbd.get_features,...,parent_get", self.spec()),
            detail: "does not decode".into(),
        };
        let reply = |i: usize| ClsReader(replies.get(i).map_or(&[][..], Vec::as_slice));
        let features = reply(0).u64().ok_or_else(bad)?;
        let op_features = reply(1).u64().ok_or_else(bad)?;
        let (order, size) = {
            let mut r = reply(2);
            (r.take(1).map(|b| b[0]).ok_or_else(bad)?, r.u64().ok_or_else(bad)?)
        };
        let prefix = reply(3).string().ok_or_else(bad)?;
        let data_pool_id = reply(4).i64().ok_or_else(bad)?;
        let snapshots = {
            let mut r = reply(5);
            r.u64().ok_or_else(bad)?;
            r.u32().ok_or_else(bad)?
        };
        let flags = reply(6).u64().ok_or_else(bad)?;
        let parent = ParentRef::decode(&mut reply(7)).ok_or_else(bad)?;
        let clone_child = op_features & OP_CLONE_CHILD != 0;
        let ours = features & !REMOVABLE == 0
            && features & features::OBJECT_MAP != 0
            && flags & FLAG_OBJECT_MAP_INVALID == 0
            && op_features & !OP_CLONE_CHILD == 0
            // A format-1 clone (listed in `rbd_children`), or a flag without a link.
            && clone_child == parent.is_some()
            && snapshots == 0
            && (12..=26).contains(&order)
            // The names librbd gives an image's data (with a data pool, the
            // image pool's id first): another prefix could name another
            // image's data.
            && (prefix == format!("rbd_data.{id}") || prefix == format!("rbd_data.{}.{id}", self.pool_id()));
        let data_pool_id = (data_pool_id >= 0 && data_pool_id != self.pool_id()).then_some(data_pool_id);
        Ok(ours.then_some(Header { prefix, order, size, data_pool_id, parent }))
    }

    /// Asks whether nobody has the image with id `id` open, and returns at
    /// once: a notification to its header's watchers, which have
    /// [`WATCHER_ANSWER`] to answer ([`Watchers::nobody`] waits). What an
    /// operation written directly on the image's objects asks first, beside
    /// its reads.
    ///
    /// # Errors
    /// As [`IoCtx::ask_watchers`].
    pub(super) fn ask_header_watchers(&self, id: &str) -> Result<Watchers> {
        self.ask_watchers(&header_oid(id), WATCHER_ANSWER)
    }

    /// An I/O context on pool `id`, in this namespace: where an image with
    /// a data pool keeps its data.
    fn data_ioctx(&self, id: i64) -> Result<IoCtx<'_>> {
        let cluster = self.cluster();
        let mut io = cluster.ioctx(&cluster.pool_name(id)?)?;
        io.set_namespace(self.namespace())?;
        Ok(io)
    }
}
