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
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Local => "this host",
            Self::Ssh(h) => h,
        }
    }
}

/// True if `host` names the machine this runs on.
pub fn is_this_host(host: &str) -> bool {
    let me = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    host == "localhost"
        || host == me
        || host.split('.').next() == Some(me.as_str())
        || me.split('.').next() == Some(host)
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
    /// Return the job's spans ([`rbdx_core::trace`]) with its outcome.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace: bool,
}

/// A job as the one request line the remote side reads, with `limit` (bounded by
/// the action's deadline, less a margin) as its deadline.
///
/// # Errors
/// Never in practice (jobs always serialise).
pub fn request_line_within(job: Job, limit: Duration) -> Result<Vec<u8>> {
    let ms = u64::try_from(deadline::for_host(limit).as_millis()).unwrap_or(u64::MAX);
    let req = Request { protocol: PROTOCOL, job, deadline_ms: Some(ms), trace: rbdx_core::trace::enabled() };
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
    let mut outcome = serde_json::from_slice::<Outcome>(out).map_err(|_| {
        let err = String::from_utf8_lossy(err);
        let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
        Error::Host(format!("{host}: running rbdx over ssh failed ({status}): {last}"))
    })?;
    rbdx_core::trace::extend("host: ", std::mem::take(&mut outcome.trace));
    Ok(outcome)
}

fn run_ssh(job: &Job, host: &str, cfg: &Config) -> Result<Outcome> {
    let _span = rbdx_core::trace::span("ssh");
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

/// The data a job reads: an open local file (which a job run here reads in
/// place: an image's data is then copied straight from it) or a stream.
pub enum Input {
    /// A local regular file, open.
    File(std::fs::File),
    /// Any other source.
    Stream(Box<dyn Read>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::File(f) => f.read(buf),
            Self::Stream(r) => r.read(buf),
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::File(_) => "Input::File",
            Self::Stream(_) => "Input::Stream",
        })
    }
}

/// Runs a job that reads data (`Import`, `PutFile`) on `target`, the data read
/// from `input` (streamed over ssh after the request line when remote), calling
/// `progress` with the bytes sent so far.
pub fn run_with_input(
    job: &Job,
    target: &Target,
    cfg: &Config,
    mut input: Input,
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
        stdin.write_all(&request).context(host.as_str())?;
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
    if req.trace {
        rbdx_core::trace::enable();
    }
    let started = std::time::Instant::now();
    if let Some(ms) = req.deadline_ms {
        deadline::arm(Duration::from_millis(ms), deadline::Output::Stdout, |msg| {
            let outcome =
                serde_json::to_string(&failed(Error::TimedOut(msg.to_string()))).unwrap_or_default();
            format!("{outcome}\n")
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
        Job::SendImage { ceph, image, size_only } => {
            match crate::jobs::send_image::run(ceph, image, *size_only, std::io::stdout().lock()) {
                Ok(()) => (None, 0),
                Err(e) => {
                    eprintln!("{e}");
                    (None, 1)
                }
            }
        }
        Job::Import { .. } => (Some(req.job.import(Input::Stream(Box::new(input)), &mut |_, _| {})), 0),
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
    let (mut outcome, code) = result;
    if let Some(o) = outcome.as_mut().filter(|_| req.trace) {
        rbdx_core::trace::record("job".into(), started.elapsed());
        o.trace = rbdx_core::trace::take();
    }
    (outcome, code)
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
    validate_host(host)?;
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

pub(crate) fn wait(child: &mut Child, cfg: &Config, host: &str) -> Result<std::process::ExitStatus> {
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
    use crate::hostfs::VmPath;

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
