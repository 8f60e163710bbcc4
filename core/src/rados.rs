//! The cluster connection and pool I/O contexts: [`Cluster`] owns a `rados_t`,
//! [`IoCtx`] a `rados_ioctx_t` that borrows it. Also mon commands as JSON.
//!
//! Every option, timeouts included, is set before `rados_connect`, so no call made
//! through a [`Cluster`] waits longer than its [`Timeouts`].

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::error::{CephError, Error, Result, check};
use crate::ffi::rados as sys;
use crate::ffi::rados_more as sys_more;

/// How long the cluster may take before a call fails with [`crate::ErrorKind::TimedOut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// Connecting and authenticating (`client_mount_timeout`).
    pub connect: Duration,
    /// One monitor command (`rados_mon_op_timeout`).
    pub mon_op: Duration,
    /// One OSD operation (`rados_osd_op_timeout`); also how long to wait for
    /// another rbdx action's lock ([`Cluster::busy_wait`]).
    pub osd_op: Duration,
    /// How long the holder of an rbdx lock may go without beating before a
    /// waiter presumes it dead, fences it (OSD blocklist) and takes the lock
    /// (never less than six seconds: three beats). Keep it below `osd_op`, or a
    /// waiter gives up first.
    pub lock_grace: Duration,
}

impl Timeouts {
    /// The same limit for every kind of call; the lock grace is half of it.
    pub fn uniform(limit: Duration) -> Self {
        Self { connect: limit, mon_op: limit, osd_op: limit, lock_grace: limit / 2 }
    }
}

impl Default for Timeouts {
    /// 30 s to connect, 30 s per mon command, 60 s per OSD operation, a 30 s
    /// lock grace.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            mon_op: Duration::from_secs(30),
            osd_op: Duration::from_secs(60),
            lock_grace: Duration::from_secs(30),
        }
    }
}

/// Where the cluster is and who we are. Secrets are only ever given as file paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectConfig {
    /// A ceph.conf to read; `None` reads Ceph's default search path unless
    /// `mon_host` is given.
    pub conf_file: Option<PathBuf>,
    /// The cephx client id, without `client.` (`admin`, `libvirt`, `oneadmin`…);
    /// `None` means `admin`.
    pub client_id: Option<String>,
    /// A keyring file.
    pub keyring: Option<PathBuf>,
    /// A file holding just the base64 key.
    pub key_file: Option<PathBuf>,
    /// Monitor addresses, overriding the conf file.
    pub mon_host: Option<String>,
    /// Call time limits.
    pub timeouts: Timeouts,
    /// Connect without cephx (`auth_client_required = none`), to a cluster
    /// whose authentication is disabled.
    pub auth_none: bool,
}

impl ConnectConfig {
    /// The full cephx entity name, `client.<id>`.
    pub fn entity(&self) -> String {
        format!("client.{}", self.client_id.as_deref().unwrap_or("admin"))
    }
}

