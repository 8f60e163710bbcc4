//! How a job reaches Ceph on the host that runs it: the paths of that host's
//! ceph.conf and key file and the cephx user, never a key.

use std::time::Duration;

use rbdx_core::{Cluster, ConnectConfig, Timeouts};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};
use crate::oned::{Attrs, Datastore};

/// How to reach Ceph on the host that runs the job (the DISK's or datastore's
/// CEPH_CONF, CEPH_USER, CEPH_KEY).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CephAccess {
    /// ceph.conf path on that host.
    pub conf: Option<String>,
    /// cephx user (without `client.`).
    pub user: Option<String>,
    /// Path of a key file on that host.
    pub key_file: Option<String>,
    /// Seconds one Ceph call may take.
    pub timeout_secs: u64,
}

impl CephAccess {
    /// CEPH_CONF, CEPH_USER and CEPH_KEY of a datastore; a VM's DISK supplies only
    /// what the datastore does not set (the datastore is the operator's, the DISK
    /// a copy oned made that a user's template may have shaped), checked as the
    /// datastore's are.
    ///
    /// # Errors
    /// One line naming a malformed DISK attribute.
    pub fn of(ds: &Datastore, disk: Option<Attrs<'_>>, timeout: Duration) -> Result<Self> {
        use crate::datastore::{ceph_user, path};
        let s = ds.settings();
        let from_disk = |k: &str, check: fn(&str, &str) -> Result<String, crate::Error>| {
            disk.and_then(|d| d.get(k)).map(|v| check(&format!("DISK {k}"), v)).transpose()
        };
        Ok(Self {
            conf: match &s.ceph_conf {
                Some(c) => Some(c.clone()),
                None => from_disk("CEPH_CONF", path)?,
            },
            user: match &s.ceph_user {
                Some(u) => Some(u.clone()),
                None => from_disk("CEPH_USER", ceph_user)?,
            },
            key_file: match &s.ceph_key {
                Some(k) => Some(k.clone()),
                None => from_disk("CEPH_KEY", path)?,
            },
            timeout_secs: timeout.as_secs(),
        })
    }

    /// The connection settings.
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig {
            conf_file: self.conf.as_ref().map(Into::into),
            client_id: self.user.clone(),
            keyring: None,
            key_file: self.key_file.as_ref().map(Into::into),
            mon_host: None,
            timeouts: Timeouts::uniform(Duration::from_secs(self.timeout_secs.max(1))),
            auth_none: false,
        }
    }

    /// Connects.
    ///
    /// # Errors
    /// The connection's failure.
    pub fn connect(&self) -> Result<Cluster> {
        Cluster::connect(&self.config()).context("cannot connect to Ceph")
    }
}
