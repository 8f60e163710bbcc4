//! Running a [`Job`]: in this process, or on a host through one ssh round trip
//! that runs `<REMOTE_DIR>/rbdx/rbdx remote` there, with the job as JSON on stdin
//! and the [`Outcome`] as JSON on stdout. The remote command line is fixed (the
//! binary path from the config, validated); no data ever becomes shell text.
//!
//! Every request carries what is left of the action's deadline
//! ([`crate::deadline`]); the host stops the job itself when it passes, and the
//! front-end stops waiting (and kills ssh) when it passes. ssh keeps the
//! connection alive with `ServerAliveInterval`, so a host that disappears is
//! noticed in under a minute.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::args::validate_host;
use crate::config::Config;
use crate::deadline;
use crate::hostfs::VmPath;
use crate::job::{Job, Outcome, PROTOCOL};
pub use rbdx_import::child::wait_output;
use rbdx_import::child::{self, drain};

use crate::error::{Context, Error, Result};

/// Where a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Here.
    Local,
    /// On this host, over ssh.
    Ssh(String),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Self::Local => "this host",
            Self::Ssh(h) => h,
        }
    }
}

/// What goes to the remote side.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version ([`PROTOCOL`]).
    pub protocol: u32,
    /// The job.
    pub job: Job,
    /// Milliseconds the job may take; the host stops it when they pass.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// A job as the one request line the remote side reads, with `limit` (bounded by
/// the action's deadline, less a margin) as its deadline.
///
/// # Errors
/// Never in practice (jobs always serialise).
pub fn request_line_within(job: Job, limit: Duration) -> Result<Vec<u8>> {
    let ms = u64::try_from(deadline::for_host(limit).as_millis()).unwrap_or(u64::MAX);
    let req = Request { protocol: PROTOCOL, job, deadline_ms: Some(ms) };
    let mut v = serde_json::to_vec(&req).map_err(|e| Error::Invalid(format!("the job: {e}")))?;
    v.push(b'\n');
    Ok(v)
}

/// Largest request the remote side reads.
pub const MAX_REQUEST: u64 = 1 << 20;

/// Runs `job` on `target`.
pub fn run(job: &Job, target: &Target, cfg: &Config) -> Outcome {
    match target {
        Target::Local => job.run(),
        Target::Ssh(host) => run_ssh(job, host, cfg).unwrap_or_else(failed),
    }
}

/// The outcome an answer on stdout carries, or why there is none.
fn outcome_of(host: &str, out: &[u8], err: &[u8], status: std::process::ExitStatus) -> Result<Outcome> {
    serde_json::from_slice::<Outcome>(out).map_err(|_| {
        let err = String::from_utf8_lossy(err);
        let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
        Error::Host(format!("{host}: running rbdx over ssh failed ({status}): {last}"))
    })
}

fn run_ssh(job: &Job, host: &str, cfg: &Config) -> Result<Outcome> {
    let request = request_line_within(job.clone(), cfg.action_timeout)?;
    let mut child = ssh(cfg, host)?;
    let mut stdin = child.stdin.take().ok_or_else(|| Error::Host("no stdin".into()))?;
    let out_reader = drain(child.stdout.take().ok_or_else(|| Error::Host("no stdout".into()))?, 16 << 20);
    let err_reader = drain(child.stderr.take().ok_or_else(|| Error::Host("no stderr".into()))?, 1 << 20);
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let status = wait(&mut child, cfg, host)?;
    let _ = writer.join();
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    outcome_of(host, &out, &err, status)
}

