//! `rbdx agent`: the warm start. Every rbdx run spends ~10 ms before `main`
//! loading and initialising the Ceph libraries (libceph-common's relocations and
//! static constructors); the agent pays that once. It waits on a Unix socket
//! (systemd's, or `--socket`) and, for each request from `rbdx-run`, forks a copy
//! of itself that is exactly the run the client would have started: the
//! client's arguments, environment, working directory, umask and standard
//! input, output and error (passed as descriptors), its own process group, its
//! own Ceph connection, deadline and exit. Nothing is shared between runs: the
//! agent itself never connects to Ceph, never starts a thread and never reads
//! a request (a forked helper does, then forks the run and reports its exit
//! status), so a fork always copies a single-threaded process.
//!
//! Who may ask: the peer must be the agent's own user (`SO_PEERCRED`); the
//! socket's mode is the first fence, not the only one. What may run: only the
//! program the agent was started as; a client naming another (another remotes
//! tree, another version) is refused and runs it itself. When that program's
//! file changes (an upgrade, `onehost sync`), the agent refuses and exits, and
//! systemd starts the new one on the next connection. When the client goes away
//! (oned's timeout killed it), the run's process group is killed, as the
//! client's own children would have been.
//!
//! The connection made ahead: once a run has connected to Ceph, the agent keeps
//! one spare helper whose run is forked before any request and connects with
//! that run's settings ([`crate::agent_hint`]), then waits. The next request
//! goes to it; its run takes the connection only if its own settings are the
//! same and the files they name unchanged ([`rbdx_core::spare`]), else it
//! connects as any run does. A spare is replaced after `--connect-ahead-secs`
//! (the monitors' configuration and the files may change meanwhile), and not
//! replaced once five of those have passed without a request (an idle agent
//! holds no Ceph session); a spare whose run is still connecting when a
//! request comes is waited for up to 50 ms, then not used (the request gets a
//! run forked then); a spare dies with its agent.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent_hint as hint;
use crate::agent_proto::{self as proto, Request};

/// How long the helper waits for a connected client to send its request.
const REQUEST_TIMEOUT_SECS: i64 = 10;

/// The wait status of a process that exited 1.
const EXITED_1: i32 = 1 << 8;

/// How long after a run was forked without a hint the agent looks for the one
/// it records (to make the first spare).
const HINT_WATCH: Duration = Duration::from_secs(30);

/// How many spare lifetimes without a request before the agent makes no more
/// spares (until the next request).
const IDLE_SPARES: u32 = 5;

/// What a spare run tells its helper once it waits for the request.
const WAITING: u8 = b'W';
/// What it tells it while it connects again with newer settings.
const BUSY: u8 = b'B';

/// How long a request waits for a spare run still connecting (a connect takes
/// 10-20 ms on the test cluster; it has been under way since the spare was
/// made).
const AHEAD_WAIT: Duration = Duration::from_millis(50);

/// How long a spare run follows the settings runs record (see `run_ahead`).
const HINT_FOLLOW: Duration = Duration::from_secs(2);

/// What the program file looked like when the agent started.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

fn identity(path: &Path) -> io::Result<Identity> {
    let m = std::fs::metadata(path)?;
    Ok(Identity { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: (m.mtime(), m.mtime_nsec()) })
}

