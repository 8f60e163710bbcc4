//! The driver's own settings: one `KEY = value` file (no shell involved), every
//! key optional. Datastore attributes named `RBDX_<KEY>` override it per datastore.
//!
//! The file is `RBDX_ONE_CONFIG` if set, else `/etc/one/rbdx.conf` (the packaged
//! conffile), else `etc/rbdx/rbdx.conf` in the remotes tree the running binary
//! belongs to (`<remotes>/rbdx/rbdx` → `<remotes>/etc/rbdx/rbdx.conf`). Only the
//! front-end reads it: jobs carry everything the hosts need.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::oned::Attrs;

use crate::error::{Context, Error, Result};

/// Where the Ceph work of an action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// On the host named in the arguments (or a bridge), over one ssh round trip,
    /// as the stock drivers do.
    Ssh,
    /// In this process, on the front-end: no ssh at all.
    Local,
}

/// Driver settings, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `EXECUTION`: `ssh` (default) or `local`.
    pub execution: Execution,
    /// `REMOTE_DIR`: where `onehost sync` puts the remotes on the hosts
    /// (default `/var/tmp/one`); the binary runs as `<REMOTE_DIR>/rbdx/rbdx`.
    pub remote_dir: String,
    /// `SSH`: the ssh command and its options, split on spaces (default `ssh`).
    pub ssh: Vec<String>,
    /// `ACTION_TIMEOUT`: seconds one action may take, ssh and every child process
    /// included (default 600): the action's deadline.
    pub action_timeout: Duration,
    /// `TRANSFER_TIMEOUT`: the deadline of the actions that copy whole images or
    /// directories (DS cp and export, the `.ssh` copies, mv and premigrate, the
    /// context ISO) (default 86400).
    pub transfer_timeout: Duration,
    /// `CEPH_TIMEOUT`: seconds one Ceph call may take (default 30).
    pub ceph_timeout: Duration,
    /// `ONED_TIMEOUT`: seconds one oned call may take (default 30).
    pub oned_timeout: Duration,
    /// `IDLE_TIMEOUT`: seconds a download may go without data (default 60); the
    /// transfer as a whole is bounded by ACTION_TIMEOUT.
    pub idle_timeout: Duration,
    /// `MAX_CLONE_DEPTH`: longest clone chain before flattening (default 8).
    pub max_clone_depth: u32,
    /// `ROLLBACK_MAX_MB`: a revert to a snapshot the head holds rolls the head
    /// back in place when that visits at most this much data (default 2048; 0:
    /// always the clone swap). See [`rbdx_core::ops::disk::DiskConfig`].
    pub rollback_max_mb: u64,
    /// `SAVEAS_COPY_MAX_MB`: a save-as of a disk's current state (TM cpds, DS
    /// clone) copies the disk's own data instead of taking a snapshot when it
    /// holds at most this much and nothing else has it open (default 64; 0:
    /// always the snapshot). See [`rbdx_core::ops::disk::DiskConfig`].
    pub saveas_copy_max_mb: u64,
    /// `TRASH_DELAY`: seconds a disk deleted with CEPH_TRASH stays restorable (default 0).
    pub trash_delay: u64,
    /// `RECLAIM`: what deleting a disk does with its images that save-as clones
    /// still read from: `trash` (default; freed by monitor once the clones are
    /// gone) or `flatten` (the clones are made independent at once).
    pub reclaim: rbdx_core::ops::disk::Reclaim,
    /// `VIRSH`: the virsh command for live snapshots (default `virsh`).
    pub virsh: String,
    /// `LIBVIRT_URI` (default `qemu:///system`).
    pub libvirt_uri: String,
    /// `LXC_FREEZE`: the command that freezes an LXC container (`-n <name>` is
    /// added; default `sudo lxc-freeze`).
    pub lxc_freeze: Vec<String>,
    /// `LXC_UNFREEZE`: the command that thaws it (default `sudo lxc-unfreeze`).
    pub lxc_unfreeze: Vec<String>,
    /// `FREEZE_TIMEOUT`: seconds a guest freeze may take (default 60).
    pub freeze_timeout: Duration,
    /// `MAX_IMAGE_SIZE`: MiB; an image file or URL whose virtual size is larger
    /// is refused before anything is created (default 64 TiB).
    pub max_image_size_mb: u64,
    /// `CONTEXT_DIRS`: directories (besides the VM's own and the datastores')
    /// that CONTEXT/FILES may name, space-separated absolute paths (default none).
    pub context_dirs: Vec<String>,
    /// `RBD_SOURCES`: whether `cp`/`stat` accept `rbd://` image sources (default
    /// `no`). Such a URL names any image and credentials on a host, and an
    /// image's PATH is a user's: only a cloud where every user may read every
    /// image in reach of those credentials should turn it on.
    pub rbd_sources: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            execution: Execution::Ssh,
            remote_dir: "/var/tmp/one".into(),
            ssh: vec!["ssh".into()],
            action_timeout: Duration::from_secs(600),
            transfer_timeout: Duration::from_secs(86400),
            ceph_timeout: Duration::from_secs(30),
            oned_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_clone_depth: rbdx_core::ops::disk::DEFAULT_MAX_DEPTH,
            rollback_max_mb: rbdx_core::ops::disk::DEFAULT_ROLLBACK_MAX_BYTES >> 20,
            saveas_copy_max_mb: rbdx_core::ops::disk::DEFAULT_COPY_MAX_BYTES >> 20,
            trash_delay: 0,
            reclaim: rbdx_core::ops::disk::Reclaim::Trash,
            virsh: "virsh".into(),
            libvirt_uri: "qemu:///system".into(),
            lxc_freeze: vec!["sudo".into(), "lxc-freeze".into()],
            lxc_unfreeze: vec!["sudo".into(), "lxc-unfreeze".into()],
            freeze_timeout: Duration::from_secs(60),
            max_image_size_mb: rbdx_import::DEFAULT_MAX_SIZE >> 20,
            context_dirs: Vec::new(),
            rbd_sources: false,
        }
    }
}

