//! Driver arguments as oned writes them: `host:path`, ids, sizes. Everything is
//! validated here, before any connection is made.

use crate::error::{Error, Result};

/// A bad argument: the message oned shows the user.
fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Checks a host name from the arguments or a BRIDGE_LIST: letters, digits and
/// `.-_:` (IPv6), not starting with `-` (so it can never be read as an ssh option).
///
/// # Errors
/// [`Error::Invalid`] naming the host.
pub fn validate_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if ok { Ok(()) } else { Err(bad(format!("invalid host name {host:?}"))) }
}

/// `host:path` as oned passes it, with the path normalised as the stock drivers
/// do (`//` collapsed, no trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    /// The host.
    pub host: String,
    /// The path (or, for image sources, `pool/image`).
    pub path: String,
}

impl HostPath {
    /// Parses `host:path`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when there is no `host:` part, the host is invalid, or the
    /// path is empty, contains control characters or a `..` component.
    pub fn parse(s: &str) -> Result<Self> {
        let (host, path) = s.split_once(':').ok_or_else(|| bad(format!("expected host:path, got {s:?}")))?;
        validate_host(host).map_err(|e| bad(format!("{e} in {s:?}")))?;
        if path.is_empty() || path.chars().any(char::is_control) {
            return Err(bad(format!("invalid path in {s:?}")));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(bad(format!("invalid path in {s:?}: `..` component")));
        }
        if path.len() > crate::datastore::PATH_MAX {
            return Err(bad(format!("invalid path in {:?}…: longer than PATH_MAX", &s[..64.min(s.len())])));
        }
        Ok(Self { host: host.to_string(), path: normalize_path(path) })
    }

    /// The disk id of a `…/disk.N` path.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the path does not end in `disk.<number>`.
    pub fn disk_id(&self) -> Result<u32> {
        let last = self.path.rsplit('/').next().unwrap_or("");
        last.strip_prefix("disk.")
            .and_then(|n| parse_num(n).ok())
            .ok_or_else(|| bad(format!("{} is not a disk path (…/disk.N)", self.path)))
    }

    /// True if the path names a disk (`…/disk.N`) rather than the VM directory.
    pub fn is_disk(&self) -> bool {
        self.disk_id().is_ok()
    }

    /// The system datastore id in `…/<sys_ds>/<vmid>/disk.N` (or `…/<sys_ds>/<vmid>`).
    ///
    /// # Errors
    /// [`Error::Invalid`] if that component is not a number.
    pub fn system_ds_id(&self) -> Result<u32> {
        let parts: Vec<&str> = self.path.split('/').filter(|p| !p.is_empty()).collect();
        let back = if self.is_disk() { 3 } else { 2 };
        parts
            .len()
            .checked_sub(back)
            .and_then(|i| parse_num(parts[i]).ok())
            .ok_or_else(|| bad(format!("cannot find the system datastore id in {}", self.path)))
    }
}

/// A path as the stock drivers normalise it: `//` collapsed, no trailing `/`.
pub fn normalize_path(path: &str) -> String {
    let mut norm = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && norm.ends_with('/')) {
            norm.push(c);
        }
    }
    while norm.len() > 1 && norm.ends_with('/') {
        norm.pop();
    }
    norm
}

fn parse_num(s: &str) -> Result<u32, ()> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    s.parse::<u32>().ok().filter(|n| i32::try_from(*n).is_ok()).ok_or(())
}

/// Parses an object id (VM, datastore, image, snapshot): 0 to 2^31-1, as oned's ids.
///
/// # Errors
/// [`Error::Invalid`] naming what was expected.
pub fn parse_id(what: &str, s: &str) -> Result<u32> {
    parse_num(s).map_err(|()| bad(format!("invalid {what} {s:?}: expected a non-negative integer")))
}

/// Parses a size in MiB (oned's unit), at most 2^40 MiB.
///
/// # Errors
/// [`Error::Invalid`] for anything else.
pub fn parse_size_mb(s: &str) -> Result<u64> {
    let n: u64 = s
        .parse()
        .ok()
        .filter(|_| !s.starts_with('+'))
        .ok_or_else(|| bad(format!("invalid size {s:?}: expected MiB as a non-negative integer")))?;
    if n > 1 << 40 {
        return Err(bad(format!("invalid size {s:?}: too large")));
    }
    Ok(n)
}

/// Checks the argument count of an action.
///
/// # Errors
/// [`Error::Invalid`] with the expected usage.
pub fn expect_args<'a>(args: &'a [String], usage: &str, min: usize, max: usize) -> Result<&'a [String]> {
    if args.len() < min || args.len() > max {
        return Err(bad(format!("wrong number of arguments ({}); usage: {usage}", args.len())));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_as_oned_writes_it() {
        let hp = HostPath::parse("node1:/var/lib/one//datastores/146/1190/disk.0").unwrap();
        assert_eq!(hp.host, "node1");
        assert_eq!(hp.path, "/var/lib/one/datastores/146/1190/disk.0");
        assert_eq!(hp.disk_id().unwrap(), 0);
        assert_eq!(hp.system_ds_id().unwrap(), 146);
        let dir = HostPath::parse("node1:/var/lib/one/datastores/0/12/").unwrap();
        assert_eq!(dir.path, "/var/lib/one/datastores/0/12");
        assert!(!dir.is_disk());
        assert_eq!(dir.system_ds_id().unwrap(), 0);
        let src = HostPath::parse("frontend:one/one-5").unwrap();
        assert_eq!((src.host.as_str(), src.path.as_str()), ("frontend", "one/one-5"));
    }

    #[test]
    fn malformed_host_paths_are_refused() {
        for s in ["nohost", ":/path", "-oProxyCommand=x:/p", "h st:/p", "host:", "ho$t:/p", "h:/a\nb"] {
            assert!(HostPath::parse(s).is_err(), "{s:?}");
        }
        assert!(HostPath::parse("h:/var/lib/one/datastores/0/12/../../../etc/disk.0").is_err(), "`..`");
        let hp = HostPath::parse("h:/var/lib/one/datastores/0/12/disk.x").unwrap();
        assert!(hp.disk_id().is_err());
    }

    #[test]
    fn ids_and_sizes() {
        assert_eq!(parse_id("VM id", "12").unwrap(), 12);
        for s in ["", "-1", "1.5", "12a", "99999999999", "2147483648", " 1"] {
            assert!(parse_id("VM id", s).is_err(), "{s:?}");
        }
        assert_eq!(parse_size_mb("1024").unwrap(), 1024);
        for s in ["-1", "+1", "1G", "", "99999999999999999999"] {
            assert!(parse_size_mb(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn argument_counts() {
        let a: Vec<String> = vec!["a".into(), "b".into()];
        assert!(expect_args(&a, "x y", 2, 2).is_ok());
        let e = expect_args(&a, "x y z", 3, 3).unwrap_err();
        assert!(matches!(&e, Error::Invalid(m) if m == "wrong number of arguments (2); usage: x y z"), "{e}");
    }
}
