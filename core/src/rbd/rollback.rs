//! An image rolled back to one of its snapshots as librbd 16's rollback
//! leaves it, without opening it. librbd's rollback opens the image
//! read-write (the header read in about ten round trips, every image above
//! a clone opened, a watch), takes its exclusive lock, writes the
//! snapshot's object map over the head's, rolls back every object that the
//! head's map or the snapshot's says may exist (`rbd_concurrent_management_ops`
//! at a time) and reads the head's map back. The same rollback written
//! directly reads the header and both maps in one round trip, asks any
//! watcher (a client that has the image open: left to librbd, which the
//! caller refuses), rolls back the objects either map lists (less, rolling
//! back to the newest snapshot, those fast-diff says are unchanged since
//! it) all at once (a window of threads: librados has no asynchronous
//! rollback) and then writes the map: the objects first, so that the map
//! never says an object is missing before it is. A re-run (the caller's
//! marker says a rollback was begun) visits every object of the image: a
//! rollback stopped after it wrote the head's map, as librbd's writes it
//! first, leaves a map that no longer lists what the head held.

use crate::error::{CephError, Result, check};
use crate::ffi::rados as sys;
use crate::rados::{ClsRead, IoCtx, cstring};

use super::clone::OP_FEATURES_ALL;
use super::remove::REMOVABLE;
use super::{
    ClsReader, FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID, HEAD_SNAP, OBJECT_EXISTS,
    OBJECT_EXISTS_CLEAN, OBJECT_MAP_LOAD, OBJECT_NONEXISTENT, OBJECT_PENDING, ObjectStates, features,
    header_oid, header_replies, object_map_oid,
};

/// Object rollbacks in flight at once, as many as librbd's with the
/// `rbd_concurrent_management_ops` rbdx connects with (librados has no
/// asynchronous rollback: each is a blocking call on a thread of its own).
const ROLLBACKS_IN_FLIGHT: usize = 64;

/// A rollback of an image to one of its snapshots, read and not yet done
/// ([`IoCtx::rollback_plan`]).
#[derive(Debug)]
pub(crate) struct RollbackPlan {
    id: String,
    snap_id: u64,
    /// The snapshot context the objects are written under (sequence, then
    /// the snapshots, newest first).
    seq: u64,
    snaps: Vec<u64>,
    /// Its data objects' names, less the object number.
    prefix: String,
    /// The pool its data lives in (`None`: the image's own).
    data_pool_id: Option<i64>,
    /// Whether every object is rolled back, else those the head's map or
    /// the snapshot's says may exist.
    every_object: bool,
    /// The head's object map and the snapshot's, as `object_map_load` gives
    /// them (the snapshot's is what the head's becomes).
    head_map: Vec<u8>,
    snap_map: Vec<u8>,
    /// The bytes of the objects the head holds, and (when the snapshot is
    /// the newest and fast-diff is valid) of those changed since it.
    held_bytes: u64,
    changed_bytes: Option<u64>,
    /// The image's size in whole objects, in bytes.
    image_bytes: u64,
    /// Fast-diff on, and neither map's states flagged invalid.
    fast_diff: bool,
}

impl RollbackPlan {
    /// Whether the rollback visits object `i`: as librbd's, when either map
    /// says it may exist, less (rolling back to the newest snapshot, with
    /// fast-diff valid) those the head's map says are unchanged since it,
    /// whose rollback would change nothing; on a re-run, always (a rollback
    /// stopped after it wrote the head's map, as librbd's writes it first,
    /// no longer lists what the head held).
    fn visits(&self, i: u64) -> bool {
        let state = |m: &[u8]| ObjectStates::decode(m).map_or(OBJECT_EXISTS, |m| m.state(i));
        let (now, then) = (state(&self.head_map), state(&self.snap_map));
        let unchanged =
            self.changed_bytes.is_some() && now == OBJECT_EXISTS_CLEAN && then != OBJECT_NONEXISTENT;
        self.every_object || ((now != OBJECT_NONEXISTENT || then != OBJECT_NONEXISTENT) && !unchanged)
    }

    /// The image's size in whole objects, in bytes: a rollback visits no
    /// more than that.
    pub(crate) fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    /// Whether the maps' fast-diff states can be trusted.
    pub(crate) fn fast_diff_valid(&self) -> bool {
        self.fast_diff
    }

    /// What the head holds and what changed since the snapshot, in bytes
    /// (whole objects, as a whole-object diff counts them); `None` where
    /// the maps cannot tell what changed (a snapshot that is not the newest,
    /// fast-diff off or invalid).
    pub(crate) fn held_and_changed(&self) -> Option<u64> {
        self.changed_bytes.map(|c| self.held_bytes.saturating_add(c))
    }
}

