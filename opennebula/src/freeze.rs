//! Quiescing a running guest around a live snapshot or a save-as, as the stock
//! drivers do, but with a time limit, the undo on every path, and failures
//! reported: a VM's file systems frozen (`virsh domfsfreeze`), or, where the
//! action needs a consistent copy and the guest agent does not answer, the VM
//! suspended (`virsh suspend`); an LXC container frozen (`lxc-freeze`). The
//! commands, the libvirt URI and the time limit are this host's own settings
//! (VIRSH, LIBVIRT_URI, LXC_FREEZE, LXC_UNFREEZE, FREEZE_TIMEOUT of its
//! rbdx.conf): a job only names the domain and what it needs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::job::Freeze;

/// How a quiesced guest is brought back; [`Thaw::thaw`] must be called (it is,
/// on every path, by the job).
#[derive(Debug)]
pub struct Thaw<'a> {
    freeze: &'a Freeze,
    undo: Undo,
}

#[derive(Debug, Clone, Copy)]
enum Undo {
    FsThaw,
    Resume,
    LxcUnfreeze,
}

/// A libvirt domain name as OpenNebula makes them (`one-<vmid>`), nothing else.
fn check_domain(d: &str) -> Result<()> {
    let ok = !d.is_empty()
        && d.len() <= 64
        && !d.starts_with('-')
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(Error::Invalid(format!("invalid domain name {d:?}"))) }
}

/// Runs `program args…` with this host's freeze time limit; its stderr as the
/// failure.
fn run(program: &[String], args: &[&str]) -> Result<()> {
    let host = Config::load()?;
    let (cmd, rest) = program.split_first().ok_or_else(|| Error::Invalid("an empty command".into()))?;
    let mut child = rbdx_import::child::spawn(
        Command::new(cmd)
            .args(rest)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .context(format!("cannot run {cmd}"))?;
    let limit = host.freeze_timeout.max(Duration::from_secs(1));
    let _step = rbdx_core::trace::step("guest freeze or thaw");
    let start = Instant::now();
    loop {
        match child.try_wait().context(format!("waiting for {cmd}"))? {
            Some(st) if st.success() => return Ok(()),
            Some(_) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(Error::Failed(crate::log::one_line(&err)));
            }
            None if start.elapsed() > limit => {
                rbdx_import::child::kill(&mut child);
                return Err(Error::TimedOut(format!("timed out after {}s", limit.as_secs())));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn virsh(f: &Freeze, verb: &str) -> Result<()> {
    check_domain(&f.domain)?;
    let host = Config::load()?;
    run(std::slice::from_ref(&host.virsh), &["-c", &host.libvirt_uri, verb, &f.domain])
}

fn lxc(f: &Freeze, freeze: bool) -> Result<()> {
    check_domain(&f.domain)?;
    let host = Config::load()?;
    run(if freeze { &host.lxc_freeze } else { &host.lxc_unfreeze }, &["-n", &f.domain])
}

/// Quiesces the guest; returns how to bring it back, or `None` (logged) when it
/// could not be quiesced and the copy will only be crash-consistent.
///
/// # Errors
/// Only with `or_suspend`, when the VM could be neither frozen nor suspended
/// (nothing may be copied then).
pub fn freeze<'a>(f: &'a Freeze, log: &mut Vec<String>) -> Result<Option<Thaw<'a>>> {
    if f.lxc {
        return Ok(match lxc(f, true) {
            Ok(()) => {
                log.push(format!("froze the container {}", f.domain));
                Some(Thaw { freeze: f, undo: Undo::LxcUnfreeze })
            }
            Err(e) => {
                log.push(format!(
                    "could not freeze container {} ({e}); the snapshot is crash-consistent",
                    f.domain
                ));
                None
            }
        });
    }
    match virsh(f, "domfsfreeze") {
        Ok(()) => {
            log.push(format!("froze the file systems of {}", f.domain));
            Ok(Some(Thaw { freeze: f, undo: Undo::FsThaw }))
        }
        Err(e) => {
            // A freeze that timed out may still have happened: thaw to be safe.
            let _ = virsh(f, "domfsthaw");
            if !f.or_suspend {
                log.push(format!("could not freeze {} ({e}); the snapshot is crash-consistent", f.domain));
                return Ok(None);
            }
            match virsh(f, "suspend") {
                Ok(()) => {
                    log.push(format!("could not freeze {} ({e}); suspended it instead", f.domain));
                    Ok(Some(Thaw { freeze: f, undo: Undo::Resume }))
                }
                Err(s) => {
                    Err(Error::Failed(format!("could not domfsfreeze or suspend {} ({e}; {s})", f.domain)))
                }
            }
        }
    }
}

impl Thaw<'_> {
    /// Brings the guest back, logging a failure.
    pub fn thaw(self, log: &mut Vec<String>) {
        let (what, r) = match self.undo {
            Undo::FsThaw => ("thaw", virsh(self.freeze, "domfsthaw")),
            Undo::Resume => ("resume", virsh(self.freeze, "resume")),
            Undo::LxcUnfreeze => ("unfreeze", lxc(self.freeze, false)),
        };
        match r {
            Ok(()) => log.push(format!("{what}: {} is running again", self.freeze.domain)),
            Err(e) => log.push(format!("could not {what} {}: {e}", self.freeze.domain)),
        }
    }
}