/// Runs a job that reads data (`Import`, `PutFile`) on `target`, the data read
/// from `input` (streamed over ssh after the request line when remote), calling
/// `progress` with the bytes sent so far.
pub fn run_with_input(
    job: &Job,
    target: &Target,
    cfg: &Config,
    mut input: Box<dyn Read>,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Outcome {
    let host = match target {
        Target::Local => {
            return match job {
                Job::PutFile { path, size } => Outcome {
                    error: crate::hostfs::put_file(path, *size, input).err().map(|e| e.to_string()),
                    ..Outcome::default()
                },
                _ => job.import(input, progress),
            };
        }
        Target::Ssh(h) => h.clone(),
    };
    let mut run = || -> Result<Outcome> {
        let request = request_line_within(job.clone(), cfg.action_timeout)?;
        let mut child = ssh(cfg, &host)?;
        let mut stdin = child.stdin.take().ok_or_else(|| Error::Host("no stdin".into()))?;
        let out_reader = drain(child.stdout.take().ok_or_else(|| Error::Host("no stdout".into()))?, 16 << 20);
        // ssh's own messages are drained too: a full stderr pipe would stop it.
        let err_reader = drain(child.stderr.take().ok_or_else(|| Error::Host("no stderr".into()))?, 1 << 20);
        stdin.write_all(&request).context(format!("{host}"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        loop {
            let n = input.read(&mut buf).context("reading the source")?;
            if n == 0 {
                break;
            }
            // The remote side stopped reading: its outcome says why.
            if stdin.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
            progress(sent, None);
        }
        drop(stdin);
        let status = wait(&mut child, cfg, &host)?;
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        outcome_of(&host, &out, &err, status)
    };
    run().unwrap_or_else(failed)
}

/// The remote side: reads one [`Request`] line from `input` and runs it, under
/// the request's deadline. Returns what to print on stdout (the [`Outcome`] as
/// JSON) and the exit code; a `SendDir` job writes its tar stream to stdout
/// itself and prints nothing else.
pub fn serve(mut input: impl Read + 'static) -> (Option<Outcome>, i32) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return (Some(failed(Error::Io { context: "reading the job".into(), source: e })), 0),
        }
        if line.len() as u64 > MAX_REQUEST {
            return (Some(failed(Error::Invalid("the job is too large".into()))), 0);
        }
    }
    let req: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return (Some(failed(Error::Invalid(format!("malformed job: {e}")))), 0),
    };
    if req.protocol != PROTOCOL {
        return (
            Some(failed(Error::Invalid(format!(
                "job protocol {} but this host's rbdx speaks {PROTOCOL}: run `onehost sync` so both run the same version",
                req.protocol
            )))),
            0,
        );
    }
    if let Some(ms) = req.deadline_ms {
        deadline::arm(Duration::from_millis(ms), |msg| {
            println!(
                "{}",
                serde_json::to_string(&failed(Error::TimedOut(msg.to_string()))).unwrap_or_default()
            );
        });
    }
    let result = match &req.job {
        Job::SendDir { path } => match crate::hostfs::send_dir(path, Stdio::inherit()) {
            Ok(()) => (None, 0),
            Err(e) => {
                eprintln!("{e}");
                (None, 1)
            }
        },
        Job::Import { .. } => (Some(req.job.import(Box::new(input), &mut |_, _| {})), 0),
        Job::PutFile { path, size } => {
            let r = crate::hostfs::put_file(path, *size, input);
            (Some(Outcome { error: r.err().map(|e| e.to_string()), ..Outcome::default() }), 0)
        }
        Job::ReceiveDir { path } => {
            let r = crate::hostfs::receive_dir(path, input);
            (Some(Outcome { error: r.err().map(|e| e.to_string()), ..Outcome::default() }), 0)
        }
        job => (Some(job.run()), 0),
    };
    deadline::finished();
    result
}

/// What a move of a VM directory found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The tree was copied; the source can go.
    Copied,
    /// Source and destination are one directory (a shared file system, two
    /// names for one host): nothing was done, and nothing may be removed.
    SameDirectory,
    /// The source is gone and the destination exists: an earlier run moved it.
    AlreadyMoved,
}

/// A marker name nobody can guess: the same-directory probe's.
fn probe_marker() -> String {
    let mut b = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}{t:x}{:x}", b.iter().map(|x| format!("{x:02x}")).collect::<String>(), std::process::id())
}