impl IoCtx<'_> {
    /// What rolling the image with id `id` back to its snapshot `snap_id`
    /// visits (`every_object`: all of them, else those either object map
    /// says may exist), read in one round trip (the header's features, flags, sizes,
    /// object prefix, data pool and snapshot context, beside the head's and
    /// the snapshot's object maps), then a notification that finds any
    /// watcher. `None`, having changed nothing, for what it leaves to
    /// librbd: a client has the image open, the snapshot's size differs from
    /// the head's (librbd resizes first), no object map or an invalid one,
    /// features other than the defaults (journaling, striping, a migration).
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a reply that does not decode.
    pub(crate) fn rollback_plan(
        &self,
        id: &str,
        snap_id: u64,
        every_object: bool,
    ) -> Result<Option<RollbackPlan>> {
        let _span = crate::trace::span("headers");
        let (oid, head_map) = (header_oid(id), object_map_oid(id));
        let snap_map = format!("{head_map}.{snap_id:016x}");
        let watchers = self.ask_header_watchers(id)?;
        let (head, snap) = (HEAD_SNAP.to_le_bytes().to_vec(), snap_id.to_le_bytes().to_vec());
        let calls = [
            (c"get_features", head.clone()),
            (c"op_features_get", Vec::new()),
            (c"get_size", head.clone()),
            (c"get_size", snap.clone()),
            (c"get_flags", head),
            (c"get_flags", snap),
            (c"get_object_prefix", Vec::new()),
            (c"get_data_pool", Vec::new()),
            (c"get_snapcontext", Vec::new()),
        ];
        let [header, head_reply, snap_reply] = self.exec_reads_together([
            ClsRead { oid: &oid, class: c"rbd", calls: &calls },
            ClsRead { oid: &head_map, class: c"rbd", calls: &OBJECT_MAP_LOAD },
            ClsRead { oid: &snap_map, class: c"rbd", calls: &OBJECT_MAP_LOAD },
        ]);
        let map = |r: Result<Vec<Vec<u8>>>| match r {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(|mut v| v.pop()),
        };
        // A header without these (or gone), or a map missing.
        let (Some(replies), Some(head_map_bytes), Some(snap_map_bytes)) =
            (header_replies(header)?, map(head_reply)?, map(snap_reply)?)
        else {
            return Ok(None);
        };
        let bad = |what: &str| crate::Error::BadReply {
            command: format!("{}/{what}", self.spec()),
            detail: "does not decode".into(),
        };
        let reply = |i: usize| ClsReader(replies.get(i).map_or(&[][..], Vec::as_slice));
        let features = reply(0).u64().ok_or_else(|| bad(&oid))?;
        let op_features = reply(1).u64().ok_or_else(|| bad(&oid))?;
        let size = |i: usize| {
            let mut r = reply(i);
            Some((r.take(1)?[0], r.u64()?))
        };
        let ((order, head_size), (_, snap_size)) =
            (size(2).ok_or_else(|| bad(&oid))?, size(3).ok_or_else(|| bad(&oid))?);
        let (head_flags, snap_flags) =
            (reply(4).u64().ok_or_else(|| bad(&oid))?, reply(5).u64().ok_or_else(|| bad(&oid))?);
        let prefix = reply(6).string().ok_or_else(|| bad(&oid))?;
        let data_pool_id = reply(7).i64().ok_or_else(|| bad(&oid))?;
        let (seq, mut snaps) = {
            let mut r = reply(8);
            let seq = r.u64().ok_or_else(|| bad(&oid))?;
            let n = r.u32().ok_or_else(|| bad(&oid))?;
            let snaps: Option<Vec<u64>> = (0..n).map(|_| r.u64()).collect();
            (seq, snaps.ok_or_else(|| bad(&oid))?)
        };
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        let now = ObjectStates::decode(&head_map_bytes).ok_or_else(|| bad(&head_map))?;
        let then = ObjectStates::decode(&snap_map_bytes).ok_or_else(|| bad(&snap_map))?;
        let object_size = 1u64 << order.min(63);
        let count = head_size.div_ceil(object_size);
        let ours = features & !REMOVABLE == 0
            && features & features::OBJECT_MAP != 0
            && op_features & !OP_FEATURES_ALL == 0
            && (head_flags | snap_flags) & FLAG_OBJECT_MAP_INVALID == 0
            && head_size == snap_size
            && snaps.contains(&snap_id)
            && (12..=26).contains(&order)
            && now.len() == count
            && then.len() == count
            && (prefix == format!("rbd_data.{id}") || prefix == format!("rbd_data.{}.{id}", self.pool_id()));
        if !ours {
            return Ok(None);
        }
        let len = |i: u64| object_size.min(head_size - i * object_size);
        let held_bytes =
            (0u64..).zip(now.states()).filter(|(_, s)| *s != OBJECT_NONEXISTENT).map(|(i, _)| len(i)).sum();
        // What a whole-object diff from the newest snapshot lists: objects
        // written since (the head's map marks them) and those gone since.
        let fast_diff =
            features & features::FAST_DIFF != 0 && (head_flags | snap_flags) & FLAG_FAST_DIFF_INVALID == 0;
        let changed_bytes = (fast_diff && snaps.first() == Some(&snap_id)).then(|| {
            (0u64..)
                .zip(now.states().zip(then.states()))
                .filter(|(_, (n, t))| {
                    *n == OBJECT_EXISTS
                        || *n == OBJECT_PENDING
                        || (*n == OBJECT_NONEXISTENT && *t != OBJECT_NONEXISTENT)
                })
                .map(|(i, _)| len(i))
                .sum()
        });
        if !watchers.nobody()? {
            return Ok(None);
        }
        let data_pool_id = (data_pool_id >= 0 && data_pool_id != self.pool_id()).then_some(data_pool_id);
        Ok(Some(RollbackPlan {
            id: id.to_string(),
            snap_id,
            seq,
            snaps,
            prefix,
            data_pool_id,
            every_object,
            head_map: head_map_bytes,
            snap_map: snap_map_bytes,
            held_bytes,
            changed_bytes,
            image_bytes: count.saturating_mul(object_size),
            fast_diff,
        }))
    }

    /// Rolls the image back as `plan` says (traced as `rollback`): each
    /// object it lists back to the snapshot (under the image's snapshot
    /// context, as librbd writes), all in flight at once, then the
    /// snapshot's object map written as the head's (cls
    /// `rbd.object_map_save`). The caller holds the image's lock and has
    /// marked the rollback begun; a run stopped part-way is finished by
    /// the same plan read again.
    ///
    /// # Errors
    /// Ceph errors (an object's rollback, the map's write).
    pub(crate) fn rollback_directly(&self, plan: &RollbackPlan) -> Result<()> {
        let _span = crate::trace::span("rollback");
        let pool = match plan.data_pool_id {
            Some(id) => self.cluster().pool_name(id)?,
            None => self.pool().to_string(),
        };
        let count = ObjectStates::decode(&plan.head_map).map_or(0, |m| m.len());
        // The objects to visit, listed unless that is every one (a re-run
        // of a large image: listing them would cost memory, not time).
        let listed: Option<Vec<u64>> =
            (!plan.every_object).then(|| (0..count).filter(|&i| plan.visits(i)).collect());
        let visits = listed.as_ref().map_or(count, |l| l.len() as u64);
        let object = |k: u64| listed.as_ref().map_or(k, |l| l[usize::try_from(k).unwrap_or(usize::MAX)]);
        let threads = usize::try_from(visits).unwrap_or(usize::MAX).min(ROLLBACKS_IN_FLIGHT);
        let (cluster, namespace, object) = (self.cluster(), self.namespace(), &object);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let pool = &pool;
                    s.spawn(move || -> Result<()> {
                        let mut io = cluster.ioctx(pool)?;
                        io.set_namespace(namespace)?;
                        io.set_write_context(plan.seq, &plan.snaps)?;
                        for k in (t as u64..visits).step_by(threads) {
                            let oid = format!("{}.{:016x}", plan.prefix, object(k));
                            io.selfmanaged_snap_rollback(&oid, plan.snap_id)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        results.into_iter().collect::<Result<()>>()?;
        crate::crash::point("rollback: the objects");
        let map_oid = object_map_oid(&plan.id);
        self.exec_write_existing(&map_oid, c"rbd", &[(c"object_map_save", plan.snap_map.clone())])?;
        crate::crash::point("rollback: the object map");
        Ok(())
    }

    /// Writes from now on under snapshot context `seq`, `snaps` (newest
    /// first), as librbd writes an image's data.
    fn set_write_context(&self, seq: u64, snaps: &[u64]) -> Result<()> {
        let mut snaps = snaps.to_vec();
        let n = libc::c_int::try_from(snaps.len())
            .map_err(|_| crate::Error::Invalid(format!("{}: too many snapshots", self.spec())))?;
        // SAFETY: `self.raw()` is live; `snaps` holds `n` ids and outlives the
        // call (librados copies them).
        let r = unsafe {
            sys::rados_ioctx_selfmanaged_snap_set_write_ctx(self.raw(), seq, snaps.as_mut_ptr(), n)
        };
        check(r.into(), "rados_ioctx_selfmanaged_snap_set_write_ctx", || self.spec()).map(drop)
    }

    /// Rolls object `oid` back to snapshot `snap_id` (an object neither the
    /// head nor the snapshot has is not an error).
    fn selfmanaged_snap_rollback(&self, oid: &str, snap_id: u64) -> Result<()> {
        let o = cstring("object name", oid)?;
        // SAFETY: `self.raw()` is live; `o` outlives the call.
        let r = unsafe { sys::rados_ioctx_selfmanaged_snap_rollback(self.raw(), o.as_ptr(), snap_id) };
        if r == -libc::ENOENT {
            return Ok(());
        }
        if r < 0 {
            return Err(CephError::new(
                "rados_ioctx_selfmanaged_snap_rollback",
                r.into(),
                format!("{}/{oid}", self.spec()),
            )
            .into());
        }
        Ok(())
    }
}
