//! `rbdx pool …`.

use clap::Subcommand;
use rbdx_core::Result;
use rbdx_core::ops::{self, PoolKind};
use serde_json::json;

use super::print_json;
use crate::connection::ConnectArgs;
use crate::size::human;

/// Pool subcommands.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Capacity and usage of pools (EC-aware, quotas honoured).
    Df {
        /// Pool names.
        #[arg(required = true)]
        pools: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// Runs a pool subcommand.
pub fn run(cmd: PoolCommand) -> Result<()> {
    let PoolCommand::Df { pools, json, conn } = cmd;
    let c = conn.connect()?;
    let names: Vec<&str> = pools.iter().map(String::as_str).collect();
    let usage = ops::pool_usage(&c, &names)?;
    if json {
        print_json(&json!(usage
            .iter()
            .map(|u| json!({
                "name": u.name,
                "kind": match &u.kind { PoolKind::Replicated { .. } => "replicated", PoolKind::Erasure { .. } => "erasure" },
                "stored": u.stored,
                "used_raw": u.used_raw,
                "objects": u.objects,
                "max_avail": u.max_avail,
                "available": u.available(),
                "quota_bytes": u.quota_bytes,
            }))
            .collect::<Vec<_>>()));
        return Ok(());
    }
    println!("{:<20} {:<16} {:>12} {:>12} {:>12}", "POOL", "KIND", "STORED", "AVAILABLE", "RAW USED");
    for u in usage {
        let kind = match &u.kind {
            PoolKind::Replicated { size } => format!("replicated x{size}"),
            PoolKind::Erasure { k, m, .. } => format!("erasure k{k}+m{m}"),
        };
        println!(
            "{:<20} {:<16} {:>12} {:>12} {:>12}",
            u.name,
            kind,
            human(u.stored),
            human(u.available()),
            human(u.used_raw)
        );
    }
    Ok(())
}