/// Serves until the program changes (`Ok`) or the socket fails (`Err`).
/// `socket`: where to listen when systemd passed no socket; `ahead`: how long
/// a spare run's connection is kept (zero: no spare).
pub fn serve(socket: Option<&Path>, ahead: Duration) -> Result<(), String> {
    keep_standard_descriptors_open();
    let program = own_program().map_err(|e| format!("finding this program: {e}"))?;
    let started_as = identity(&program).map_err(|e| format!("{}: {e}", program.display()))?;
    let listener = match (systemd_socket()?, socket) {
        (Some(fd), _) => fd,
        (None, Some(path)) => bind(path)?,
        (None, None) => {
            return Err("no socket: start it from its systemd socket unit, or give --socket".into());
        }
    };
    // Each helper watches its run through a pidfd (Linux 5.3): without them,
    // every request is refused and its client runs rbdx itself.
    let pidfds = pidfd_open(std::process::id() as libc::pid_t).map(|fd| proto::close_all(&[fd])).is_ok();
    // Helpers are reaped by the kernel; each helper waits for its own run.
    // SAFETY: setting a signal disposition; no handler runs.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // Before any fork: every helper and run shares the page.
    let ahead = if hint::create().is_ok() && pidfds { ahead } else { Duration::ZERO };
    let mut spare: Option<Spare> = None;
    let mut cold: Option<Instant> = None;
    // An idle agent holds no Ceph session: spares are made while requests come.
    let mut last_request: Option<Instant> = None;
    loop {
        if let Some(s) = spare.take_if(|s| s.born.elapsed() >= ahead) {
            s.retire();
        }
        let busy = last_request.is_some_and(|t| t.elapsed() < ahead.saturating_mul(IDLE_SPARES));
        if spare.is_none() && busy && hint::present() {
            spare = Spare::start(listener, &program);
        }
        let wait = match &spare {
            Some(s) => Some(ahead.saturating_sub(s.born.elapsed())),
            None if !ahead.is_zero() && cold.is_some_and(|t| t.elapsed() < HINT_WATCH) => {
                Some(Duration::from_millis(100))
            }
            None => None,
        };
        if !readable(listener, wait) {
            continue;
        }
        // SAFETY: `listener` is a listening socket; null address out-pointers are allowed.
        let conn = unsafe {
            libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
        };
        if conn < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED) => continue,
                // Out of descriptors or memory: wait, the runs holding them end.
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
                _ => return Err(format!("accept: {e}")),
            }
        }
        last_request = Some(Instant::now());
        if identity(&program).ok().as_ref() != Some(&started_as) {
            refuse(conn, "the program changed since the agent started; the agent exits");
            if let Some(s) = spare {
                s.retire();
            }
            return Ok(());
        }
        if !pidfds {
            refuse(conn, "this kernel has no pidfd_open");
            continue;
        }
        if let Some(s) = spare.take() {
            match proto::send_with_fds(s.control, b"c", &[conn]) {
                Ok(()) => {
                    proto::close_all(&[conn, s.control]);
                    continue;
                }
                Err(_) => s.retire(),
            }
        }
        cold = Some(Instant::now());
        // SAFETY: the agent is single-threaded (it never starts a thread), so
        // the child is a complete copy; it only runs `helper` and `_exit`s.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: the child's copy of the listener is not used again.
                unsafe { libc::close(listener) };
                helper(conn, &program)
            }
            pid if pid < 0 => refuse(conn, &format!("fork: {}", io::Error::last_os_error())),
            _ => proto::close_all(&[conn]),
        }
    }
}

/// Whether `fd` has something to read within `wait` (`None`: no limit).
fn readable(fd: RawFd, wait: Option<Duration>) -> bool {
    let ms = wait.map_or(-1, |w| i32::try_from(w.as_millis()).unwrap_or(i32::MAX));
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// A spare helper: forked before its request, its run already connected.
struct Spare {
    pid: libc::pid_t,
    /// The agent's end of the pair the connection is handed over on.
    control: RawFd,
    born: Instant,
}

impl Spare {
    /// Forks a spare helper (`None` when fork fails: requests get helpers
    /// forked then, as without spares).
    fn start(listener: RawFd, program: &Path) -> Option<Self> {
        let (agent_end, spare_end) = socketpair().ok()?;
        // SAFETY: the agent is single-threaded (see `serve`); the child only
        // runs `spare_helper`, which ends in `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                proto::close_all(&[listener, agent_end]);
                spare_helper(spare_end, program)
            }
            pid if pid < 0 => {
                proto::close_all(&[agent_end, spare_end]);
                None
            }
            pid => {
                proto::close_all(&[spare_end]);
                Some(Self { pid, control: agent_end, born: Instant::now() })
            }
        }
    }

    /// Ends an unused spare and its run (which dies with its helper).
    fn retire(self) {
        proto::close_all(&[self.control]);
        // SAFETY: signalling the spare helper, the agent's own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

fn socketpair() -> io::Result<(RawFd, RawFd)> {
    let mut sv = [0; 2];
    // SAFETY: `sv` is a valid out-array of two descriptors.
    let r = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr())
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok((sv[0], sv[1])) }
}

