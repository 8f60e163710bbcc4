//! rbdx's locks: one rbdx action at a time on an image, one operation at a time
//! on a disk.
//!
//! **Image locks.** librbd forwards maintenance calls (snapshot create, metadata
//! set, resize…) to the client that owns an image's exclusive lock, and the two
//! clients pass that lock back and forth. librbd 16 aborts the owner's process
//! (`FAILED ceph_assert(m_pending_ops == 0)` in `~AsyncOpTracker`) when such a
//! request reaches it while it closes the image: two rbdx processes working on one
//! image at once died that way in our concurrency tests (docs/ceph-behaviour.md).
//! So every read-write open, and every librbd call that opens the image inside
//! (remove, rename, trash move, trash remove), first takes the advisory rados lock
//! `rbdx_action` on the image's header object; it is released after the image is
//! closed. Read-only opens take no lock: librbd registers no watch for them, so no
//! request can reach them.
//!
//! **Parents.** Removing or flattening the last clone of a snapshot that waits in
//! the trash namespace makes librbd free that snapshot, opening the parent
//! read-write inside the call. Such a removal or flatten takes the parent's lock
//! first (parents before children); other clones' do not wait on their parent.
//!
//! **Disk guards.** A disk operation (a revert, a removal, a rename…) is several
//! librbd calls on several images; a [`Guard`] on the disk's name (the same lock on
//! the object `rbdx_lock.<name>`, created with the lock and removed with it) is
//! held for the whole operation, so that two of them never interleave.
//!
//! **Waiting.** A second process (or thread) waits for the lock, up to the
//! connection's OSD operation timeout ([`crate::Cluster::busy_wait`]), then fails
//! with a one-line [`Error::Busy`] naming the holder.
//!
//! **Holders that are gone.** Every holder beats: a thread rewrites the xattr
//! `rbdx.lock.beat` on the locked object every [`HEARTBEAT`], in one compound
//! operation with cls_lock's `assert_locked`, so a holder whose lock was taken
//! from it notices. A waiter takes the lock over
//! - at once, from a holder on this machine that is known to be gone: the lock's
//!   cookie names the host, boot id, PID namespace, pid and process start time,
//!   and no process with that pid and start time exists in this PID namespace
//!   (with `/proc` mounted `hidepid`, or an entry that cannot be read, the holder
//!   counts as alive and is judged by its beat);
//! - from any other holder, only once it has not beaten for the lock grace
//!   ([`crate::Timeouts::lock_grace`]), and only after **fencing** it: its client
//!   is added to the OSD blocklist (`osd blocklist add`, which `profile rbd`
//!   allows), so a holder that was merely paused or cut off cannot write anything
//!   after it lost the lock.
//!
//! Releasing reports a lock that was taken away ([`Error::LockLost`]): the
//! operation cannot tell what it did after that point.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{CephError, Error, ErrorKind, Result, check};
use crate::ffi::rados as sys;
use crate::rados::{IoCtx, WriteOn, cstring, put_string};
use crate::rbd::{Image, ParentKnown, SnapNamespace, Unfinished};

/// The rados lock name.
const LOCK_NAME: &CStr = c"rbdx_action";

/// The xattr a holder rewrites on every beat.
const BEAT_XATTR: &CStr = c"rbdx.lock.beat";

/// How often a holder beats.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// The shortest grace a waiter gives a silent holder: three missed beats.
pub const MIN_GRACE: Duration = Duration::from_secs(6);

/// Prefix of a disk guard's object name.
const GUARD_PREFIX: &str = "rbdx_lock.";

/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// What a lock is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An image's header object, which must exist (the lock must not create it).
    Header,
    /// A disk guard's own object: created by the lock, removed with it.
    Guard,
}

/// A lock held by this process on one object. Released on drop (ignoring a lock
/// that was lost) or by [`ObjectLock::release`].
#[derive(Debug)]
pub(crate) struct ObjectLock<'io> {
    io: &'io IoCtx<'io>,
    oid: String,
    key: String,
    kind: Kind,
    released: bool,
}

/// Locks held by this process, so that one thread can take again a lock it holds
/// (a nested open shares it). Keyed by connection, pool, namespace and object.
struct Held {
    cookie: String,
    count: usize,
    thread: ThreadId,
    beat: Heartbeat,
}

fn held() -> &'static Mutex<HashMap<String, Held>> {
    static HELD: OnceLock<Mutex<HashMap<String, Held>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

/// Who this process is, as written into its lock cookies.
struct Me {
    host: String,
    boot: String,
    pidns: String,
    pid: u32,
    start: String,
}

fn me() -> &'static Me {
    static ME: OnceLock<Me> = OnceLock::new();
    ME.get_or_init(|| {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
        let pid = std::process::id();
        Me {
            host: read("/proc/sys/kernel/hostname"),
            boot: read("/proc/sys/kernel/random/boot_id"),
            pidns: pid_namespace(),
            pid,
            start: match start_time(pid) {
                Proc::Started(s) => s,
                _ => String::new(),
            },
        }
    })
}

/// This process's PID namespace (the inode of `/proc/self/ns/pid`), or `""`.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            let inode = l.strip_prefix("pid:[")?.strip_suffix(']')?.to_string();
            inode.bytes().all(|b| b.is_ascii_digit()).then_some(inode)
        })
        .unwrap_or_default()
}

