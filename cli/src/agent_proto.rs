//! The warm agent's wire format, shared by `rbdx agent` (the server) and
//! `rbdx-run` (the client). One request per connection, on a Unix stream socket:
//!
//! - client → agent: a 4-byte little-endian length, then that many bytes of
//!   NUL-terminated fields: [`MAGIC`], the program (the canonical path of the
//!   `rbdx` the client would otherwise execute), the working directory, the
//!   umask (octal), the argument count, the arguments (the first is the program
//!   name), then the environment as `NAME=value` fields. The client's standard
//!   input, output and error travel with the length as `SCM_RIGHTS`;
//! - agent → client: [`ACCEPTED`] and, when the run ends, its raw wait status
//!   as 4 little-endian bytes (a run killed by a signal ends the client by the
//!   same signal); or [`REFUSED`] and a one-line reason, after which the client
//!   runs the program itself.
//!
//! Nothing here is trusted by the side that reads it: lengths and counts are
//! bounded and every field is checked.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The first field of a request: the protocol and its version.
pub const MAGIC: &[u8] = b"rbdx-agent 1";
/// The agent runs the request.
pub const ACCEPTED: u8 = b'A';
/// The agent does not run the request; a reason follows.
pub const REFUSED: u8 = b'R';
/// The largest request body (arguments and environment).
pub const MAX_REQUEST: usize = 1 << 20;
/// The socket a client tries when `RBDX_AGENT_SOCKET` names none.
pub const DEFAULT_SOCKET: &str = "/run/rbdx/agent.sock";

/// One run, as the client describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Canonical path of the program to run.
    pub program: OsString,
    /// Working directory.
    pub cwd: OsString,
    /// File-mode creation mask.
    pub umask: u32,
    /// Arguments, the program name first.
    pub argv: Vec<OsString>,
    /// Environment, `NAME=value`.
    pub env: Vec<OsString>,
}

impl Request {
    /// The request body (without the length).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = |b: &[u8]| {
            out.extend_from_slice(b);
            out.push(0);
        };
        field(MAGIC);
        field(self.program.as_bytes());
        field(self.cwd.as_bytes());
        field(format!("{:o}", self.umask).as_bytes());
        field(self.argv.len().to_string().as_bytes());
        for a in &self.argv {
            field(a.as_bytes());
        }
        for e in &self.env {
            field(e.as_bytes());
        }
        out
    }

    /// Parses a request body; the reason when it is not one.
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let Some(body) = body.strip_suffix(&[0]) else {
            return Err("the request does not end with a NUL".into());
        };
        let mut fields = body.split(|&b| b == 0);
        if fields.next() != Some(MAGIC) {
            return Err("not an rbdx agent request of this version".into());
        }
        let mut next = |what: &str| fields.next().ok_or_else(|| format!("the request has no {what}"));
        let program = OsString::from_vec(next("program")?.to_vec());
        let cwd = OsString::from_vec(next("working directory")?.to_vec());
        let umask = std::str::from_utf8(next("umask")?)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 8).ok())
            .filter(|m| *m <= 0o777)
            .ok_or("the request's umask is not an octal mode")?;
        let argc: usize = std::str::from_utf8(next("argument count")?)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| (1..=4096).contains(n))
            .ok_or("the request's argument count is not 1 to 4096")?;
        let mut argv = Vec::with_capacity(argc);
        for _ in 0..argc {
            argv.push(OsString::from_vec(next("argument")?.to_vec()));
        }
        let env: Vec<OsString> = fields.map(|f| OsString::from_vec(f.to_vec())).collect();
        if let Some(bad) =
            env.iter().find(|e| e.as_bytes().iter().position(|&b| b == b'=').is_none_or(|i| i == 0))
        {
            return Err(format!(
                "the request's environment entry {:?} is not NAME=value",
                bad.to_string_lossy()
            ));
        }
        if !program.as_bytes().starts_with(b"/") || !cwd.as_bytes().starts_with(b"/") {
            return Err("the request's program and working directory must be absolute".into());
        }
        Ok(Self { program, cwd, umask, argv, env })
    }
}