/// The settings a datastore may override with `RBDX_<KEY>` attributes.
pub const DATASTORE_KEYS: [&str; 10] = [
    "EXECUTION",
    "MAX_CLONE_DEPTH",
    "ROLLBACK_MAX_MB",
    "SAVEAS_COPY_MAX_MB",
    "TRASH_DELAY",
    "RECLAIM",
    "CEPH_TIMEOUT",
    "ACTION_TIMEOUT",
    "TRANSFER_TIMEOUT",
    "RBD_SOURCES",
];

/// A command and its options, split on spaces (never through a shell).
fn command(key: &str, v: &str) -> Result<Vec<String>> {
    let words: Vec<String> = v.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return Err(Error::Invalid(format!("{key}: empty command")));
    }
    Ok(words)
}

fn secs(key: &str, v: &str) -> Result<Duration> {
    v.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| Error::Invalid(format!("{key}: expected seconds, got {v:?}")))
}

/// A remote directory is put into the one command line ssh runs: only plain path
/// characters are allowed.
fn safe_path(key: &str, v: &str) -> Result<String, crate::Error> {
    if v.starts_with('/') && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)) {
        Ok(v.to_string())
    } else {
        Err(Error::Invalid(format!("{key}: {v:?} must be an absolute path of letters, digits and /._-")))
    }
}