/// What `/proc` says about a pid.
#[derive(Debug, PartialEq, Eq)]
enum Proc {
    /// Running, started at this time (clock ticks since boot).
    Started(String),
    /// No such process.
    Gone,
    /// Cannot tell (not readable).
    Unknown,
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Proc {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The command name (field 2) is in parentheses and may hold spaces.
            let field = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(19));
            field.map_or(Proc::Unknown, |s| Proc::Started(s.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Proc::Gone,
        Err(_) => Proc::Unknown,
    }
}

/// True if `/proc` hides other users' processes (`hidepid`): an absent entry
/// then proves nothing.
fn proc_hides_pids() -> bool {
    static HIDES: OnceLock<bool> = OnceLock::new();
    *HIDES.get_or_init(|| {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return true };
        info.lines().filter(|l| l.split(' ').nth(4) == Some("/proc")).any(|l| {
            l.split(' ')
                .skip_while(|f| *f != "-")
                .flat_map(|f| f.split(','))
                .any(|o| o.strip_prefix("hidepid=").is_some_and(|v| !matches!(v, "0" | "off")))
        })
    })
}

/// A lock cookie: `rbdx2/<host>/<boot id>/<pid namespace>/<pid>/<start time>/<sequence>`.
fn new_cookie() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let m = me();
    format!(
        "rbdx2/{}/{}/{}/{}/{}/{}",
        m.host,
        m.boot,
        m.pidns,
        m.pid,
        m.start,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a cookie says about its holder.
#[derive(Debug, PartialEq, Eq)]
struct Holder<'a> {
    host: &'a str,
    boot: &'a str,
    pidns: &'a str,
    pid: u32,
    start: &'a str,
}

fn parse_cookie(cookie: &str) -> Option<Holder<'_>> {
    let mut f = cookie.split('/');
    if f.next()? != "rbdx2" {
        return None;
    }
    let (host, boot, pidns) = (f.next()?, f.next()?, f.next()?);
    let (pid, start) = (f.next()?.parse().ok()?, f.next()?);
    Some(Holder { host, boot, pidns, pid, start })
}

/// One holder of the lock, as `rados_list_lockers` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Locker {
    /// `client.<global id>`.
    client: String,
    cookie: String,
    /// `ip:port/nonce`.
    addr: String,
}

impl Locker {
    fn describe(&self) -> String {
        match parse_cookie(&self.cookie) {
            Some(h) => format!("pid {} on {} ({} at {})", h.pid, h.host, self.client, self.addr),
            None => format!("{} at {} (cookie {})", self.client, self.addr, self.cookie),
        }
    }
}

/// A versioned cls encoding (`ENCODE_START(1, 1)`) around `body`.
fn versioned(body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![1, 1]; // struct_v, compat
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The cls_lock `lock` request (`cls_lock_lock_op`): an exclusive lock without
/// expiry.
fn lock_request(cookie: &str, description: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, LOCK_NAME.to_bytes());
    body.push(1); // LOCK_EXCLUSIVE
    put_string(&mut body, cookie.as_bytes());
    put_string(&mut body, b""); // tag
    put_string(&mut body, description.as_bytes());
    body.extend_from_slice(&[0; 8]); // duration: utime_t {0 s, 0 ns}, no expiry
    body.push(0); // flags
    versioned(body)
}

/// The cls_lock `assert_locked` request (`cls_lock_assert_op`): fails unless we
/// hold the lock with `cookie`.
fn assert_request(cookie: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, LOCK_NAME.to_bytes());
    body.push(1); // LOCK_EXCLUSIVE
    put_string(&mut body, cookie.as_bytes());
    put_string(&mut body, b""); // tag
    versioned(body)
}

/// The cls_lock `unlock` request (`cls_lock_unlock_op`).
fn unlock_request(cookie: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, LOCK_NAME.to_bytes());
    put_string(&mut body, cookie.as_bytes());
    versioned(body)
}

impl<'io> ObjectLock<'io> {
    /// Takes the lock of image `name`, waiting for another holder; `None` when
    /// there is no such image (the caller's librbd call reports that).
    pub(crate) fn image(io: &'io IoCtx<'io>, name: &str) -> Result<Option<Self>> {
        match io.image_id(name)? {
            Some(id) => Self::image_by_id(io, &id, name),
            None => Ok(None),
        }
    }

    /// Takes the lock of the image with id `id` (`what` names it in errors).
    pub(crate) fn image_by_id(io: &'io IoCtx<'io>, id: &str, what: &str) -> Result<Option<Self>> {
        Self::take(io, crate::rbd::header_oid(id), Kind::Header, what)
    }

    fn take(io: &'io IoCtx<'io>, oid: String, kind: Kind, what: &str) -> Result<Option<Self>> {
        let instance = io.instance_id();
        let key = format!("{instance}\0{}\0{}\0{oid}", io.pool_id(), io.namespace());
        let this = std::thread::current().id();
        {
            let mut map = held().lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = map.get_mut(&key).filter(|h| h.thread == this) {
                h.count += 1;
                return Ok(Some(Self { io, oid, key, kind, released: false }));
            }
        }
        let cookie = new_cookie();
        if !acquire(io, &oid, kind, &cookie, what)? {
            return Ok(None);
        }
        let beat = Heartbeat::start(io, &oid, kind, &cookie)?;
        let mut map = held().lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(key.clone(), Held { cookie, count: 1, thread: this, beat });
        Ok(Some(Self { io, oid, key, kind, released: false }))
    }

    /// Releases the lock (the last of a nested set unlocks the object).
    ///
    /// # Errors
    /// [`Error::LockLost`] if another client took the lock away while we held it.
    pub(crate) fn release(mut self) -> Result<()> {
        self.released = true;
        self.unlock(&[])
    }