/// Sends `bytes` on `sock` with `fds` attached (`SCM_RIGHTS`), then the rest.
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let space = cmsg_space(fds.len());
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, large enough for one header with
    // `fds.len()` descriptors (CMSG_SPACE), so the first header exists and its
    // data area holds them.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
    }
    // SAFETY: `msg` and the buffers it points at are valid for the call.
    let sent = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    write_all(sock, &bytes[sent as usize..])
}

/// Receives up to `buf.len()` bytes (at least one, unless the peer closed) and
/// the descriptors attached to them, each marked close-on-exec. More than
/// `max_fds` descriptors, or a truncated control message, is an error (the
/// ones received are closed).
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<RawFd>)> {
    let space = cmsg_space(max_fds + 1);
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` and its buffers are valid for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to `msg_controllen`; the CMSG_*
    // walk stays inside it, and each SCM_RIGHTS header's data holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(std::ptr::read_unaligned(data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
        close_all(&fds);
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many descriptors"));
    }
    Ok((n as usize, fds))
}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((fds * size_of::<RawFd>()) as u32) as usize }
}

/// Closes each descriptor.
pub fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: the caller owns these descriptors and uses them no more.
        unsafe { libc::close(fd) };
    }
}

/// Writes all of `bytes` (no SIGPIPE: a gone peer is an error).
pub fn write_all(sock: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for its length.
        let n = unsafe { libc::send(sock, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes; `UnexpectedEof` when the peer closes first.
pub fn read_exact(sock: RawFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the rest of `buf` is valid for writing.
        let n = unsafe { libc::recv(sock, buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => got += n as usize,
        }
    }
    Ok(())
}

/// The uid of the process at the other end of a connected Unix socket.
pub fn peer_uid(sock: RawFd) -> io::Result<u32> {
    // SAFETY: an all-zero ucred is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-pointers of the sizes given.
    let r = unsafe {
        libc::getsockopt(sock, libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Bounds each receive on `sock` to `secs` seconds.
pub fn set_recv_timeout(sock: RawFd, secs: i64) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: secs, tv_usec: 0 };
    // SAFETY: `tv` is a valid timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            program: "/usr/bin/rbdx".into(),
            cwd: "/var/lib/one".into(),
            umask: 0o022,
            argv: vec!["/usr/bin/rbdx".into(), "tm".into(), "clone".into(), "a b".into()],
            env: vec!["PATH=/usr/bin".into(), "EMPTY=".into()],
        }
    }

    #[test]
    fn a_request_survives_the_wire() {
        assert_eq!(Request::decode(&request().encode()), Ok(request()));
    }

    /// A body of these fields, each NUL-terminated.
    fn body(fields: &[&str]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.bytes().chain([0])).collect()
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let good = request().encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "NUL"),
            (good[..good.len() - 1].to_vec(), "NUL"),
            (body(&["rbdx-agent 0", "/p", "/", "0", "1", "p"]), "version"),
            (body(&["rbdx-agent 1", "/p", "/", "22"]), "argument count"),
            (body(&["rbdx-agent 1", "/p", "/", "22", "0"]), "argument count"),
            (body(&["rbdx-agent 1", "/p", "/", "22", "99999999999999999999"]), "argument count"),
            (body(&["rbdx-agent 1", "/p", "/", "22", "3", "a", "b"]), "argument"),
            (body(&["rbdx-agent 1", "/p", "/", "9999", "1", "a"]), "umask"),
            (body(&["rbdx-agent 1", "rel", "/", "22", "1", "a"]), "absolute"),
            (body(&["rbdx-agent 1", "/p", "/", "22", "1", "a", "NOEQUALS"]), "NAME=value"),
            (body(&["rbdx-agent 1", "/p", "/", "22", "1", "a", "=v"]), "NAME=value"),
        ];
        for (body, why) in cases {
            let e = Request::decode(&body).unwrap_err();
            assert!(e.contains(why), "{body:?}: {e}");
        }
    }
}
