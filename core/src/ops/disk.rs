//! The disk snapshot scheme shared by every driver: snapshots you can revert to in
//! time independent of the image size, and delete in any order afterwards.
//!
//! A *disk* is the image a hypervisor uses (the *head*, whose name the cloud
//! platform fixes) plus the *carriers*: former heads that still hold snapshots.
//!
//! - **Create** takes an RBD snapshot of the head.
//! - **Revert to S** clones the image holding `S` into a new head (O(1): no data is
//!   copied), then turns the old head into a carrier if it holds snapshots, or
//!   removes it if not, and renames the clone into place. When the new head's
//!   clone chain would exceed [`DiskConfig::max_depth`], it is flattened. When the
//!   head itself holds `S` and holds little data (object map: at most
//!   [`DiskConfig::rollback_max_bytes`] in the head and changed since `S`), it is
//!   rolled back in place instead: cheaper there, and no carrier or clone link.
//! - **Delete S** removes the RBD snapshot wherever it lives. If clones still read
//!   from it (a later head, a save-as image), clone format 2 moves it to the
//!   trash namespace and librbd frees it with its last child; with format 1 the
//!   disk's own children are flattened first. A carrier left with no snapshot and
//!   no child is removed.
//! - **Remove** deletes the head and every carrier; an image that clones outside
//!   the disk still read from is moved to the RBD trash, marked for reclaim, and
//!   freed by [`reclaim`] once its last child is gone.
//!
//! Bookkeeping lives in RBD image metadata, never in names:
//! - every image of the disk has [`KEY_DISK`] = the head's name;
//! - the head has `rbdx.snap.<name>` = the image holding snapshot `<name>`, and
//!   `rbdx.carrier.<image>` for every carrier still alive.
//!
//! Names come from the caller's [`Naming`]: where a revert moves the old head, and
//! which images without rbdx's metadata belong to a disk by name alone (disks
//! another driver made before rbdx, adopted on first use: their carriers are found
//! by following parent and child links, each name checked against the naming's
//! exact form, and the metadata is written). Core knows no orchestrator's names:
//! [`RBDX_NAMING`] derives every name from the head with a `.rbdx-` infix and
//! adopts nothing. An image whose metadata names another disk never belongs to
//! this one, whatever its name.
//!
//! Every operation can be interrupted anywhere and re-run with the same arguments;
//! it converges to the state an uninterrupted run leaves.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, ErrorKind, Result};
use crate::lock::LockedImage;
use crate::rados::{Cluster, IoCtx};
use crate::rbd::{CloneSource, Image, ParentKnown, ParentRef, SnapNamespace, Snapshot, Unfinished};

use super::{CloneFormat, ImageSpec, cluster_clone_format, ioctx};

/// Metadata key naming the disk (head) an image belongs to.
pub const KEY_DISK: &str = "rbdx.disk";
/// Prefix of the head's keys mapping a snapshot to the image that holds it.
pub const KEY_SNAP_PREFIX: &str = "rbdx.snap.";
/// Prefix of the head's keys listing live carriers.
pub const KEY_CARRIER_PREFIX: &str = "rbdx.carrier.";
/// On an image moved to the trash because clones still read from it: free it
/// once they are gone.
pub const KEY_RECLAIM: &str = "rbdx.reclaim";
/// Prefix of the keys on an image put in a disk's place ([`Disk::replace_with`])
/// naming the old disk's images still to remove.
pub const KEY_REPLACED_PREFIX: &str = "rbdx.replaced.";
/// On the clone a revert is building: the snapshot it reverts to.
const KEY_REVERT_TO: &str = "rbdx.revert.to";
/// On a head being rolled back in place: the snapshot (a re-run finishes the
/// rollback whatever the data would now suggest).
const KEY_ROLLBACK_TO: &str = "rbdx.rollback.to";
/// On the clone a revert is building: what the old head becomes (`""`: removed).
const KEY_REVERT_CARRIER: &str = "rbdx.revert.carrier";

/// Default bound on a clone chain (head → carriers → base image). ceph-csi uses 8
/// as its hard limit.
pub const DEFAULT_MAX_DEPTH: u32 = 8;

/// What happens to a disk's image that clones outside the disk (save-as images)
/// still read from, when the disk is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reclaim {
    /// Move it to the RBD trash; [`reclaim`] frees it once its last clone is gone
    /// (the monitor action runs it periodically). Deleting the disk is O(1).
    #[default]
    Trash,
    /// Flatten those clones now (O(their data)) and remove the image at once.
    Flatten,
}

/// How the scheme creates images and reclaims space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Data pool for every image the scheme creates (new heads on revert).
    pub data_pool: Option<String>,
    /// Clone format for reverts.
    pub clone_format: CloneFormat,
    /// Longest clone chain allowed above a head before it is flattened.
    pub max_depth: u32,
    /// A revert to a snapshot the head itself holds rolls the head back in place
    /// (`rbd_snap_rollback`) when the rollback visits at most this many bytes
    /// (see [`Disk::revert`]); 0: always the clone swap.
    pub rollback_max_bytes: u64,
    /// A save of the head as it is now ([`Disk::save_now`]) copies the head's
    /// own data into the new image, where it would otherwise take a snapshot,
    /// when the head holds at most this many bytes of its own and no other
    /// client has it open; 0: always the snapshot.
    pub copy_max_bytes: u64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            data_pool: None,
            clone_format: CloneFormat::Auto,
            max_depth: DEFAULT_MAX_DEPTH,
            rollback_max_bytes: DEFAULT_ROLLBACK_MAX_BYTES,
            copy_max_bytes: DEFAULT_COPY_MAX_BYTES,
        }
    }
}

/// Default [`DiskConfig::copy_max_bytes`]: 64 MiB. A new snapshot waits for an
/// OSD map update (0.4–1 s on the 3-OSD test cluster, about the monitors'
/// `paxos_propose_interval` on any cluster); copying 64 MiB of a head's own
/// objects takes about 0.2 s there.
pub const DEFAULT_COPY_MAX_BYTES: u64 = 64 << 20;

/// Default [`DiskConfig::rollback_max_bytes`]: 2 GiB. A rollback costs a round
/// trip per object the head holds (about 0.35 ms each on the 3-OSD test
/// cluster, 10 in flight) and a copy per object changed since the snapshot
/// (about 0.2 ms more). A revert by clone swap takes about 75 ms there (the
/// whole action) plus what the old head leaves: it is removed when it holds no
/// snapshot, O(its own data) (always swapping, the benchmark's repeated
/// reverts took 143 ms at 1 GiB with 256 MiB rewritten and 949 ms at 8 GiB
/// with 4 GiB rewritten, against 110–140 ms and 530 ms in place), or kept as
/// a carrier with that data, the chain one clone level deeper. In place up to
/// 512 objects of 4 MiB.
pub const DEFAULT_ROLLBACK_MAX_BYTES: u64 = 2 << 30;

/// The name of the clone a revert builds before renaming it into place.
pub fn revert_temp_name(head: &str) -> String {
    format!("{head}.rbdx-new")
}

/// The name of the image a save by copy ([`Disk::save_now`]) fills before
/// renaming it into place.
pub fn copy_temp_name(target: &str) -> String {
    format!("{target}.rbdx-copy")
}

/// How a driver names its disks' images.
pub trait Naming: Sync + std::fmt::Debug {
    /// The name the head `head`, holding snapshots `snaps` (RBD id, name), gets
    /// when a revert turns it into a carrier.
    fn carrier(&self, head: &str, snaps: &[(u64, String)]) -> String {
        rbdx_carrier(head, snaps)
    }

    /// True if `name`, an image with no rbdx metadata, is a carrier of `head` made
    /// by another driver (adopted, and removed with the disk). Only names that
    /// start with `head` can be: a disk looks for its images among those.
    fn is_foreign_carrier(&self, _head: &str, _name: &str) -> bool {
        false
    }

    /// True if snapshots found on the head but not in the disk's book may have
    /// been taken by someone else on the driver's behalf (a hypervisor taking a
    /// running disk's snapshots itself): those [`Naming::adopts_snapshot`]
    /// accepts join the disk's snapshots.
    fn adopts_snapshots(&self) -> bool {
        false
    }

    /// Whether head snapshot `name` is adopted (see [`Naming::adopts_snapshots`]).
    fn adopts_snapshot(&self, _name: &str) -> bool {
        self.adopts_snapshots()
    }
}

/// rbdx's own names: carriers `<head>.rbdx-c<id>`; nothing is adopted by name.
#[derive(Debug, Clone, Copy)]
pub struct RbdxNaming;

impl Naming for RbdxNaming {}

/// The naming of disks whose names rbdx alone derives (no other driver made them).
pub static RBDX_NAMING: RbdxNaming = RbdxNaming;

/// `<head>.rbdx-c<RBD id of the newest snapshot>` (RBD snapshot ids are unique
/// within a pool).
pub fn rbdx_carrier(head: &str, snaps: &[(u64, String)]) -> String {
    let newest = snaps.iter().map(|(id, _)| *id).max().unwrap_or(0);
    format!("{head}.rbdx-c{newest}")
}

/// True if `name` is derived from `head` by rbdx (`<head>.rbdx-…`).
fn rbdx_derived(head: &str, name: &str) -> bool {
    name.strip_prefix(head).is_some_and(|r| r.starts_with(".rbdx-"))
}

/// One snapshot of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSnapshot {
    /// Snapshot name.
    pub name: String,
    /// The image holding it (the head or a carrier).
    pub holder: String,
}

/// A disk: a head image and its carriers, in one pool and namespace.
#[derive(Debug)]
pub struct Disk<'c> {
    cluster: &'c Cluster,
    head: ImageSpec,
    naming: &'static dyn Naming,
}

/// The snapshot map and carriers as recorded on the head.
#[derive(Debug, Default)]
struct Book {
    snaps: BTreeMap<String, String>,
    carriers: BTreeSet<String>,
}

impl Book {
    fn read(img: &crate::Image<'_>) -> Result<Self> {
        Ok(Self::of(&img.metadata_list("rbdx.")?))
    }

    /// The book in a head's `rbdx.` keys.
    fn of(keys: &[(String, String)]) -> Self {
        let mut b = Self::default();
        for (k, v) in keys {
            if let Some(s) = k.strip_prefix(KEY_SNAP_PREFIX) {
                b.snaps.insert(s.to_string(), v.clone());
            } else if let Some(c) = k.strip_prefix(KEY_CARRIER_PREFIX) {
                b.carriers.insert(c.to_string());
            }
        }
        b
    }
}

impl<'c> Disk<'c> {
    /// The disk whose head is `head` (which need not exist yet), named by `naming`.
    pub fn new(cluster: &'c Cluster, head: ImageSpec, naming: &'static dyn Naming) -> Self {
        Self { cluster, head: head.head(), naming }
    }

    /// Whether image `name` (not the head) belongs to this disk: its metadata says
    /// so, or, without metadata, the naming adopts it (or it is a name rbdx derives
    /// from the head, left by an interrupted run before its metadata was written;
    /// a clone such a run stopped before its last step is settled first).
    fn owns(&self, io: &IoCtx<'_>, name: &str) -> Result<bool> {
        let head = &self.head.name;
        if !rbdx_derived(head, name) && !self.naming.is_foreign_carrier(head, name) {
            return Ok(false);
        }
        let owner = match io.open_read_only(name, None) {
            Ok(img) => img.metadata_get(KEY_DISK)?,
            // A clone an interrupted run of this disk stopped before its last
            // step (the disk's guard keeps any other run out): finished, then
            // judged, or removed where nothing links it yet.
            Err(e) if e.is_not_found() && rbdx_derived(head, name) => {
                return match io.settle_unfinished_clone(name)? {
                    Unfinished::Finished => self.owns(io, name),
                    Unfinished::Removed | Unfinished::No => Ok(false),
                };
            }
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(owner.is_none_or(|o| o == *head))
    }

    /// The head's spec.
    pub fn head(&self) -> &ImageSpec {
        &self.head
    }

    fn io(&self) -> Result<IoCtx<'c>> {
        ioctx(self.cluster, &self.head)
    }

