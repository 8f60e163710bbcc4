//! One rbdx action at a time on an image.
//!
//! librbd forwards maintenance calls (snapshot create, metadata set, resize…) to
//! the client that owns an image's exclusive lock, and the two clients pass that
//! lock back and forth. librbd 16 aborts the owner's process (`FAILED
//! ceph_assert(m_pending_ops == 0)` in `~AsyncOpTracker`) when such a request
//! reaches it while it closes the image: two rbdx processes working on one image
//! at once died that way in our concurrency tests (docs/ceph-behaviour.md).
//!
//! So every read-write open, and every librbd call that opens the image inside
//! (remove, rename, trash move, trash remove), first takes an advisory rados lock
//! named `rbdx_action` on the image's header object; it is released after the
//! image is closed. A second process waits for it, up to the connection's OSD
//! operation timeout, then fails with a one-line [`Error::Busy`]. Images opened
//! read-only take no lock: librbd registers no watch for them, so no request can
//! reach them.
//!
//! A process that died holding the lock leaves it behind. The lock's cookie names
//! the holder (host, boot id, pid and process start time), and a waiter breaks the
//! lock when the holder is known to be gone: on the same machine (same boot id
//! and host name, so not another container), when no process with that pid and
//! start time exists; on another machine, when
//! the holder has not been a watcher of the image for [`REMOTE_GRACE`] (librbd
//! keeps a watch while the image is open; a holder between two librbd calls may
//! briefly have none).

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::{CephError, Error, ErrorKind, Result, check};
use crate::ffi::rados as sys;
use crate::rados::{IoCtx, cstring};

use super::image::Image;

/// The rados lock name on the header object.
const LOCK_NAME: &CStr = c"rbdx_action";

/// How long a holder on another machine may go without watching the image before
/// its lock is taken as abandoned.
const REMOTE_GRACE: Duration = Duration::from_secs(10);

/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// The `rbdx_action` lock on one image, held by this process. Released on drop
/// (after the [`Image`] that holds it is closed: `Image` drops it last).
#[derive(Debug)]
pub(crate) struct ActionLock<'io> {
    io: &'io IoCtx<'io>,
    oid: String,
    key: String,
}

/// Locks held by this process, so that one thread can open an image it already
/// holds (a nested open shares the lock).
struct Held {
    cookie: String,
    count: usize,
    thread: ThreadId,
}

fn held() -> &'static Mutex<HashMap<String, Held>> {
    static HELD: OnceLock<Mutex<HashMap<String, Held>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

/// Who this process is, as written into its lock cookies.
struct Me {
    host: String,
    boot: String,
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
            pid,
            start: start_time(pid).unwrap_or_default(),
        }
    })
}

/// The start time of process `pid` (clock ticks since boot), or `None` if there
/// is no such process.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// A lock cookie: `rbdx/<host>/<boot id>/<pid>/<start time>/<sequence>`.
fn new_cookie() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let m = me();
    format!("rbdx/{}/{}/{}/{}/{}", m.host, m.boot, m.pid, m.start, SEQ.fetch_add(1, Ordering::Relaxed))
}

/// What a cookie says about its holder.
#[derive(Debug, PartialEq, Eq)]
struct Holder<'a> {
    host: &'a str,
    boot: &'a str,
    pid: u32,
    start: &'a str,
}

fn parse_cookie(cookie: &str) -> Option<Holder<'_>> {
    let mut f = cookie.split('/');
    if f.next()? != "rbdx" {
        return None;
    }
    let (host, boot, pid, start) = (f.next()?, f.next()?, f.next()?.parse().ok()?, f.next()?);
    Some(Holder { host, boot, pid, start })
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

/// The cls_lock `lock` request for [`LOCK_NAME`] (`cls_lock_lock_op`, encoding
/// version 1): an exclusive lock without expiry. Sent with `assert_exists` so
/// that a header removed meanwhile is not created again by the lock.
fn lock_request(cookie: &str, description: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(s);
    }
    let mut body = Vec::new();
    string(&mut body, LOCK_NAME.to_bytes());
    body.push(1); // LOCK_EXCLUSIVE
    string(&mut body, cookie.as_bytes());
    string(&mut body, b""); // tag
    string(&mut body, description.as_bytes());
    body.extend_from_slice(&[0; 8]); // duration: utime_t {0 s, 0 ns}, no expiry
    body.push(0); // flags
    let mut out = vec![1, 1]; // struct_v, compat
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The header object of image `id`.
fn header(id: &str) -> String {
    format!("rbd_header.{id}")
}

/// The id of image `name`, or `None` if there is no such image.
fn image_id(io: &IoCtx<'_>, name: &str) -> Result<Option<String>> {
    let oid = cstring("image name", &format!("rbd_id.{name}"))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `io.raw()` is a live I/O context; `oid` outlives the call; `buf` is
    // writable for `buf.len()` bytes.
    let r = unsafe { sys::rados_read(io.raw(), oid.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r == -libc::ENOENT {
        return Ok(None);
    }
    let n = usize::try_from(check(r.into(), "rados_read", || format!("{}/rbd_id.{name}", io.spec()))?)
        .unwrap_or(0);
    // An encoded string: a little-endian u32 length, then the bytes.
    let id = buf.get(..n).and_then(|b| {
        let len = usize::try_from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)).ok()?;
        std::str::from_utf8(b.get(4..4 + len)?).ok()
    });
    match id {
        Some(id) if !id.is_empty() => Ok(Some(id.to_string())),
        _ => Err(Error::BadReply {
            command: format!("read {}/rbd_id.{name}", io.spec()),
            detail: "not an image id".into(),
        }),
    }
}

