//! `rbd://<host>/<pool>[/<namespace>]/<image>[@<snap>][?CEPH_USER=…&CEPH_KEY=…&CEPH_CONF=…]`
//! image sources (what a Ceph datastore's `export` hands a marketplace): read
//! natively, without the `rbd` CLI — `rbdx remote` on `<host>` (with the
//! credential *paths* the URL names, which are that host's) streams the image,
//! size first, into the import on the destination's bridge.

use std::io::Read;
use std::process::{Child, ChildStdout};

use crate::access::CephAccess;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::exec::{Target, remote, request_line_within};
use crate::job::Job;

/// A parsed `rbd://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSource {
    /// The host that reads the image.
    pub host: String,
    /// `pool[/namespace]/image[@snap]`.
    pub image: String,
    /// Its credentials (paths on `host`).
    pub ceph: CephAccess,
}

/// Whether `url` is an `rbd://` source.
pub fn is_rbd_url(url: &str) -> bool {
    url.starts_with("rbd://")
}

/// Parses and checks an `rbd://` URL (no user part, a valid host and image
/// spec, only the three known parameters, each checked as its datastore
/// attribute is), if `cfg` allows such sources (RBD_SOURCES).
///
/// # Errors
/// One line naming what is wrong.
pub fn source(url: &str, cfg: &Config, timeout_secs: u64) -> Result<RbdSource> {
    if !cfg.rbd_sources {
        return Err(Error::Invalid(format!(
            "refusing the rbd:// source {url:?}: RBD_SOURCES is off (an image's PATH would name any image and \
             credentials on a host; set RBD_SOURCES = yes in rbdx.conf or RBDX_RBD_SOURCES on the datastore \
             where every user may read them)"
        )));
    }
    parse(url, timeout_secs)
}

/// [`source`] without the setting's check.
///
/// # Errors
/// One line naming what is wrong.
pub fn parse(url: &str, timeout_secs: u64) -> Result<RbdSource> {
    let bad = |why: &str| Error::Invalid(format!("refusing the rbd:// source {url:?}: {why}"));
    if url.len() > 4096 || !url.bytes().all(|b| b.is_ascii_graphic() && !b"'\"\\`$;|<>(){}*".contains(&b)) {
        return Err(bad("characters a URL cannot hold"));
    }
    let rest = url.strip_prefix("rbd://").ok_or_else(|| bad("not rbd://"))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, image) = location.split_once('/').ok_or_else(|| bad("no image"))?;
    if host.contains('@') {
        return Err(bad("a user in the URL (the driver's ssh settings say who connects)"));
    }
    crate::args::validate_host(host).map_err(|e| bad(&e.to_string()))?;
    let spec: rbdx_core::ops::ImageSpec = image.parse().map_err(|e: rbdx_core::Error| bad(&e.to_string()))?;
    let mut ceph = CephAccess { timeout_secs, ..CephAccess::default() };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| bad("a parameter without a value"))?;
        let slot = match k {
            "CEPH_USER" => &mut ceph.user,
            "CEPH_KEY" => &mut ceph.key_file,
            "CEPH_CONF" => &mut ceph.conf,
            // What upstream's export adds besides: not needed to read the image.
            "DS" => continue,
            _ => return Err(bad(&format!("unknown parameter {k}"))),
        };
        if slot.is_some() {
            return Err(bad(&format!("{k} twice")));
        }
        *slot = Some(if k == "CEPH_USER" {
            crate::datastore::ceph_user(k, v)?
        } else {
            crate::datastore::path(k, v)?
        });
    }
    Ok(RbdSource { host: host.to_string(), image: spec.to_string(), ceph })
}

/// The image's bytes as they stream from its host, and their number.
#[derive(Debug)]
pub struct Stream {
    child: Child,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The image's size in bytes (what [`Stream::data`] yields).
    pub size: u64,
    host: String,
}

