//! Running a [`Job`]: in this process, or on a host through one ssh round trip
//! that runs `<REMOTE_DIR>/rbdx/rbdx remote` there, with the job as JSON on stdin
//! and the [`Outcome`] as JSON on stdout. The remote command line is fixed (the
//! binary path from the config, validated); no data ever becomes shell text.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::args::validate_host;
use crate::config::Config;
use crate::job::{Job, Outcome, PROTOCOL};

/// Where a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Here.
    Local,
    /// On this host, over ssh.
    Ssh(String),
}

/// What goes to the remote side.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version ([`PROTOCOL`]).
    pub protocol: u32,
    /// The job.
    pub job: Job,
}

/// A job as the one request line the remote side reads.
///
/// # Errors
/// Never in practice (jobs always serialise).
pub fn request_line(job: Job) -> Result<Vec<u8>, String> {
    let mut v = serde_json::to_vec(&Request { protocol: PROTOCOL, job }).map_err(|e| e.to_string())?;
    v.push(b'\n');
    Ok(v)
}

/// Largest request the remote side reads.
pub const MAX_REQUEST: u64 = 1 << 20;

/// Runs `job` on `target`.
pub fn run(job: &Job, target: &Target, cfg: &Config) -> Outcome {
    match target {
        Target::Local => job.run(),
        Target::Ssh(host) => match run_ssh(job, host, cfg) {
            Ok(o) => o,
            Err(e) => Outcome { error: Some(e), ..Outcome::default() },
        },
    }
}

fn run_ssh(job: &Job, host: &str, cfg: &Config) -> Result<Outcome, String> {
    let request = request_line(job.clone())?;
    let mut child = ssh(cfg, host)?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let out_reader = drain(stdout, 16 << 20);
    let err_reader = drain(stderr, 1 << 20);
    let status = wait(&mut child, cfg, host)?;
    let _ = writer.join();
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    match serde_json::from_slice::<Outcome>(&out) {
        Ok(o) => Ok(o),
        Err(_) => {
            let err = String::from_utf8_lossy(&err);
            let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
            Err(format!("{host}: running rbdx over ssh failed ({status}): {last}"))
        }
    }
}

/// Runs an import `job` on `target` with its data read from `input` (streamed
/// over ssh after the request line when remote), calling `progress` with the
/// bytes sent so far.
pub fn run_with_input(
    job: &Job,
    target: &Target,
    cfg: &Config,
    mut input: Box<dyn Read>,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Outcome {
    let host = match target {
        Target::Local => return job.import(input, progress),
        Target::Ssh(h) => h.clone(),
    };
    let run = || -> Result<Outcome, String> {
        let request = request_line(job.clone())?;
        let mut child = ssh(cfg, &host)?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = drain(stdout, 16 << 20);
        stdin.write_all(&request).map_err(|e| format!("{host}: {e}"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        let start = Instant::now();
        loop {
            let n = input.read(&mut buf).map_err(|e| format!("reading the source: {e}"))?;
            if n == 0 {
                break;
            }
            if let Err(e) = stdin.write_all(&buf[..n]) {
                // The remote side stopped reading: its outcome says why.
                let _ = e;
                break;
            }
            sent += n as u64;
            progress(sent, None);
            if start.elapsed() > cfg.action_timeout {
                let _ = child.kill();
                return Err(format!(
                    "{host}: the import did not finish within {}s (ACTION_TIMEOUT)",
                    cfg.action_timeout.as_secs()
                ));
            }
        }
        drop(stdin);
        let status = wait(&mut child, cfg, &host)?;
        let out = reader.join().unwrap_or_default();
        serde_json::from_slice::<Outcome>(&out).map_err(|_| {
            format!("{host}: running rbdx over ssh failed ({status}): {}", stderr_line(&mut child))
        })
    };
    let mut run = run;
    run().unwrap_or_else(|e| Outcome { error: Some(e), ..Outcome::default() })
}

/// The remote side: reads one [`Request`] line from `input` and runs it. Returns
/// what to print on stdout (the [`Outcome`] as JSON) and the exit code; a
/// `SendDir` job writes its tar stream to stdout itself and prints nothing else.
pub fn serve(mut input: impl Read + 'static) -> (Option<Outcome>, i32) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return (Some(failed(format!("reading the job: {e}"))), 0),
        }
        if line.len() as u64 > MAX_REQUEST {
            return (Some(failed("the job is too large".into())), 0);
        }
    }
    let req: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return (Some(failed(format!("malformed job: {e}"))), 0),
    };
    if req.protocol != PROTOCOL {
        return (
            Some(failed(format!(
                "job protocol {} but this host's rbdx speaks {PROTOCOL}: run `onehost sync` so both run the same version",
                req.protocol
            ))),
            0,
        );
    }
    match &req.job {
        Job::SendDir { path } => match crate::hostfs::send_dir(path, Stdio::inherit()) {
            Ok(()) => (None, 0),
            Err(e) => {
                eprintln!("{e}");
                (None, 1)
            }
        },
        Job::Import { .. } => (Some(req.job.import(Box::new(input), &mut |_, _| {})), 0),
        Job::ReceiveDir { path } => {
            let r = crate::hostfs::receive_dir(path, input);
            (Some(Outcome { error: r.err(), ..Outcome::default() }), 0)
        }
        job => (Some(job.run()), 0),
    }
}