impl Config {
    /// Loads the config file (a missing default file means defaults).
    ///
    /// # Errors
    /// A message for an unreadable file or a bad value.
    pub fn load() -> Result<Self> {
        let (path, required) = match std::env::var_os("RBDX_ONE_CONFIG") {
            Some(p) => (PathBuf::from(p), true),
            None => (default_path(), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).context(format!("{}", path.display())),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Invalid(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Parses `KEY = value` lines; `#` starts a comment; values may be quoted.
    ///
    /// # Errors
    /// A message naming the bad line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut c = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::Invalid(format!("line {}: expected KEY = value", n + 1)))?;
            let v = v.trim().trim_matches('"');
            c.set(k.trim(), v).context(format!("line {}", n + 1))?;
        }
        Ok(c)
    }

    fn set(&mut self, key: &str, v: &str) -> Result<()> {
        match key {
            "EXECUTION" => {
                self.execution = match v {
                    "ssh" => Execution::Ssh,
                    "local" => Execution::Local,
                    _ => return Err(Error::Invalid(format!("EXECUTION: expected ssh or local, got {v:?}"))),
                }
            }
            "REMOTE_DIR" => self.remote_dir = safe_path(key, v)?,
            "SSH" => self.ssh = command(key, v)?,
            "ACTION_TIMEOUT" => self.action_timeout = secs(key, v)?,
            "TRANSFER_TIMEOUT" => self.transfer_timeout = secs(key, v)?,
            "CEPH_TIMEOUT" => self.ceph_timeout = secs(key, v)?,
            "ONED_TIMEOUT" => self.oned_timeout = secs(key, v)?,
            "IDLE_TIMEOUT" => self.idle_timeout = secs(key, v)?,
            "MAX_IMAGE_SIZE" => {
                self.max_image_size_mb =
                    v.parse().ok().filter(|m| (1..=(1u64 << 43)).contains(m)).ok_or_else(|| {
                        Error::Invalid(format!("MAX_IMAGE_SIZE: expected MiB (1 to 2^43), got {v:?}"))
                    })?;
            }
            "MAX_CLONE_DEPTH" => {
                self.max_clone_depth = v.parse().ok().filter(|d| *d >= 1).ok_or_else(|| {
                    Error::Invalid(format!("MAX_CLONE_DEPTH: expected 1 or more, got {v:?}"))
                })?;
            }
            "ROLLBACK_MAX_MB" => {
                self.rollback_max_mb = v.parse().ok().filter(|m| *m <= 1u64 << 43).ok_or_else(|| {
                    Error::Invalid(format!("ROLLBACK_MAX_MB: expected MiB (0 to 2^43), got {v:?}"))
                })?;
            }
            "SAVEAS_COPY_MAX_MB" => {
                self.saveas_copy_max_mb = v.parse().ok().filter(|m| *m <= 1u64 << 43).ok_or_else(|| {
                    Error::Invalid(format!("SAVEAS_COPY_MAX_MB: expected MiB (0 to 2^43), got {v:?}"))
                })?;
            }
            "TRASH_DELAY" => {
                self.trash_delay = v
                    .parse()
                    .map_err(|_| Error::Invalid(format!("TRASH_DELAY: expected seconds, got {v:?}")))?
            }
            "RECLAIM" => {
                self.reclaim = match v {
                    "trash" => rbdx_core::ops::disk::Reclaim::Trash,
                    "flatten" => rbdx_core::ops::disk::Reclaim::Flatten,
                    _ => {
                        return Err(Error::Invalid(format!("RECLAIM: expected trash or flatten, got {v:?}")));
                    }
                }
            }
            "VIRSH" => self.virsh = v.to_string(),
            "LIBVIRT_URI" => self.libvirt_uri = v.to_string(),
            "FREEZE_TIMEOUT" => self.freeze_timeout = secs(key, v)?,
            "LXC_FREEZE" => self.lxc_freeze = command(key, v)?,
            "LXC_UNFREEZE" => self.lxc_unfreeze = command(key, v)?,
            "CONTEXT_DIRS" => {
                self.context_dirs =
                    v.split_whitespace().map(|d| crate::datastore::path(key, d)).collect::<Result<_, _>>()?;
            }
            "RBD_SOURCES" => self.rbd_sources = crate::datastore::yes_no(key, v)?,
            _ => return Err(Error::Invalid(format!("unknown setting {key}"))),
        }
        Ok(())
    }

    /// This config with the datastore's `RBDX_<KEY>` attributes applied.
    ///
    /// # Errors
    /// A message for a bad value.
    pub fn for_datastore(&self, ds: Attrs<'_>) -> Result<Self> {
        let mut c = self.clone();
        for key in DATASTORE_KEYS {
            if let Some(v) = ds.get(&format!("RBDX_{key}")) {
                c.set(key, v).map_err(|e| Error::Invalid(format!("datastore attribute RBDX_{e}")))?;
            }
        }
        Ok(c)
    }

    /// This config for an action that copies whole images or directories: its
    /// deadline is TRANSFER_TIMEOUT.
    #[must_use]
    pub fn for_transfer(&self) -> Self {
        Self { action_timeout: self.transfer_timeout, ..self.clone() }
    }

    /// The rbdx binary on the hosts.
    pub fn remote_binary(&self) -> String {
        format!("{}/rbdx/rbdx", self.remote_dir.trim_end_matches('/'))
    }
}

/// `/etc/one/rbdx.conf`, else `<remotes>/etc/rbdx/rbdx.conf` next to the binary.
fn default_path() -> PathBuf {
    let etc = PathBuf::from("/etc/one/rbdx.conf");
    if etc.exists() {
        return etc;
    }
    remotes_dir().join("etc/rbdx/rbdx.conf")
}

/// The remotes tree this binary belongs to (`/var/lib/one/remotes` on the
/// front-end, `<REMOTE_DIR>` on a host): two levels above the path it was started
/// as (`<remotes>/rbdx/rbdx`; the shims and ssh start it by that path, which may
/// be a link), else above the executable itself. Test builds take `RBDX_REMOTES`
/// first (a test's own tree); release builds never read it.
pub fn remotes_dir() -> PathBuf {
    #[cfg(debug_assertions)]
    if let Some(r) = std::env::var_os("RBDX_REMOTES") {
        return r.into();
    }
    let argv0 = std::env::args_os().next().map(PathBuf::from).filter(|p| p.is_absolute());
    let exe = argv0.or_else(|| std::env::current_exe().ok()).unwrap_or_default();
    exe.parent().and_then(Path::parent).map_or_else(|| "/var/lib/one/remotes".into(), Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Element;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("# comment\nEXECUTION = local\nSSH = ssh -p 2222 -o BatchMode=yes\nMAX_CLONE_DEPTH=4\nROLLBACK_MAX_MB=0\nSAVEAS_COPY_MAX_MB=8\nREMOTE_DIR=\"/var/tmp/one\"\n").unwrap();
        assert_eq!(c.execution, Execution::Local);
        assert_eq!(c.ssh, ["ssh", "-p", "2222", "-o", "BatchMode=yes"]);
        assert_eq!((c.max_clone_depth, c.rollback_max_mb), (4, 0));
        assert_eq!(Config::default().rollback_max_mb, 2048);
        assert_eq!((c.saveas_copy_max_mb, Config::default().saveas_copy_max_mb), (8, 64));
        assert_eq!(c.remote_binary(), "/var/tmp/one/rbdx/rbdx");
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn bad_values_are_named() {
        for (text, want) in [
            ("EXECUTION=remote", "EXECUTION"),
            ("REMOTE_DIR=/tmp/$(x)", "REMOTE_DIR"),
            ("REMOTE_DIR=relative", "REMOTE_DIR"),
            ("MAX_CLONE_DEPTH=0", "MAX_CLONE_DEPTH"),
            ("ROLLBACK_MAX_MB=-1", "ROLLBACK_MAX_MB"),
            ("ROLLBACK_MAX_MB=1GiB", "ROLLBACK_MAX_MB"),
            ("SAVEAS_COPY_MAX_MB=-1", "SAVEAS_COPY_MAX_MB"),
            ("SAVEAS_COPY_MAX_MB=64M", "SAVEAS_COPY_MAX_MB"),
            ("BOGUS=1", "unknown setting BOGUS"),
            ("no equals sign", "line 1"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn datastore_attributes_override_the_file() {
        let t = Element::parse("<TEMPLATE><RBDX_EXECUTION>local</RBDX_EXECUTION><RBDX_MAX_CLONE_DEPTH>3</RBDX_MAX_CLONE_DEPTH></TEMPLATE>").unwrap();
        let c = Config::default().for_datastore(Attrs(&t)).unwrap();
        assert_eq!((c.execution, c.max_clone_depth), (Execution::Local, 3));
        let t = Element::parse("<TEMPLATE><RBDX_EXECUTION>nope</RBDX_EXECUTION></TEMPLATE>").unwrap();
        assert!(Config::default().for_datastore(Attrs(&t)).is_err());
    }
}