impl Stream {
    /// Starts reading `src` (on its host, or here when `local`).
    ///
    /// # Errors
    /// The host unreachable, or the image unreadable there (its one line).
    pub fn open(src: &RbdSource, cfg: &Config, local: bool, size_only: bool) -> Result<Self> {
        let target = if local { Target::Local } else { Target::Ssh(src.host.clone()) };
        let mut child = remote(cfg, &target)?;
        let mut stdin = child.stdin.take().ok_or_else(|| Error::Host("no stdin".into()))?;
        let job = Job::SendImage { ceph: src.ceph.clone(), image: src.image.clone(), size_only };
        std::io::Write::write_all(&mut stdin, &request_line_within(job, cfg.action_timeout)?)
            .context(target.name().to_string())?;
        drop(stdin);
        let mut head = [0u8; 8];
        let out = child.stdout.as_mut().ok_or_else(|| Error::Host("no stdout".into()))?;
        if out.read_exact(&mut head).is_err() {
            let status = crate::exec::wait(&mut child, cfg, target.name())?;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
            return Err(Error::Host(format!(
                "{}: reading {} failed ({status}): {last}",
                target.name(),
                src.image
            )));
        }
        Ok(Self {
            child,
            size: u64::from_le_bytes(head),
            host: target.name().to_string(),
            read: Default::default(),
        })
    }

    /// The image's bytes (exactly [`Stream::size`] of them when all goes well).
    ///
    /// # Errors
    /// When the data was already taken.
    pub fn data(&mut self) -> Result<Counted> {
        let out = self.child.stdout.take().ok_or_else(|| Error::Host("no stdout".into()))?;
        Ok(Counted { inner: out.take(self.size), read: self.read.clone() })
    }

    /// Waits for the sending side and reports how it ended. When the reader
    /// stopped early (the import had nothing to do: an earlier run made the
    /// image), the sender is stopped instead: the import's result stands.
    ///
    /// # Errors
    /// Its failure, or its deadline.
    pub fn finish(mut self, cfg: &Config) -> Result<()> {
        if self.read.load(std::sync::atomic::Ordering::Relaxed) < self.size {
            rbdx_import::child::kill(&mut self.child);
            return Ok(());
        }
        let status = crate::exec::wait(&mut self.child, cfg, &self.host)?;
        if status.success() {
            return Ok(());
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
        Err(Error::Host(format!("{}: sending the image failed: {last}", self.host)))
    }
}

/// The image's bytes, counted as they are read.
#[derive(Debug)]
pub struct Counted {
    inner: std::io::Take<ChildStdout>,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            rbdx_import::child::kill(&mut self.child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_as_export_writes_them() {
        let s = parse(
            "rbd://bridge1/one/one-7?CEPH_USER=libvirt&CEPH_KEY=/etc/ceph/k&CEPH_CONF=/etc/ceph/c.conf",
            9,
        )
        .unwrap();
        assert_eq!(s.host, "bridge1");
        assert_eq!(s.image, "one/one-7");
        assert_eq!(s.ceph.user.as_deref(), Some("libvirt"));
        assert_eq!(s.ceph.key_file.as_deref(), Some("/etc/ceph/k"));
        assert_eq!(s.ceph.conf.as_deref(), Some("/etc/ceph/c.conf"));
        assert_eq!(s.ceph.timeout_secs, 9);
        assert_eq!(parse("rbd://h/one/ns/img@snap", 1).unwrap().image, "one/ns/img@snap");
    }

    #[test]
    fn hostile_urls_are_refused() {
        for bad in [
            "rbd://root@h/one/x",
            "rbd://-oProxyCommand=id/one/x",
            "rbd://h",
            "rbd://h/",
            "rbd://h/one/x?CEPH_KEY=relative",
            "rbd://h/one/x?CEPH_KEY=/a/../../etc/shadow",
            "rbd://h/one/x?CEPH_USER=a;b",
            "rbd://h/one/x?EVIL=1",
            "rbd://h/one/x?CEPH_USER=a&CEPH_USER=b",
            "rbd://h/one/x y",
            "rbd://h/one/$(id)",
        ] {
            assert!(parse(bad, 1).is_err(), "{bad}");
        }
    }
}