    /// Releases the lock of an image header in the same write as the cls
    /// `rbd` calls `edits` (method, input) on it, which go first: one round
    /// trip for both, and a crash leaves both or neither. A nested holder
    /// writes the edits alone (the outermost unlocks); a lost lock writes
    /// nothing and reports the loss.
    ///
    /// # Errors
    /// As [`ObjectLock::release`]; the edits' errors.
    pub(crate) fn release_with(mut self, edits: &[(&CStr, Vec<u8>)]) -> Result<()> {
        debug_assert!(edits.is_empty() || self.kind == Kind::Header, "edits are cls rbd methods of a header");
        self.released = true;
        self.unlock(edits)
    }

    /// Releases the lock of an image header this process has just removed:
    /// the lock went with the object, so nothing is sent.
    pub(crate) fn release_removed(mut self) {
        self.released = true;
        if let Some(h) = self.forget() {
            h.beat.stop();
        }
    }

    /// Drops this holder from the process's locks; the entry once the last
    /// nested holder has gone.
    fn forget(&self) -> Option<Held> {
        let mut map = held().lock().unwrap_or_else(PoisonError::into_inner);
        let h = map.get_mut(&self.key)?;
        h.count -= 1;
        if h.count > 0 {
            return None;
        }
        map.remove(&self.key)
    }

    /// Unlocks (the last of a nested set), in the same write as the header
    /// edits `edits` when there are any ([`ObjectLock::release_with`]).
    fn unlock(&self, edits: &[(&CStr, Vec<u8>)]) -> Result<()> {
        let _span = crate::trace::span("unlock");
        let Some(h) = self.forget() else {
            // Nested: the outermost holder unlocks; the edits go alone.
            return if edits.is_empty() {
                Ok(())
            } else {
                self.io.exec_write_existing(&self.oid, c"rbd", edits)
            };
        };
        let lost = h.beat.stop();
        if lost {
            // Still ours only if nobody else took it: try, and report the loss.
            let _ = unlock(self.io, &self.oid, &h.cookie);
            return Err(self.lost());
        }
        match self.kind {
            Kind::Header if !edits.is_empty() => {
                let request = unlock_request(&h.cookie);
                let mut calls: Vec<(&CStr, &CStr, &[u8])> =
                    edits.iter().map(|(m, i)| (c"rbd", *m, i.as_slice())).collect();
                calls.push((c"lock", c"unlock", &request));
                self.io.exec_write_calls(&self.oid, WriteOn::Existing, &calls)?;
                crate::crash::point("unlock with the header's edits");
                Ok(())
            }
            // An image removed meanwhile (by us) took its lock with it.
            Kind::Header => match unlock(self.io, &self.oid, &h.cookie) {
                Err(e) if e.is_not_found() => Ok(()),
                r => r,
            },
            Kind::Guard => match remove_guard(self.io, &self.oid, &h.cookie) {
                Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound | ErrorKind::Busy)) => Err(self.lost()),
                r => r,
            },
        }
    }

    fn lost(&self) -> Error {
        Error::LockLost { object: format!("{}/{}", self.io.spec(), self.oid) }
    }
}

impl Drop for ObjectLock<'_> {
    fn drop(&mut self) {
        if !self.released {
            // Dropped on an error path: the operation's own error is what counts.
            let _ = self.unlock(&[]);
        }
    }
}

/// An image open read-write with its `rbdx_action` lock: the image is closed
/// before the lock is released (fields drop in order). Used as the [`Image`] it
/// derefs to.
#[derive(Debug)]
pub struct LockedImage<'io> {
    image: Image<'io>,
    lock: Option<ObjectLock<'io>>,
}

impl<'io> std::ops::Deref for LockedImage<'io> {
    type Target = Image<'io>;

    fn deref(&self) -> &Image<'io> {
        &self.image
    }
}

impl LockedImage<'_> {
    /// Closes the image and releases its lock, reporting a lock that was taken
    /// away meanwhile (dropping the image ignores that).
    ///
    /// # Errors
    /// [`Error::LockLost`].
    pub fn close(self) -> Result<()> {
        let Self { image, lock } = self;
        drop(image);
        lock.map_or(Ok(()), ObjectLock::release)
    }

    /// Closes the image and runs `op`, a librbd call that opens it inside (a
    /// removal, a trash move), still holding its lock: one lock for the whole
    /// step instead of two. What `op` reports is what counts: a removal takes
    /// the lock away with the header.
    pub(crate) fn close_then<T>(self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let Self { image, lock } = self;
        drop(image);
        let out = op();
        drop(lock);
        out
    }
}

