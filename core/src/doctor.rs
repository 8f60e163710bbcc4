//! Checks of what the drivers need from a Ceph cluster, for `rbdx doctor`: each
//! answers in one [`Finding`] whether it holds and, when not, how to fix it.
//!
//! The client's caps cannot be read with `profile rbd` (`auth get` needs admin
//! caps), so they are checked by doing what the drivers do: list the pool, create
//! a small image with the data pool, write to it, snapshot it and remove it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ops::{self, CreateOptions, ImageSpec, RemoveOptions, clone_format_for};
use crate::rados::{Cluster, ConnectConfig, Timeouts};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was checked, e.g. `pool one: client.libvirt can write`.
    pub check: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was found (the failure, or a detail worth knowing).
    pub detail: String,
    /// How to fix it, when it does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A check that holds.
    pub fn pass(check: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self { check: check.into(), ok: true, detail: detail.to_string(), fix: None }
    }

    /// A check that does not hold, with its fix.
    pub fn fail(check: impl Into<String>, detail: impl std::fmt::Display, fix: impl Into<String>) -> Self {
        Self { check: check.into(), ok: false, detail: detail.to_string(), fix: Some(fix.into()) }
    }

    /// This finding with `prefix: ` before its check (which storage or host).
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.check = format!("{prefix}: {}", self.check);
        self
    }
}

/// A pool the drivers use, with the EC data pool its images get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUse {
    /// The pool for image headers.
    pub pool: String,
    /// The rados namespace, if any.
    pub namespace: Option<String>,
    /// The data pool, if any.
    pub data_pool: Option<String>,
}

/// A file holding a secret (keyring or key file): readable by us, and by no one
/// else but its owner and group.
pub fn secret_file(what: &str, path: &Path) -> Finding {
    let check = format!("{what} {} is readable and private", path.display());
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Err(e) => Finding::fail(
            check,
            format!("cannot read it: {e}"),
            format!("make {} readable by this user (and only by it and its group)", path.display()),
        ),
        Ok(m) if m.permissions().mode() & 0o004 != 0 => Finding::fail(
            check,
            format!("it is world-readable (mode {:o})", m.permissions().mode() & 0o7777),
            format!("chmod o-rwx {}", path.display()),
        ),
        Ok(_) => Finding::pass(check, ""),
    }
}

/// A ceph.conf: readable.
pub fn conf_file(path: &Path) -> Finding {
    let check = format!("ceph.conf {} is readable", path.display());
    match std::fs::read(path) {
        Ok(_) => Finding::pass(check, ""),
        Err(e) => Finding::fail(check, format!("cannot read it: {e}"), "copy the cluster's ceph.conf there"),
    }
}

/// Every check for reaching `pools` with `config`; `connect_timeout` bounds the
/// connection (a dead cluster answers with one failed finding, quickly). With
/// `write`, the caps are checked by making (and removing) a small image in each.
pub fn cluster(
    config: &ConnectConfig,
    pools: &[PoolUse],
    connect_timeout: Duration,
    write: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(c) = &config.conf_file {
        out.push(conf_file(c));
    }
    if let Some(k) = &config.keyring {
        out.push(secret_file("keyring", k));
    }
    if let Some(k) = &config.key_file {
        out.push(secret_file("key file", k));
    }
    let entity = config.entity();
    let mut cfg = config.clone();
    cfg.timeouts = Timeouts { connect: connect_timeout, ..config.timeouts };
    let cluster = match Cluster::connect(&cfg) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                format!("connect as {entity}"),
                e.to_string(),
                "check the monitors in ceph.conf, the client name and its key",
            ));
            return out;
        }
    };
    out.push(Finding::pass(format!("connect as {entity}"), cluster.fsid().unwrap_or_default()));
    let dump = match cluster.mon_command(&json!({"prefix": "osd dump"})) {
        Ok(d) => d,
        Err(e) => {
            out.push(Finding::fail(
                "read the OSD map",
                e.to_string(),
                format!("give {entity} the mon cap 'profile rbd'"),
            ));
            return out;
        }
    };
    out.push(compat_client(&dump));
    for p in pools {
        out.extend(pool_checks(&cluster, &dump, p, write));
    }
    out
}

/// Clone format 2 (no snapshot protection; what lets snapshots be deleted while
/// clones use them) needs `require_min_compat_client` mimic or later.
pub fn compat_client(osd_dump: &Value) -> Finding {
    let rmcc = osd_dump.get("require_min_compat_client").and_then(Value::as_str).unwrap_or("");
    let check = "clone format 2 allowed (require_min_compat_client mimic or later)";
    if clone_format_for(rmcc) == 2 {
        Finding::pass(check, format!("require_min_compat_client is {rmcc}"))
    } else {
        Finding::fail(
            check,
            format!("require_min_compat_client is {}: clones fall back to format 1", nonempty(rmcc)),
            "ceph osd set-require-min-compat-client mimic (once every client is mimic or later)",
        )
    }
}

fn nonempty(s: &str) -> &str {
    if s.is_empty() { "unset" } else { s }
}

fn pool_entry<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump.get("pools")?.as_array()?.iter().find(|p| p.get("pool_name").and_then(Value::as_str) == Some(name))
}

