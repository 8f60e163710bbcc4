//! How every subcommand reaches the cluster: flags (or `RBDX_*` variables) for the
//! ceph.conf, client id, keyring or key file, monitors and timeouts. Keys are only
//! ever read from files.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rbdx_core::{Cluster, ConnectConfig, Result, Timeouts};

/// Connection flags shared by every subcommand that talks to Ceph.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// ceph.conf to read [default: Ceph's search path].
    #[arg(long, short = 'c', env = "RBDX_CONF", global = true, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// cephx client id, without `client.`.
    #[arg(long, env = "RBDX_ID", global = true, default_value = "admin")]
    pub id: String,
    /// Keyring file.
    #[arg(long, env = "RBDX_KEYRING", global = true, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// File holding only the client's base64 key.
    #[arg(long, env = "RBDX_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Monitor addresses, overriding the conf file.
    #[arg(long, env = "RBDX_MON_HOST", global = true)]
    pub mon_host: Option<String>,
    /// Seconds any one Ceph call may take (connect, mon command, OSD op).
    #[arg(long, env = "RBDX_TIMEOUT", global = true, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
}

impl ConnectArgs {
    /// The core connection settings these flags describe.
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig {
            conf_file: self.conf.clone(),
            client_id: Some(self.id.clone()),
            keyring: self.keyring.clone(),
            key_file: self.key_file.clone(),
            mon_host: self.mon_host.clone(),
            timeouts: Timeouts::uniform(Duration::from_secs(self.timeout)),
            auth_none: false,
        }
    }

    /// Connects.
    pub fn connect(&self) -> Result<Cluster> {
        Cluster::connect(&self.config())
    }
}