/// Opens /dev/null on whichever of descriptors 0-2 is closed, so that no
/// connection or received descriptor takes one of those numbers: each run's
/// `dup2` onto 0-2 then makes a new descriptor, without close-on-exec, for the
/// children it starts.
fn keep_standard_descriptors_open() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries; open returns the lowest free number,
        // which is `fd` when it is closed (the lower ones are open by now).
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// The program a client must name: the path the agent was started as (what
/// `remotes_dir` reads), canonical.
fn own_program() -> io::Result<PathBuf> {
    let argv0 = std::env::args_os().next().map(PathBuf::from).filter(|p| p.is_absolute());
    argv0.map_or_else(std::env::current_exe, Ok)?.canonicalize()
}

/// The socket systemd passed (`LISTEN_FDS=1` for this process), if any.
fn systemd_socket() -> Result<Option<RawFd>, String> {
    let for_us =
        std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    if !for_us {
        return Ok(None);
    }
    if std::env::var("LISTEN_FDS").as_deref() != Ok("1") {
        return Err("systemd passed other than one socket (LISTEN_FDS)".into());
    }
    let fd = 3;
    // SAFETY: fd 3 is the listening socket systemd passed; marking it
    // close-on-exec keeps it from the runs' children.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Some(fd))
}

/// Listens on `path` (a stale socket there is replaced; any other file is an
/// error), mode 0600. The socket is bound under a temporary name beside `path`
/// and renamed into place once it listens: a client never finds the path
/// before a connection to it can succeed.
fn bind(path: &Path) -> Result<RawFd, String> {
    let shown = path.display();
    if let Ok(m) = std::fs::symlink_metadata(path)
        && !m.file_type().is_socket()
    {
        return Err(format!("{shown} exists and is not a socket"));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    // Made 0600 from the start: no moment where another mode lets a peer in.
    // SAFETY: umask only swaps the mask; the agent is single-threaded, so
    // nothing else creates a file before it is put back.
    let umask = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(&tmp);
    // SAFETY: as above.
    unsafe { libc::umask(umask) };
    let listener = bound.map_err(|e| format!("{}: {e}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{shown}: {e}"));
    }
    Ok(std::os::fd::IntoRawFd::into_raw_fd(listener))
}

/// Tells the client to run the program itself, and closes the connection.
fn refuse(conn: RawFd, why: &str) {
    let mut msg = vec![proto::REFUSED];
    msg.extend_from_slice(why.as_bytes());
    let _ = proto::write_all(conn, &msg);
    proto::close_all(&[conn]);
}

/// In the forked helper: reads and checks the request, forks the run, reports
/// its exit status; kills the run's process group if the client goes away.
fn helper(conn: RawFd, program: &Path) -> ! {
    // The helper waits for its run: SIGCHLD back to its default.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let (request, fds) = match read_request(conn, program) {
        Ok(r) => r,
        Err(why) => {
            refuse(conn, &why);
            rbdx_core::rados::exit_process(0)
        }
    };
    serve_run(conn, &request, &fds, None)
}

/// A run forked ahead of its request, waiting for it on `sock`.
struct Ahead {
    pid: libc::pid_t,
    sock: RawFd,
}

