//! Pool capacity and usage from the monitors (`df`, `osd dump`), for replicated
//! and erasure-coded pools alike: two mon commands for any number of pools.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::rados::Cluster;

/// How a pool stores its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolKind {
    /// `size` copies of each object.
    Replicated {
        /// Number of copies.
        size: u64,
    },
    /// Erasure coded, `k` data and `m` coding chunks.
    Erasure {
        /// The erasure-code profile name.
        profile: String,
        /// Data chunks (0 if the profile could not be read).
        k: u64,
        /// Coding chunks (0 if the profile could not be read).
        m: u64,
    },
}

/// Usage and capacity of one pool, in bytes of user data unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// Pool name.
    pub name: String,
    /// Pool id.
    pub id: i64,
    /// Replicated or erasure coded.
    pub kind: PoolKind,
    /// User data stored.
    pub stored: u64,
    /// Raw bytes used on the OSDs (replicas and coding chunks included).
    pub used_raw: u64,
    /// Objects in the pool.
    pub objects: u64,
    /// How much more user data fits, as the monitors compute it (already
    /// accounts for replication or the EC overhead).
    pub max_avail: u64,
    /// The pool's byte quota, if set.
    pub quota_bytes: Option<u64>,
    /// The pool's object quota, if set.
    pub quota_objects: Option<u64>,
}

impl PoolUsage {
    /// How much more user data fits: `max_avail`, capped by what the quota leaves.
    pub fn available(&self) -> u64 {
        match self.quota_bytes {
            Some(q) => self.max_avail.min(q.saturating_sub(self.stored)),
            None => self.max_avail,
        }
    }

    /// Total capacity as an operator sees it: what is stored plus what still fits.
    pub fn capacity(&self) -> u64 {
        self.stored.saturating_add(self.available())
    }
}

fn bad(command: &str, detail: impl Into<String>) -> Error {
    Error::BadReply { command: command.into(), detail: detail.into() }
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Usage of each named pool, in the order given.
///
/// # Errors
/// `NotFound` (as [`Error::Invalid`]) for a pool the cluster does not have; Ceph
/// errors from the mon commands; [`Error::BadReply`] for replies we cannot read.
pub fn pool_usage(cluster: &Cluster, pools: &[&str]) -> Result<Vec<PoolUsage>> {
    let df = cluster.mon_command(&json!({"prefix": "df", "detail": "detail"}))?;
    let dump = cluster.mon_command(&json!({"prefix": "osd dump"}))?;
    let df_pools = df.get("pools").and_then(Value::as_array).ok_or_else(|| bad("df", "no pools"))?;
    let osd_pools = dump.get("pools").and_then(Value::as_array).ok_or_else(|| bad("osd dump", "no pools"))?;

    pools
        .iter()
        .map(|&name| {
            let d = df_pools
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| Error::NotFound(format!("pool {name} does not exist")))?;
            let o = osd_pools
                .iter()
                .find(|p| p.get("pool_name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| bad("osd dump", format!("pool {name} missing")))?;
            let stats = d.get("stats").ok_or_else(|| bad("df", format!("no stats for {name}")))?;
            let kind = match u64_of(o, "type") {
                3 => {
                    let profile =
                        o.get("erasure_code_profile").and_then(Value::as_str).unwrap_or("").to_string();
                    let (k, m) = ec_profile(cluster, &profile);
                    PoolKind::Erasure { profile, k, m }
                }
                _ => PoolKind::Replicated { size: u64_of(o, "size") },
            };
            let nonzero = |v: u64| (v > 0).then_some(v);
            Ok(PoolUsage {
                name: name.to_string(),
                id: d.get("id").and_then(Value::as_i64).unwrap_or(-1),
                kind,
                stored: u64_of(stats, "stored"),
                used_raw: u64_of(stats, "bytes_used"),
                objects: u64_of(stats, "objects"),
                max_avail: u64_of(stats, "max_avail"),
                quota_bytes: nonzero(u64_of(o, "quota_max_bytes")),
                quota_objects: nonzero(u64_of(o, "quota_max_objects")),
            })
        })
        .collect()
}

/// `k` and `m` of an erasure-code profile; zeros when it cannot be read (the
/// client may lack the caps; capacity does not depend on it).
fn ec_profile(cluster: &Cluster, profile: &str) -> (u64, u64) {
    let Ok(p) = cluster.mon_command(&json!({"prefix": "osd erasure-code-profile get", "name": profile}))
    else {
        return (0, 0);
    };
    let num = |key: &str| p.get(key).and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0);
    (num("k"), num("m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(stored: u64, max_avail: u64, quota: Option<u64>) -> PoolUsage {
        PoolUsage {
            name: "p".into(),
            id: 1,
            kind: PoolKind::Replicated { size: 3 },
            stored,
            used_raw: stored * 3,
            objects: 0,
            max_avail,
            quota_bytes: quota,
            quota_objects: None,
        }
    }

    #[test]
    fn quota_caps_what_is_available() {
        assert_eq!(usage(10, 100, None).available(), 100);
        assert_eq!(usage(10, 100, Some(50)).available(), 40);
        assert_eq!(usage(60, 100, Some(50)).available(), 0, "over quota leaves nothing");
        assert_eq!(usage(10, 100, Some(50)).capacity(), 50);
    }
}