/// The read-write opens and the librbd calls that open an image inside, each
/// once this process holds the image's `rbdx_action` lock: the binding layer
/// ([`crate::rbd`]) has the same calls without it.
impl<'c> IoCtx<'c> {
    /// Opens image `name` at its head, read-write, holding its lock (waiting for
    /// another rbdx action that has it).
    ///
    /// # Errors
    /// `NotFound` if there is no such image; [`Error::Busy`] if another rbdx
    /// action kept it for longer than [`crate::Cluster::busy_wait`].
    pub fn open<'io>(&'io self, name: &str) -> Result<LockedImage<'io>> {
        let lock = ObjectLock::image(self, name)?;
        let image = Image::open(self, name, None, false, false)?;
        Ok(LockedImage { image, lock })
    }

    /// [`IoCtx::open`] of image `name` whose id `id` the caller has read.
    pub(crate) fn open_with_id<'io>(&'io self, name: &str, id: &str) -> Result<LockedImage<'io>> {
        let lock = ObjectLock::image_by_id(self, id, name)?;
        let image = Image::open(self, name, None, false, false)?;
        Ok(LockedImage { image, lock })
    }

    /// Runs `op`, an operation written directly on the objects of image
    /// `name` (whose id `id` the caller read), holding the image's lock
    /// without opening it. `op` returns, beside its outcome, cls `rbd` calls
    /// (method, input) for the header that go in the write releasing the lock.
    ///
    /// # Errors
    /// [`Error::Busy`] as for [`IoCtx::open`]; what `op` reports;
    /// [`Error::LockLost`].
    pub(crate) fn with_image_lock<T>(
        &self,
        id: &str,
        name: &str,
        op: impl FnOnce() -> Result<(T, Vec<(&'static CStr, Vec<u8>)>)>,
    ) -> Result<T> {
        let lock = ObjectLock::image_by_id(self, id, name)?;
        let (out, calls) = op()?;
        match lock {
            Some(lock) => lock.release_with(&calls)?,
            None if calls.is_empty() => {}
            None => self.exec_write_existing(&crate::rbd::header_oid(id), c"rbd", &calls)?,
        }
        Ok(out)
    }

    /// Removes image `name`, holding its lock (librbd refuses with `Busy` while
    /// it has watchers and `NotEmpty` while it has snapshots).
    ///
    /// # Errors
    /// `NotFound`, `Busy`, `NotEmpty`.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        let Some(id) = self.image_id(name)? else {
            // A clone stopped before its last step is finished and removed
            // as a whole (its parent snapshot then lets go of it as librbd's
            // removal does), or removed where nothing links it yet.
            match self.settle_unfinished_clone(name)? {
                Unfinished::Finished => return self.remove_image(name),
                Unfinished::Removed => return Ok(()),
                // A missing image: librbd reports it.
                Unfinished::No => return self.remove_image_unlocked(name),
            }
        };
        self.remove_image_with_id(name, &id)
    }

    /// [`IoCtx::remove_image`] of image `name` whose id `id` the caller has read.
    ///
    /// # Errors
    /// As [`IoCtx::remove_image`].
    pub(crate) fn remove_image_with_id(&self, name: &str, id: &str) -> Result<()> {
        self.remove_image_known(name, id, ParentKnown::Unread)
    }

    /// [`IoCtx::remove_image_with_id`] where the caller read what `parent`
    /// says of the image's parent (not read again; a parent snapshot in the
    /// trash namespace is [`ParentKnown::Unread`]: its turn is taken).
    ///
    /// # Errors
    /// As [`IoCtx::remove_image`].
    pub(crate) fn remove_image_known(&self, name: &str, id: &str, parent: ParentKnown<'_>) -> Result<()> {
        let remove = || {
            let lock = ObjectLock::image_by_id(self, id, name)?;
            self.settle_name(name, id)?;
            if self.remove_directly(name, id, parent)? {
                if let Some(lock) = lock {
                    lock.release_removed();
                }
                return Ok(());
            }
            self.remove_image_unlocked(name)
        };
        let removed = match parent {
            ParentKnown::Unread => with_freed_parent_locked(self, id, name, remove),
            ParentKnown::NoParent | ParentKnown::Live(_) => remove(),
        };
        match removed {
            // Gone before; its name may not be.
            Err(e) if e.is_not_found() => {
                self.clear_ghost(name)?;
                Err(e)
            }
            other => other,
        }
    }

    /// Makes `name` the only name of image `id` where a rename stopped
    /// half-way left it two: the directory listing the other name, whose id
    /// object names the image too. The directory moves to `name` and the other
    /// id object goes, so that a removal through `name` leaves no name behind
    /// (librbd's would remove the image and leave the listed name, opening
    /// nothing). One read when the directory lists `name` (or nothing). The
    /// caller holds the image's lock (a rename in flight holds it too).
    ///
    /// # Errors
    /// Ceph errors.
    pub(crate) fn settle_name(&self, name: &str, id: &str) -> Result<()> {
        let Some(listed) = self.listed_name(id)? else { return Ok(()) };
        // `name` may have gone with a rename finished while the lock was awaited.
        if listed != name
            && self.image_id(&listed)?.as_deref() == Some(id)
            && self.image_id(name)?.as_deref() == Some(id)
        {
            self.finish_rename(&listed, name)?;
        }
        Ok(())
    }

    /// Clears image name `name` if it is a ghost: an id object (and maybe a
    /// directory entry) naming an image whose header is gone, which an
    /// interrupted rename or removal leaves. It opens nothing, yet holds the
    /// name (creating it again fails) and `rbd ls` lists it. librbd's removal
    /// clears both and answers "not found". `false`, nothing done, for a name
    /// without an id object or whose image is there.
    ///
    /// # Errors
    /// Ceph errors.
    pub(crate) fn clear_ghost(&self, name: &str) -> Result<bool> {
        let Some(id) = self.image_id(name)? else { return Ok(false) };
        if self.object_exists(&crate::rbd::header_oid(&id))? {
            return Ok(false);
        }
        match self.remove_image_unlocked(name) {
            Err(e) if e.is_not_found() => Ok(true),
            other => other.map(|()| true),
        }
    }

    /// Renames image `from` to `to` within this pool, holding its lock. A
    /// rename that stopped half-way (both names open the image, so librbd
    /// finds `to` taken) is finished instead.
    ///
    /// # Errors
    /// `NotFound`, `Exists`.
    pub fn rename_image(&self, from: &str, to: &str) -> Result<()> {
        let id = self.image_id(from)?;
        let _lock = match &id {
            Some(id) => ObjectLock::image_by_id(self, id, from)?,
            None => None,
        };
        match self.rename_image_unlocked(from, to, id.as_deref()) {
            Err(e) if e.is_exists() && self.finish_rename(from, to)? => Ok(()),
            other => other,
        }
    }

    /// Finishes a rename of image `from` to `to` that an interrupted run
    /// stopped half-way (both names open the image), holding its lock: a run
    /// that finds its renamed image in place calls this before it reports it
    /// done, or the old name would stay behind, naming the same image (a
    /// later removal of that leftover would remove it). `false` when there
    /// was none: two reads.
    ///
    /// # Errors
    /// Ceph errors; [`crate::Error::BadReply`] for a directory that lists
    /// neither name for the image.
    pub fn finish_stopped_rename(&self, from: &str, to: &str) -> Result<bool> {
        let Some(id) = self.image_id(from)? else { return Ok(false) };
        if self.image_id(to)?.as_deref() != Some(id.as_str()) {
            return Ok(false);
        }
        let _lock = ObjectLock::image_by_id(self, &id, from)?;
        self.finish_rename(from, to)
    }

    /// Moves image `name` to the trash, holding its lock; it cannot be removed
    /// from there before `delay_secs` have passed (without `force`).
    ///
    /// # Errors
    /// `NotFound`; `Busy` while it has watchers.
    pub fn trash_move(&self, name: &str, delay_secs: u64) -> Result<()> {
        let id = self.image_id(name)?;
        let _lock = match &id {
            Some(id) => {
                let lock = ObjectLock::image_by_id(self, id, name)?;
                self.settle_name(name, id)?;
                lock
            }
            None => None,
        };
        self.trash_move_unlocked(name, delay_secs)
    }

    /// Removes trash entry `id` for good, holding its lock; `force` ignores the
    /// deferment time.
    ///
    /// # Errors
    /// `NotFound`; `PermissionDenied` before the deferment end without `force`;
    /// `NotEmpty`/`Busy` while it has snapshots with children.
    pub fn trash_remove(&self, id: &str, force: bool) -> Result<()> {
        let what = format!("trash id {id}");
        with_freed_parent_locked(self, id, &what, || {
            let _lock = ObjectLock::image_by_id(self, id, &what)?;
            self.trash_remove_unlocked(id, force)
        })
    }

    /// Flattens image `name` (nothing to do for an image that is no clone),
    /// holding its lock.
    ///
    /// # Errors
    /// `NotFound`; Ceph errors.
    pub fn flatten_image(&self, name: &str) -> Result<()> {
        // A missing image: the open reports it.
        let Some(id) = self.image_id(name)? else { return self.open(name).map(drop) };
        with_freed_parent_locked(self, &id, name, || {
            let img = self.open(name)?;
            if img.parent()?.is_some() {
                img.flatten()?;
            }
            img.close()
        })
    }
}