impl<'io> ActionLock<'io> {
    /// Takes the lock of image `name`, waiting for another holder; `None` when
    /// there is no such image (the caller's librbd call reports that).
    pub(crate) fn by_name(io: &'io IoCtx<'io>, name: &str) -> Result<Option<Self>> {
        match image_id(io, name)? {
            Some(id) => Self::by_id(io, &id, name),
            None => Ok(None),
        }
    }

    /// Takes the lock of the image with id `id` (`what` names it in errors).
    pub(crate) fn by_id(io: &'io IoCtx<'io>, id: &str, what: &str) -> Result<Option<Self>> {
        let oid = header(id);
        let key = format!("{}\0{}\0{oid}", io.pool_id(), io.namespace());
        let this = std::thread::current().id();
        {
            let mut map = held().lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = map.get_mut(&key).filter(|h| h.thread == this) {
                h.count += 1;
                return Ok(Some(Self { io, oid, key }));
            }
        }
        let cookie = new_cookie();
        if !acquire(io, &oid, id, &cookie, what)? {
            return Ok(None);
        }
        let mut map = held().lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(key.clone(), Held { cookie, count: 1, thread: this });
        Ok(Some(Self { io, oid, key }))
    }
}

impl Drop for ActionLock<'_> {
    fn drop(&mut self) {
        let cookie = {
            let mut map = held().lock().unwrap_or_else(PoisonError::into_inner);
            let Some(h) = map.get_mut(&self.key) else { return };
            h.count -= 1;
            if h.count > 0 {
                return;
            }
            map.remove(&self.key).map(|h| h.cookie)
        };
        if let Some(cookie) = cookie {
            // Gone with a removed image (ENOENT), or broken by a waiter that took
            // us for dead: nothing left to release either way.
            let _ = unlock(self.io, &self.oid, &cookie);
        }
    }
}

/// Takes the lock on `oid` (the header of image `id`) with `cookie`; false if the
/// header does not exist.
fn acquire(io: &IoCtx<'_>, oid: &str, id: &str, cookie: &str, what: &str) -> Result<bool> {
    let m = me();
    let description = format!("rbdx action, pid {} on {}", m.pid, m.host);
    let started = Instant::now();
    let deadline = started + io.cluster().busy_wait();
    let mut pause = Duration::from_millis(5);
    // A remote holder seen without a watch: since when.
    let mut unwatched: Option<(Locker, Instant)> = None;
    loop {
        match try_lock(io, oid, cookie, &description) {
            // `Exists`: held with our cookie, which is this attempt's alone: a
            // resent request that had already succeeded.
            Ok(()) | Err(Error::Ceph(CephError { errno: libc::EEXIST, .. })) => return Ok(true),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(false),
            Err(e) if e.kind() == Some(ErrorKind::Busy) => {}
            Err(e) => return Err(e),
        }
        let holder = lockers(io, oid)?.into_iter().next();
        if let Some(h) = &holder
            && abandoned(io, id, h, &mut unwatched)?
        {
            match break_lock(io, oid, h) {
                Ok(()) => {}
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
            continue;
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

/// Whether `holder` is known to be gone.
fn abandoned(
    io: &IoCtx<'_>,
    id: &str,
    holder: &Locker,
    unwatched: &mut Option<(Locker, Instant)>,
) -> Result<bool> {
    let m = me();
    if let Some(h) = parse_cookie(&holder.cookie)
        && (h.boot, h.host) == (m.boot.as_str(), m.host.as_str())
        && !m.boot.is_empty()
    {
        return Ok(start_time(h.pid).as_deref() != Some(h.start));
    }
    let gid = holder.client.strip_prefix("client.").and_then(|g| g.parse::<i64>().ok());
    let watching = match Image::open(io, id, None, true, true) {
        Ok(img) => img.watchers()?.iter().any(|w| Some(w.id) == gid),
        Err(e) if e.is_not_found() => return Ok(true),
        Err(e) => return Err(e),
    };
    if watching {
        *unwatched = None;
        return Ok(false);
    }
    match unwatched {
        Some((seen, since)) if seen == holder => Ok(since.elapsed() >= REMOTE_GRACE),
        _ => {
            *unwatched = Some((holder.clone(), Instant::now()));
            Ok(false)
        }
    }
}

fn try_lock(io: &IoCtx<'_>, oid: &str, cookie: &str, description: &str) -> Result<()> {
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
        sys::rados_write_op_assert_exists(op);
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

fn break_lock(io: &IoCtx<'_>, oid: &str, holder: &Locker) -> Result<()> {
    let o = cstring("object name", oid)?;
    let (cl, c) = (cstring("client", &holder.client)?, cstring("cookie", &holder.cookie)?);
    // SAFETY: `io.raw()` is live; the strings outlive the call.
    let r =
        unsafe { sys::rados_break_lock(io.raw(), o.as_ptr(), LOCK_NAME.as_ptr(), cl.as_ptr(), c.as_ptr()) };
    check(r.into(), "rados_break_lock", || format!("{}/{oid}", io.spec()))?;
    Ok(())
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
    }

    #[test]
    fn cookies_name_their_holder() {
        let c = new_cookie();
        let h = parse_cookie(&c).unwrap();
        assert_eq!(h.pid, std::process::id());
        assert_eq!(Some(h.start), start_time(h.pid).as_deref());
        assert!(!h.boot.is_empty());
        assert_ne!(new_cookie(), c, "each lock has its own cookie");
        assert_eq!(parse_cookie("auto 1234"), None);
        assert_eq!(parse_cookie("rbdx/h/b/notapid/1/0"), None);
    }

    #[test]
    fn a_process_that_is_gone_has_no_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }
}