/// Whether `dir` exists on `target` (`mark` left in it), and whether marker
/// `find` was there (and is removed).
fn probe(
    target: &Target,
    dir: &VmPath,
    mark: Option<&str>,
    find: Option<&str>,
    cfg: &Config,
) -> Result<(bool, bool)> {
    let job =
        Job::ProbeDir { path: dir.clone(), mark: mark.map(str::to_string), find: find.map(str::to_string) };
    let o = run(&job, target, cfg);
    if let Some(e) = o.error {
        return Err(Error::Host(format!("{}: {e}", target.name())));
    }
    let v: serde_json::Value =
        o.output.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    Ok((v["exists"] == true, v["found"] == true))
}

/// Whether `a` on `ta` and `b` on `tb` are one directory: a marker left in one is
/// looked for in the other (as the stock driver probes). Both must exist.
///
/// # Errors
/// One line naming the host that failed.
pub fn same_directory(ta: &Target, a: &VmPath, tb: &Target, b: &VmPath, cfg: &Config) -> Result<bool> {
    let m = probe_marker();
    let (exists, _) = probe(ta, a, Some(&m), None, cfg)?;
    if !exists {
        return Ok(false);
    }
    let (_, found) = probe(tb, b, None, Some(&m), cfg)?;
    Ok(found)
}

/// Moves VM directory `from` on `src` to `to` on `dst`, without ever losing it:
/// nothing is done when both are one directory; the tree is received into a
/// temporary sibling of `to`, synced, and swapped into place only once complete;
/// the caller removes the source only after this returns [`Moved::Copied`]. A
/// re-run after any interruption converges.
///
/// # Errors
/// One line naming the host that failed.
pub fn move_dir(src: &Target, from: &VmPath, dst: &Target, to: &VmPath, cfg: &Config) -> Result<Moved> {
    from.check_dir()?;
    to.check_dir()?;
    let m = probe_marker();
    let (src_exists, _) = probe(src, from, Some(&m), None, cfg)?;
    if !src_exists {
        let (dst_exists, _) = probe(dst, to, None, None, cfg)?;
        return if dst_exists {
            Ok(Moved::AlreadyMoved)
        } else {
            Err(Error::Host(format!("{} exists neither on {} nor on {}", from.path, src.name(), dst.name())))
        };
    }
    let (_, same) = probe(dst, to, None, Some(&m), cfg)?;
    if same {
        return Ok(Moved::SameDirectory);
    }
    let mut receiver = remote(cfg, dst)?;
    let mut sender = remote(cfg, src)?;
    let mut rin = receiver.stdin.take().ok_or_else(|| Error::Host("no stdin".into()))?;
    rin.write_all(&request_line_within(Job::ReceiveDir { path: to.clone() }, cfg.action_timeout)?)
        .context(format!("{}", dst.name()))?;
    let mut sin = sender.stdin.take().ok_or_else(|| Error::Host("no stdin".into()))?;
    sin.write_all(&request_line_within(Job::SendDir { path: from.clone() }, cfg.action_timeout)?)
        .context(format!("{}", src.name()))?;
    drop(sin);
    let mut sout = sender.stdout.take().ok_or_else(|| Error::Host("no stdout".into()))?;
    let pump = std::thread::spawn(move || {
        let r = std::io::copy(&mut sout, &mut rin);
        drop(rin);
        r
    });
    let rout = drain(receiver.stdout.take().ok_or_else(|| Error::Host("no stdout".into()))?, 1 << 20);
    let serr = drain(sender.stderr.take().ok_or_else(|| Error::Host("no stderr".into()))?, 1 << 16);
    let rerr = drain(receiver.stderr.take().ok_or_else(|| Error::Host("no stderr".into()))?, 1 << 16);
    let sent = wait(&mut sender, cfg, src.name());
    let received = wait(&mut receiver, cfg, dst.name());
    // Both ends are done (or killed): the pump has nothing left to wait for.
    let _ = pump.join();
    let (sent, received) = (sent?, received?);
    let last = |h: std::thread::JoinHandle<Vec<u8>>| {
        let e = String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned();
        e.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output").to_string()
    };
    let out = rout.join().unwrap_or_default();
    if !sent.success() {
        return Err(Error::Host(format!("{}: sending {} failed: {}", src.name(), from.path, last(serr))));
    }
    match serde_json::from_slice::<Outcome>(&out) {
        Ok(Outcome { error: Some(e), .. }) => Err(Error::Host(format!("{}: {e}", dst.name()))),
        Ok(_) if received.success() => Ok(Moved::Copied),
        _ => Err(Error::Host(format!("{}: receiving {} failed: {}", dst.name(), to.path, last(rerr)))),
    }
}

