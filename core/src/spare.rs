//! A connection made ahead of time. A process that will run one action (the
//! warm agent's next run, waiting for its request) connects with the settings
//! the last action used ([`prepare`]); the action's own [`Cluster::connect`]
//! then takes that handle instead of connecting again, but only if it asks for
//! exactly the same settings and every file the connection read is still the
//! same file, unchanged: the ceph.conf librados found (or the one named), each
//! keyring it looks for and the key file, compared by device, inode, size and
//! modification and change times, and the environment that chooses them
//! (`CEPH_CONF`, `HOME`). Otherwise the handle is dropped and a new connection
//! made, as without one.
//!
//! Only the first connect of a process can take it; a process holds at most one.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::error::{Error, Result};
use crate::rados::{Cluster, ConnectConfig};

/// One file a connection may have read: the name librados was given (a
/// relative one as written, resolved where the process is when looked at)
/// and which file it was then, if there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: PathBuf,
    file: Option<[i64; 7]>,
}

/// What a connection depends on besides its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    env: Vec<(&'static str, Option<OsString>)>,
    files: Vec<Seen>,
}

struct Spare {
    cluster: Cluster,
    config: ConnectConfig,
    inputs: Inputs,
}

static SPARE: Mutex<Option<Spare>> = Mutex::new(None);

/// Told of each new connection's settings (see [`on_connect`]).
static ON_CONNECT: OnceLock<fn(&ConnectConfig)> = OnceLock::new();

/// Connects with `config` and keeps the handle for this process's first
/// [`Cluster::connect`] with the same settings (replacing one kept before).
/// The files are looked at before and after the connection is made: what
/// librados read is known only if none changed meanwhile.
///
/// # Errors
/// What [`Cluster::connect`] returns; [`Error::Invalid`] when a file changed
/// while it connected. Nothing is kept then.
pub fn prepare(config: &ConnectConfig) -> Result<()> {
    let first = conf_inputs(config);
    let (cluster, before) = Cluster::connect_new_with(config, |c| inputs(c, config))?;
    let after = inputs(&cluster, config)?;
    if before != after || first.env != after.env || first.files.iter().any(|f| !after.files.contains(f)) {
        return Err(Error::Invalid("the files a connection made ahead read changed meanwhile".into()));
    }
    *SPARE.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(Spare { cluster, config: config.clone(), inputs: after });
    Ok(())
}

/// Calls `f` with the settings of every new connection this process makes
/// from now on (not the ones [`prepare`] makes); set once per process.
pub fn on_connect(f: fn(&ConnectConfig)) {
    let _ = ON_CONNECT.set(f);
}

pub(crate) fn connected(config: &ConnectConfig) {
    if let Some(f) = ON_CONNECT.get() {
        f(config);
    }
}

/// The handle kept by [`prepare`], if it was made with `config` and what it
/// read is unchanged; the kept handle is given up either way.
pub(crate) fn take(config: &ConnectConfig) -> Option<Cluster> {
    let spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner).take()?;
    let _span = crate::trace::span("connect (made ahead)");
    if spare.config != *config {
        return None;
    }
    match inputs(&spare.cluster, config) {
        Ok(now) if now == spare.inputs => Some(spare.cluster),
        _ => None,
    }
}

/// The environment and the files a connection with `config` reads, as they
/// are now (the keyring and key file names as `cluster` expanded them).
fn inputs(cluster: &Cluster, config: &ConnectConfig) -> Result<Inputs> {
    let mut found = conf_inputs(config);
    for option in ["keyring", "keyfile"] {
        found.files.extend(split(&cluster.conf_get(option)?).map(|p| seen(p.into())));
    }
    Ok(found)
}

/// What [`inputs`] finds before any handle has read ceph.conf: the
/// environment, the ceph.conf files and the files `config` names itself.
fn conf_inputs(config: &ConnectConfig) -> Inputs {
    let env = ["CEPH_CONF", "HOME"].into_iter().map(|k| (k, std::env::var_os(k))).collect();
    let mut names = conf_candidates(config);
    names.extend(config.keyring.iter().chain(&config.key_file).cloned());
    Inputs { env, files: names.into_iter().map(seen).collect() }
}

fn seen(path: PathBuf) -> Seen {
    Seen { file: identity(&path), path }
}

/// The ceph.conf files librados may read for `config`: the one named; none
/// with monitor addresses and no file; else its search list (`$CEPH_CONF`, or
/// its default: the client's data directory, /etc/ceph, `~/.ceph` and the
/// working directory), each with the metavariables librados expands there.
fn conf_candidates(config: &ConnectConfig) -> Vec<PathBuf> {
    match (&config.conf_file, &config.mon_host) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(_)) => Vec::new(),
        (None, None) => {
            let id = config.client_id.as_deref().unwrap_or("admin");
            let home = std::env::var("HOME").unwrap_or_default();
            let list = std::env::var("CEPH_CONF").unwrap_or_else(|_| {
                "$data_dir/config,/etc/ceph/$cluster.conf,$home/.ceph/$cluster.conf,$cluster.conf".into()
            });
            split(&list)
                .map(|f| {
                    f.replace("$data_dir", &format!("/var/lib/ceph/client/ceph-{id}"))
                        .replace("$cluster", "ceph")
                        .replace("$home", &home)
                        .into()
                })
                .collect()
        }
    }
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', ';', ' ', '\t']).filter(|s| !s.is_empty())
}

/// Which file `path` names now: device, inode, size, modification and change
/// times (seconds and nanoseconds); `None` when there is none to read.
fn identity(path: &Path) -> Option<[i64; 7]> {
    let m = std::fs::metadata(path).ok()?;
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Some([
        as_i64(m.dev()),
        as_i64(m.ino()),
        as_i64(m.size()),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_search_list_is_librados_own_with_its_metavariables() {
        let config = ConnectConfig { client_id: Some("oneadmin".into()), ..ConnectConfig::default() };
        let got = conf_candidates(&config);
        // The list itself only depends on CEPH_CONF and HOME, read here.
        if std::env::var_os("CEPH_CONF").is_none() {
            let home = std::env::var("HOME").unwrap_or_default();
            assert_eq!(
                got,
                [
                    PathBuf::from("/var/lib/ceph/client/ceph-oneadmin/config"),
                    "/etc/ceph/ceph.conf".into(),
                    format!("{home}/.ceph/ceph.conf").into(),
                    "ceph.conf".into(),
                ]
            );
        }
        let named = ConnectConfig { conf_file: Some("/x/ceph.conf".into()), ..ConnectConfig::default() };
        assert_eq!(conf_candidates(&named), [PathBuf::from("/x/ceph.conf")]);
        let mons = ConnectConfig { mon_host: Some("127.0.0.1".into()), ..ConnectConfig::default() };
        assert!(conf_candidates(&mons).is_empty());
    }

    #[test]
    fn a_file_replaced_or_rewritten_is_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keyring");
        assert_eq!(identity(&f), None);
        std::fs::write(&f, "a").unwrap();
        let first = identity(&f).unwrap();
        assert_eq!(identity(&f), Some(first));
        std::fs::write(dir.path().join("new"), "b").unwrap();
        std::fs::rename(dir.path().join("new"), &f).unwrap();
        assert_ne!(identity(&f), Some(first), "replaced by rename: another inode");
    }
}
