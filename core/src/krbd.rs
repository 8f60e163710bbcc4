//! Kernel RBD mappings (krbd), made the way `rbd map` makes them but in-process:
//! the add request goes to the rbd driver's control file in sysfs, and devices
//! are found by their attributes under `/sys/bus/rbd/devices/<id>/`
//! (`pool`, `pool_ns`, `name`, `current_snap`, `cluster_fsid`). The kernel
//! interface is documented in Linux's `Documentation/ABI/testing/sysfs-bus-rbd`.
//!
//! The key reaches the kernel the way `rbd map` hands it over: through the
//! kernel keyring (`add_key("ceph", "client.<id>", …)`, then `key=client.<id>`),
//! or, where the kernel has no `ceph` key type yet, as `secret=` inside the add
//! request. Either way it is written to the kernel only, never to an argv, the
//! environment or a log.

use std::fs;
use std::io::{ErrorKind as IoKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{CephError, Error, Result};
use crate::ops::ImageSpec;
use crate::rados::Cluster;

/// The rbd bus in sysfs (or a stand-in for it, for tests).
#[derive(Debug, Clone)]
pub struct Krbd {
    bus: PathBuf,
}

/// A mapped device: `/dev/rbd<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The kernel's device id.
    pub id: u32,
}

impl Device {
    /// The device node's name under `/dev`.
    pub fn node_name(&self) -> String {
        format!("rbd{}", self.id)
    }
}

/// How often the device list is looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

impl Krbd {
    /// The running kernel's rbd bus, `/sys/bus/rbd`.
    pub fn system() -> Self {
        Self::at("/sys/bus/rbd")
    }

    /// The rbd bus at `bus` (e.g. the host's sysfs mounted elsewhere).
    pub fn at(bus: impl Into<PathBuf>) -> Self {
        Self { bus: bus.into() }
    }

    /// True if the rbd driver is there (its bus exists).
    pub fn loaded(&self) -> bool {
        self.bus.exists()
    }

    /// The devices mapping `spec` (its snapshot, or the head) of cluster `fsid`,
    /// lowest id first.
    ///
    /// # Errors
    /// [`Error::Config`] if the rbd driver is not loaded.
    pub fn mapped(&self, fsid: &str, spec: &ImageSpec) -> Result<Vec<Device>> {
        let snap = spec.snap.as_deref().unwrap_or("-");
        Ok(self.scan(fsid, spec)?.into_iter().filter(|(_, s)| s == snap).map(|(d, _)| d).collect())
    }

    /// Every device of `spec`'s image: the head and any snapshot.
    ///
    /// # Errors
    /// [`Error::Config`] if the rbd driver is not loaded.
    pub fn mapped_any_snapshot(&self, fsid: &str, spec: &ImageSpec) -> Result<Vec<Device>> {
        Ok(self.scan(fsid, spec)?.into_iter().map(|(d, _)| d).collect())
    }

    /// The devices of `spec`'s image with their `current_snap`.
    fn scan(&self, fsid: &str, spec: &ImageSpec) -> Result<Vec<(Device, String)>> {
        let dir = self.bus.join("devices");
        let entries = match fs::read_dir(&dir) {
            Err(e) if e.kind() == IoKind::NotFound => return Err(not_loaded(&self.bus)),
            other => other.map_err(|e| io_error("reading the rbd devices", &dir, &e))?,
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else { continue };
            let attr = |name: &str| attribute(&entry.path(), name);
            // A device being removed loses its attributes: not a match.
            let matches = attr("cluster_fsid").as_deref() == Some(fsid)
                && attr("pool").as_deref() == Some(spec.pool.as_str())
                && attr("pool_ns").unwrap_or_default() == spec.namespace
                && attr("name").as_deref() == Some(spec.name.as_str());
            if let (true, Some(snap)) = (matches, attr("current_snap")) {
                out.push((Device { id }, snap));
            }
        }
        out.sort_by_key(|(d, _)| d.id);
        Ok(out)
    }