impl Ahead {
    /// Hands the request to the run once it waits for one (it may still be
    /// connecting: it is given [`AHEAD_WAIT`], less than a connect of its
    /// own would take); otherwise kills it.
    fn start(self, request: &Request, fds: &[RawFd]) -> Option<libc::pid_t> {
        let waits = self.waits();
        let body = request.encode();
        let mut frame = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        if waits && proto::send_with_fds(self.sock, &frame, fds).is_ok() {
            proto::close_all(&[self.sock]);
            return Some(self.pid);
        }
        self.end();
        None
    }

    /// Whether the run waits for its request now, or does within
    /// [`AHEAD_WAIT`]: the last word it sent says what it is doing.
    fn waits(&self) -> bool {
        let deadline = Instant::now() + AHEAD_WAIT;
        let mut last = None;
        loop {
            let wait =
                if last == Some(WAITING) { Duration::ZERO } else { deadline - Instant::now().min(deadline) };
            if !readable(self.sock, Some(wait)) {
                return last == Some(WAITING);
            }
            let mut words = [0u8; 16];
            // SAFETY: `words` is valid for its length.
            let n =
                unsafe { libc::recv(self.sock, words.as_mut_ptr().cast(), words.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                // Gone (or nothing after all): not waiting.
                return false;
            }
            last = Some(words[n as usize - 1]);
        }
    }

    /// Kills the run and waits for it.
    fn end(self) {
        proto::close_all(&[self.sock]);
        kill_run(self.pid);
    }
}

/// Starts the run of `request` (the one forked `ahead`, if it takes it; else
/// a new fork), tells the client it is accepted, reports its exit status, and
/// ends the helper.
fn serve_run(conn: RawFd, request: &Request, fds: &[RawFd], ahead: Option<Ahead>) -> ! {
    let pid = match ahead.and_then(|a| a.start(request, fds)) {
        Some(pid) => pid,
        None => {
            // SAFETY: getpid cannot fail; the helper is single-threaded, and the
            // child only sets itself up and runs `entry`, which ends in `_exit`.
            let (helper, pid) = unsafe { (libc::getpid(), libc::fork()) };
            if pid == 0 {
                detach(helper);
                become_run(request, fds, &[conn])
            }
            pid
        }
    };
    proto::close_all(fds);
    if pid < 0 {
        refuse(conn, &format!("fork: {}", io::Error::last_os_error()));
        rbdx_core::rados::exit_process(0)
    }
    // A client gone already is seen by `watch`.
    let _ = proto::write_all(conn, &[proto::ACCEPTED]);
    let status = watch(conn, pid);
    let _ = proto::write_all(conn, &status.to_le_bytes());
    rbdx_core::rados::exit_process(0)
}

/// A spare helper: forks its run ahead (which connects with the hint and
/// waits), waits for the agent to hand it a connection, then serves it as any
/// helper does. When the agent closes `control` first (it retired the spare or
/// ended), the run is killed and the helper ends.
fn spare_helper(control: RawFd, program: &Path) -> ! {
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let ahead = socketpair().ok().and_then(|(mine, theirs)| {
        // SAFETY: as in `serve_run`: a single-threaded fork whose child ends in `_exit`.
        let (helper, pid) = unsafe { (libc::getpid(), libc::fork()) };
        if pid == 0 {
            proto::close_all(&[control, mine]);
            detach(helper);
            run_ahead(theirs)
        }
        proto::close_all(&[theirs]);
        if pid < 0 {
            proto::close_all(&[mine]);
            return None;
        }
        Some(Ahead { pid, sock: mine })
    });
    let mut byte = [0u8];
    let conn = match proto::recv_with_fds(control, &mut byte, 1) {
        Ok((1, fds)) if fds.len() == 1 => fds[0],
        other => {
            if let Ok((_, fds)) = other {
                proto::close_all(&fds);
            }
            if let Some(a) = ahead {
                a.end();
            }
            rbdx_core::rados::exit_process(0)
        }
    };
    proto::close_all(&[control]);
    match read_request(conn, program) {
        Ok((request, fds)) => serve_run(conn, &request, &fds, ahead),
        Err(why) => {
            refuse(conn, &why);
            if let Some(a) = ahead {
                a.end();
            }
            rbdx_core::rados::exit_process(0)
        }
    }
}

/// In a run forked ahead: connects with the hint's settings, tells its helper
/// it waits, receives the request and its three descriptors, and becomes
/// that run. Ends (its connection with it) when the helper goes first.
fn run_ahead(sock: RawFd) -> ! {
    let mut used = hint::read();
    if let Some(config) = &used {
        // A failure here is the run's own connect's to report, if it asks for the same.
        let _ = rbdx_core::spare::prepare(config);
    }
    if proto::write_all(sock, &[WAITING]).is_err() {
        rbdx_core::rados::exit_process(0)
    }
    // The run whose request made way for this spare may record other settings
    // in its first moments: followed for a while, connecting again (busy
    // meanwhile) when they change.
    let until = Instant::now() + HINT_FOLLOW;
    while Instant::now() < until && !readable(sock, Some(Duration::from_millis(50))) {
        let now = hint::read();
        if now.is_some() && now != used {
            used = now;
            if proto::write_all(sock, &[BUSY]).is_err() {
                rbdx_core::rados::exit_process(0)
            }
            if let Some(config) = &used {
                let _ = rbdx_core::spare::prepare(config);
            }
            if proto::write_all(sock, &[WAITING]).is_err() {
                rbdx_core::rados::exit_process(0)
            }
        }
    }
    match receive_request(sock) {
        Ok((request, fds)) => become_run(&request, &fds, &[sock]),
        Err(_) => rbdx_core::rados::exit_process(0),
    }
}

/// Receives the request and its three descriptors, and checks them.
fn read_request(conn: RawFd, program: &Path) -> Result<(Request, Vec<RawFd>), String> {
    match proto::peer_uid(conn) {
        // SAFETY: geteuid cannot fail.
        Ok(uid) if uid == unsafe { libc::geteuid() } => {}
        Ok(uid) => return Err(format!("uid {uid} may not use this agent")),
        Err(e) => return Err(format!("SO_PEERCRED: {e}")),
    }
    proto::set_recv_timeout(conn, REQUEST_TIMEOUT_SECS).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let (request, fds) = receive_request(conn)?;
    if Path::new(&request.program) != program {
        proto::close_all(&fds);
        return Err(format!(
            "this agent runs {}, not {}",
            program.display(),
            Path::new(&request.program).display()
        ));
    }
    Ok((request, fds))
}

/// Receives one framed request (its length, with its three descriptors
/// attached, then its body) on `sock`; nothing is left open on an error.
fn receive_request(sock: RawFd) -> Result<(Request, Vec<RawFd>), String> {
    let mut len = [0u8; 4];
    let (n, fds) =
        proto::recv_with_fds(sock, &mut len, 3).map_err(|e| format!("reading the request: {e}"))?;
    let checked = (|| {
        if fds.len() != 3 {
            return Err(format!("the request carries {} descriptors, not 3", fds.len()));
        }
        proto::read_exact(sock, &mut len[n..]).map_err(|e| format!("reading the request: {e}"))?;
        let size = u32::from_le_bytes(len) as usize;
        if size > proto::MAX_REQUEST {
            return Err(format!("the request is {size} bytes, more than {}", proto::MAX_REQUEST));
        }
        let mut body = vec![0u8; size];
        proto::read_exact(sock, &mut body).map_err(|e| format!("reading the request: {e}"))?;
        Request::decode(&body)
    })();
    match checked {
        Ok(r) => Ok((r, fds)),
        Err(e) => {
            proto::close_all(&fds);
            Err(e)
        }
    }
}

/// In a run just forked by `helper`: its own process group, and death with
/// its helper.
fn detach(helper: libc::pid_t) {
    // SAFETY: these calls only change this process's group and parent-death
    // signal.
    unsafe {
        libc::setpgid(0, 0);
        // Should the helper die, its client reports the run failed: the run
        // must not go on unseen (a re-run converges, as after any kill).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != helper {
            libc::_exit(1);
        }
    }
}