    /// Runs one whole disk operation holding the disk's guard (waiting for
    /// another operation on the disk; see [`crate::lock::Guard`]).
    fn guarded<T>(&self, op: impl FnOnce(&IoCtx<'c>) -> Result<T>) -> Result<T> {
        let io = self.io()?;
        // The OSDs holding what the operation reads first (the head's id
        // object, the pool directory) are reached while the guard is taken:
        // a client's first request to an OSD opens its session there.
        let id_object = format!("rbd_id.{}", self.head.name);
        let reaching = io.reach(&[&id_object, crate::rbd::RBD_DIRECTORY]);
        let guard = io.guard(&self.head.name)?;
        drop(reaching);
        let out = op(&io)?;
        guard.release()?;
        Ok(out)
    }

    /// Whether image `name` exists: its id object answers in one OSD read where
    /// an open takes several; without it (an image of another format), the open
    /// decides.
    fn exists(io: &IoCtx<'_>, name: &str) -> Result<bool> {
        if has_id_object(io, name)? {
            return Ok(true);
        }
        match io.open_read_only(name, None) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Finishes a revert that was interrupted after the old head was moved away.
    fn recover(&self, io: &IoCtx<'_>) -> Result<()> {
        if Self::exists(io, &self.head.name)? {
            return Ok(());
        }
        let temp = revert_temp_name(&self.head.name);
        if Self::exists(io, &temp)? {
            finish_revert(io, &temp, &self.head.name)?;
        }
        Ok(())
    }

    /// Reads the bookkeeping, adopting a disk made by other drivers (no metadata)
    /// by walking its parent and child links.
    fn book(&self, io: &IoCtx<'_>) -> Result<Book> {
        Ok(self.book_and_head(io)?.0)
    }

    /// [`Self::book`], and the head opened read-write to read it (one open
    /// for the whole operation).
    fn book_and_head<'io>(&self, io: &'io IoCtx<'_>) -> Result<(Book, LockedImage<'io>)> {
        let head = match io.open(&self.head.name) {
            // No head: an interrupted revert may have it under its temporary name.
            Err(e) if e.is_not_found() => {
                self.recover(io)?;
                io.open(&self.head.name)?
            }
            other => other?,
        };
        let keys = head.metadata_list("rbdx.")?;
        if keys.iter().any(|(k, v)| k == KEY_DISK && *v == self.head.name) {
            let mut book = Book::of(&keys);
            self.prune(io, &head, &mut book)?;
            self.adopt_head_snapshots(&head, &mut book)?;
            return Ok((book, head));
        }
        // No book, or one that is not this head's (copied by a clone, or left
        // from another name): start from what the images say.
        let stale: Vec<&str> = keys
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k == KEY_DISK || k.starts_with(KEY_SNAP_PREFIX) || k.starts_with(KEY_CARRIER_PREFIX))
            .collect();
        head.edit_metadata(&stale, &[])?;
        // Adopt: the carriers are the head's ancestors and their descendants whose
        // names the naming adopts.
        let name = &self.head.name;
        let mut root = name.clone();
        loop {
            let parent =
                if root == *name { head.parent()? } else { io.open_read_only(&root, None)?.parent()? };
            match parent {
                Some(p) if p.image.pool == io.pool() && !p.image.trash && self.owns(io, &p.image.name)? => {
                    root = p.image.name;
                }
                _ => break,
            }
        }
        let mut carriers = BTreeSet::new();
        let mut todo = vec![root];
        while let Some(n) = todo.pop() {
            if n != *name && !carriers.insert(n.clone()) {
                continue;
            }
            let snaps =
                if n == *name { head.snapshots()? } else { io.open_read_only(&n, None)?.snapshots()? };
            for s in snaps {
                let at = io.open_read_only(&n, Some(&s.name))?;
                for child in at.children()? {
                    if child.pool == io.pool() && !child.trash && self.owns(io, &child.name)? {
                        todo.push(child.name);
                    }
                }
            }
        }
        let mut book = Book::default();
        for holder in carriers.iter().chain(std::iter::once(name)) {
            let carrier;
            let img: &crate::Image<'_> = if holder == name {
                &head
            } else {
                carrier = io.open(holder)?;
                &carrier
            };
            for s in user_snapshots(img)? {
                book.snaps.insert(s.name, holder.clone());
            }
            // The head's mark comes last: it says its book is complete.
            if holder != name {
                img.metadata_set(KEY_DISK, name)?;
            }
        }
        for c in &carriers {
            head.metadata_set(&format!("{KEY_CARRIER_PREFIX}{c}"), "")?;
        }
        for (s, holder) in &book.snaps {
            head.metadata_set(&format!("{KEY_SNAP_PREFIX}{s}"), holder)?;
        }
        book.carriers = carriers;
        head.metadata_set(KEY_DISK, name)?;
        Ok((book, head))
    }

    /// Enters the head's snapshots that the naming adopts and the book lacks.
    fn adopt_head_snapshots(&self, head: &crate::Image<'_>, book: &mut Book) -> Result<()> {
        for s in self.unbooked(head, book)? {
            head.metadata_set(&format!("{KEY_SNAP_PREFIX}{s}"), &self.head.name)?;
            book.snaps.insert(s, self.head.name.clone());
        }
        Ok(())
    }

    /// The head's snapshots that the naming adopts and the book lacks.
    fn unbooked(&self, head: &crate::Image<'_>, book: &Book) -> Result<Vec<String>> {
        let mut found = Vec::new();
        if !self.naming.adopts_snapshots() {
            return Ok(found);
        }
        for s in head.snapshots()? {
            if book.snaps.contains_key(&s.name)
                || !self.naming.adopts_snapshot(&s.name)
                || head.snap_namespace(s.id)? != SnapNamespace::User
            {
                continue;
            }
            found.push(s.name);
        }
        Ok(found)
    }

    /// Drops book entries an interrupted run left behind: snapshots that are no
    /// longer where the book says (removed before the key was).
    fn prune(&self, io: &IoCtx<'_>, head: &crate::Image<'_>, book: &mut Book) -> Result<()> {
        for s in self.stale(io, head, book)? {
            head.metadata_remove(&format!("{KEY_SNAP_PREFIX}{s}"))?;
            book.snaps.remove(&s);
        }
        Ok(())
    }

    /// The book's snapshots that are no longer where it says.
    fn stale(&self, io: &IoCtx<'_>, head: &crate::Image<'_>, book: &Book) -> Result<Vec<String>> {
        let mut present: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for holder in book.snaps.values() {
            if present.contains_key(holder) {
                continue;
            }
            let user_snaps = |img: &crate::Image<'_>| -> Result<BTreeSet<String>> {
                Ok(user_snapshots(img)?.into_iter().map(|s| s.name).collect())
            };
            let names = if *holder == self.head.name {
                user_snaps(head)?
            } else {
                match io.open_read_only(holder, None) {
                    Ok(img) => user_snaps(&img)?,
                    Err(e) if e.is_not_found() => BTreeSet::new(),
                    Err(e) => return Err(e),
                }
            };
            present.insert(holder.clone(), names);
        }
        Ok(book
            .snaps
            .iter()
            .filter(|(s, h)| !present.get(*h).is_some_and(|names| names.contains(*s)))
            .map(|(s, _)| s.clone())
            .collect())
    }

    /// Every snapshot of the disk with the image holding it, by name.
    ///
    /// # Errors
    /// `NotFound` if the disk does not exist.
    pub fn snapshots(&self) -> Result<Vec<DiskSnapshot>> {
        let book = self.guarded(|io| self.book(io))?;
        Ok(book.snaps.into_iter().map(|(name, holder)| DiskSnapshot { name, holder }).collect())
    }

    /// The image holding snapshot `snap`, or `None`.
    ///
    /// # Errors
    /// `NotFound` if the disk does not exist.
    pub fn locate(&self, snap: &str) -> Result<Option<String>, crate::Error> {
        let book = self.guarded(|io| self.book(io))?;
        Ok(book.snaps.get(snap).cloned())
    }

    /// Takes snapshot `snap` of the head. Taking one that exists on the head is a
    /// no-op (a re-run); a name held by a carrier is refused.
    ///
    /// # Errors
    /// `Exists` if a carrier already holds `snap`; `NotFound` for a missing disk.
    pub fn snapshot_create(&self, snap: &str) -> Result<()> {
        super::validate_name("snapshot", snap)?;
        self.guarded(|io| self.snapshot_create_in(io, snap))
    }

    fn snapshot_create_in(&self, io: &IoCtx<'c>, snap: &str) -> Result<()> {
        let (mut book, head) = self.book_and_head(io)?;
        self.take_snapshot(&head, &mut book, snap)
    }

    /// Takes `snap` of the open `head` (one it has already is kept) and enters it
    /// in the book; a name held by a carrier is refused.
    fn take_snapshot(&self, head: &Image<'_>, book: &mut Book, snap: &str) -> Result<()> {
        if let Some(holder) = book.snaps.get(snap) {
            if *holder != self.head.name {
                return Err(Error::Exists(format!(
                    "snapshot {snap} of {} already exists (held by {holder})",
                    self.head
                )));
            }
        }
        match head.snap_create(snap) {
            Err(e) if e.is_exists() => {}
            other => other?,
        }
        head.metadata_set(&format!("{KEY_SNAP_PREFIX}{snap}"), &self.head.name)?;
        book.snaps.insert(snap.to_string(), self.head.name.clone());
        Ok(())
    }

    /// Deletes snapshot `snap` wherever it lives. Deleting one that is gone is a
    /// no-op.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid snapshot name; `NotFound` for a missing
    /// disk; Ceph errors.
    pub fn snapshot_delete(&self, snap: &str) -> Result<()> {
        super::validate_name("snapshot", snap)?;
        self.guarded(|io| self.snapshot_delete_in(io, snap))
    }

    fn snapshot_delete_in(&self, io: &IoCtx<'c>, snap: &str) -> Result<()> {
        let (book, head) = self.book_and_head(io)?;
        let key = format!("{KEY_SNAP_PREFIX}{snap}");
        let Some(holder) = book.snaps.get(snap) else {
            return head.metadata_remove(&key);
        };
        if *holder == self.head.name {
            remove_snapshot_of(self.cluster, io, &head, snap)?;
        } else {
            remove_snapshot(self.cluster, io, holder, snap)?;
        }
        head.metadata_remove(&key)?;
        self.collect_carriers(io, &head.id()?, &book.carriers)
    }

    /// [`Self::collect_carriers`] of every carrier in the book.
    fn collect_all_carriers(&self, io: &IoCtx<'_>) -> Result<()> {
        let (book, head) = self.book_and_head(io)?;
        self.collect_carriers(io, &head.id()?, &book.carriers)
    }

    /// Removes carriers that hold no snapshot and feed no clone, and their
    /// keys from the book of the head (image id `head_id`). Read from the
    /// headers, without opening an image (an open and its close cost 10 ms
    /// and more: the clone swap of a revert made three).
    fn collect_carriers(&self, io: &IoCtx<'_>, head_id: &str, carriers: &BTreeSet<String>) -> Result<()> {
        let mut gone = Vec::new();
        for c in carriers {
            let free = match io.image_id(c)? {
                None => true,
                Some(id) => match io.snapshots_by_id(&id) {
                    Err(e) if e.is_not_found() => true,
                    Err(e) => return Err(e),
                    // Any snapshot, trashed ones too (clones still read them).
                    Ok(snaps) if !snaps.is_empty() => false,
                    Ok(_) => match io.remove_image_with_id(c, &id) {
                        Ok(()) => true,
                        Err(e) if e.is_not_found() => true,
                        // Still in use or got a snapshot meanwhile: later.
                        Err(e) if matches!(e.kind(), Some(ErrorKind::Busy | ErrorKind::NotEmpty)) => false,
                        Err(e) => return Err(e),
                    },
                },
            };
            if free {
                gone.push(format!("{KEY_CARRIER_PREFIX}{c}"));
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
        io.edit_metadata_by_id(head_id, &gone, &[])
    }

    /// The revert in place without an open of the head: its header and
    /// object maps read, the rollback written directly
    /// ([`IoCtx::rollback_directly`]) between the marker's write and its
    /// removal, as the open path does it. `false`, having changed nothing,
    /// where the open path decides: the head does not hold `snap`, a book
    /// to mend, a rollback to another snapshot interrupted, a client has
    /// the head open, the clone swap is cheaper (or the maps cannot tell),
    /// anything librbd's rollback does that this does not (a resize, a map
    /// to rebuild).
    fn revert_directly(&self, io: &IoCtx<'c>, snap: &str, cfg: &DiskConfig) -> Result<bool> {
        let name = &self.head.name;
        let Some(head) = io.read_clone_source(name)? else { return Ok(false) };
        let Some((book, keys)) = self.current_book(&head) else { return Ok(false) };
        let pending = keys.iter().find(|(k, _)| k == KEY_ROLLBACK_TO).map(|(_, v)| v.as_str());
        let Some(target) = head.snapshot(snap) else { return Ok(false) };
        if book.snaps.get(snap) != Some(name) || pending.is_some_and(|p| p != snap) {
            return Ok(false);
        }
        let snap_id = target.snap.id;
        io.with_image_lock(&head.id, name, || {
            let Some(plan) = io.rollback_plan(&head.id, snap_id, pending.is_some())? else {
                return Ok((false, Vec::new()));
            };
            let max = cfg.rollback_max_bytes;
            let in_place = pending.is_some()
                || (max != 0
                    && plan.fast_diff_valid()
                    && (plan.image_bytes().saturating_mul(2) <= max
                        || plan.held_and_changed().is_some_and(|b| b <= max)));
            if !in_place {
                return Ok((false, Vec::new()));
            }
            // Marked first, as the open path marks it; unmarked in the write
            // that releases the lock.
            if pending.is_none() {
                io.edit_metadata_by_id(&head.id, &[], &[(KEY_ROLLBACK_TO, snap)])?;
            }
            io.rollback_directly(&plan)?;
            Ok((true, crate::rbd::metadata_calls(&[KEY_ROLLBACK_TO], &[])?))
        })
    }

    /// Reverts the head to snapshot `snap` in time independent of the image size
    /// (the clone swap), or in place when the head holds `snap` and a rollback
    /// visits at most [`DiskConfig::rollback_max_bytes`]. What the head held that
    /// no snapshot keeps is discarded, as a revert means.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown snapshot; [`Error::InUse`] while a client
    /// has the head open.
    pub fn revert(&self, snap: &str, cfg: &DiskConfig) -> Result<()> {
        super::check_data_pool(self.cluster, cfg.data_pool.as_deref())?;
        self.guarded(|io| self.revert_in(io, snap, cfg))
    }

    fn revert_in(&self, io: &IoCtx<'c>, snap: &str, cfg: &DiskConfig) -> Result<()> {
        if self.revert_directly(io, snap, cfg)? {
            return Ok(());
        }
        // One read-write open of the head serves the whole rollback in place,
        // and everything the clone swap reads from the head.
        let (book, h) = self.book_and_head(io)?;
        let holder = book
            .snaps
            .get(snap)
            .ok_or_else(|| Error::NotFound(format!("{} has no snapshot {snap}", self.head)))?
            .clone();
        let name = self.head.name.clone();
        super::refuse_in_use(&h, &self.head)?;
        let pending = h.metadata_get(KEY_ROLLBACK_TO)?;
        if holder == name
            && (pending.as_deref() == Some(snap) || rollback_is_cheaper(&h, snap, cfg.rollback_max_bytes)?)
        {
            // Marked first, so that a re-run after an interruption finishes the
            // same way.
            h.metadata_set(KEY_ROLLBACK_TO, snap)?;
            h.snap_rollback(snap)?;
            return h.metadata_remove(KEY_ROLLBACK_TO);
        }
        if pending.is_some() {
            // A rollback to another snapshot was interrupted: this revert replaces
            // what it left, and the marker must not follow the head to a carrier.
            h.metadata_remove(KEY_ROLLBACK_TO)?;
        }
        // What the old head becomes: a carrier if it holds snapshots.
        let head_snaps: Vec<(u64, String)> =
            user_snapshots(&h)?.into_iter().map(|s| (s.id, s.name)).collect();
        drop(h);
        let carrier = (!head_snaps.is_empty()).then(|| self.naming.carrier(&name, &head_snaps));
        let temp = revert_temp_name(&name);

        // A clone left by an interrupted run is reused only if it is the one this
        // run would build.
        let mut have_temp = Self::exists(io, &temp)?;
        if have_temp && self.finish_stopped_rename(io, &temp)? {
            return self.revert_in(io, snap, cfg);
        }
        if have_temp {
            // An interrupted run may not have written its markers yet: the
            // parent link alone says whether this is the clone we want.
            let same = match io.open_read_only(&temp, None) {
                Ok(t) => t.parent()?.is_some_and(|p| p.image.name == holder && p.snap_name == snap),
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(e),
            };
            if !same {
                super::remove(self.cluster, &self.head.sibling(&temp)?, super::RemoveOptions::default())?;
                have_temp = false;
            }
        }

        // The new head's book: the old one, with the old head's snapshots moved to
        // the carrier. Written with the clone, or in one call on the header of
        // the clone an interrupted run made, which sheds the keys it inherited
        // (or that run left); nobody opens a clone under its temporary name.
        let mut keys: Vec<(String, String)> = vec![(KEY_DISK.into(), name.clone())];
        for (s, h) in &book.snaps {
            let h = if *h == name { carrier.as_deref().unwrap_or(h) } else { h };
            keys.push((format!("{KEY_SNAP_PREFIX}{s}"), h.to_string()));
        }
        for c in book.carriers.iter().chain(carrier.iter()) {
            keys.push((format!("{KEY_CARRIER_PREFIX}{c}"), String::new()));
        }
        keys.push((KEY_REVERT_CARRIER.into(), carrier.clone().unwrap_or_default()));
        keys.push((KEY_REVERT_TO.into(), snap.to_string()));
        let set: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if !have_temp {
            let format = match cfg.clone_format {
                CloneFormat::Auto => cluster_clone_format(self.cluster)?,
                CloneFormat::V1 => 1,
                CloneFormat::V2 => 2,
            };
            let opts = super::CloneOptions {
                data_pool: cfg.data_pool.clone(),
                format: if format == 1 { CloneFormat::V1 } else { CloneFormat::V2 },
                features: None,
            };
            super::clone_of(
                self.cluster,
                &self.head.sibling(&holder)?.at(snap)?,
                &self.head.sibling(&temp)?,
                &opts,
                Some(&[]),
                None,
                &set,
            )?;
        } else {
            super::book_fresh_clone(io, &temp, &set)?;
        }
        if depth(io, &temp)? > cfg.max_depth {
            io.open(&temp)?.flatten()?;
        }

        // Move the old head away; from here a re-run (or any later call) finishes
        // the revert through `recover`.
        match &carrier {
            Some(c) => io.rename_image(&name, c)?,
            None => io.remove_image(&name)?,
        }
        let head = finish_revert_to(io, &temp, &name, carrier.as_deref())?;
        let carriers: BTreeSet<String> = book.carriers.into_iter().chain(carrier).collect();
        self.collect_carriers(io, &head, &carriers)
    }

    /// Finishes a rename of an interrupted revert that stopped half-way, both
    /// names opening one image (librbd writes the new name's id object, then
    /// the pool directory, then removes the old one): the finished clone
    /// `temp` into place (the head is then the reverted one: that revert is
    /// finished), or the old head to the carrier `temp` names. `true` when it
    /// finished one; the revert then starts again, as after a whole rename.
    fn finish_stopped_rename(&self, io: &IoCtx<'c>, temp: &str) -> Result<bool> {
        let name = &self.head.name;
        let Some(head_id) = io.image_id(name)? else { return Ok(false) };
        if io.image_id(temp)?.as_ref() == Some(&head_id) {
            finish_revert(io, temp, name)?;
            return Ok(true);
        }
        let carrier = io.open_read_only(temp, None)?.metadata_get(KEY_REVERT_CARRIER)?;
        match carrier.filter(|c| !c.is_empty()) {
            Some(c) if io.image_id(&c)?.as_ref() == Some(&head_id) => {
                io.rename_image(name, &c)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes the head and every carrier with their snapshots. Images that clones
    /// outside the disk still read from go to the RBD trash, marked for
    /// [`reclaim`], or have those clones flattened first ([`Reclaim`]; always for
    /// format-1 clones, which cannot outlive a protected snapshot). Removing a disk that does not exist is a no-op, and cleans up
    /// what an interrupted removal left.
    ///
    /// `trash_delay`: move the disk's images to the trash with this deferment
    /// instead of removing them (the operator's CEPH_TRASH).
    ///
    /// # Errors
    /// [`Error::InUse`] while a client has the head open; Ceph errors.
    pub fn remove(&self, trash_delay: Option<u64>, reclaim: Reclaim) -> Result<()> {
        self.guarded(|io| self.remove_in(io, trash_delay, reclaim))
    }

    fn remove_in(&self, io: &IoCtx<'c>, trash_delay: Option<u64>, reclaim: Reclaim) -> Result<()> {
        if trash_delay.is_none() && self.remove_lone_head(io)? {
            return Ok(());
        }
        let name = self.head.name.clone();
        let mut images: Vec<String> = Vec::new();
        // One open of the head serves the book, the in-use check and its parent.
        let head = match self.book_and_head(io) {
            Ok(found) => Some(found),
            // Only a missing head means there is none to remove; a clone made
            // under its name and stopped before its last step is finished
            // (then removed as a whole) or removed.
            Err(e) if e.is_not_found() && !Self::exists(io, &name)? => {
                if io.settle_unfinished_clone(&name)? == Unfinished::Finished {
                    return self.remove_in(io, trash_delay, reclaim);
                }
                None
            }
            Err(e) => return Err(e),
        };
        let mut parents = Vec::new();
        // The head stays open for its removal, unless that frees its parent's
        // snapshot (then the parent's lock comes first: `dispose`).
        let mut open_head = None;
        if let Some((book, h)) = head {
            super::refuse_in_use(&h, &self.head)?;
            let parent = h.parent()?;
            if parent.as_ref().is_none_or(|p| p.snap_namespace != SnapNamespace::Trash) {
                open_head = Some(h);
            }
            parents.extend(parent);
            images.push(name.clone());
            images.extend(book.carriers);
        }
        // What an interrupted removal left.
        for left in self.leftovers(io)? {
            if !images.contains(&left) {
                images.push(left);
            }
        }
        // Children before parents.
        let order = children_first(io, &images)?;
        for img in order.iter().filter(|i| **i != name) {
            if let Some(p) = io.open_read_only(img, None)?.parent()? {
                parents.push(p);
            }
        }
        parents.retain(|p| p.image.pool != io.pool() || !images.contains(&p.image.name));
        if order.first() != Some(&name) {
            // Not a leaf of the disk (never seen): no image held while others go.
            open_head = None;
        }
        for img in &order {
            match open_head.take().filter(|_| *img == name) {
                Some(h) => dispose_open(self.cluster, io, h, trash_delay, reclaim)?,
                None => dispose(self.cluster, io, img, trash_delay, reclaim)?,
            }
        }
        // The disk is gone; an ancestor it kept in the trash may be free now. What
        // this cannot free, the periodic `reclaim` retries.
        let _ = reclaim_ancestors(self.cluster, parents);
        Ok(())
    }

    /// Images of this disk other than the head, as an interrupted run leaves
    /// them: by their metadata, or by name where they have none. Every name
    /// rbdx derives from the head, and every carrier name the naming adopts,
    /// starts with the head's name: only those are listed.
    fn leftovers(&self, io: &IoCtx<'_>) -> Result<Vec<String>> {
        let mut left = Vec::new();
        for e in io.list_images_prefixed(&self.head.name)? {
            if e.name != self.head.name && self.owns(io, &e.name)? {
                left.push(e.name);
            }
        }
        Ok(left)
    }

    /// The common removal, decided from the head's header without opening it
    /// (an open reads the header and opens every parent; with its close, about
    /// 12 ms of a 75 ms removal): a head with no snapshot, whose `rbdx.` keys
    /// are its bare mark and where it was cloned or copied from (or none),
    /// whose parent (if any) is a live image, and with no other image of the
    /// disk (left by an interrupted run, or a parent to adopt). librbd's
    /// removal refuses an image that a client has open (`Busy`); the general
    /// path then says who. Returns whether the head was removed (or was gone);
    /// `false` leaves everything to the general path.
    fn remove_lone_head(&self, io: &IoCtx<'c>) -> Result<bool> {
        let name = &self.head.name;
        let Some(id) = io.image_id(name)? else { return Ok(false) };
        // Gone meanwhile, or without layering: the general path says.
        let Some(head) = io.header_summary(&id, super::RBDX_KEY_PREFIX)? else { return Ok(false) };
        let known = |(k, v): &(String, String)| match k.as_str() {
            KEY_DISK => v == name,
            KEY_CLONED_FROM | KEY_COPIED_FROM => true,
            _ => false,
        };
        if !head.metadata.iter().all(known) || head.snapshots > 0 {
            return Ok(false);
        }
        // A parent in the trash may be freed with its last clone (the general
        // path's `reclaim_ancestors`).
        let parent = match &head.parent {
            None => ParentKnown::NoParent,
            Some(link) => match io.resolve_parent(link)? {
                None => return Ok(false),
                Some(p) if p.snap_namespace == SnapNamespace::User => ParentKnown::Live(link),
                // Its snapshot in the trash namespace: the removal takes the
                // parent's turn.
                Some(_) => ParentKnown::Unread,
            },
        };
        // Any other image of the disk: an interrupted run's, or a parent that a
        // head with no book adopts as its carrier.
        if !self.leftovers(io)?.is_empty() {
            return Ok(false);
        }
        match io.remove_image_known(name, &id, parent) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(true),
            // librbd's refusal (a client has it open, a snapshot came
            // meanwhile), not rbdx's lock wait, which the general path would
            // only wait out again.
            Err(Error::Ceph(e)) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::NotEmpty) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts image `new` (made beside the head, e.g. restored from a backup) in
    /// the disk's place: the disk moves aside to `old` ([`Disk::rename`]), `new`
    /// takes the head's name, and the old disk is removed as [`Disk::remove`]
    /// removes (images that clones outside the disk read from wait in the trash:
    /// nothing another image depends on is deleted). The new head starts with
    /// no snapshots.
    ///
    /// Re-runnable: with `new` gone and `old` present, an earlier run put `new`
    /// in place and only the removal of `old` is left; with both present, `old`
    /// is an earlier run's and goes first. Nothing is ever removed before `new`
    /// exists.
    ///
    /// # Errors
    /// `NotFound` when neither `new` nor the head exists; [`Error::InUse`] while
    /// a client has the head open; Ceph errors.
    pub fn replace_with(
        &self,
        new: &str,
        old: &str,
        trash_delay: Option<u64>,
        reclaim: Reclaim,
    ) -> Result<()> {
        let io = self.io()?;
        let old_disk = Disk::new(self.cluster, self.head.sibling(old)?, self.naming);
        // An earlier run's rename stopped half-way: the disk aside, or the new
        // image into place (the first finished before the second starts). A
        // removal of that new image through its other name (a caller's
        // clean-up before it imports again) leaves the head's name a ghost.
        if !io.finish_stopped_rename(&self.head.name, old)?
            && !io.finish_stopped_rename(new, &self.head.name)?
        {
            io.clear_ghost(&self.head.name)?;
        }
        // What an earlier run put in place may still have its old disk to remove.
        self.dispose_replaced(&io, &old_disk, trash_delay, reclaim)?;
        if !Self::exists(&io, new)? {
            if Self::exists(&io, &self.head.name)? {
                return Ok(());
            }
            return Err(Error::NotFound(format!("{} has no image {new} to put in place", self.head)));
        }
        if self.rename_unfinished(&io, old)? {
            // The disk moved aside before an interruption: finish that first.
            self.guarded(|io| self.retag(io, old))?;
        }
        // The new image records what it replaces (the disk's images, as they
        // will be named), so that the removal can be finished whatever stops it
        // (a re-run may bring a new image of its own: the disk may already be
        // aside, its book on `old`).
        let book = if Self::exists(&io, &self.head.name)? {
            Some(self.guarded(|io| self.book(io))?)
        } else if Self::exists(&io, old)? {
            Some(old_disk.guarded(|io| old_disk.book(io))?)
        } else {
            None
        };
        if let Some(book) = book {
            let n = io.open(new)?;
            for name in book.carriers.iter().map(String::as_str).chain(std::iter::once(old)) {
                n.metadata_set(&format!("{KEY_REPLACED_PREFIX}{name}"), "")?;
            }
        }
        if Self::exists(&io, &self.head.name)? {
            self.rename(old)?;
        }
        let guard = io.guard(&self.head.name)?;
        io.rename_image(new, &self.head.name)?;
        guard.release()?;
        self.dispose_replaced(&io, &old_disk, trash_delay, reclaim)
    }

    /// Removes what the head records it replaced ([`KEY_REPLACED_PREFIX`]): the
    /// old disk as [`Disk::remove`] removes it, then any recorded image an
    /// interrupted removal left (children first, with the same trash rules),
    /// then the record.
    fn dispose_replaced(
        &self,
        io: &IoCtx<'c>,
        old_disk: &Disk<'c>,
        trash_delay: Option<u64>,
        reclaim: Reclaim,
    ) -> Result<()> {
        let recorded: Vec<String> = match io.open_read_only(&self.head.name, None) {
            Ok(h) => h
                .metadata_list(KEY_REPLACED_PREFIX)?
                .into_iter()
                .filter_map(|(k, _)| k.strip_prefix(KEY_REPLACED_PREFIX).map(str::to_string))
                .collect(),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if recorded.is_empty() {
            return Ok(());
        }
        old_disk.remove(trash_delay, reclaim)?;
        let mut left = Vec::new();
        for name in &recorded {
            if Self::exists(io, name)? {
                left.push(name.clone());
            }
        }
        for name in children_first(io, &left)? {
            dispose(self.cluster, io, &name, trash_delay, reclaim)?;
        }
        let head = io.open(&self.head.name)?;
        for name in &recorded {
            head.metadata_remove(&format!("{KEY_REPLACED_PREFIX}{name}"))?;
        }
        Ok(())
    }

    /// Renames the disk's head to `new_name` (same pool and namespace) and moves
    /// the bookkeeping with it; carriers keep their names (the book lists them).
    ///
    /// # Errors
    /// `Exists` if `new_name` is taken; [`Error::InUse`] while the head is open.
    pub fn rename(&self, new_name: &str) -> Result<Disk<'c>> {
        super::validate_name("image", new_name)?;
        let io = self.io()?;
        // Both names, in one order for every process.
        let (first, second) = if self.head.name.as_str() < new_name {
            (self.head.name.as_str(), new_name)
        } else {
            (new_name, self.head.name.as_str())
        };
        let guards = (io.guard(first)?, io.guard(second)?);
        let out = self.rename_in(&io, new_name)?;
        guards.1.release()?;
        guards.0.release()?;
        Ok(out)
    }

    fn rename_in(&self, io: &IoCtx<'c>, new_name: &str) -> Result<Disk<'c>> {
        let renamed = Disk::new(self.cluster, self.head.sibling(new_name)?, self.naming);
        // A rename interrupted after the image moved: finish its bookkeeping.
        if !Self::exists(io, &self.head.name)? && self.rename_unfinished(io, new_name)? {
            self.retag(io, new_name)?;
            return Ok(renamed);
        }
        self.book(io)?;
        super::refuse_in_use(&io.open_read_only(&self.head.name, None)?, &self.head)?;
        io.rename_image(&self.head.name, new_name)?;
        self.retag(io, new_name)?;
        Ok(renamed)
    }

    /// Whether image `moved` is this disk's head renamed, its bookkeeping not
    /// yet moved with it (its [`KEY_DISK`] still names the old head).
    fn rename_unfinished(&self, io: &IoCtx<'_>, moved: &str) -> Result<bool> {
        match io.open_read_only(moved, None) {
            Ok(img) => Ok(img.metadata_get(KEY_DISK)?.as_deref() == Some(self.head.name.as_str())),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves the bookkeeping of this disk's head, now image `new_name`, to that
    /// name: the carriers and the head's own snapshots first, the head's
    /// [`KEY_DISK`] last (it says the rename is complete), so an interrupted
    /// call is finished by the next.
    fn retag(&self, io: &IoCtx<'_>, new_name: &str) -> Result<()> {
        let head = io.open(new_name)?;
        let book = Book::read(&head)?;
        for c in &book.carriers {
            match io.open(c) {
                Ok(img) => img.metadata_set(KEY_DISK, new_name)?,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        for (s, holder) in &book.snaps {
            if *holder == self.head.name {
                head.metadata_set(&format!("{KEY_SNAP_PREFIX}{s}"), new_name)?;
            }
        }
        head.metadata_set(KEY_DISK, new_name)
    }

    /// Makes the disk's state that of snapshot `snap`, independent of any parent,
    /// with no snapshots left (an image-level "flatten to snapshot"): a revert,
    /// a flatten of the head (O(data); the data pool is kept), then every snapshot
    /// and carrier removed. Re-running after it finished finds no snapshot and
    /// only makes sure the head has no parent.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown snapshot on a disk that has snapshots.
    pub fn flatten_to(&self, snap: &str, cfg: &DiskConfig) -> Result<()> {
        super::check_data_pool(self.cluster, cfg.data_pool.as_deref())?;
        self.guarded(|io| self.flatten_to_in(io, snap, cfg))
    }

    fn flatten_to_in(&self, io: &IoCtx<'c>, snap: &str, cfg: &DiskConfig) -> Result<()> {
        const KEY_FLATTENED: &str = "rbdx.flatten.to";
        let book = self.book(io)?;
        let marker = io.open_read_only(&self.head.name, None)?.metadata_get(KEY_FLATTENED)?;
        // An interrupted run that got past the flatten left this marker: only the
        // snapshots remain to be deleted.
        if marker.as_deref() != Some(snap) {
            if book.snaps.contains_key(snap) {
                self.revert_in(io, snap, cfg)?;
            } else if !book.snaps.is_empty() {
                return Err(Error::NotFound(format!("{} has no snapshot {snap}", self.head)));
            }
            super::flatten(self.cluster, &self.head)?;
            io.open(&self.head.name)?.metadata_set(KEY_FLATTENED, snap)?;
        }
        for s in self.book(io)?.snaps.keys() {
            self.snapshot_delete_in(io, s)?;
        }
        self.collect_all_carriers(io)?;
        io.open(&self.head.name)?.metadata_remove(KEY_FLATTENED)
    }

    /// Clones snapshot `snap` of the disk into `target` (another image, possibly in
    /// another pool), with `data_pool`, flattening when the chain would exceed
    /// `max_depth`. Re-running when `target` is already that clone is a no-op.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown snapshot; `Exists` if `target` is another image.
    pub fn clone_snapshot(&self, snap: &str, target: &ImageSpec, cfg: &DiskConfig) -> Result<()> {
        super::check_data_pool(self.cluster, cfg.data_pool.as_deref())?;
        self.guarded(|io| self.clone_snapshot_in(io, snap, target, cfg))
    }

    fn clone_snapshot_in(
        &self,
        io: &IoCtx<'c>,
        snap: &str,
        target: &ImageSpec,
        cfg: &DiskConfig,
    ) -> Result<()> {
        let book = self.book(io)?;
        self.clone_booked(io, &book, snap, target, cfg, None)
    }

    /// [`Self::clone_snapshot`] with the book read, and what the caller read
    /// of the head, if anything (for a snapshot the head holds).
    fn clone_booked(
        &self,
        io: &IoCtx<'c>,
        book: &Book,
        snap: &str,
        target: &ImageSpec,
        cfg: &DiskConfig,
        head: Option<HeadRead<'_>>,
    ) -> Result<()> {
        let holder = book
            .snaps
            .get(snap)
            .ok_or_else(|| Error::NotFound(format!("{} has no snapshot {snap}", self.head)))?;
        let tio = ioctx(self.cluster, target)?;
        let exists = match new_image(&tio, &target.name)? {
            Some(t) => {
                let ours = t.parent()?.is_some_and(|p| p.image.name == *holder && p.snap_name == snap)
                    || t.metadata_get(KEY_CLONED_FROM)?.as_deref() == Some(&format!("{holder}@{snap}"));
                if !ours {
                    return Err(Error::Exists(format!("{target} already exists")));
                }
                true
            }
            None => false,
        };
        let cloned_from = format!("{holder}@{snap}");
        // The clone's chain is the holder's and one link more: no walk from the
        // clone, whose open opens every image above it.
        let too_deep = || -> Result<bool> {
            let holder_depth = match head {
                Some(h) if *holder == self.head.name => h.depth,
                _ => depth(io, holder)?,
            };
            Ok(holder_depth + 1 > cfg.max_depth)
        };
        if !exists {
            let opts = super::CloneOptions {
                data_pool: cfg.data_pool.clone(),
                format: cfg.clone_format,
                features: None,
            };
            // The keys it inherits are shed and the marker written with the
            // clone: it is not opened unless it is flattened.
            super::clone_of(
                self.cluster,
                &self.head.sibling(holder)?.at(snap)?,
                target,
                &opts,
                Some(&[]),
                head.and_then(|h| h.header).filter(|_| *holder == self.head.name),
                &[(KEY_CLONED_FROM, &cloned_from)],
            )?;
            if too_deep()? {
                tio.open(&target.name)?.flatten()?;
            }
            return Ok(());
        }
        // A clone made by an interrupted run is finished through an open.
        let t = tio.open(&target.name)?;
        super::strip_inherited_of(&t)?;
        t.metadata_set(KEY_CLONED_FROM, &cloned_from)?;
        if too_deep()? && t.parent()?.is_some() {
            t.flatten()?;
        }
        Ok(())
    }
}

/// What a save read of the head before it clones one of its snapshots.
#[derive(Debug, Clone, Copy)]
struct HeadRead<'a> {
    /// The head's clone chain length.
    depth: u32,
    /// Its header as a clone takes it, when it was read without an open.
    header: Option<&'a CloneSource>,
}

/// On a clone of a disk's snapshot: `<holder>@<snap>` it was cloned from (kept
/// after a flatten drops the parent link).
const KEY_CLONED_FROM: &str = "rbdx.cloned-from";

/// On a copy of a disk's head ([`Disk::save_now`]): the head's spec.
const KEY_COPIED_FROM: &str = "rbdx.copied-from";

/// The images of the pool (namespace) that rbdx made as CoW clones of another
/// disk's snapshot (save-as, image clones, and the copies of a disk made onto a
/// clone of its parent) and that still read from it: what a driver that
/// removes a snapshot's children with the snapshot would delete along with
/// their source.
///
/// # Errors
/// Ceph errors listing or opening the images.
pub fn dependent_clones(io: &IoCtx<'_>) -> Result<Vec<String>, crate::Error> {
    let mut out = Vec::new();
    for e in io.list_images()? {
        let img = match io.open_read_only(&e.name, None) {
            Ok(i) => i,
            // Removed while we look: nothing depends on it any more.
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err),
        };
        if img.parent()?.is_some() {
            let marked = |k| img.metadata_get(k).map(|v| v.is_some());
            if marked(KEY_CLONED_FROM)? || marked(KEY_COPIED_FROM)? {
                out.push(e.name);
            }
        }
    }
    Ok(out)
}

/// The disk (head name) image `name` belongs to, by its rbdx metadata; `None`
/// for an image rbdx has no book on.
///
/// # Errors
/// `NotFound` for a missing image; Ceph errors.
pub fn owner_of(io: &IoCtx<'_>, name: &str) -> Result<Option<String>, crate::Error> {
    io.open_read_only(name, None)?.metadata_get(KEY_DISK)
}

impl Disk<'_> {
    /// The snapshot of this disk's head that `target` is a clone of (by its
    /// parent link, or by its marker once flattened), or `None` when `target`
    /// does not exist or came from elsewhere.
    ///
    /// # Errors
    /// Ceph errors.
    pub fn cloned_into(&self, target: &ImageSpec) -> Result<Option<String>> {
        self.cloned_into_in(&ioctx(self.cluster, target)?, target)
    }

    fn cloned_into_in(&self, tio: &IoCtx<'_>, target: &ImageSpec) -> Result<Option<String>> {
        Ok(match self.saved_into(tio, target)? {
            Some(Saved::Again(s)) => Some(s),
            _ => None,
        })
    }

    /// What `target` already holds of this disk's head: a clone of one of its
    /// snapshots ([`Saved::Again`]), or a copy ([`Saved::Copied`]); `None` when
    /// `target` does not exist or came from elsewhere.
    fn saved_into(&self, tio: &IoCtx<'_>, target: &ImageSpec) -> Result<Option<Saved>> {
        let Some(t) = new_image(tio, &target.name)? else {
            return Ok(None);
        };
        if let Some(p) = t.parent()? {
            let same_pool = p.image.pool == self.head.pool && p.image.namespace == self.head.namespace;
            if same_pool && p.image.name == self.head.name {
                return Ok(Some(Saved::Again(p.snap_name)));
            }
        }
        if t.metadata_get(KEY_COPIED_FROM)?.is_some_and(|m| m == self.head.to_string()) {
            return Ok(Some(Saved::Copied));
        }
        let marker = t.metadata_get(KEY_CLONED_FROM)?;
        Ok(marker.and_then(|m| {
            let (holder, snap) = m.rsplit_once('@')?;
            (holder == self.head.name).then(|| Saved::Again(snap.to_string()))
        }))
    }

    /// Saves the head as it is now as `target`, in one operation:
    /// - a re-run finds what `target` already holds (a clone of one of the
    ///   head's snapshots, or a copy);
    /// - else the new image clones the newest snapshot `pick` accepts, if the
    ///   head has not changed since it was taken: same size, and no object
    ///   written or discarded after it, read from the object maps (fast-diff; no
    ///   data is read). Its clone holds what a clone of a snapshot taken now
    ///   would, without the OSD map update every new snapshot waits for. One the
    ///   book lacks (a base snapshot) is entered in it;
    /// - else, when the head holds at most [`DiskConfig::copy_max_bytes`] of its
    ///   own (object map) and no other client has it open (nothing writes it
    ///   while it is read), its own objects are copied into a clone of the
    ///   head's parent snapshot (a new image when it has none): no snapshot, no
    ///   wait, and the new image does not read from the disk;
    /// - else `target` clones `snap`, taken now.
    ///
    /// What the clone would refuse is refused before `snap` is taken: a `target`
    /// that exists and is not a clone of a snapshot named `snap`, a data pool
    /// that does not exist.
    ///
    /// # Errors
    /// [`Error::Exists`] for such a target or a name a carrier holds;
    /// `NotFound` for a missing head or data pool; Ceph errors.
    pub fn save_now(
        &self,
        snap: &str,
        target: &ImageSpec,
        pick: impl Fn(&str) -> bool,
        cfg: &DiskConfig,
    ) -> Result<Saved> {
        super::validate_name("snapshot", snap)?;
        super::check_data_pool(self.cluster, cfg.data_pool.as_deref())?;
        self.guarded(|io| {
            let tio = ioctx(self.cluster, target)?;
            let again = self.saved_into(&tio, target)?;
            if again == Some(Saved::Copied) {
                // An earlier run's copy: its rename may have stopped half-way.
                tio.finish_stopped_rename(&copy_temp_name(&target.name), &target.name)?;
                return Ok(Saved::Copied);
            }
            let unchanged = if again.is_none() { self.save_unchanged(io, &pick)? } else { None };
            let (book, head_depth, saved, source) = match unchanged {
                Some((book, depth, saved, source)) => (book, depth, saved, Some(source)),
                None => match self.save_read_only(io, &pick, again.clone())? {
                    Some((book, depth, saved)) => (book, depth, saved, None),
                    None => match self.save_read_write(io, snap, target, &pick, cfg, again)? {
                        Some((book, depth, saved)) => (book, depth, saved, None),
                        None => return Ok(Saved::Copied),
                    },
                },
            };
            let Some(s) = saved.snapshot() else { return Ok(saved) };
            let head = HeadRead { depth: head_depth, header: source.as_ref() };
            self.clone_booked(io, &book, s, target, cfg, Some(head))?;
            Ok(saved)
        })
    }

    /// The cases of [`Disk::save_now`] that write nothing on the head, read
    /// through a read-only open (no watch, no action lock, nothing to flush at
    /// the close: ~6.5 ms against ~11.5 on the test cluster): a re-run
    /// (`again`), or a head unchanged since a snapshot `pick` accepts that its
    /// book already holds. The book, the head's clone depth and what to clone;
    /// `None` when the head needs a write (a book to mend, a snapshot to take
    /// or enter, a copy) or is missing (an interrupted revert to finish), for
    /// [`Disk::save_read_write`].
    fn save_read_only(
        &self,
        io: &IoCtx<'_>,
        pick: &dyn Fn(&str) -> bool,
        again: Option<Saved>,
    ) -> Result<Option<(Book, u32, Saved)>> {
        let head = match io.open_read_only(&self.head.name, None) {
            Err(e) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        let keys = head.metadata_list("rbdx.")?;
        if !keys.iter().any(|(k, v)| k == KEY_DISK && *v == self.head.name) {
            return Ok(None);
        }
        let book = Book::of(&keys);
        if !self.stale(io, &head, &book)?.is_empty() || !self.unbooked(&head, &book)?.is_empty() {
            return Ok(None);
        }
        let saved = match again {
            Some(again) => again,
            None => match unchanged_of(&head, pick)? {
                Some(s) if book.snaps.get(&s) == Some(&self.head.name) => Saved::Unchanged(s),
                _ => return Ok(None),
            },
        };
        let head_depth = depth_above(self.cluster, head.parent()?)?;
        Ok(Some((book, head_depth, saved)))
    }

    /// The common case of [`Disk::save_now`], told from the head's header and
    /// object maps without opening it (an open reads the header in about ten
    /// round trips and opens every parent; this reads four times): a head
    /// whose book is its own, complete and holds only the head's snapshots,
    /// unchanged since its newest snapshot, which `pick` accepts and the book
    /// holds. The book, the head's clone depth, that snapshot and the header
    /// as read (the clone takes it from there); `None` for anything else,
    /// which an open decides.
    fn save_unchanged(
        &self,
        io: &IoCtx<'_>,
        pick: &dyn Fn(&str) -> bool,
    ) -> Result<Option<(Book, u32, Saved, CloneSource)>> {
        let name = &self.head.name;
        let Some(head) = io.read_clone_source(name)? else { return Ok(None) };
        let Some((book, _)) = self.current_book(&head) else { return Ok(None) };
        if book.snaps.values().any(|holder| holder != name) {
            return Ok(None);
        }
        let Some(newest) = head.snaps.iter().max_by_key(|s| s.snap.id) else { return Ok(None) };
        let base = newest.snap.name.clone();
        if newest.namespace != SnapNamespace::User
            || !pick(&base)
            || !book.snaps.contains_key(&base)
            || !io.head_unchanged_since(&head.id, newest.snap.id)?
        {
            return Ok(None);
        }
        let depth = depth_from(self.cluster, head.head_parent.clone())?;
        Ok(Some((book, depth, Saved::Unchanged(base), head)))
    }

    /// The head's book as its header says it (read without an open), and
    /// the head's `rbdx.` keys; `None` where the open path has something to
    /// mend first: a head not marked as this disk's, a booked snapshot that
    /// is gone (`stale`), one the naming adopts and the book lacks
    /// (`unbooked`).
    fn current_book(&self, head: &CloneSource) -> Option<(Book, Vec<(String, String)>)> {
        let name = &self.head.name;
        let keys = head.metadata_prefixed(super::RBDX_KEY_PREFIX);
        if !keys.iter().any(|(k, v)| k == KEY_DISK && v == name) {
            return None;
        }
        let book = Book::of(&keys);
        let user: Vec<&str> = head
            .snaps
            .iter()
            .filter(|s| s.namespace == SnapNamespace::User)
            .map(|s| s.snap.name.as_str())
            .collect();
        let stale = book.snaps.keys().any(|b| !user.contains(&b.as_str()));
        let unbooked = self.naming.adopts_snapshots()
            && user.iter().any(|s| !book.snaps.contains_key(*s) && self.naming.adopts_snapshot(s));
        (!stale && !unbooked).then_some((book, keys))
    }

    /// The rest of [`Disk::save_now`], through the head's read-write open: the
    /// book (mended), the head's clone depth and what to clone, a snapshot
    /// entered in the book or taken now; `None` once the head's own data is
    /// copied into `target`.
    fn save_read_write(
        &self,
        io: &IoCtx<'_>,
        snap: &str,
        target: &ImageSpec,
        pick: &dyn Fn(&str) -> bool,
        cfg: &DiskConfig,
        again: Option<Saved>,
    ) -> Result<Option<(Book, u32, Saved)>> {
        let (mut book, head) = self.book_and_head(io)?;
        let head_depth = depth_above(self.cluster, head.parent()?)?;
        let saved = match again {
            Some(again) => again,
            None => {
                if let Some(s) = unchanged_of(&head, pick)? {
                    if book.snaps.get(&s) != Some(&self.head.name) {
                        self.take_snapshot(&head, &mut book, &s)?;
                    }
                    Saved::Unchanged(s)
                } else {
                    let tio = ioctx(self.cluster, target)?;
                    check_target(&tio, target, snap)?;
                    if self.copy_own_data(&tio, &head, target, cfg, head_depth)? {
                        return Ok(None);
                    }
                    self.take_snapshot(&head, &mut book, snap)?;
                    Saved::Taken(snap.to_string())
                }
            }
        };
        Ok(Some((book, head_depth, saved)))
    }

    /// The copy branch of [`Disk::save_now`]: `false`, having changed nothing
    /// but a leftover of an interrupted copy, when the head does not qualify
    /// (too much data of its own, another client has it open, no valid object
    /// map, a parent snapshot in the trash) or another client opened it while
    /// it was read. The copy is made under [`copy_temp_name`], marked
    /// [`KEY_COPIED_FROM`], and renamed to `target` once complete.
    fn copy_own_data(
        &self,
        tio: &IoCtx<'_>,
        head: &Image<'_>,
        target: &ImageSpec,
        cfg: &DiskConfig,
        head_depth: u32,
    ) -> Result<bool> {
        let temp = target.sibling(&copy_temp_name(&target.name))?;
        if Self::exists(tio, &temp.name)? {
            super::remove(self.cluster, &temp, super::RemoveOptions::default())?;
        }
        if cfg.copy_max_bytes == 0 {
            return Ok(false);
        }
        let info = head.info()?;
        if !info.fast_diff_valid() || !super::other_watchers(head)?.is_empty() {
            return Ok(false);
        }
        let mut own = Vec::new();
        let mut bytes = 0u64;
        head.diff_iterate(None, false, true, |off, len, exists| {
            if exists {
                own.push((off, len));
                bytes += len;
            }
            Ok(())
        })?;
        if bytes > cfg.copy_max_bytes {
            return Ok(false);
        }
        let parent = head.parent()?;
        if let Some(p) = &parent {
            if p.snap_namespace != SnapNamespace::User || p.image.trash {
                return Ok(false);
            }
            let from = ImageSpec::new(&p.image.pool, &p.image.name)?.in_namespace(&p.image.namespace)?;
            let opts = super::CloneOptions {
                data_pool: cfg.data_pool.clone(),
                format: cfg.clone_format,
                features: None,
            };
            super::clone_of(self.cluster, &from.at(&p.snap_name)?, &temp, &opts, Some(&[]), None, &[])?;
        } else {
            super::create(
                self.cluster,
                &temp,
                info.size,
                &super::CreateOptions::with_data_pool(cfg.data_pool.as_deref()),
            )?;
        }
        let t = tio.open(&temp.name)?;
        if parent.is_some() {
            super::strip_inherited_of(&t)?;
            // The clone reads its parent up to the head's overlap, no further,
            // and has the head's size: a shrink lowers a clone's overlap for good.
            let (overlap, size) = (head.overlap()?, t.info()?.size);
            if overlap < size {
                t.resize(overlap, true)?;
            }
            if info.size != overlap.min(size) {
                t.resize(info.size, true)?;
            }
        }
        copy_extents(head, &t, &own, parent.is_some())?;
        if head_depth > cfg.max_depth {
            t.flatten()?;
        }
        t.metadata_set(KEY_COPIED_FROM, &self.head.to_string())?;
        drop(t);
        if !super::other_watchers(head)?.is_empty() {
            super::remove(self.cluster, &temp, super::RemoveOptions::default())?;
            return Ok(false);
        }
        tio.rename_image(&temp.name, &target.name)?;
        Ok(true)
    }
}

/// Copies the extents `own` of `from` into the same place in `to`, a few
/// reads and writes in flight. Chunks of zeros are written too where `to` is a
/// clone (they hide its parent's data there) and skipped otherwise (a new
/// image reads zeros).
fn copy_extents(from: &Image<'_>, to: &Image<'_>, own: &[(u64, u64)], clone: bool) -> Result<()> {
    let _span = crate::trace::span("copy");
    let mut reads = crate::rbd::Reads::new(from, super::WRITE_WINDOW);
    let mut writes = crate::rbd::Writes::new(to, super::WRITE_WINDOW);
    let put = |writes: &mut crate::rbd::Writes<'_, '_>, (at, buf): (u64, Vec<u8>)| {
        if clone || !super::is_zero(&buf) {
            return writes.write(at, buf);
        }
        writes.recycle(buf);
        Ok(())
    };
    for &(off, len) in own {
        let mut done = 0;
        while done < len {
            let n =
                usize::try_from((len - done).min(super::SPARSE_CHUNK as u64)).unwrap_or(super::SPARSE_CHUNK);
            let buf = writes.buffer(n);
            if let Some(read) = reads.read(off + done, buf)? {
                put(&mut writes, read)?;
            }
            done += n as u64;
        }
    }
    while let Some(read) = reads.oldest()? {
        put(&mut writes, read)?;
    }
    writes.finish()?;
    to.flush()
}

/// How [`Disk::save_now`] saved the head: which snapshot it cloned, or a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// The one the target already read (a re-run).
    Again(String),
    /// One the head has not changed since.
    Unchanged(String),
    /// One taken now.
    Taken(String),
    /// No snapshot: the head's own data copied (now, or by an earlier run).
    Copied,
}

impl Saved {
    /// The snapshot's name; `None` for a copy.
    #[must_use]
    pub fn snapshot(&self) -> Option<&str> {
        match self {
            Self::Again(s) | Self::Unchanged(s) | Self::Taken(s) => Some(s),
            Self::Copied => None,
        }
    }
}

/// The newest snapshot of the open `head` that `pick` accepts, if the head has
/// not changed since it was taken (see [`Disk::save_now`]); `None` also when
/// the head has no valid fast-diff to answer cheaply.
fn unchanged_of(head: &Image<'_>, pick: &dyn Fn(&str) -> bool) -> Result<Option<String>> {
    let info = head.info()?;
    if !info.fast_diff_valid() {
        return Ok(None);
    }
    let Some(base) = head.snapshots()?.into_iter().filter(|s| pick(&s.name)).max_by_key(|s| s.id) else {
        return Ok(None);
    };
    if base.size != info.size {
        return Ok(None);
    }
    let mut changed = false;
    head.diff_iterate(Some(&base.name), false, true, |_, _, _| {
        changed = true;
        Ok(())
    })?;
    Ok((!changed).then_some(base.name))
}

/// Refuses a `target` (in `tio`) that exists and is not a clone of a snapshot
/// named `snap` (a re-run's own clone passes), before that snapshot is taken.
fn check_target(tio: &IoCtx<'_>, target: &ImageSpec, snap: &str) -> Result<()> {
    let Some(t) = new_image(tio, &target.name)? else {
        return Ok(());
    };
    let from_parent = t.parent()?.is_some_and(|p| p.snap_name == snap);
    let from_marker =
        t.metadata_get(KEY_CLONED_FROM)?.is_some_and(|m| m.rsplit_once('@').is_some_and(|(_, s)| s == snap));
    if from_parent || from_marker { Ok(()) } else { Err(Error::Exists(format!("{target} already exists"))) }
}

/// Image `name` that rbdx creates (format 2), opened read-only, or `None` when
/// it does not exist: its id object answers that in one read, where a failed
/// open costs several.
fn new_image<'io>(io: &'io IoCtx<'_>, name: &str) -> Result<Option<crate::Image<'io>>> {
    if !has_id_object(io, name)? {
        return Ok(None);
    }
    match io.open_read_only(name, None) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether image `name` has the id object librbd gives every format-2 image.
fn has_id_object(io: &IoCtx<'_>, name: &str) -> Result<bool> {
    io.object_exists(&format!("rbd_id.{name}"))
}

/// The user snapshots of `img` (not those librbd keeps in the trash namespace).
fn user_snapshots(img: &crate::Image<'_>) -> Result<Vec<crate::rbd::Snapshot>> {
    let mut v = Vec::new();
    for s in img.snapshots()? {
        if img.snap_namespace(s.id)? == SnapNamespace::User {
            v.push(s);
        }
    }
    Ok(v)
}

/// Whether rolling `head` back to its snapshot `snap` in place visits at most
/// `max_bytes`: the objects it holds now and those changed since `snap` (each
/// costs the rollback a round trip; read from the object map, no data).
fn rollback_is_cheaper(head: &crate::Image<'_>, snap: &str, max_bytes: u64) -> Result<bool> {
    let info = head.info()?;
    if max_bytes == 0 || !info.fast_diff_valid() {
        return Ok(false);
    }
    // Neither part can exceed the image's objects: a small image needs no
    // estimate (two object-map reads fewer).
    let snap_size = head.snapshots()?.into_iter().find(|s| s.name == snap).map_or(0, |s| s.size);
    let obj = info.object_size.max(1);
    let objects = info.size.max(snap_size).div_ceil(obj).saturating_mul(obj);
    if objects.saturating_mul(2) <= max_bytes {
        return Ok(true);
    }
    let held = super::used_bytes(head, None)?;
    if held > max_bytes {
        return Ok(false);
    }
    let mut changed = 0u64;
    head.diff_iterate(Some(snap), false, true, |_, len, _| {
        changed += len;
        Ok(())
    })?;
    Ok(held + changed <= max_bytes)
}

/// Renames the finished revert clone into place and clears its revert markers.
fn finish_revert(io: &IoCtx<'_>, temp: &str, head: &str) -> Result<()> {
    let carrier = io.open_read_only(temp, None)?.metadata_get(KEY_REVERT_CARRIER)?;
    finish_revert_to(io, temp, head, carrier.as_deref().filter(|c| !c.is_empty())).map(drop)
}

/// [`finish_revert`] when the carrier (the old head, if it was kept) is known;
/// returns the new head's image id. Both images are the disk's, under its
/// guard, and nobody has them open (the revert refused a head in use; the new
/// head was made under a temporary name): their keys are edited on their
/// headers, without an open.
fn finish_revert_to(io: &IoCtx<'_>, temp: &str, head: &str, carrier: Option<&str>) -> Result<String> {
    if let Some(c) = carrier {
        match strip_book(io, c) {
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
    }
    io.rename_image(temp, head)?;
    let id = super::id_of(io, head)?;
    io.edit_metadata_by_id(&id, &[KEY_REVERT_TO, KEY_REVERT_CARRIER], &[])?;
    Ok(id)
}

/// Removes the head-only bookkeeping from an image that became a carrier.
fn strip_book(io: &IoCtx<'_>, image: &str) -> Result<()> {
    let id = super::id_of(io, image)?;
    let keys = io.metadata_by_id(&id, super::RBDX_KEY_PREFIX)?;
    let book: Vec<&str> = keys
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with(KEY_SNAP_PREFIX) || k.starts_with(KEY_CARRIER_PREFIX))
        .collect();
    io.edit_metadata_by_id(&id, &book, &[])
}

/// Removes snapshot `snap` of `image`; with format-1 children (protected), flattens
/// them first.
fn remove_snapshot(cluster: &Cluster, io: &IoCtx<'_>, image: &str, snap: &str) -> Result<()> {
    remove_snapshot_of(cluster, io, &*io.open(image)?, snap)
}

/// [`remove_snapshot`] of an image already open read-write.
fn remove_snapshot_of(cluster: &Cluster, io: &IoCtx<'_>, img: &crate::Image<'_>, snap: &str) -> Result<()> {
    let image = img.name();
    match img.snap_remove(snap) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) if e.kind() == Some(ErrorKind::Busy) => {
            // Protected with format-1 children: make them independent first.
            let children = io.open_read_only(image, Some(snap))?.children()?;
            let in_trash = children.iter().filter(|c| c.trash).count();
            for c in children.into_iter().filter(|c| !c.trash) {
                let spec = ImageSpec::new(&c.pool, &c.name)?.in_namespace(&c.namespace)?;
                super::flatten(cluster, &spec)?;
            }
            match img.snap_remove(snap) {
                Err(e) if e.kind() == Some(ErrorKind::Busy) && in_trash > 0 => Err(Error::Invalid(format!(
                    "snapshot {image}@{snap} is protected and {in_trash} of its clones wait in the RBD trash: \
                     it can be removed once they are purged"
                ))),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// How many parent links lie above `image`.
///
/// # Errors
/// Ceph errors.
pub fn depth(io: &IoCtx<'_>, image: &str) -> Result<u32> {
    match io.image_id(image)? {
        Some(id) => depth_of_id(io, &id),
        // Another format: librbd reads it.
        None => depth_above(io.cluster(), io.open_read_only(image, None)?.parent()?),
    }
}

/// How many parent links lie above the image with id `id` (in `io`).
///
/// # Errors
/// `NotFound` for a missing image; Ceph errors.
pub(crate) fn depth_of_id(io: &IoCtx<'_>, id: &str) -> Result<u32> {
    depth_from(io.cluster(), io.head_parent(id)?)
}

/// The length of the clone chain whose first link is `parent` (0 for none).
fn depth_above(cluster: &Cluster, parent: Option<crate::rbd::Parent>) -> Result<u32> {
    let Some(p) = parent else { return Ok(0) };
    let mut pio = cluster.ioctx(&p.image.pool)?;
    pio.set_namespace(&p.image.namespace)?;
    Ok(1 + depth_from(cluster, pio.head_parent(&p.image.id)?)?)
}

/// The length of the clone chain whose first link is `parent`, walked from
/// each parent's header (one read a link, where an open opens the rest of the
/// chain), as an open of each sees it.
pub(crate) fn depth_from(cluster: &Cluster, parent: Option<ParentRef>) -> Result<u32> {
    let mut d = 0;
    let mut cur = parent;
    while let Some(p) = cur {
        d += 1;
        if d > 64 {
            break;
        }
        let pool = cluster.pool_name(p.pool_id)?;
        let mut pio = cluster.ioctx(&pool)?;
        pio.set_namespace(&p.namespace)?;
        cur = pio.head_parent(&p.image_id)?;
    }
    Ok(d)
}

/// Orders `images` so that each comes before its parent.
fn children_first(io: &IoCtx<'_>, images: &[String]) -> Result<Vec<String>, crate::Error> {
    if images.len() < 2 {
        return Ok(images.to_vec());
    }
    let mut parent: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for i in images {
        let p = io.open_read_only(i, None)?.parent()?.map(|p| p.image.name);
        parent.insert(i, p);
    }
    let mut out: Vec<String> = Vec::new();
    let mut left: Vec<&String> = images.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|i| {
            // `i` can go once no remaining image has it as parent.
            let is_parent = parent.iter().any(|(c, p)| {
                p.as_deref() == Some(i.as_str()) && !out.iter().any(|o| o == c) && c != &i.as_str()
            });
            if is_parent {
                true
            } else {
                out.push((*i).clone());
                false
            }
        });
        if left.len() == before {
            // A cycle cannot happen in RBD; keep the rest in any order.
            out.extend(left.drain(..).cloned());
        }
    }
    Ok(out)
}

/// Removes `image` with its snapshots; if clones still read from it, moves it to
/// the trash marked for reclaim. With `trash_delay`, everything goes to the trash.
fn dispose(
    cluster: &Cluster,
    io: &IoCtx<'_>,
    image: &str,
    trash_delay: Option<u64>,
    reclaim: Reclaim,
) -> Result<()> {
    let Some(id) = io.image_id(image)? else { return Ok(()) };
    // Its parent first, when the removal frees the parent's snapshot; the
    // open takes the image's lock.
    let disposed = crate::lock::with_freed_parent_locked(io, &id, image, || {
        let img = io.open_with_id(image, &id)?;
        io.settle_name(image, &id)?;
        dispose_open(cluster, io, img, trash_delay, reclaim)
    });
    match disposed {
        // Gone before; its name may not be (an interrupted rename or removal).
        Err(e) if e.is_not_found() => io.clear_ghost(image).map(drop),
        other => other,
    }
}

/// [`dispose`] of an image open read-write whose removal frees no snapshot of
/// its parent (or whose parent is locked already).
fn dispose_open(
    cluster: &Cluster,
    io: &IoCtx<'_>,
    img: LockedImage<'_>,
    trash_delay: Option<u64>,
    reclaim: Reclaim,
) -> Result<()> {
    for s in img.snapshots()? {
        // A concurrent removal of the same image (two reclaims finishing one
        // requeue) may drop a snapshot after this listing: gone is done.
        match drop_user_snapshot(cluster, io, &img, &s, reclaim) {
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
    }
    // What is left are snapshots that clones still read: format-2 ones in the
    // trash namespace, protected ones of clones in the RBD trash.
    let still_used = !img.snapshots()?.is_empty();
    if still_used {
        img.metadata_set(KEY_RECLAIM, "1")?;
    }
    let image = img.name().to_string();
    let r = img.close_then(|| match (still_used, trash_delay) {
        (true, _) => io.trash_move_unlocked(&image, trash_delay.unwrap_or(0)),
        (false, Some(delay)) => io.trash_move_unlocked(&image, delay),
        (false, None) => io.remove_image_unlocked(&image),
    });
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// [`dispose`]'s step for one of `img`'s snapshots: a user snapshot is removed,
/// its live clones flattened first where they cannot outlive it; clones in the
/// trash keep a protected one.
fn drop_user_snapshot(
    cluster: &Cluster,
    io: &IoCtx<'_>,
    img: &Image<'_>,
    s: &Snapshot,
    reclaim: Reclaim,
) -> Result<()> {
    if img.snap_namespace(s.id)? != SnapNamespace::User {
        return Ok(());
    }
    let image = img.name();
    let protected = img.snap_is_protected(&s.name)?;
    // Format-2 children outlive an unprotected snapshot (it waits in the trash
    // namespace) unless they are to be flattened: only then, or for a protected
    // one, are they listed (an open at the snapshot, which opens the chain).
    let (trashed, live): (Vec<_>, Vec<_>) = if reclaim == Reclaim::Flatten || protected {
        io.open_read_only(image, Some(&s.name))?.children()?.into_iter().partition(|c| c.trash)
    } else {
        Default::default()
    };
    // Format-1 children (a protected snapshot) can only be made independent;
    // one in the trash is going away, and is waited for instead.
    if !live.is_empty() {
        for c in live {
            let spec = ImageSpec::new(&c.pool, &c.name)?.in_namespace(&c.namespace)?;
            match super::flatten(cluster, &spec) {
                Err(e) if e.is_not_found() => {}
                other => other?,
            }
        }
    }
    match img.snap_remove(&s.name) {
        Err(e) if e.is_not_found() => Ok(()),
        // A protected snapshot whose format-1 clones wait in the RBD trash:
        // kept until they are gone; the image goes to the trash for reclaim.
        Err(e) if e.kind() == Some(ErrorKind::Busy) && protected && !trashed.is_empty() => Ok(()),
        other => other,
    }
}

/// Frees images moved to the trash for reclaim whose last clone is gone. Returns
/// how many were freed and how many still wait. Safe to call any time (the
/// drivers call it from their periodic monitor action).
///
/// # Errors
/// Ceph errors other than "still in use".
pub fn reclaim(cluster: &Cluster, pool: &ImageSpec) -> Result<(usize, usize)> {
    let io = ioctx(cluster, pool)?;
    let mut total = 0;
    let mut before = io.trash_list()?.len();
    // Freeing a child can free its parent's trashed snapshot: repeat while the
    // trash shrinks, by this pass or by a concurrent reclaim elsewhere.
    loop {
        let (freed, waiting) = reclaim_pass(cluster, &io)?;
        total += freed;
        let after = io.trash_list()?.len();
        if waiting == 0 || after >= before {
            return Ok((total, waiting));
        }
        before = after;
    }
}

fn reclaim_pass(cluster: &Cluster, io: &IoCtx<'_>) -> Result<(usize, usize)> {
    let (mut freed, mut waiting) = (0, 0);
    // Images a requeue restored and did not put back (interrupted, or racing
    // another reclaim): finish the move.
    for e in io.list_images()? {
        if !e.name.contains(IN_TRANSIT) {
            continue;
        }
        // Only an abandoned one: while a requeue has it open, that run finishes
        // it (many reclaims working one image at once only contend for its lock).
        match io.open_read_only(&e.name, None).and_then(|img| img.watchers()) {
            Ok(w) if !w.is_empty() => {
                waiting += 1;
                continue;
            }
            Ok(_) => {}
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err),
        }
        match dispose(cluster, io, &e.name, None, Reclaim::Trash) {
            // Now in the trash, where the loop below meets it, or freed.
            Ok(()) => {}
            Err(err) if err.kind() == Some(ErrorKind::Busy) => waiting += 1,
            Err(err) => return Err(err),
        }
    }
    for e in io.trash_list()? {
        match reclaim_entry(cluster, io, &e.id, &e.name)? {
            Reclaimed::Freed => freed += 1,
            Reclaimed::Waiting => waiting += 1,
            Reclaimed::NotOurs => {}
        }
    }
    Ok((freed, waiting))
}

/// What [`reclaim_entry`] did with a trash entry.
enum Reclaimed {
    Freed,
    Waiting,
    NotOurs,
}

/// Frees trash entry `id` (named `name`) if rbdx moved it there for reclaim and
/// its last clone is gone.
fn reclaim_entry(cluster: &Cluster, io: &IoCtx<'_>, id: &str, name: &str) -> Result<Reclaimed> {
    let (marked, user_snaps, blocked) = match io.open_by_id_read_only(id) {
        Ok(img) => match inspect_entry(io, id, &img) {
            Ok(found) => found,
            // A snapshot gone after the listing: a concurrent reclaim is
            // requeueing this entry, and finishes it.
            Err(err) if err.is_not_found() => return Ok(Reclaimed::Waiting),
            Err(err) => return Err(err),
        },
        Err(err) if err.is_not_found() => (false, false, false),
        Err(err) => return Err(err),
    };
    if !marked {
        return Ok(Reclaimed::NotOurs);
    }
    if blocked {
        return Ok(Reclaimed::Waiting);
    }
    match io.trash_remove(id, true) {
        Ok(()) => Ok(Reclaimed::Freed),
        Err(err) if err.is_not_found() => Ok(Reclaimed::NotOurs),
        Err(err) if err.kind() == Some(ErrorKind::NotEmpty) && user_snaps => {
            requeue(cluster, io, id, name)?;
            Ok(Reclaimed::Waiting)
        }
        Err(err) if matches!(err.kind(), Some(ErrorKind::Busy | ErrorKind::NotEmpty)) => {
            Ok(Reclaimed::Waiting)
        }
        Err(err) if another_has_it(&err) => Ok(Reclaimed::Waiting),
        Err(err) => Err(err),
    }
}

/// What [`reclaim_entry`] needs to know of trash entry `id`, opened as `img`:
/// whether rbdx marked it for reclaim, whether it has user snapshots, and
/// whether those are blocked by clones that are themselves in the trash.
fn inspect_entry(io: &IoCtx<'_>, id: &str, img: &Image<'_>) -> Result<(bool, bool, bool)> {
    let (mut user, mut blocked) = (false, false);
    for s in img.snapshots()? {
        if img.snap_namespace(s.id)? == SnapNamespace::User {
            user = true;
            // Its clones are in the trash too: nothing to do until they go.
            let children = io.open_by_id_read_only_at(id, &s.name)?.children()?;
            blocked |= !children.is_empty() && children.iter().all(|c| c.trash);
        }
    }
    Ok((img.metadata_get(KEY_RECLAIM)?.is_some(), user, blocked))
}

/// True when a trash call failed because another client is working on the
/// entry at this moment: librbd refuses while it is still being moved in
/// (`EUSERS`), and finds its state changed under the call (`ESTALE`) when a
/// concurrent reclaim is restoring or removing it. That run finishes it; a
/// later pass looks again.
fn another_has_it(err: &Error) -> bool {
    matches!(err, Error::Ceph(e) if [libc::EUSERS, libc::ESTALE].contains(&e.errno))
}

/// Frees, after a removal, the trashed ancestors it may have released: each of
/// `parents` (the removed images' parents, read before) that waits in the trash
/// for reclaim and has no clone left, then that one's parent, and so on. The
/// rest of the pool is the periodic [`reclaim`]'s. Returns how many were freed.
///
/// # Errors
/// Ceph errors.
fn reclaim_ancestors(cluster: &Cluster, parents: Vec<crate::rbd::Parent>) -> Result<usize> {
    let mut freed = 0;
    let mut todo = parents;
    while let Some(p) = todo.pop() {
        if !p.image.trash {
            continue;
        }
        let spec = ImageSpec::new(&p.image.pool, &p.image.name)?.in_namespace(&p.image.namespace)?;
        let io = ioctx(cluster, &spec)?;
        let up = match io.open_by_id_read_only(&p.image.id) {
            Ok(img) => img.parent()?,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if let Reclaimed::Freed = reclaim_entry(cluster, &io, &p.image.id, &p.image.name)? {
            freed += 1;
            todo.extend(up);
        }
    }
    Ok(freed)
}

/// The infix of the name [`requeue`] restores a trashed image under:
/// `<name>.rbdx-reclaim-<trash id>`, unique per trash entry.
const IN_TRANSIT: &str = ".rbdx-reclaim-";

/// The name an image had before reclaim restored it under an internal name
/// (the name itself for any other image).
#[must_use]
pub fn reclaim_origin(name: &str) -> &str {
    name.split_once(IN_TRANSIT).map_or(name, |(n, _)| n)
}

/// A trashed image that got a user snapshot while it was being removed (a clone
/// of it racing the removal takes its base snapshot): librbd can neither remove it
/// nor its snapshot while it is in the trash. Bring it back under an internal
/// name of its own, drop the snapshot as a removal does, and put it back in the
/// trash for a later pass. A requeue interrupted after the restore is finished
/// by the next pass, which looks for that name.
fn requeue(cluster: &Cluster, io: &IoCtx<'_>, id: &str, name: &str) -> Result<()> {
    let back = format!("{}{IN_TRANSIT}{id}", reclaim_origin(name));
    match io.trash_restore(id, &back) {
        // Gone meanwhile, or another reclaim is restoring it: that one finishes.
        Err(e)
            if e.is_not_found()
                || e.is_exists()
                || e.kind() == Some(ErrorKind::Busy)
                || another_has_it(&e) =>
        {
            return Ok(());
        }
        other => other?,
    }
    dispose(cluster, io, &back, None, Reclaim::Trash)
}

/// Makes sure `image@snap` exists, taking it if needed. Safe against concurrent
/// callers: exactly one snapshot results. Returns true if this call took it.
///
/// # Errors
/// `NotFound` for a missing image.
pub fn ensure_snapshot(io: &IoCtx<'_>, image: &str, snap: &str) -> Result<bool> {
    let img = io.open(image)?;
    if img.snapshots()?.iter().any(|s| s.name == snap) {
        return Ok(false);
    }
    match img.snap_create(snap) {
        Ok(()) => Ok(true),
        Err(e) if e.is_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `image@snap` if no clone reads from it; returns whether it was removed.
///
/// # Errors
/// Ceph errors.
pub fn drop_unused_snapshot(io: &IoCtx<'_>, image: &str, snap: &str) -> Result<bool> {
    // The header answers for format-2 clones, and for format-1 ones while the
    // snapshot is unprotected (they need it protected); else librbd lists them
    // (an open at the snapshot, which opens the chain, and a look in every pool).
    let listed = match io.image_id(image)? {
        Some(id) => {
            let found = io
                .snapshots_by_id(&id)?
                .into_iter()
                .find(|s| s.snap.name == snap && s.namespace == SnapNamespace::User);
            let Some(s) = found else { return Ok(false) };
            if s.children > 0 {
                return Ok(false);
            }
            io.snap_protected_by_id(&id, s.snap.id)?
        }
        None => true,
    };
    if listed {
        let at = match io.open_read_only(image, Some(snap)) {
            Err(e) if e.is_not_found() => return Ok(false),
            other => other?,
        };
        if !at.children()?.is_empty() {
            return Ok(false);
        }
    }
    match io.open(image)?.snap_remove(snap) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() || e.kind() == Some(ErrorKind::Busy) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requeued_image_keeps_its_origin_name() {
        assert_eq!(reclaim_origin("one-7-3-0.rbdx-reclaim-10a2b3c4"), "one-7-3-0");
        assert_eq!(reclaim_origin("one-7-3-0"), "one-7-3-0");
        assert_eq!(reclaim_origin("vm-100-disk-0.rbdx-import"), "vm-100-disk-0.rbdx-import");
    }

    #[test]
    fn rbdx_carriers_are_named_after_the_newest_snapshot() {
        let s = |v: &[(u64, &str)]| v.iter().map(|(i, n)| (*i, n.to_string())).collect::<Vec<_>>();
        assert_eq!(
            RBDX_NAMING.carrier("vm-100-disk-0", &s(&[(4, "pre"), (9, "post")])),
            "vm-100-disk-0.rbdx-c9"
        );
        assert_eq!(RBDX_NAMING.carrier("one-3", &s(&[(4, "1"), (7, "2")])), "one-3.rbdx-c7");
        assert!(
            !RBDX_NAMING.is_foreign_carrier("vm-100-disk-1", "vm-100-disk-1-2"),
            "adopts nothing by name"
        );
    }

    #[test]
    fn rbdx_derived_names_belong_to_their_disk() {
        assert!(rbdx_derived("one-5", "one-5.rbdx-new"));
        assert!(rbdx_derived("one-5", "one-5.rbdx-c12"));
        assert!(!rbdx_derived("one-5", "one-50.rbdx-new"));
        assert!(!rbdx_derived("vm-100-disk-1", "vm-100-disk-1-2"));
        assert_eq!(revert_temp_name("one-5-1-0"), "one-5-1-0.rbdx-new");
        assert!(rbdx_derived("one-42", &copy_temp_name("one-42")), "a copy's leftover goes with its image");
    }
}