/// Serialises creating, connecting and shutting down cluster handles: librados
/// initialises process-wide state there, and concurrent calls have been seen to
/// abort the process (`std::system_error: Invalid argument`) on Ceph 16.
static LIFECYCLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// True while this thread holds [`LIFECYCLE`] (a failed connect drops its
    /// handle with the lock held).
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` holding [`LIFECYCLE`], unless this thread already does.
fn serialised<T>(f: impl FnOnce() -> T) -> T {
    if HOLDING.with(std::cell::Cell::get) {
        return f();
    }
    let _guard = LIFECYCLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    HOLDING.with(|h| h.set(true));
    let r = f();
    HOLDING.with(|h| h.set(false));
    r
}

/// The option bounding the object requests librbd keeps in flight for one
/// rollback, removal, flatten or deep copy.
const MANAGEMENT_OPS: &str = "rbd_concurrent_management_ops";

/// librbd's default [`MANAGEMENT_OPS`].
const LIBRBD_MANAGEMENT_OPS: &str = "10";

/// rbdx's [`MANAGEMENT_OPS`] where ceph.conf sets none: at librbd's 10, an
/// in-place rollback of 256 MiB rewritten spends most of its time waiting on
/// round trips (docs/ceph-behaviour.md).
const RBDX_MANAGEMENT_OPS: &str = "64";

/// Whether handles dropped from now on are left to the process's end
/// ([`Cluster::close_at_exit`]).
static CLOSE_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// A connected cluster handle. Closed (`rados_shutdown`) on drop, unless
/// [`Cluster::close_at_exit`] leaves that to the process's end.
#[derive(Debug)]
pub struct Cluster {
    raw: sys::rados_t,
    entity: String,
    busy_wait: Duration,
    lock_grace: Duration,
    /// Whether ceph.conf gives this client an admin socket or a log file,
    /// which only `rados_shutdown` removes or flushes (see [`Drop`]).
    leaves_files: bool,
}

// SAFETY: librados cluster handles are thread-safe: every public librados call on a
// connected `rados_t` takes its own locks. `Cluster` never hands out `&mut` access
// to the handle.
unsafe impl Send for Cluster {}
// SAFETY: as for `Send`: concurrent calls on one connected `rados_t` are supported
// by librados.
unsafe impl Sync for Cluster {}

/// The error of a librados constructor that returned no object.
fn no_memory(op: &'static str, oid: &str) -> crate::Error {
    CephError::new(op, -i64::from(libc::ENOMEM), oid.to_string()).into()
}

/// How many object removals [`IoCtx::remove_objects`] keeps in flight.
const REMOVALS_IN_FLIGHT: usize = 64;

/// Stats in flight ([`IoCtx::reach`]), waited for on drop.
#[must_use = "dropping it waits for the stats at once"]
pub(crate) struct Reaching(Vec<(sys::rados_completion_t, Box<(u64, libc::time_t)>)>);

impl Drop for Reaching {
    fn drop(&mut self) {
        for (c, _out) in self.0.drain(..) {
            // SAFETY: `c` was submitted by `IoCtx::reach` and is released once,
            // here, after it completed (its out-values live until then).
            unsafe {
                sys::rados_aio_wait_for_complete(c);
                sys::rados_aio_release(c);
            }
        }
    }
}

/// What a notification in flight ([`Watchers`]) shares with its
/// completion's callback: the flag the callback sets, and where librados
/// writes the reply. A wait given up leaves it to the callback's reference.
#[derive(Default)]
struct NotifyState {
    done: Mutex<bool>,
    cv: Condvar,
    reply: std::cell::UnsafeCell<(*mut libc::c_char, libc::size_t)>,
}

// SAFETY: `reply` is written by librados before the completion fires and read
// by the waiter only after `done` (under its lock) says it fired.
unsafe impl Send for NotifyState {}
// SAFETY: as above.
unsafe impl Sync for NotifyState {}

/// The completion callback of a notification: marks it done and drops the
/// reference [`IoCtx::ask_watchers`] gave it.
extern "C" fn notify_done(_c: sys::rados_completion_t, arg: *mut libc::c_void) {
    // SAFETY: `arg` is the `Arc::into_raw` reference made for this callback,
    // which runs once.
    let state = unsafe { Arc::from_raw(arg.cast::<NotifyState>()) };
    *state.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
    state.cv.notify_all();
}

/// A notification in flight ([`IoCtx::ask_watchers`]). Dropped unasked,
/// it is waited for as [`Watchers::watched`] waits, and its outcome dropped.
#[must_use = "dropping it waits for the notification"]
pub(crate) struct Watchers {
    c: sys::rados_completion_t,
    state: Arc<NotifyState>,
    bound: std::time::Instant,
    what: String,
}

impl Watchers {
    /// Whether a client watches the object: any answer, or a watcher that did
    /// not answer in time, means one does.
    ///
    /// The wait is bounded here too: librados waits for the OSD's "notify
    /// complete" without a limit of its own, and a message lost with a
    /// connection would leave it waiting for ever. Past the answer time and
    /// one OSD operation's time, the answer is "watched" (the caller takes the
    /// careful way) and what librados may still write to is left to it.
    ///
    /// # Errors
    /// `NotFound` for a missing object; other [`CephError`]s from `rados_aio_notify`.
    pub(crate) fn watched(mut self) -> Result<bool> {
        let Some((r, answered)) = self.finish() else { return Ok(true) };
        if r == -libc::ETIMEDOUT {
            return Ok(true);
        }
        check(r.into(), "rados_aio_notify", || self.what.clone())?;
        // A reply that does not say: as if watched (the caller takes the careful way).
        Ok(answered.is_none_or(|n| n > 0))
    }

    /// Whether nobody watches the object (`false` too for an object gone
    /// meanwhile).
    ///
    /// # Errors
    /// As [`Watchers::watched`], but `NotFound`.
    pub(crate) fn nobody(self) -> Result<bool> {
        match self.watched() {
            Ok(watched) => Ok(!watched),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for the completion until the bound: its return value and the
    /// count of answers in its reply, or `None` past the bound (or when
    /// already finished).
    fn finish(&mut self) -> Option<(i32, Option<u32>)> {
        let c = std::mem::replace(&mut self.c, ptr::null_mut());
        if c.is_null() {
            return None;
        }
        let mut done = self.state.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let now = std::time::Instant::now();
            if now >= self.bound {
                // Given up: `c` is never released (librados may still complete
                // it), and the callback's reference keeps the reply slot alive.
                return None;
            }
            done =
                self.state.cv.wait_timeout(done, self.bound - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(done);
        // SAFETY: `c` completed (its callback ran): its return value and the
        // reply are written; the reply is freed and `c` released once, here.
        unsafe {
            let r = sys::rados_aio_get_return_value(c);
            let (reply, len) = *self.state.reply.get();
            // The reply: the answers (a map of watcher to payload), then those
            // that timed out; only the count of answers matters.
            let answered = (!reply.is_null()).then(|| {
                let bytes = std::slice::from_raw_parts(reply.cast::<u8>(), len);
                let n = bytes.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                sys::rados_buffer_free(reply);
                n
            });
            sys::rados_aio_release(c);
            Some((r, answered.flatten()))
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One compound read of [`IoCtx::exec_reads_together`]: the cls methods
/// `calls` (method, input) of `class` on object `oid`.
pub(crate) struct ClsRead<'a> {
    pub oid: &'a str,
    pub class: &'a CStr,
    pub calls: &'a [(&'a CStr, Vec<u8>)],
}

/// Where librados puts the replies of one compound read: a buffer (which it
/// allocates), its length and a return value for each call.
struct ReplySlots {
    bufs: Vec<*mut libc::c_char>,
    lens: Vec<usize>,
    rvals: Vec<libc::c_int>,
}

impl ReplySlots {
    fn new(n: usize) -> Self {
        Self { bufs: vec![ptr::null_mut(); n], lens: vec![0; n], rvals: vec![0; n] }
    }

    /// Copies out the replies, freeing the buffers librados allocated.
    fn take(&self) -> Vec<Vec<u8>> {
        self.bufs
            .iter()
            .zip(&self.lens)
            .map(|(&b, &len)| {
                if b.is_null() {
                    return Vec::new();
                }
                // SAFETY: librados allocated `b` with `len` bytes for this
                // reply; it is freed once, here, after the copy.
                unsafe {
                    let v = std::slice::from_raw_parts(b.cast::<u8>(), len).to_vec();
                    sys::rados_buffer_free(b);
                    v
                }
            })
            .collect()
    }
}

/// Appends a cls string (little-endian u32 length, then the bytes), as cls
/// methods decode a `std::string`.
pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s);
}

pub(crate) fn cstring(what: &str, s: &str) -> Result<CString, crate::Error> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte: {s:?}")))
}

fn secs(d: Duration) -> String {
    // librados reads these options as whole seconds; never let a limit round to 0
    // (which means "no limit").
    d.as_secs().clamp(1, i32::MAX.unsigned_abs().into()).to_string()
}

impl Cluster {
    /// Creates the handle, applies `config` (timeouts included) and connects.
    /// Unless ceph.conf sets `rbd_concurrent_management_ops`, librbd keeps up
    /// to 64 object requests in flight for one rollback, removal, flatten or
    /// deep copy (its default is 10): a value in the monitors' store is
    /// overridden, one in ceph.conf is not.
    ///
    /// # Errors
    /// [`Error::Config`] for unusable settings; a [`CephError`] from
    /// `rados_conf_read_file` or `rados_connect` (`TimedOut` when no monitor
    /// answered within `timeouts.connect`).
    ///
    /// A connection made ahead of time for the same settings
    /// ([`crate::spare::prepare`]) is taken instead, if every file it read is
    /// unchanged.
    pub fn connect(config: &ConnectConfig) -> Result<Self> {
        if let Some(cluster) = crate::spare::take(config) {
            return Ok(cluster);
        }
        let cluster = Self::connect_new(config)?;
        crate::spare::connected(config);
        Ok(cluster)
    }

    /// A new connection, whatever was made ahead.
    pub(crate) fn connect_new(config: &ConnectConfig) -> Result<Self> {
        serialised(|| Self::connect_serialised(config, |_| Ok(()))).map(|(c, ())| c)
    }

    /// A new connection, and what `before` returned for the handle just
    /// before it connected (ceph.conf read, every option set).
    pub(crate) fn connect_new_with<T>(
        config: &ConnectConfig,
        before: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<(Self, T)> {
        serialised(|| Self::connect_serialised(config, before))
    }

    /// For a process that ends when its one action does (every `rbdx`
    /// command): handles dropped from now on are not shut down, and the
    /// process's end closes their sessions. `rados_shutdown` says goodbye to
    /// the monitor and to each OSD and joins librados' threads: ~2.5 ms of a
    /// 35 ms `rbdx image info` on the test cluster. At the process's end the
    /// kernel closes the sockets instead, which the monitor and the OSDs see
    /// at once. Nothing is in flight by then: every rbdx call waits for its
    /// reply, and an image is closed (its watch removed) before its handle
    /// goes. Such a process must leave through [`exit_process`], never by
    /// returning from `main`: the C++ destructors `exit` runs must not run
    /// under a live handle's threads. A handle whose ceph.conf gives the client
    /// an admin socket or a log file is still shut down on drop: the socket's
    /// file would otherwise stay behind, and the log's last lines be lost.
    pub fn close_at_exit() {
        CLOSE_AT_EXIT.store(true, Ordering::SeqCst);
    }

    fn connect_serialised<T>(
        config: &ConnectConfig,
        before: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<(Self, T)> {
        let _span = crate::trace::span("connect");
        let entity = config.entity();
        let name = cstring("client id", &entity)?;
        let mut raw: sys::rados_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer, the cluster name is a static C
        // string and `name` outlives the call.
        let r = unsafe { sys::rados_create2(&mut raw, c"ceph".as_ptr(), name.as_ptr(), 0) };
        check(r.into(), "rados_create2", || entity.clone())?;
        // From here on `Drop` shuts the handle down on every error path.
        let mut cluster = Self {
            raw,
            entity,
            busy_wait: config.timeouts.osd_op,
            lock_grace: config.timeouts.lock_grace,
            leaves_files: false,
        };

        match (&config.conf_file, &config.mon_host) {
            (Some(path), _) => {
                let p = cstring("conf file path", &path.to_string_lossy())?;
                // SAFETY: `cluster.raw` came from `rados_create2` and is not yet
                // connected; `p` is a valid C string for the call.
                let r = unsafe { sys::rados_conf_read_file(cluster.raw, p.as_ptr()) };
                check(r.into(), "rados_conf_read_file", || path.display().to_string())?;
            }
            (None, None) => {
                // SAFETY: as above; NULL asks librados for its default search path.
                let r = unsafe { sys::rados_conf_read_file(cluster.raw, ptr::null()) };
                check(r.into(), "rados_conf_read_file", || "default ceph.conf".into()).map_err(|_| {
                    Error::Config("no ceph.conf found and no monitor address given".to_string())
                })?;
            }
            (None, Some(_)) => {}
        }
        if let Some(mon) = &config.mon_host {
            cluster.set_option("mon_host", mon)?;
        }
        if let Some(k) = &config.keyring {
            cluster.set_option("keyring", &k.to_string_lossy())?;
        }
        if let Some(k) = &config.key_file {
            cluster.set_option("keyfile", &k.to_string_lossy())?;
        }
        if config.auth_none {
            cluster.set_option("auth_client_required", "none")?;
        }
        // Our errors are one line each; librados must not add its own to stderr.
        cluster.set_option("log_to_stderr", "false")?;
        cluster.set_option("err_to_stderr", "false")?;
        cluster.set_option("client_mount_timeout", &secs(config.timeouts.connect))?;
        cluster.set_option("rados_mon_op_timeout", &secs(config.timeouts.mon_op))?;
        cluster.set_option("rados_osd_op_timeout", &secs(config.timeouts.osd_op))?;
        // Before connecting: librados 16 deadlocked when this option changed
        // under a connected handle's I/O.
        if cluster.conf_get(MANAGEMENT_OPS)? == LIBRBD_MANAGEMENT_OPS {
            cluster.set_option(MANAGEMENT_OPS, RBDX_MANAGEMENT_OPS)?;
        }
        let seen = before(&cluster)?;

        // SAFETY: `cluster.raw` is a configured, unconnected handle from
        // `rados_create2`.
        let r = unsafe { sys::rados_connect(cluster.raw) };
        check(r.into(), "rados_connect", || cluster.entity.clone())?;
        // `log_to_file` is younger than the other two: where librados does not
        // know it, a set `log_file` is written to.
        let to_file = match cluster.conf_get("log_to_file") {
            Err(e) if e.is_not_found() => true,
            other => other? == "true",
        };
        cluster.leaves_files = !cluster.conf_get("admin_socket")?.is_empty()
            || (to_file && !cluster.conf_get("log_file")?.is_empty());
        Ok((cluster, seen))
    }

    fn set_option(&self, option: &str, value: &str) -> Result<()> {
        let o = cstring("option", option)?;
        let v = cstring(option, value)?;
        // SAFETY: `self.raw` came from `rados_create2` and is closed only in `Drop`;
        // both strings outlive the call, which copies them.
        let r = unsafe { sys::rados_conf_set(self.raw, o.as_ptr(), v.as_ptr()) };
        check(r.into(), "rados_conf_set", || option.to_string())?;
        Ok(())
    }

    /// The value of a config option as this client sees it (metavariables such
    /// as `$name` expanded).
    ///
    /// # Errors
    /// `NotFound` for an unknown option.
    pub fn conf_get(&self, option: &str) -> Result<String, crate::Error> {
        let o = cstring("option", option)?;
        let mut buf = vec![0 as libc::c_char; 4096];
        loop {
            // SAFETY: `self.raw` came from `rados_create2`; `o` outlives the call;
            // `buf` is writable for `buf.len()`.
            let r = unsafe { sys::rados_conf_get(self.raw, o.as_ptr(), buf.as_mut_ptr(), buf.len()) };
            if r == -libc::ENAMETOOLONG && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            check(r.into(), "rados_conf_get", || option.to_string())?;
            // SAFETY: on success librados wrote a NUL-terminated value into `buf`.
            return Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
        }
    }

    /// How long to wait for another rbdx action on an image to finish (the OSD
    /// operation timeout).
    pub fn busy_wait(&self) -> Duration {
        self.busy_wait
    }

    /// How long a silent lock holder keeps its lock (see [`Timeouts::lock_grace`]).
    pub fn lock_grace(&self) -> Duration {
        self.lock_grace
    }

    /// The cephx entity this handle authenticated as.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The cluster's `require_min_compat_client` as a Ceph release number (12
    /// luminous, 13 mimic…; 0 when none is set), from the OSD map this client
    /// holds: no mon round trip.
    ///
    /// # Errors
    /// A [`CephError`] from `rados_get_min_compatible_client`.
    pub fn require_min_compat_client(&self) -> Result<i8, crate::Error> {
        let (mut min, mut require) = (0i8, 0i8);
        // SAFETY: `self.raw` is connected; both out-pointers are valid.
        let r = unsafe {
            crate::ffi::rados_more::rados_get_min_compatible_client(self.raw, &mut min, &mut require)
        };
        check(r.into(), "rados_get_min_compatible_client", String::new)?;
        Ok(require)
    }

    /// The cluster's fsid.
    ///
    /// # Errors
    /// A [`CephError`] from `rados_cluster_fsid`.
    pub fn fsid(&self) -> Result<String, crate::Error> {
        let mut buf = [0 as libc::c_char; 64];
        // SAFETY: `self.raw` is connected; `buf` is writable for its full length.
        let r = unsafe { sys::rados_cluster_fsid(self.raw, buf.as_mut_ptr(), buf.len()) };
        check(r.into(), "rados_cluster_fsid", String::new)?;
        // SAFETY: librados NUL-terminates the fsid inside `buf` on success.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
    }

    /// The numeric id of `pool`.
    ///
    /// # Errors
    /// `NotFound` if there is no such pool.
    pub fn pool_id(&self, pool: &str) -> Result<i64> {
        let p = cstring("pool name", pool)?;
        // SAFETY: `self.raw` is connected; `p` outlives the call.
        let r = unsafe { sys::rados_pool_lookup(self.raw, p.as_ptr()) };
        check(r, "rados_pool_lookup", || pool.to_string())?;
        Ok(r)
    }

    /// The name of the pool with id `id`.
    ///
    /// # Errors
    /// `NotFound` if there is no such pool.
    pub fn pool_name(&self, id: i64) -> Result<String, crate::Error> {
        let mut buf = vec![0 as libc::c_char; 256];
        loop {
            // SAFETY: `self.raw` is connected; `buf` is writable for `buf.len()`.
            let r = unsafe { sys::rados_pool_reverse_lookup(self.raw, id, buf.as_mut_ptr(), buf.len()) };
            if r == -libc::ERANGE && buf.len() < 1 << 16 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            check(r.into(), "rados_pool_reverse_lookup", || format!("pool id {id}"))?;
            // SAFETY: on success librados wrote a NUL-terminated name into `buf`.
            return Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
        }
    }

    /// Opens an I/O context on `pool`, in the default rados namespace.
    ///
    /// # Errors
    /// `NotFound` if there is no such pool.
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx<'_>> {
        let p = cstring("pool name", pool)?;
        let mut raw: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: `self.raw` is connected; `raw` is a valid out-pointer; `p`
        // outlives the call.
        let r = unsafe { sys::rados_ioctx_create(self.raw, p.as_ptr(), &mut raw) };
        check(r.into(), "rados_ioctx_create", || pool.to_string())?;
        Ok(IoCtx { raw, cluster: self, pool: pool.to_string(), namespace: String::new() })
    }

    /// Sends a mon command (a JSON object with a `prefix`) and parses the JSON reply.
    /// `format: json` is added when missing.
    ///
    /// # Errors
    /// A [`CephError`] for a refused command, [`Error::BadReply`] for a reply that
    /// is not JSON.
    pub fn mon_command(&self, command: &Value) -> Result<Value> {
        let _span = crate::trace::span("mon command");
        let mut command = command.clone();
        if let Value::Object(map) = &mut command {
            map.entry("format").or_insert_with(|| Value::String("json".into()));
        }
        let prefix = command.get("prefix").and_then(Value::as_str).unwrap_or("?").to_string();
        let out = self.mon_command_raw(&command.to_string(), &prefix)?;
        if out.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out).map_err(|e| Error::BadReply { command: prefix, detail: e.to_string() })
    }

    fn mon_command_raw(&self, json: &str, prefix: &str) -> Result<Vec<u8>> {
        let cmd = cstring("mon command", json)?;
        let mut cmds = [cmd.as_ptr()];
        let mut outbuf: *mut libc::c_char = ptr::null_mut();
        let mut outbuf_len: libc::size_t = 0;
        let mut outs: *mut libc::c_char = ptr::null_mut();
        let mut outs_len: libc::size_t = 0;
        // SAFETY: `self.raw` is connected; `cmds` holds one valid C string for the
        // duration of the call; every out-pointer is valid. librados allocates
        // `outbuf` and `outs`, freed below with `rados_buffer_free`.
        let r = unsafe {
            sys::rados_mon_command(
                self.raw,
                cmds.as_mut_ptr(),
                1,
                ptr::null(),
                0,
                &mut outbuf,
                &mut outbuf_len,
                &mut outs,
                &mut outs_len,
            )
        };
        let take = |p: *mut libc::c_char, len: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados returned `p` with `len` readable bytes; it is freed
            // right after the copy and never used again.
            let v = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
            // SAFETY: `p` was allocated by librados for this call.
            unsafe { sys::rados_buffer_free(p) };
            v
        };
        let out = take(outbuf, outbuf_len);
        let status = take(outs, outs_len);
        if r < 0 {
            let detail = String::from_utf8_lossy(&status).trim().to_string();
            let object =
                if detail.is_empty() { prefix.to_string() } else { format!("'{prefix}' ({detail})") };
            return Err(CephError::new("rados_mon_command", r.into(), object).into());
        }
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Left for the process's end (`exit_process`), unless the operator gave
        // clients an admin socket (its file would outlive the process: one per
        // action where the path holds `$pid`) or a log file (its last lines,
        // still in librados' queue, would be lost).
        if CLOSE_AT_EXIT.load(Ordering::SeqCst) && !self.leaves_files {
            return;
        }
        let _span = crate::trace::span("disconnect");
        let raw = self.raw;
        // SAFETY: `raw` came from `rados_create2`; every `IoCtx` borrowing this
        // cluster has been dropped (the borrow checker guarantees it), and this is
        // the only place it is shut down.
        serialised(|| unsafe { sys::rados_shutdown(raw) });
    }
}

/// Ends the process with `code` once stdout and stderr are flushed, without
/// running `atexit` handlers or C++ static destructors (`_exit`): the way out
/// of a process that called [`Cluster::close_at_exit`]. Files the process
/// wrote must be closed (dropped) before.
pub fn exit_process(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    exit_unflushed(code)
}

/// [`exit_process`] without flushing std's output streams first: the way out
/// of a watchdog, which must not wait for the locks of those streams (the
/// thread it stops may hold one, blocked in a write).
pub fn exit_unflushed(code: u8) -> ! {
    // SAFETY: `_exit` only ends the process; nothing of this process runs after it.
    unsafe { libc::_exit(i32::from(code)) }
}

/// An I/O context on one pool (and rados namespace). Destroyed on drop.
#[derive(Debug)]
pub struct IoCtx<'c> {
    raw: sys::rados_ioctx_t,
    cluster: &'c Cluster,
    pool: String,
    namespace: String,
}

// SAFETY: a librados I/O context may be used from another thread; the only state
// not safe to share (the namespace) is changed through `&mut self`.
unsafe impl Send for IoCtx<'_> {}

impl<'c> IoCtx<'c> {
    /// Switches to rados namespace `ns` (`""` is the default namespace).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a name with a NUL byte.
    pub fn set_namespace(&mut self, ns: &str) -> Result<()> {
        let n = cstring("namespace", ns)?;
        // SAFETY: `self.raw` came from `rados_ioctx_create` and is destroyed only in
        // `Drop`; `&mut self` means no other call is using it; the string is copied.
        unsafe { sys::rados_ioctx_set_namespace(self.raw, n.as_ptr()) };
        self.namespace = ns.to_string();
        Ok(())
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The rados namespace (`""` for the default).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `pool` or `pool/namespace`, as used in image specs.
    pub fn spec(&self) -> String {
        if self.namespace.is_empty() {
            self.pool.clone()
        } else {
            format!("{}/{}", self.pool, self.namespace)
        }
    }

    /// The cluster this context belongs to.
    pub fn cluster(&self) -> &'c Cluster {
        self.cluster
    }

    /// This client's global id (`client.<id>`, as watchers and lockers name it).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: `self.raw` is live and its cluster connected.
        unsafe { sys::rados_get_instance_id(sys::rados_ioctx_get_cluster(self.raw)) }
    }

    /// The pool's id.
    pub fn pool_id(&self) -> i64 {
        // SAFETY: `self.raw` is a live I/O context (see `set_namespace`).
        unsafe { sys::rados_ioctx_get_id(self.raw) }
    }

    /// Object-level statistics of the pool (all namespaces).
    ///
    /// # Errors
    /// A [`CephError`] from `rados_ioctx_pool_stat`.
    pub fn pool_stat(&self) -> Result<PoolObjectStats> {
        let mut st = sys::Struct_rados_pool_stat_t::default();
        // SAFETY: `self.raw` is a live I/O context; `st` is a valid out-pointer of
        // the struct type librados fills.
        let r = unsafe { sys::rados_ioctx_pool_stat(self.raw, &mut st) };
        check(r.into(), "rados_ioctx_pool_stat", || self.pool.clone())?;
        Ok(PoolObjectStats { bytes: st.num_bytes, objects: st.num_objects })
    }

    /// Whether object `oid` exists in this pool (namespace).
    ///
    /// # Errors
    /// A [`CephError`] from `rados_stat` other than "not found".
    pub fn object_exists(&self, oid: &str) -> Result<bool> {
        let o = cstring("object name", oid)?;
        let (mut size, mut mtime): (u64, libc::time_t) = (0, 0);
        // SAFETY: `self.raw` is live; `o` outlives the call; the out-pointers are valid.
        let r = unsafe { sys::rados_stat(self.raw, o.as_ptr(), &mut size, &mut mtime) };
        if r == -libc::ENOENT {
            return Ok(false);
        }
        check(r.into(), "rados_stat", || format!("{}/{oid}", self.spec()))?;
        Ok(true)
    }

    /// Removes object `oid`; `false` when there was none.
    ///
    /// # Errors
    /// A [`CephError`] from `rados_remove` other than "not found".
    pub(crate) fn remove_object(&self, oid: &str) -> Result<bool> {
        let o = cstring("object name", oid)?;
        // SAFETY: `self.raw` is live; `o` outlives the call.
        let r = unsafe { sys::rados_remove(self.raw, o.as_ptr()) };
        if r == -libc::ENOENT {
            return Ok(false);
        }
        check(r.into(), "rados_remove", || format!("{}/{oid}", self.spec()))?;
        Ok(true)
    }

    /// Starts a stat of each of `oids` and returns at once: the OSDs that
    /// hold them are reached (a first request to an OSD opens this client's
    /// session with it, about a round trip more) while the caller waits for
    /// something else. The answers are waited for when the returned value
    /// drops, and ignored.
    pub(crate) fn reach(&self, oids: &[&str]) -> Reaching {
        let mut sent = Vec::with_capacity(oids.len());
        for oid in oids {
            let Ok(o) = cstring("object name", oid) else { continue };
            let mut c: sys::rados_completion_t = ptr::null_mut();
            // SAFETY: `c` is a valid out-pointer; no callbacks.
            if unsafe { sys::rados_aio_create_completion(ptr::null_mut(), None, None, &mut c) } < 0 {
                break;
            }
            let mut out = Box::new((0u64, 0 as libc::time_t));
            // SAFETY: `self.raw` is live; `o` is copied by librados; `out`
            // stays where it is (boxed) until `c` completed, in `Reaching`'s drop.
            let r = unsafe { sys::rados_aio_stat(self.raw, o.as_ptr(), c, &mut out.0, &mut out.1) };
            if r < 0 {
                // SAFETY: `c` was never submitted.
                unsafe { sys::rados_aio_release(c) };
                continue;
            }
            sent.push((c, out));
        }
        Reaching(sent)
    }

    /// Removes objects `oids`, up to [`REMOVALS_IN_FLIGHT`] at once (one
    /// round trip a window, not an object); objects already gone are not
    /// errors. The caller marks its crash point; a removal cut off leaves
    /// some of them, which removing them again finishes.
    ///
    /// # Errors
    /// The first [`CephError`] other than "not found" (what was in flight is
    /// waited for first).
    pub(crate) fn remove_objects(&self, oids: &[String]) -> Result<()> {
        let mut first_error = None;
        for window in oids.chunks(REMOVALS_IN_FLIGHT) {
            let mut sent = Vec::with_capacity(window.len());
            for oid in window {
                let o = cstring("object name", oid)?;
                let mut c: sys::rados_completion_t = ptr::null_mut();
                // SAFETY: `c` is a valid out-pointer; no callbacks.
                let r = unsafe { sys::rados_aio_create_completion(ptr::null_mut(), None, None, &mut c) };
                if r < 0 {
                    first_error.get_or_insert(no_memory("rados_aio_create_completion", oid));
                    break;
                }
                // SAFETY: `self.raw` is live; `o` is copied by librados; `c` is
                // released below, after it completes.
                let r = unsafe { sys::rados_aio_remove(self.raw, o.as_ptr(), c) };
                if r < 0 {
                    // SAFETY: `c` was never submitted.
                    unsafe { sys::rados_aio_release(c) };
                    first_error.get_or_insert_with(|| {
                        CephError::new("rados_aio_remove", r.into(), oid.clone()).into()
                    });
                    break;
                }
                sent.push((c, oid));
            }
            for (c, oid) in sent {
                // SAFETY: `c` was submitted above; it is released once, here.
                let r = unsafe {
                    sys::rados_aio_wait_for_complete(c);
                    let r = sys::rados_aio_get_return_value(c);
                    sys::rados_aio_release(c);
                    r
                };
                if r < 0 && r != -libc::ENOENT {
                    first_error.get_or_insert_with(|| {
                        CephError::new("rados_aio_remove", r.into(), format!("{}/{oid}", self.spec())).into()
                    });
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Asks whether a client watches object `oid` and returns at once: an
    /// empty notification (which librbd and the kernel client take as "the
    /// header changed", and answer) is sent to its watchers, who have
    /// `timeout` to answer; [`Watchers::watched`] waits for the outcome. One
    /// round trip when nobody watches, which can overlap the caller's reads.
    ///
    /// # Errors
    /// A completion librados cannot make; other errors come with the outcome.
    pub(crate) fn ask_watchers(&self, oid: &str, timeout: Duration) -> Result<Watchers> {
        let o = cstring("object name", oid)?;
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        let state = Arc::new(NotifyState::default());
        let arg = Arc::into_raw(Arc::clone(&state)).cast_mut().cast::<libc::c_void>();
        let mut c: sys::rados_completion_t = ptr::null_mut();
        // SAFETY: `c` is a valid out-pointer; `arg` is a reference the
        // callback takes over (and drops) when the completion fires.
        if unsafe { sys::rados_aio_create_completion(arg, Some(notify_done), None, &mut c) } < 0 {
            // SAFETY: no completion holds `arg`: take its reference back.
            drop(unsafe { Arc::from_raw(arg.cast::<NotifyState>()) });
            return Err(no_memory("rados_aio_create_completion", oid));
        }
        let slot = state.reply.get();
        // SAFETY: `self.raw` is live; `o` outlives the call; `slot` lives in
        // `state`, which the callback's reference keeps alive until librados
        // has written the reply and completed `c`.
        let r = unsafe {
            sys_more::rados_aio_notify(
                self.raw,
                o.as_ptr(),
                c,
                ptr::null(),
                0,
                ms,
                &mut (*slot).0,
                &mut (*slot).1,
            )
        };
        if r < 0 {
            // librados reports errors through the completion; should one come
            // here, `c` and the callback's reference are left as they are.
            return Err(CephError::new("rados_aio_notify", r.into(), format!("{}/{oid}", self.spec())).into());
        }
        Ok(Watchers {
            c,
            state,
            bound: crate::deadline(timeout + self.cluster.busy_wait()),
            what: format!("{}/{oid}", self.spec()),
        })
    }

    /// Creates object `oid` holding `data`, in one operation that fails with
    /// `Exists` (and writes nothing) if the object is there already.
    ///
    /// # Errors
    /// `Exists`; other [`CephError`]s from the write.
    pub(crate) fn create_object(&self, oid: &str, data: &[u8]) -> Result<()> {
        let o = cstring("object name", oid)?;
        // SAFETY: the op is released below; `data` and `o` outlive
        // `rados_write_op_operate`, their last use.
        let r = unsafe {
            let op = sys::rados_create_write_op();
            if op.is_null() {
                return Err(no_memory("rados_create_write_op", oid));
            }
            sys::rados_write_op_create(op, 1, ptr::null());
            sys::rados_write_op_write_full(op, data.as_ptr().cast(), data.len());
            let r = sys::rados_write_op_operate(op, self.raw, o.as_ptr(), ptr::null_mut(), 0);
            sys::rados_release_write_op(op);
            r
        };
        check(r.into(), "rados_write_op_operate", || format!("{}/{oid} create", self.spec()))?;
        Ok(())
    }

    /// Up to `max` bytes of object `oid` from its start.
    ///
    /// # Errors
    /// `NotFound`; other [`CephError`]s from `rados_read`.
    pub(crate) fn read_object(&self, oid: &str, max: usize) -> Result<Vec<u8>> {
        let o = cstring("object name", oid)?;
        let mut buf = vec![0u8; max];
        // SAFETY: `self.raw` is live; `o` outlives the call; `buf` is writable
        // for `max` bytes.
        let r = unsafe { sys::rados_read(self.raw, o.as_ptr(), buf.as_mut_ptr().cast(), max, 0) };
        check(r.into(), "rados_read", || format!("{}/{oid}", self.spec()))?;
        buf.truncate(usize::try_from(r).unwrap_or(0));
        Ok(buf)
    }

    /// Calls the cls methods `calls` (method, input) of `class` on object `oid`,
    /// in order, all in one write operation (one round trip; all or nothing)
    /// that first asserts the object exists: a method that would create it
    /// (cls `rbd.metadata_set` on a header removed meanwhile) fails with
    /// `NotFound` instead. The caller marks its crash point.
    ///
    /// # Errors
    /// `NotFound` for a missing object; the first failed call's (or the
    /// operation's) [`CephError`].
    pub(crate) fn exec_write_existing(
        &self,
        oid: &str,
        class: &CStr,
        calls: &[(&CStr, Vec<u8>)],
    ) -> Result<()> {
        self.exec_write(oid, WriteOn::Existing, class, calls)
    }

    /// Calls the cls methods `calls` (method, input) of `class` on object `oid`,
    /// in order, all in one write operation (one round trip; all or nothing),
    /// on the object as `on` says. The caller marks its crash point.
    ///
    /// # Errors
    /// `NotFound` for a missing object ([`WriteOn::Existing`]), `Exists` for
    /// one there already ([`WriteOn::New`]); the first failed call's (or the
    /// operation's) [`CephError`].
    pub(crate) fn exec_write(
        &self,
        oid: &str,
        on: WriteOn,
        class: &CStr,
        calls: &[(&CStr, Vec<u8>)],
    ) -> Result<()> {
        let calls: Vec<_> = calls.iter().map(|(m, i)| (class, *m, i.as_slice())).collect();
        self.exec_write_calls(oid, on, &calls)
    }

    /// [`IoCtx::exec_write`] of calls (class, method, input) of any classes.
    ///
    /// # Errors
    /// As [`IoCtx::exec_write`].
    pub(crate) fn exec_write_calls(
        &self,
        oid: &str,
        on: WriteOn,
        calls: &[(&CStr, &CStr, &[u8])],
    ) -> Result<()> {
        let o = cstring("object name", oid)?;
        let mut rvals: Vec<libc::c_int> = vec![0; calls.len()];
        // SAFETY: the op is released below on every path; `calls`, `rvals`
        // and `o` outlive `rados_write_op_operate`, their last use.
        let r = unsafe {
            let op = sys::rados_create_write_op();
            if op.is_null() {
                return Err(no_memory("rados_create_write_op", oid));
            }
            match on {
                WriteOn::Existing => sys::rados_write_op_assert_exists(op),
                WriteOn::New => sys::rados_write_op_create(op, 1, ptr::null()),
                WriteOn::Any => {}
            }
            for ((class, method, input), rval) in calls.iter().zip(rvals.iter_mut()) {
                sys::rados_write_op_exec(
                    op,
                    class.as_ptr(),
                    method.as_ptr(),
                    input.as_ptr().cast(),
                    input.len(),
                    rval,
                );
            }
            let r = sys::rados_write_op_operate(op, self.raw, o.as_ptr(), ptr::null_mut(), 0);
            sys::rados_release_write_op(op);
            r
        };
        // `rbd.a,b,lock.c`: a class named where it changes.
        let what = || {
            let mut last: Option<&CStr> = None;
            let names: Vec<String> = calls
                .iter()
                .map(|(c, m, _)| {
                    let named =
                        if last == Some(*c) { String::new() } else { format!("{}.", c.to_string_lossy()) };
                    last = Some(*c);
                    format!("{named}{}", m.to_string_lossy())
                })
                .collect();
            format!("{}/{oid} {}", self.spec(), names.join(","))
        };
        check(r.into(), "rados_write_op_operate", what)?;
        for rv in rvals {
            check(rv.into(), "rados_write_op_exec", what)?;
        }
        Ok(())
    }

    /// Calls the cls methods `calls` (method, input) of `class` on object `oid`,
    /// all in one read operation (one round trip), and returns their replies
    /// in order.
    ///
    /// # Errors
    /// The operation's or the first failed call's [`CephError`] (`NotFound`
    /// for a missing object).
    pub(crate) fn exec_reads(
        &self,
        oid: &str,
        class: &CStr,
        calls: &[(&CStr, Vec<u8>)],
    ) -> Result<Vec<Vec<u8>>> {
        let [replies] = self.exec_reads_together([ClsRead { oid, class, calls }]);
        replies
    }

    /// Several [`IoCtx::exec_reads`] on different objects, all in flight at
    /// once (one round trip in all): the replies of each, in order.
    ///
    /// # Errors
    /// Each read's own, as [`IoCtx::exec_reads`].
    pub(crate) fn exec_reads_together<const N: usize>(
        &self,
        reads: [ClsRead<'_>; N],
    ) -> [Result<Vec<Vec<u8>>>; N] {
        // Each read's out-slots: allocated at their full length before librados
        // is given pointers into them, and not moved until it has answered.
        let mut slots: [ReplySlots; N] = std::array::from_fn(|i| ReplySlots::new(reads[i].calls.len()));
        let sent: [(usize, _); N] = std::array::from_fn(|i| (i, self.send_read(&reads[i], &mut slots[i])));
        sent.map(|(i, sent)| {
            let (read, slot) = (&reads[i], &slots[i]);
            let (op, c) = sent?;
            // SAFETY: `op` and `c` were submitted by `send_read` and are
            // released once, here, after the read completed; librados wrote
            // the slots by then.
            let r = unsafe {
                sys::rados_aio_wait_for_complete(c);
                let r = sys::rados_aio_get_return_value(c);
                sys::rados_aio_release(c);
                sys::rados_release_read_op(op);
                r
            };
            let replies = slot.take();
            let methods =
                || read.calls.iter().map(|(m, _)| m.to_string_lossy()).collect::<Vec<_>>().join(",");
            let what =
                || format!("{}/{} {}.{}", self.spec(), read.oid, read.class.to_string_lossy(), methods());
            check(r.into(), "rados_read_op_operate", what)?;
            for &rv in &slot.rvals {
                check(rv.into(), "rados_read_op_exec", what)?;
            }
            Ok(replies)
        })
    }

    /// Submits `read` (asynchronously), its replies to land in `slot`.
    fn send_read(
        &self,
        read: &ClsRead<'_>,
        slot: &mut ReplySlots,
    ) -> Result<(sys::rados_read_op_t, sys::rados_completion_t)> {
        let o = cstring("object name", read.oid)?;
        // SAFETY: the op is released here on failure, else by the caller once
        // it completed; `read.calls` and `read.class` outlive that; `o` is
        // copied when the op is submitted; the slots are sized to the calls
        // and stay in place until the caller has waited.
        unsafe {
            let op = sys::rados_create_read_op();
            if op.is_null() {
                return Err(no_memory("rados_create_read_op", read.oid));
            }
            for (i, (method, input)) in read.calls.iter().enumerate() {
                sys::rados_read_op_exec(
                    op,
                    read.class.as_ptr(),
                    method.as_ptr(),
                    input.as_ptr().cast(),
                    input.len(),
                    &mut slot.bufs[i],
                    &mut slot.lens[i],
                    &mut slot.rvals[i],
                );
            }
            let mut c: sys::rados_completion_t = ptr::null_mut();
            if sys::rados_aio_create_completion(ptr::null_mut(), None, None, &mut c) < 0 {
                sys::rados_release_read_op(op);
                return Err(no_memory("rados_aio_create_completion", read.oid));
            }
            let r = sys::rados_aio_read_op_operate(op, self.raw, c, o.as_ptr(), 0);
            if r < 0 {
                sys::rados_aio_release(c);
                sys::rados_release_read_op(op);
                return Err(CephError::new(
                    "rados_aio_read_op_operate",
                    r.into(),
                    format!("{}/{}", self.spec(), read.oid),
                )
                .into());
            }
            Ok((op, c))
        }
    }

    /// Calls cls method `class.method` on object `oid` with `input` and returns
    /// its reply (a read: one round trip).
    ///
    /// # Errors
    /// The method's [`CephError`] (`NotFound` for a missing object).
    pub(crate) fn exec_read(&self, oid: &str, class: &CStr, method: &CStr, input: &[u8]) -> Result<Vec<u8>> {
        let o = cstring("object name", oid)?;
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: `self.raw` is live; `o`, `class`, `method` and `input`
            // outlive the call; `buf` is writable for `buf.len()` bytes.
            let r = unsafe {
                sys::rados_exec(
                    self.raw,
                    o.as_ptr(),
                    class.as_ptr(),
                    method.as_ptr(),
                    input.as_ptr().cast(),
                    input.len(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if r == -libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 16, 0);
                continue;
            }
            let what =
                || format!("{}/{oid} {}.{}", self.spec(), class.to_string_lossy(), method.to_string_lossy());
            check(r.into(), "rados_exec", what)?;
            buf.truncate(usize::try_from(r).unwrap_or(0));
            return Ok(buf);
        }
    }

    pub(crate) fn raw(&self) -> sys::rados_ioctx_t {
        self.raw
    }
}

/// What [`IoCtx::exec_write`] asks of the object it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOn {
    /// It must exist: `NotFound` otherwise, nothing written.
    Existing,
    /// It must not exist: created, `Exists` otherwise, nothing written.
    New,
    /// Either (a method that writes creates it).
    Any,
}

impl Drop for IoCtx<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from `rados_ioctx_create`; images opened through
        // it borrow `self` and are closed first; destroyed only here.
        unsafe { sys::rados_ioctx_destroy(self.raw) };
    }
}

/// What `rados_ioctx_pool_stat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolObjectStats {
    /// Logical bytes stored.
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}
