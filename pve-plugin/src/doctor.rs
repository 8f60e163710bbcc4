//! `rbdx doctor` on a Proxmox VE node: every `rbdx` storage of storage.cfg,
//! reached the way the plugin reaches it (the same ceph.conf, keyring and
//! monitors), with its pool and data pool checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rbdx_core::doctor::{self, Finding, PoolUse};
use rbdx_core::{ConnectConfig, Timeouts};

/// One storage of storage.cfg: its type, id and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The type (`rbdx`, `rbd`, `dir`, …).
    pub kind: String,
    /// The storage id.
    pub id: String,
    /// `key value` properties, in order.
    pub props: Vec<(String, String)>,
}

impl Storage {
    /// A property's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses PVE's section config: `type: id` headers, then indented `key value`
/// lines; `#` comments and blank lines between.
pub fn parse_storage_cfg(text: &str) -> Vec<Storage> {
    let mut out: Vec<Storage> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some((kind, id)) = trimmed.split_once(':') {
                out.push(Storage { kind: kind.trim().into(), id: id.trim().into(), props: Vec::new() });
            }
            continue;
        }
        if let Some(s) = out.last_mut() {
            let (k, v) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
            s.props.push((k.to_string(), v.trim().to_string()));
        }
    }
    out
}

/// How the plugin reaches a storage's cluster (as `ceph_options` in
/// RBDXPlugin.pm): a `monhost` storage reads `priv/ceph/<id>.conf` when it
/// exists, any other the cluster's `ceph.conf`; the keyring is
/// `priv/ceph/<id>.keyring` when it exists, else no cephx.
pub fn connect_config(s: &Storage, pve_etc: &Path, timeout: Duration) -> ConnectConfig {
    let priv_ceph = pve_etc.join("priv/ceph");
    let keyring = priv_ceph.join(format!("{}.keyring", s.id));
    let keyring_exists = keyring.exists();
    let conf: Option<PathBuf> = if s.get("monhost").is_some() {
        Some(priv_ceph.join(format!("{}.conf", s.id))).filter(|c| c.exists())
    } else {
        Some(pve_etc.join("ceph.conf"))
    };
    ConnectConfig {
        conf_file: conf,
        client_id: Some(s.get("username").unwrap_or("admin").to_string()),
        keyring: keyring_exists.then_some(keyring),
        key_file: None,
        mon_host: s
            .get("monhost")
            .map(|m| m.split([' ', ',', ';']).filter(|x| !x.is_empty()).collect::<Vec<_>>().join(",")),
        timeouts: Timeouts::uniform(timeout),
        auth_none: !keyring_exists,
    }
}

/// Every check of every `rbdx` storage in `storage_cfg` (under `pve_etc`).
pub fn node(storage_cfg: &Path, pve_etc: &Path) -> Vec<Finding> {
    let text = match std::fs::read_to_string(storage_cfg) {
        Ok(t) => t,
        Err(e) => {
            return vec![Finding::fail(
                format!("read {}", storage_cfg.display()),
                e.to_string(),
                "run on a Proxmox VE node, as root",
            )];
        }
    };
    let storages: Vec<Storage> = parse_storage_cfg(&text).into_iter().filter(|s| s.kind == "rbdx").collect();
    if storages.is_empty() {
        return vec![Finding::fail(
            "some storage is of type rbdx",
            format!("{} has none", storage_cfg.display()),
            "pvesm add rbdx <id> --pool <pool> [--data-pool <ec pool>] (docs/proxmox.md)",
        )];
    }
    let mut out = Vec::new();
    for s in &storages {
        let timeout = Duration::from_secs(s.get("rbdx-timeout").and_then(|t| t.parse().ok()).unwrap_or(10));
        let cfg = connect_config(s, pve_etc, timeout);
        let pool = PoolUse {
            pool: s.get("pool").unwrap_or("rbd").to_string(),
            namespace: s.get("namespace").map(str::to_string),
            data_pool: s.get("data-pool").map(str::to_string),
        };
        let label = format!("storage {}", s.id);
        out.extend(
            doctor::cluster(&cfg, &[pool], Duration::from_secs(10), true)
                .into_iter()
                .map(|f| f.under(&label)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_cfg_sections() {
        let cfg = "dir: local\n\tpath /var/lib/vz\n\tcontent iso\n\n# a comment\nrbdx: ceph-ec\n        pool rbd\n        data-pool rbd-ec\n        monhost 10.0.0.1 10.0.0.2\n        username admin\n";
        let s = parse_storage_cfg(cfg);
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].kind.as_str(), s[1].id.as_str()), ("rbdx", "ceph-ec"));
        assert_eq!(s[1].get("data-pool"), Some("rbd-ec"));
        // An external cluster's own conf is read when it exists, as the plugin does.
        let etc = std::env::temp_dir().join(format!("rbdx-pve-doctor-{}", std::process::id()));
        std::fs::create_dir_all(etc.join("priv/ceph")).unwrap();
        let c = connect_config(&s[1], &etc, Duration::from_secs(5));
        assert_eq!(c.conf_file, None, "no ceph-ec.conf yet");
        std::fs::write(etc.join("priv/ceph/ceph-ec.conf"), "[global]\n").unwrap();
        let c = connect_config(&s[1], &etc, Duration::from_secs(5));
        std::fs::remove_dir_all(&etc).unwrap();
        assert_eq!(c.conf_file.unwrap(), etc.join("priv/ceph/ceph-ec.conf"));
        assert_eq!(c.mon_host.as_deref(), Some("10.0.0.1,10.0.0.2"));
        let local = Storage { kind: "rbdx".into(), id: "hc".into(), props: vec![] };
        let c = connect_config(&local, Path::new("/etc/pve"), Duration::from_secs(5));
        assert_eq!(c.conf_file.unwrap(), Path::new("/etc/pve/ceph.conf"));
        assert_eq!(c.client_id.as_deref(), Some("admin"));
    }
}