/// Starts `rbdx remote` on `target`, stdin/stdout/stderr piped: over ssh, or as
/// a child of this process when the target is this host.
///
/// # Errors
/// When it cannot be started.
pub fn remote(cfg: &Config, target: &Target) -> Result<Child> {
    match target {
        Target::Ssh(host) => ssh(cfg, host),
        Target::Local => {
            let me = std::env::current_exe().context("finding this program")?;
            let mut cmd = Command::new(me);
            cmd.arg("remote").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            child::spawn(&mut cmd).context("cannot run rbdx remote")
        }
    }
}

/// Starts `rbdx remote` on `host` over ssh, stdin/stdout/stderr piped. The
/// command line is the configured ssh and a fixed binary path: nothing from data.
///
/// # Errors
/// When ssh cannot be started.
pub fn ssh(cfg: &Config, host: &str) -> Result<Child> {
    validate_host(host).map_err(Error::from)?;
    let connect = cfg.action_timeout.min(Duration::from_secs(30)).as_secs().max(1);
    let mut cmd = Command::new(&cfg.ssh[0]);
    cmd.args(&cfg.ssh[1..])
        .args(["-o", "BatchMode=yes", "-o", &format!("ConnectTimeout={connect}")])
        .args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3", "--", host])
        .arg(format!("{} remote", cfg.remote_binary()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    child::spawn(&mut cmd).context(format!("cannot run {}", cfg.ssh[0]))
}

fn wait(child: &mut Child, cfg: &Config, host: &str) -> Result<std::process::ExitStatus> {
    let limit = deadline::bound(cfg.action_timeout);
    child::wait(child, limit).map_err(|_| {
        Error::TimedOut(format!(
            "{host}: the action did not finish within {}s (ACTION_TIMEOUT)",
            cfg.action_timeout.as_secs()
        ))
    })
}

fn failed(e: Error) -> Outcome {
    Outcome { error: Some(e.to_string()), ..Outcome::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_side_refuses_bad_requests_in_one_line() {
        for (input, want) in [
            (&b"not json"[..], "malformed job"),
            (b"{\"protocol\":2,\"job\":{\"job\":\"rm_rf\"}}", "malformed job"),
            (b"{\"protocol\":99,\"job\":{\"job\":\"snap_delete\",\"ceph\":{\"timeout_secs\":1},\"head\":\"a/b\",\"snap\":\"1\"}}", "onehost sync"),
        ] {
            let (o, code) = serve(input);
            assert_eq!(code, 0);
            let e = o.unwrap().error.unwrap();
            assert!(e.contains(want), "{e}");
            assert_eq!(e.lines().count(), 1);
        }
        let big = vec![b' '; (MAX_REQUEST + 10) as usize];
        assert!(serve(std::io::Cursor::new(big)).0.unwrap().error.unwrap().contains("too large"));
    }

    #[test]
    fn ssh_refuses_hosts_that_look_like_options() {
        let job = Job::SnapDelete { ceph: Default::default(), head: "a/b".into(), snap: "1".into() };
        let o = run(&job, &Target::Ssh("-oProxyCommand=touch /tmp/x".into()), &Config::default());
        assert!(o.error.unwrap().contains("invalid host"));
    }

    #[test]
    fn requests_carry_what_is_left_of_the_deadline() {
        let line = request_line_within(
            Job::ProbeDir { path: VmPath { path: "/a/b/0/1".into(), ds: 0, vm: 1 }, mark: None, find: None },
            Duration::from_secs(60),
        )
        .unwrap();
        let r: Request = serde_json::from_slice(&line).unwrap();
        assert_eq!(r.deadline_ms, Some(58_000), "a host stops 2 s before the front-end");
    }
}
