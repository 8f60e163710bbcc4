//! `rbdx doctor`: checks what the drivers need where it runs, one line each,
//! with the fix for whatever fails. Exit 0 only when every check passes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rbdx_core::doctor::{self, Finding, PoolUse};

use crate::connection::ConnectArgs;
use crate::error::{Error, Result};

/// What to check; with none of `--pool`, `--one`, `--pve`, whatever this machine
/// is: a Proxmox VE node (storage.cfg exists), an OpenNebula front-end (oned
/// credentials exist).
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check reaching this pool with the connection flags (caps: list, create,
    /// write, snapshot, remove a small image).
    #[arg(long)]
    pub pool: Option<String>,
    /// The EC data pool images in `--pool` get.
    #[arg(long, requires = "pool")]
    pub data_pool: Option<String>,
    /// The rados namespace in `--pool`.
    #[arg(long, requires = "pool")]
    pub namespace: Option<String>,
    /// Check this OpenNebula front-end: oned, every rbdx datastore and every host.
    #[arg(long)]
    pub one: bool,
    /// Check every rbdx storage of this Proxmox VE node's storage.cfg.
    #[arg(long)]
    pub pve: bool,
    /// The storage.cfg to read with `--pve`.
    #[arg(long, default_value = "/etc/pve/storage.cfg", value_name = "FILE")]
    pub storage_cfg: PathBuf,
    /// JSON output: an array of {check, ok, detail, fix}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// Runs the checks, prints them; returns whether all passed.
pub fn run(a: &DoctorArgs) -> Result<bool> {
    let auto = a.pool.is_none() && !a.one && !a.pve;
    let pve = a.pve || (auto && a.storage_cfg.exists());
    let one = a.one || (auto && !pve && rbdx_one::doctor::has_credentials());
    if a.pool.is_none() && !pve && !one {
        return Err(Error::Usage("nothing to check here: give --pool, --one or --pve".into()));
    }
    let mut findings: Vec<Finding> = Vec::new();
    if let Some(pool) = &a.pool {
        findings.push(rbdx_one::doctor::qemu_img());
        let p =
            PoolUse { pool: pool.clone(), namespace: a.namespace.clone(), data_pool: a.data_pool.clone() };
        findings.extend(doctor::cluster(
            &a.conn.config(),
            &[p],
            Duration::from_secs(a.conn.timeout.min(10)),
            true,
        ));
    }
    if one {
        findings.extend(rbdx_one::doctor::front_end());
    }
    if pve {
        let etc = a.storage_cfg.parent().map_or_else(|| PathBuf::from("/etc/pve"), PathBuf::from);
        findings.extend(rbdx_pve::doctor::node(&a.storage_cfg, &etc));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_default());
    } else {
        for f in &findings {
            let line = match (&f.ok, f.detail.is_empty(), &f.fix) {
                (true, true, _) => f.check.clone(),
                (true, false, _) => format!("{} ({})", f.check, f.detail),
                (false, _, Some(fix)) => format!("{}: {}; fix: {fix}", f.check, f.detail),
                (false, _, None) => format!("{}: {}", f.check, f.detail),
            };
            let mark = if f.ok { "ok  " } else { "FAIL" };
            println!("{mark}  {}", rbdx_one::log::one_line(&line));
        }
        let failed = findings.iter().filter(|f| !f.ok).count();
        println!("{} check(s), {failed} failed", findings.len());
    }
    Ok(findings.iter().all(|f| f.ok))
}