/// Runs `op`, a removal or flatten of the image with id `id` (`what` names it),
/// holding the lock of its parent first when that is needed: librbd frees a
/// parent snapshot waiting in the trash namespace with its last clone, and
/// opens the parent read-write inside the call to do it. That open must take
/// turns with rbdx's own on the parent, as every read-write open does (see the
/// module documentation; docs/ceph-behaviour.md has the crash in librbd's
/// exclusive-lock code this most likely caused). Parents are locked
/// before their children, the order a removal that flattens an image's
/// children holds them in. Other clones' removals do not take turns on their
/// parent: they would wait on each other for nothing.
pub(crate) fn with_freed_parent_locked<T>(
    io: &IoCtx<'_>,
    id: &str,
    what: &str,
    op: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let parent = match io.parent_ref(id) {
        Ok(p) => p,
        // OSDs older than Nautilus, whose librbd has no trash namespace either.
        Err(Error::Ceph(e)) if e.errno == libc::EOPNOTSUPP => None,
        Err(e) => return Err(e),
    };
    let Some(p) = parent else { return op() };
    let Some(pio) = io.parent_ioctx(&p)? else { return op() };
    if pio.snap_namespace_by_id(&p.image_id, p.snap_id)? != Some(SnapNamespace::Trash) {
        return op();
    }
    let lock = ObjectLock::image_by_id(&pio, &p.image_id, &format!("parent of {what}"))?;
    let out = op();
    let released = lock.map_or(Ok(()), ObjectLock::release);
    let out = out?;
    released.map(|()| out)
}

/// A disk operation's hold on a disk (see the module documentation).
#[derive(Debug)]
#[must_use = "a guard protects the disk only while it is held"]
pub struct Guard<'io>(ObjectLock<'io>);

impl Guard<'_> {
    /// Ends the operation's hold on the disk.
    ///
    /// # Errors
    /// [`Error::LockLost`] if another client fenced us and took the guard.
    pub fn release(self) -> Result<()> {
        self.0.release()
    }
}

impl<'c> IoCtx<'c> {
    /// Takes the guard of disk `name` for one whole disk operation, waiting for
    /// another operation on it (up to [`crate::Cluster::busy_wait`]).
    ///
    /// # Errors
    /// [`Error::Busy`] if another operation kept it for as long as we could wait.
    pub fn guard<'io>(&'io self, name: &str) -> Result<Guard<'io>> {
        let lock = ObjectLock::take(self, format!("{GUARD_PREFIX}{name}"), Kind::Guard, name)?;
        // A guard object is created by its lock: there is always one.
        lock.map(Guard).ok_or_else(|| Error::Invalid(format!("cannot guard {}/{name}", self.spec())))
    }
}