/// Whether an EC pool allows overwrites (RBD data cannot live in it otherwise).
pub fn ec_overwrites(dump: &Value, name: &str) -> Option<Finding> {
    let p = pool_entry(dump, name)?;
    if p.get("type").and_then(Value::as_u64) != Some(3) {
        return None;
    }
    let flags = p.get("flags_names").and_then(Value::as_str).unwrap_or("");
    let check = format!("EC pool {name} allows overwrites");
    Some(if flags.split(',').any(|f| f == "ec_overwrites") {
        Finding::pass(check, "")
    } else {
        Finding::fail(
            check,
            "allow_ec_overwrites is off: RBD cannot write its data there",
            format!("ceph osd pool set {name} allow_ec_overwrites true"),
        )
    })
}

fn pool_checks(cluster: &Cluster, dump: &Value, p: &PoolUse, write: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let entity = cluster.entity().to_string();
    let caps = |pools: &str| format!("ceph auth caps {entity} mon 'profile rbd' osd '{pools}'");
    let wanted = std::iter::once(&p.pool)
        .chain(&p.data_pool)
        .map(|n| format!("profile rbd pool={n}"))
        .collect::<Vec<_>>()
        .join(", ");
    for name in std::iter::once(&p.pool).chain(&p.data_pool) {
        let check = format!("pool {name} exists");
        if pool_entry(dump, name).is_some() {
            out.push(Finding::pass(check, ""));
        } else {
            out.push(Finding::fail(check, "no such pool", "create it, or fix the pool name"));
            return out;
        }
    }
    if let Some(dp) = &p.data_pool {
        if let Some(f) = ec_overwrites(dump, dp) {
            let bad = !f.ok;
            out.push(f);
            if bad {
                return out;
            }
        }
    }
    let ns = p.namespace.as_deref().unwrap_or("");
    let probe = format!("rbdx-doctor.{}.{}", std::process::id(), unique());
    let spec = match ImageSpec::new(&p.pool, &probe).and_then(|s| s.in_namespace(ns)) {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::fail(
                format!("pool {}", p.pool),
                e.to_string(),
                "fix the pool or namespace name",
            ));
            return out;
        }
    };
    let check = format!("{entity} can list pool {}", spec.pool);
    match ops::ioctx(cluster, &spec).and_then(|io| io.list_images()) {
        Ok(images) => out.push(Finding::pass(check, format!("{} image(s)", images.len()))),
        Err(e) => {
            out.push(Finding::fail(check, e.to_string(), caps(&wanted)));
            return out;
        }
    }
    if !write {
        return out;
    }
    let target = match &p.data_pool {
        Some(dp) => format!("pool {} with data pool {dp}", p.pool),
        None => format!("pool {}", p.pool),
    };
    let check = format!("{entity} can create, write, snapshot and remove an image in {target}");
    let r = probe_image(cluster, &spec, p.data_pool.as_deref());
    // Whatever happened, leave nothing behind.
    let _ = ops::remove(cluster, &spec, RemoveOptions::default());
    match r {
        Ok(()) => out.push(Finding::pass(check, "")),
        Err(e) => out.push(Finding::fail(check, e.to_string(), caps(&wanted))),
    }
    out
}

fn unique() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn probe_image(cluster: &Cluster, spec: &ImageSpec, data_pool: Option<&str>) -> crate::Result<()> {
    ops::create(cluster, spec, 4 << 20, &CreateOptions::with_data_pool(data_pool))?;
    let io = ops::ioctx(cluster, spec)?;
    let img = io.open(&spec.name)?;
    img.write_at(0, &[0x5a; 4096])?;
    img.flush()?;
    img.snap_create("rbdx-doctor")?;
    img.snap_remove("rbdx-doctor")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_client_needs_mimic() {
        assert!(compat_client(&json!({"require_min_compat_client": "mimic"})).ok);
        assert!(compat_client(&json!({"require_min_compat_client": "reef"})).ok);
        let f = compat_client(&json!({"require_min_compat_client": "luminous"}));
        assert!(!f.ok && f.fix.unwrap().contains("set-require-min-compat-client mimic"));
        assert!(!compat_client(&json!({})).ok, "unset is the oldest");
    }

    #[test]
    fn ec_pools_need_overwrites() {
        let dump = json!({"pools": [
            {"pool_name": "ec", "type": 3, "flags_names": "hashpspool,ec_overwrites"},
            {"pool_name": "ec-no", "type": 3, "flags_names": "hashpspool"},
            {"pool_name": "rep", "type": 1, "flags_names": "hashpspool"},
        ]});
        assert!(ec_overwrites(&dump, "ec").unwrap().ok);
        let f = ec_overwrites(&dump, "ec-no").unwrap();
        assert!(!f.ok && f.fix.unwrap() == "ceph osd pool set ec-no allow_ec_overwrites true");
        assert!(ec_overwrites(&dump, "rep").is_none(), "only EC pools");
        assert!(ec_overwrites(&dump, "missing").is_none());
    }

    #[test]
    fn secret_files_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key");
        std::fs::write(&p, "AQ==").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let f = secret_file("key file", &p);
        assert!(!f.ok && f.detail.contains("world-readable") && f.fix.unwrap().contains("chmod o-rwx"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(secret_file("key file", &p).ok);
        assert!(!secret_file("key file", &d.path().join("missing")).ok);
    }
}
