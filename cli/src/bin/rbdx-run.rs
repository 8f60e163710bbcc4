//! `rbdx-run ARGS…`: runs `rbdx ARGS…` (the `rbdx` beside this program) through
//! the warm agent when one serves this user, else executes it. Either way the
//! run sees the same arguments, environment, working directory, umask and
//! standard input, output and error, and this process ends as the run ended.
//! It links no Ceph library: starting it costs ~1 ms where `rbdx` costs ~10.
//!
//! The agent's socket is `$RBDX_AGENT_SOCKET`, else `/run/rbdx/agent.sock`. The
//! standard descriptors are only handed to an agent of this same user
//! (`SO_PEERCRED`); any other answer (no socket, another user, a refusal, no
//! answer within 10 s) and the client executes `rbdx` itself.

#[path = "../agent_proto.rs"]
#[allow(dead_code)]
mod agent_proto;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use agent_proto::{self as proto, Request};

/// How long the client waits for the agent to accept before running `rbdx`
/// itself.
const ACCEPT_TIMEOUT_SECS: i64 = 10;

fn main() {
    let program = match program() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rbdx-run: finding rbdx beside this program: {e}");
            std::process::exit(1);
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let socket = std::env::var_os("RBDX_AGENT_SOCKET")
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(proto::DEFAULT_SOCKET), PathBuf::from);
    if let Some(status) = through_agent(&socket, &program, &args) {
        end_as(status);
    }
    let e = std::process::Command::new(&program).args(&args).exec();
    eprintln!("rbdx-run: {}: {e}", program.display());
    std::process::exit(1);
}

/// `rbdx` in this program's directory, canonical.
fn program() -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    me.with_file_name("rbdx").canonicalize()
}

/// The run's wait status, or `None` when the agent did not take the run (the
/// caller runs it).
fn through_agent(socket: &Path, program: &Path, args: &[OsString]) -> Option<i32> {
    let conn = UnixStream::connect(socket).ok()?;
    let fd = conn.as_raw_fd();
    // SAFETY: geteuid cannot fail.
    if proto::peer_uid(fd).ok()? != unsafe { libc::geteuid() } {
        return None;
    }
    let mut argv = vec![program.as_os_str().to_owned()];
    argv.extend(args.iter().cloned());
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend(v.into_vec());
            OsString::from_vec(e)
        })
        .collect();
    let request = Request {
        program: program.as_os_str().to_owned(),
        cwd: std::env::current_dir().ok()?.into_os_string(),
        umask: current_umask(),
        argv,
        env,
    };
    let body = request.encode();
    if body.len() > proto::MAX_REQUEST {
        return None;
    }
    let mut frame = u32::try_from(body.len()).ok()?.to_le_bytes().to_vec();
    frame.extend(body);
    proto::send_with_fds(fd, &frame, &[0, 1, 2]).ok()?;
    proto::set_recv_timeout(fd, ACCEPT_TIMEOUT_SECS).ok()?;
    let mut answer = [0u8; 1];
    proto::read_exact(fd, &mut answer).ok()?;
    if answer[0] != proto::ACCEPTED {
        return None;
    }
    // The run has its own deadline; wait for it without one.
    proto::set_recv_timeout(fd, 0).ok()?;
    let mut status = [0u8; 4];
    if proto::read_exact(fd, &mut status).is_err() {
        eprintln!("rbdx-run: the agent ended before the run reported its exit status");
        std::process::exit(1);
    }
    Some(i32::from_le_bytes(status))
}

fn current_umask() -> u32 {
    // SAFETY: umask only swaps the mask; it is put back at once (this process
    // is single-threaded: nothing creates a file in between).
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

/// Ends this process as the run ended: its exit code, or its signal.
fn end_as(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: no core of this process (the run's own is the one that
        // matters), the signal's default action, unblocked, then raised.
        unsafe {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 });
}