/// The holder's beating thread.
#[derive(Debug)]
struct Heartbeat {
    stop: Arc<(Mutex<bool>, Condvar)>,
    lost: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A raw librados pointer moved to the heartbeat thread.
struct Raw<T>(T);
// SAFETY: librados handles may be used from any thread; the heartbeat thread is
// joined before the lock that keeps the cluster handle alive is released.
unsafe impl<T> Send for Raw<T> {}

impl Heartbeat {
    fn start(io: &IoCtx<'_>, oid: &str, kind: Kind, cookie: &str) -> Result<Self> {
        // Its own I/O context on the same connection: the caller's may be gone
        // before the last nested holder of the lock.
        let mut raw: sys::rados_ioctx_t = std::ptr::null_mut();
        // SAFETY: `io.raw()` is live; its cluster handle is connected and outlives
        // every lock taken through it; `raw` is a valid out-pointer.
        let r = unsafe {
            sys::rados_ioctx_create2(sys::rados_ioctx_get_cluster(io.raw()), io.pool_id(), &mut raw)
        };
        check(r.into(), "rados_ioctx_create2", || io.spec())?;
        let ns = cstring("namespace", io.namespace())?;
        // SAFETY: `raw` was just created; the string is copied.
        unsafe { sys::rados_ioctx_set_namespace(raw, ns.as_ptr()) };
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let lost = Arc::new(AtomicBool::new(false));
        let (o, request) = (cstring("object name", oid)?, assert_request(cookie));
        let (raw, stop2, lost2, cookie) =
            (Raw(raw), Arc::clone(&stop), Arc::clone(&lost), cookie.to_string());
        let thread = std::thread::Builder::new()
            .name("rbdx-lock-beat".into())
            .spawn(move || {
                let raw = raw;
                let (flag, cv) = &*stop2;
                let mut n: u64 = 0;
                let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    stopped = cv.wait_timeout(stopped, HEARTBEAT).unwrap_or_else(PoisonError::into_inner).0;
                    if *stopped {
                        break;
                    }
                    n += 1;
                    let value = format!("{cookie} {n}");
                    // SAFETY: `raw.0` is this thread's own live I/O context.
                    let r = unsafe { beat(raw.0, &o, &request, value.as_bytes()) };
                    // A header gone with its image (removed by us) is no loss; a
                    // lock held by another cookie, a guard object gone, or this
                    // client blocklisted is.
                    if r == -libc::ENOENT && kind == Kind::Header {
                        break;
                    }
                    if [libc::EBUSY, libc::ENOENT, libc::ESHUTDOWN, libc::EINVAL].contains(&-r) {
                        lost2.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                drop(stopped);
                // SAFETY: created in `start` for this thread alone; last use.
                unsafe { sys::rados_ioctx_destroy(raw.0) };
            })
            .map_err(|e| Error::Config(format!("cannot start the lock heartbeat: {e}")))?;
        Ok(Self { stop, lost, thread: Some(thread) })
    }

    /// Stops beating; true if the lock was found lost.
    fn stop(mut self) -> bool {
        *self.stop.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lost.load(Ordering::SeqCst)
    }
}

/// One beat: `assert_locked` and the beat xattr in one operation.
///
/// # Safety
/// `io` must be a live I/O context.
unsafe fn beat(io: sys::rados_ioctx_t, oid: &CStr, assert: &[u8], value: &[u8]) -> libc::c_int {
    // SAFETY: the op is released below on every path; `assert`, `value` and
    // `rval` outlive `rados_write_op_operate`, its last use.
    unsafe {
        let op = sys::rados_create_write_op();
        if op.is_null() {
            return -libc::ENOMEM;
        }
        let mut rval: libc::c_int = 0;
        sys::rados_write_op_exec(
            op,
            c"lock".as_ptr(),
            c"assert_locked".as_ptr(),
            assert.as_ptr().cast(),
            assert.len(),
            &mut rval,
        );
        sys::rados_write_op_setxattr(op, BEAT_XATTR.as_ptr(), value.as_ptr().cast(), value.len());
        let r = sys::rados_write_op_operate(op, io, oid.as_ptr(), std::ptr::null_mut(), 0);
        sys::rados_release_write_op(op);
        r
    }
}

/// Takes the lock on `oid` with `cookie`, waiting; false if it is an image header
/// that does not exist.
fn acquire(io: &IoCtx<'_>, oid: &str, kind: Kind, cookie: &str, what: &str) -> Result<bool> {
    let _span = crate::trace::span("lock");
    let m = me();
    let description = format!("rbdx action, pid {} on {}", m.pid, m.host);
    let started = Instant::now();
    let deadline = crate::deadline(io.cluster().busy_wait());
    let grace = io.cluster().lock_grace().max(MIN_GRACE);
    let mut pause = Duration::from_millis(5);
    // The holder last seen and its beat, and since when it has not changed.
    let mut silent: Option<(Locker, Option<Vec<u8>>, Instant)> = None;
    loop {
        match try_lock(io, oid, kind, cookie, &description) {
            // `Exists`: held with our cookie, which is this attempt's alone: a
            // resent request that had already succeeded.
            Ok(()) | Err(Error::Ceph(CephError { errno: libc::EEXIST, .. })) => return Ok(true),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) && kind == Kind::Header => return Ok(false),
            Err(e) if e.kind() == Some(ErrorKind::Busy) => {}
            Err(e) => return Err(e),
        }
        let holder = lockers(io, oid)?.into_iter().next();
        if let Some(h) = &holder {
            match judge(io, oid, h, grace, &mut silent)? {
                Verdict::Alive => {}
                Verdict::Gone => {
                    break_lock(io, oid, h)?;
                    continue;
                }
                Verdict::Silent => {
                    fence(io, h)?;
                    break_lock(io, oid, h)?;
                    continue;
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Busy {
                image: format!("{}/{what}", io.spec()),
                holder: holder.map_or_else(|| "gone meanwhile".to_string(), |h| h.describe()),
                waited: now - started,
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// What a waiter concludes about a holder.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Alive,
    /// Known gone (a process of this machine that no longer exists).
    Gone,
    /// Has not beaten for the grace: presumed dead, to be fenced.
    Silent,
}

fn judge(
    io: &IoCtx<'_>,
    oid: &str,
    holder: &Locker,
    grace: Duration,
    silent: &mut Option<(Locker, Option<Vec<u8>>, Instant)>,
) -> Result<Verdict> {
    let m = me();
    if let Some(h) = parse_cookie(&holder.cookie)
        && (h.host, h.boot, h.pidns) == (m.host.as_str(), m.boot.as_str(), m.pidns.as_str())
        && !m.boot.is_empty()
        && !m.pidns.is_empty()
    {
        match start_time(h.pid) {
            Proc::Started(s) if s != h.start => return Ok(Verdict::Gone),
            Proc::Gone if !proc_hides_pids() => return Ok(Verdict::Gone),
            _ => {}
        }
    }
    let beat = read_beat(io, oid)?;
    match silent {
        Some((seen, last, since)) if seen == holder && *last == beat => {
            Ok(if since.elapsed() >= grace { Verdict::Silent } else { Verdict::Alive })
        }
        _ => {
            *silent = Some((holder.clone(), beat, Instant::now()));
            Ok(Verdict::Alive)
        }
    }
}

fn read_beat(io: &IoCtx<'_>, oid: &str) -> Result<Option<Vec<u8>>> {
    let o = cstring("object name", oid)?;
    let mut buf = vec![0u8; 512];
    // SAFETY: `io.raw()` is live; the names outlive the call; `buf` is writable for
    // `buf.len()` bytes.
    let r = unsafe {
        sys::rados_getxattr(io.raw(), o.as_ptr(), BEAT_XATTR.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if r == -libc::ENODATA || r == -libc::ENOENT {
        return Ok(None);
    }
    let n = check(r.into(), "rados_getxattr", || format!("{}/{oid}", io.spec()))?;
    buf.truncate(usize::try_from(n).unwrap_or(0));
    Ok(Some(buf))
}

/// Blocklists the holder's client, so that nothing it still sends is applied.
fn fence(io: &IoCtx<'_>, holder: &Locker) -> Result<()> {
    let c = io.cluster();
    let mine = io.instance_id();
    if holder.client == format!("client.{mine}") {
        return Err(Error::Invalid(format!("{} holds a lock of its own connection", holder.describe())));
    }
    c.mon_command(&json!({"prefix": "osd blocklist", "blocklistop": "add", "addr": holder.addr}))?;
    Ok(())
}

fn try_lock(io: &IoCtx<'_>, oid: &str, kind: Kind, cookie: &str, description: &str) -> Result<()> {
    let o = cstring("object name", oid)?;
    let request = lock_request(cookie, description);
    // SAFETY: creates a write op that we release below on every path.
    let op = unsafe { sys::rados_create_write_op() };
    if op.is_null() {
        return Err(CephError::new("rados_create_write_op", -i64::from(libc::ENOMEM), oid).into());
    }
    let mut rval: libc::c_int = 0;
    // SAFETY: `op` is a live write op; the class and method names are static C
    // strings; `request` and `rval` outlive `rados_write_op_operate`, which is the
    // last use of the op before its release.
    let r = unsafe {
        if kind == Kind::Header {
            // A header removed meanwhile must not be created again by the lock.
            sys::rados_write_op_assert_exists(op);
        }
        sys::rados_write_op_exec(
            op,
            c"lock".as_ptr(),
            c"lock".as_ptr(),
            request.as_ptr().cast(),
            request.len(),
            &mut rval,
        );
        let r = sys::rados_write_op_operate(op, io.raw(), o.as_ptr(), std::ptr::null_mut(), 0);
        sys::rados_release_write_op(op);
        r
    };
    check(r.into(), "cls_lock lock", || format!("{}/{oid}", io.spec()))?;
    Ok(())
}

fn unlock(io: &IoCtx<'_>, oid: &str, cookie: &str) -> Result<()> {
    let (o, c) = (cstring("object name", oid)?, cstring("cookie", cookie)?);
    // SAFETY: `io.raw()` is live; the strings outlive the call.
    let r = unsafe { sys::rados_unlock(io.raw(), o.as_ptr(), LOCK_NAME.as_ptr(), c.as_ptr()) };
    check(r.into(), "rados_unlock", || format!("{}/{oid}", io.spec()))?;
    Ok(())
}

/// Removes a guard object, if we still hold its lock.
fn remove_guard(io: &IoCtx<'_>, oid: &str, cookie: &str) -> Result<()> {
    let o = cstring("object name", oid)?;
    let request = assert_request(cookie);
    // SAFETY: as in `try_lock`.
    let op = unsafe { sys::rados_create_write_op() };
    if op.is_null() {
        return Err(CephError::new("rados_create_write_op", -i64::from(libc::ENOMEM), oid).into());
    }
    let mut rval: libc::c_int = 0;
    // SAFETY: as in `try_lock`.
    let r = unsafe {
        sys::rados_write_op_exec(
            op,
            c"lock".as_ptr(),
            c"assert_locked".as_ptr(),
            request.as_ptr().cast(),
            request.len(),
            &mut rval,
        );
        sys::rados_write_op_remove(op);
        let r = sys::rados_write_op_operate(op, io.raw(), o.as_ptr(), std::ptr::null_mut(), 0);
        sys::rados_release_write_op(op);
        r
    };
    check(r.into(), "remove guard", || format!("{}/{oid}", io.spec()))?;
    Ok(())
}

fn break_lock(io: &IoCtx<'_>, oid: &str, holder: &Locker) -> Result<()> {
    let o = cstring("object name", oid)?;
    let (cl, c) = (cstring("client", &holder.client)?, cstring("cookie", &holder.cookie)?);
    // SAFETY: `io.raw()` is live; the strings outlive the call.
    let r =
        unsafe { sys::rados_break_lock(io.raw(), o.as_ptr(), LOCK_NAME.as_ptr(), cl.as_ptr(), c.as_ptr()) };
    match check(r.into(), "rados_break_lock", || format!("{}/{oid}", io.spec())) {
        // Released or broken by someone else meanwhile.
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map(drop),
    }
}

/// The holders of the lock on `oid` (none if it is free or the object is gone).
fn lockers(io: &IoCtx<'_>, oid: &str) -> Result<Vec<Locker>> {
    let o = cstring("object name", oid)?;
    let mut size = 256usize;
    loop {
        let (mut tag, mut clients, mut cookies, mut addrs) =
            (vec![0u8; size], vec![0u8; size], vec![0u8; size], vec![0u8; size]);
        let (mut tag_len, mut clients_len, mut cookies_len, mut addrs_len) = (size, size, size, size);
        let mut exclusive: libc::c_int = 0;
        // SAFETY: `io.raw()` is live; the names outlive the call; each buffer is
        // writable for the length passed with it, which librados updates.
        let r = unsafe {
            sys::rados_list_lockers(
                io.raw(),
                o.as_ptr(),
                LOCK_NAME.as_ptr(),
                &mut exclusive,
                tag.as_mut_ptr().cast(),
                &mut tag_len,
                clients.as_mut_ptr().cast(),
                &mut clients_len,
                cookies.as_mut_ptr().cast(),
                &mut cookies_len,
                addrs.as_mut_ptr().cast(),
                &mut addrs_len,
            )
        };
        if r == -(libc::ERANGE as isize) && size < 1 << 20 {
            size = [tag_len, clients_len, cookies_len, addrs_len, size * 2].into_iter().max().unwrap_or(size);
            continue;
        }
        if r == -(libc::ENOENT as isize) {
            return Ok(Vec::new());
        }
        check(r as i64, "rados_list_lockers", || format!("{}/{oid}", io.spec()))?;
        let split = |b: &[u8], len: usize| -> Vec<String> {
            b[..len.min(b.len())]
                .split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let (clients, cookies, addrs) =
            (split(&clients, clients_len), split(&cookies, cookies_len), split(&addrs, addrs_len));
        return Ok(clients
            .into_iter()
            .zip(cookies)
            .zip(addrs)
            .map(|((client, cookie), addr)| Locker { client, cookie, addr })
            .collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_request_is_a_versioned_cls_lock_op() {
        let r = lock_request("c", "d");
        assert_eq!(&r[..2], &[1, 1]);
        assert_eq!(u32::from_le_bytes(r[2..6].try_into().unwrap()) as usize, r.len() - 6);
        let body = &r[6..];
        let want = [
            &[11, 0, 0, 0][..],
            b"rbdx_action",
            &[1, 1, 0, 0, 0, b'c', 0, 0, 0, 0, 1, 0, 0, 0, b'd'],
            &[0; 9],
        ]
        .concat();
        assert_eq!(body, want);
        let a = assert_request("c");
        let want =
            [&[1, 1, 25, 0, 0, 0, 11, 0, 0, 0][..], b"rbdx_action", &[1, 1, 0, 0, 0, b'c', 0, 0, 0, 0]]
                .concat();
        assert_eq!(a, want);
    }

    #[test]
    fn cookies_name_their_holder() {
        let c = new_cookie();
        let h = parse_cookie(&c).unwrap();
        assert_eq!(h.pid, std::process::id());
        assert_eq!(start_time(h.pid), Proc::Started(h.start.to_string()));
        assert!(!h.boot.is_empty());
        assert!(!h.pidns.is_empty() && h.pidns.bytes().all(|b| b.is_ascii_digit()), "{c}");
        assert_ne!(new_cookie(), c, "each lock has its own cookie");
        assert_eq!(parse_cookie("auto 1234"), None);
        // A cookie of the first format (no PID namespace) is nobody we can check.
        assert_eq!(parse_cookie("rbdx/h/b/123/1/0"), None);
        assert_eq!(parse_cookie("rbdx2/h/b/1/notapid/1/0"), None);
    }

    #[test]
    fn a_process_that_is_gone_has_no_start_time() {
        assert!(matches!(start_time(std::process::id()), Proc::Started(_)));
        assert_eq!(start_time(u32::MAX), Proc::Gone);
    }
}
