//! Freezing a running guest's file systems around a live snapshot, as the stock
//! `snap_create_live` does, but with a timeout, a thaw on every path, and the
//! failures reported. The virsh command, libvirt URI and timeout are this host's
//! own settings (VIRSH, LIBVIRT_URI, FREEZE_TIMEOUT of its rbdx.conf): a job only
//! names the domain.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::job::Freeze;

use crate::error::{Context, Error, Result};

/// A frozen guest; [`Thaw::thaw`] must be called (it is, on every path, by the job).
#[derive(Debug)]
pub struct Thaw<'a>(&'a Freeze);

/// A libvirt domain name as OpenNebula makes them (`one-<vmid>`), nothing else.
fn check_domain(d: &str) -> Result<()> {
    let ok = !d.is_empty()
        && d.len() <= 64
        && !d.starts_with('-')
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(Error::Failed(format!("invalid domain name {d:?}"))) }
}

fn virsh(f: &Freeze, verb: &str) -> Result<()> {
    check_domain(&f.domain)?;
    let host = Config::load()?;
    let mut child = rbdx_import::child::spawn(
        Command::new(&host.virsh)
            .args(["-c", &host.libvirt_uri, verb, &f.domain])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .context(format!("cannot run {}", host.virsh))?;
    let limit = host.freeze_timeout.max(Duration::from_secs(1));
    let start = Instant::now();
    loop {
        match child.try_wait().context("waiting for virsh")? {
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
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Failed(format!("timed out after {}s", limit.as_secs())));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Freezes the guest; returns the thaw to run afterwards, or `None` (with the
/// failure logged) when the freeze failed and the snapshot will only be
/// crash-consistent.
pub fn freeze<'a>(f: &'a Freeze, log: &mut Vec<String>) -> Option<Thaw<'a>> {
    match virsh(f, "domfsfreeze") {
        Ok(()) => {
            log.push(format!("froze the file systems of {}", f.domain));
            Some(Thaw(f))
        }
        Err(e) => {
            log.push(format!("could not freeze {} ({e}); the snapshot is crash-consistent", f.domain));
            // A freeze that timed out may still have happened: thaw to be safe.
            let _ = virsh(f, "domfsthaw");
            None
        }
    }
}

impl Thaw<'_> {
    /// Thaws the guest, logging a failure.
    pub fn thaw(self, log: &mut Vec<String>) {
        match virsh(self.0, "domfsthaw") {
            Ok(()) => log.push(format!("thawed {}", self.0.domain)),
            Err(e) => log.push(format!("could not thaw {}: {e}", self.0.domain)),
        }
    }
}