/// Moves VM directory `from` on host `src` to `to` on `dst` (replacing what was
/// there): tar streams from one host's rbdx to the other's through the front-end.
///
/// # Errors
/// One line naming the host that failed.
pub fn move_dir(src: &str, from: &str, dst: &str, to: &str, cfg: &Config) -> Result<(), String> {
    crate::hostfs::check_path(from)?;
    crate::hostfs::check_path(to)?;
    let path = to;
    let mut receiver = ssh(cfg, dst)?;
    let mut sender = ssh(cfg, src)?;
    let mut rin = receiver.stdin.take().ok_or("no stdin")?;
    rin.write_all(&request_line(Job::ReceiveDir { path: to.into() })?).map_err(|e| format!("{dst}: {e}"))?;
    let mut sin = sender.stdin.take().ok_or("no stdin")?;
    sin.write_all(&request_line(Job::SendDir { path: from.into() })?).map_err(|e| format!("{src}: {e}"))?;
    drop(sin);
    let mut sout = sender.stdout.take().ok_or("no stdout")?;
    let pump = std::thread::spawn(move || std::io::copy(&mut sout, &mut rin));
    let rout = receiver.stdout.take().ok_or("no stdout")?;
    let reader = drain(rout, 1 << 20);
    let sent = wait(&mut sender, cfg, src)?;
    let _ = pump.join();
    let received = wait(&mut receiver, cfg, dst)?;
    let out = reader.join().unwrap_or_default();
    if !sent.success() {
        let err = stderr_line(&mut sender);
        return Err(format!("{src}: sending {from} failed: {err}"));
    }
    if !received.success() {
        return Err(format!("{dst}: receiving {path} failed: {}", stderr_line(&mut receiver)));
    }
    match serde_json::from_slice::<Outcome>(&out) {
        Ok(Outcome { error: Some(e), .. }) => Err(format!("{dst}: {e}")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{dst}: receiving {path} failed: {}", stderr_line(&mut receiver))),
    }
}

/// Starts `rbdx remote` on `host` over ssh, stdin/stdout/stderr piped. The
/// command line is the configured ssh and a fixed binary path: nothing from data.
///
/// # Errors
/// When ssh cannot be started.
pub fn ssh(cfg: &Config, host: &str) -> Result<std::process::Child, String> {
    validate_host(host).map_err(|e| e.to_string())?;
    let connect = cfg.action_timeout.min(Duration::from_secs(30)).as_secs().max(1);
    Command::new(&cfg.ssh[0])
        .args(&cfg.ssh[1..])
        .args(["-o", "BatchMode=yes", "-o", &format!("ConnectTimeout={connect}"), "--", host])
        .arg(format!("{} remote", cfg.remote_binary()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cfg.ssh[0]))
}

fn wait(
    child: &mut std::process::Child,
    cfg: &Config,
    host: &str,
) -> Result<std::process::ExitStatus, String> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st);
        }
        if start.elapsed() > cfg.action_timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{host}: the action did not finish within {}s (ACTION_TIMEOUT)",
                cfg.action_timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

use rbdx_import::child::drain;
pub use rbdx_import::child::wait_output;

fn stderr_line(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = (&mut e).take(1 << 16).read_to_string(&mut err);
    }
    err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output").to_string()
}

fn failed(msg: String) -> Outcome {
    Outcome { error: Some(msg), ..Outcome::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_side_refuses_bad_requests_in_one_line() {
        for (input, want) in [
            (&b"not json"[..], "malformed job"),
            (b"{\"protocol\":1,\"job\":{\"job\":\"rm_rf\"}}", "malformed job"),
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
}