/// In the run: becomes the client's process (closing `also`, the helper's
/// connection or pair), then runs rbdx's `main`. A run forked ahead has
/// librados' threads by now: nothing here changes what they read under them
/// (descriptors 0-2 are the client's, the mask is this thread's, and the
/// environment is replaced by pointing `environ` at a new array).
fn become_run(request: &Request, fds: &[RawFd], also: &[RawFd]) -> ! {
    // SAFETY: these calls only change this process's descriptors, mask and
    // signal state.
    unsafe {
        for (i, &fd) in fds.iter().enumerate() {
            libc::dup2(fd, i as RawFd);
        }
        for &fd in fds.iter().chain(also) {
            if fd > 2 {
                libc::close(fd);
            }
        }
        libc::umask(request.umask as libc::mode_t);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    if let Err(e) = std::env::set_current_dir(&request.cwd) {
        eprintln!("rbdx: working directory {}: {e}", Path::new(&request.cwd).display());
        rbdx_core::rados::exit_process(1);
    }
    adopt_environment(&request.env);
    // Spans kept before the request (an agent started with RBDX_TRACE keeps
    // them from the start) are not this run's: a spare's connect is not.
    let _ = rbdx_core::trace::take();
    rbdx_core::spare::on_connect(hint::record);
    crate::entry(request.argv.clone())
}

unsafe extern "C" {
    /// The C library's environment (`__environ`).
    static mut environ: *mut *mut libc::c_char;
}

/// Makes the client's environment this process's: `environ` is pointed at a
/// new array (never freed, as the old one is not), one store, so a thread
/// reading the environment meanwhile sees the old one or the new one whole.
fn adopt_environment(env: &[OsString]) {
    let mut entries: Vec<*mut libc::c_char> = env
        .iter()
        .map(|e| e.as_bytes())
        .filter(|b| b.iter().position(|&c| c == b'=').is_some_and(|eq| eq > 0))
        .filter_map(|b| std::ffi::CString::new(b).ok())
        .map(std::ffi::CString::into_raw)
        .collect();
    entries.push(std::ptr::null_mut());
    let array = entries.leak().as_mut_ptr();
    // SAFETY: `array` is a NUL-terminated array of NUL-terminated strings that
    // lives as long as the process; glibc's setenv copies an environment it did
    // not allocate before changing it.
    unsafe { environ = array };
}

/// Waits for the run `pid` to end and returns its wait status; if the client hangs
/// up (or sends anything) first, kills the run's process group.
fn watch(conn: RawFd, pid: libc::pid_t) -> i32 {
    let Ok(pidfd) = pidfd_open(pid) else {
        // Checked when the agent started; should it fail now, wait without watching.
        return wait(pid);
    };
    loop {
        let mut polls = [
            libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: conn, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `polls` is a valid array of two pollfds.
        let r = unsafe { libc::poll(polls.as_mut_ptr(), 2, -1) };
        if r < 0 {
            continue;
        }
        if polls[0].revents != 0 {
            return wait(pid);
        }
        if polls[1].revents != 0 {
            return kill_run(pid);
        }
    }
}

/// Kills the run `pid` and its process group; returns its wait status.
fn kill_run(pid: libc::pid_t) -> i32 {
    // SAFETY: signalling the run's own process group and the run.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    wait(pid)
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return EXITED_1;
        }
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<RawFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(fd as RawFd) }
}