    /// Maps `spec` (read-only if it names a snapshot) with the extra kernel
    /// `options` (e.g. `rxbounce`). Already mapped: the existing device. Waits up
    /// to `timeout` for the kernel to list the new device.
    ///
    /// # Errors
    /// `NotFound` for a missing image or snapshot; [`Error::Config`] without the
    /// rbd driver or with no usable key; the kernel's error for a refused map.
    pub fn map(
        &self,
        cluster: &Cluster,
        spec: &ImageSpec,
        options: &[&str],
        timeout: Duration,
    ) -> Result<Device> {
        let fsid = cluster.fsid()?;
        if let Some(d) = self.mapped(&fsid, spec)?.into_iter().next() {
            return Ok(d);
        }
        // A clear NotFound before the kernel's bare ENOENT.
        crate::ops::stat(cluster, spec)?;
        let request = AddRequest::new(cluster, spec, options)?;
        self.write_control("add", request.0.as_bytes(), &spec.to_string())?;
        crate::crash::point("krbd add");
        let deadline = crate::deadline(timeout);
        loop {
            if let Some(d) = self.mapped(&fsid, spec)?.into_iter().next() {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                return Err(Error::Ceph(CephError::new(
                    "rbd sysfs add",
                    -i64::from(libc::ETIMEDOUT),
                    format!("{spec}: no device after {}s", timeout.as_secs()),
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The options device `d` was mapped with (the second field of its
    /// `config_info`, comma-separated); `None` when the kernel does not say.
    pub fn options(&self, d: &Device) -> Option<Vec<String>> {
        let info = attribute(&self.bus.join("devices").join(d.id.to_string()), "config_info")?;
        let options = info.split_whitespace().nth(1)?;
        Some(options.split(',').map(str::to_string).collect())
    }

    /// Unmaps `spec` if it is mapped (one device per call, like `rbd unmap`);
    /// returns whether a device was removed.
    ///
    /// # Errors
    /// `Busy` while the device is open; [`Error::Config`] without the rbd driver.
    pub fn unmap(&self, fsid: &str, spec: &ImageSpec, timeout: Duration) -> Result<bool> {
        let Some(d) = self.mapped(fsid, spec)?.into_iter().next() else { return Ok(false) };
        self.remove(&d, &spec.to_string(), timeout)?;
        Ok(true)
    }

    /// Removes device `d` (of `object`, for errors) and waits up to `timeout`
    /// for the kernel to drop it from the list.
    ///
    /// # Errors
    /// `Busy` while the device is open; `NotFound` if it is gone already.
    pub fn remove(&self, d: &Device, object: &str, timeout: Duration) -> Result<()> {
        self.write_control("remove", d.id.to_string().as_bytes(), object)?;
        let deadline = crate::deadline(timeout);
        while self.bus.join("devices").join(d.id.to_string()).exists() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Writes one request to `<what>_single_major` (or `<what>` on kernels
    /// without single-major numbering), in one `write` as the driver expects.
    fn write_control(&self, what: &str, request: &[u8], object: &str) -> Result<()> {
        let single = self.bus.join(format!("{what}_single_major"));
        let path = if single.exists() { single } else { self.bus.join(what) };
        let mut f = match fs::OpenOptions::new().write(true).open(&path) {
            Err(e) if e.kind() == IoKind::NotFound => return Err(not_loaded(&self.bus)),
            other => other.map_err(|e| io_error("opening", &path, &e))?,
        };
        let op = if what == "add" { "rbd sysfs add" } else { "rbd sysfs remove" };
        match f.write(request) {
            Ok(n) if n == request.len() => Ok(()),
            Ok(n) => Err(Error::Config(format!(
                "{}: short write ({n} of {} bytes)",
                path.display(),
                request.len()
            ))),
            Err(e) => Err(Error::Ceph(CephError::new(
                op,
                -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
                object.to_string(),
            ))),
        }
    }
}

fn attribute(dev: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dev.join(name)).ok().map(|s| s.trim_end_matches('\n').to_string())
}

fn not_loaded(bus: &Path) -> Error {
    Error::Config(format!("the kernel rbd driver is not loaded ({} is missing; modprobe rbd)", bus.display()))
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::Config(format!("{what} {}: {e}", path.display()))
}

/// The text written to the add control file:
/// `<mon addrs> name=<id>,key=<entity>|secret=<key>[,options][,_pool_ns=<ns>] <pool> <image> <snap|->`.
/// Holds the key when the kernel keyring is not used: no `Debug`, never logged.
struct AddRequest(String);

impl AddRequest {
    fn new(cluster: &Cluster, spec: &ImageSpec, options: &[&str]) -> Result<Self> {
        for part in [&spec.pool, &spec.namespace, &spec.name].into_iter().chain(spec.snap.as_ref()) {
            if part.contains(|c: char| c.is_whitespace() || c == ',') {
                return Err(Error::Invalid(format!(
                    "{spec}: the kernel cannot map names with blanks or commas"
                )));
            }
        }
        for o in options {
            if o.is_empty() || o.contains(|c: char| c.is_whitespace() || c == ',') || o.starts_with("secret=")
            {
                return Err(Error::Invalid(format!("invalid krbd map option {o:?}")));
            }
        }
        let ms_mode = options.iter().find_map(|o| o.strip_prefix("ms_mode="));
        let dump = cluster.mon_command(&json!({"prefix": "mon dump"}))?;
        // Legacy addresses unless ms_mode asks for msgr2; monitors that listen on
        // msgr2 only are reached with it (kernel 5.11 and later).
        let (mons, auto_msgr2) = match ms_mode {
            Some(m) => (mon_addrs(&dump, m != "legacy")?, false),
            None => match mon_addrs(&dump, false) {
                Ok(v1) => (v1, false),
                Err(_) => (mon_addrs(&dump, true)?, true),
            },
        };
        let entity = cluster.entity().to_string();
        let id = entity.strip_prefix("client.").unwrap_or(&entity);
        let mut opts = vec![format!("name={id}")];
        if cluster.conf_get("auth_client_required")?.trim() != "none" {
            let key = find_key(cluster, &entity)?;
            opts.push(match add_kernel_key(&entity, &key) {
                Ok(()) => format!("key={entity}"),
                Err(_) => format!("secret={key}"),
            });
        }
        opts.extend(options.iter().map(ToString::to_string));
        if auto_msgr2 {
            opts.push("ms_mode=prefer-crc".to_string());
        }
        if !spec.namespace.is_empty() {
            opts.push(format!("_pool_ns={}", spec.namespace));
        }
        let snap = spec.snap.as_deref().unwrap_or("-");
        Ok(Self(format!("{mons} {} {} {} {snap}", opts.join(","), spec.pool, spec.name)))
    }
}

/// The monitors' addresses from `mon dump`, msgr2 (`v2`) or legacy (`v1`) ones.
fn mon_addrs(dump: &Value, msgr2: bool) -> Result<String, crate::Error> {
    let want = if msgr2 { "v2" } else { "v1" };
    let mut out = Vec::new();
    for mon in dump["mons"].as_array().into_iter().flatten() {
        for a in mon["public_addrs"]["addrvec"].as_array().into_iter().flatten() {
            if a["type"] == want
                && let Some(addr) = a["addr"].as_str()
            {
                out.push(addr.to_string());
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "no {want} monitor address (ms_mode {})",
            if msgr2 { "asks for msgr2" } else { "is legacy" }
        )));
    }
    Ok(out.join(","))
}

/// The client's key, as librados found it: `key`, `keyfile` or the keyring.
fn find_key(cluster: &Cluster, entity: &str) -> Result<String, crate::Error> {
    let key = cluster.conf_get("key")?;
    if !key.trim().is_empty() {
        return Ok(key.trim().to_string());
    }
    let keyfile = cluster.conf_get("keyfile")?;
    if !keyfile.trim().is_empty() {
        let k = fs::read_to_string(keyfile.trim())
            .map_err(|e| Error::Config(format!("reading the key file {}: {e}", keyfile.trim())))?;
        return Ok(k.trim().to_string());
    }
    for path in cluster.conf_get("keyring")?.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Ok(text) = fs::read_to_string(path)
            && let Some(k) = keyring_key(&text, entity)
        {
            return Ok(k);
        }
    }
    Err(Error::Config(format!("no key for {entity} in its keyring, key or keyfile settings")))
}

/// The `key` of section `[entity]` in a keyring file.
fn keyring_key(text: &str, entity: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == entity;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "key"
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// Hands the key to the kernel keyring of this process (`add_key(2)`, key type
/// `ceph`, the decoded key as payload), as `rbd map` does.
fn add_kernel_key(entity: &str, key: &str) -> Result<(), ()> {
    let payload = base64_decode(key).ok_or(())?;
    let desc = std::ffi::CString::new(entity).map_err(|_| ())?;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    // SAFETY: every pointer is valid for the call (NUL-terminated type and
    // description, `payload` for its length); add_key copies them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"ceph".as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    if r < 0 { Err(()) } else { Ok(()) }
}

/// Standard base64 (with padding), as Ceph prints keys.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().as_bytes();
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_ceph_prints_keys() {
        assert_eq!(base64_decode("AQAAAAAAAAAAABAA").unwrap(), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]);
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aA==").unwrap(), b"h");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a$==").is_none());
        assert!(base64_decode("").is_none());
    }

    #[test]
    fn the_key_of_one_entity_in_a_keyring() {
        let text =
            "[client.admin]\n\tkey = ADMIN==\n[client.rbdx]\n  key=RBDX==\n  caps mon = \"profile rbd\"\n";
        assert_eq!(keyring_key(text, "client.rbdx").as_deref(), Some("RBDX=="));
        assert_eq!(keyring_key(text, "client.admin").as_deref(), Some("ADMIN=="));
        assert_eq!(keyring_key(text, "client.other"), None);
    }

    #[test]
    fn monitor_addresses_by_messenger() {
        let dump = json!({"mons": [
            {"public_addrs": {"addrvec": [{"type": "v2", "addr": "10.0.0.1:3300"}, {"type": "v1", "addr": "10.0.0.1:6789"}]}},
            {"public_addrs": {"addrvec": [{"type": "v2", "addr": "10.0.0.2:3300"}]}},
        ]});
        assert_eq!(mon_addrs(&dump, false).unwrap(), "10.0.0.1:6789");
        assert_eq!(mon_addrs(&dump, true).unwrap(), "10.0.0.1:3300,10.0.0.2:3300");
        assert!(mon_addrs(&json!({"mons": []}), false).is_err());
    }
}
