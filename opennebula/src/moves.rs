//! Moving a VM directory between hosts without losing it: a marker probe tells
//! two names for one directory apart (nothing is moved, nothing removed); else
//! the tree streams from the source's `rbdx remote` into the destination's,
//! which receives it beside the directory and swaps it in only once whole, and
//! the source is removed only after the destination confirmed.

use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::exec::{Target, remote, request_line_within, run, wait};
use crate::hostfs::VmPath;
use crate::job::{Job, Outcome};
use rbdx_import::child::drain;
use std::io::{Read, Write};

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
        .context(dst.name())?;
    let mut sin = sender.stdin.take().ok_or_else(|| Error::Host("no stdin".into()))?;
    sin.write_all(&request_line_within(Job::SendDir { path: from.clone() }, cfg.action_timeout)?)
        .context(src.name())?;
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
