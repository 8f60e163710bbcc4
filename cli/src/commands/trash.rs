//! `rbdx trash …`.

use clap::Subcommand;
use rbdx_core::Result;
use rbdx_core::ops::{self, ImageSpec};

use crate::connection::ConnectArgs;

/// Trash subcommands.
#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// List trash entries of a pool.
    Ls {
        /// `pool` or `pool/namespace`.
        pool: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Restore a trash entry under a name.
    Restore {
        /// `pool` or `pool/namespace`.
        pool: String,
        /// The trash id.
        // Not `id`: that is the connection flags' `--id` (the client id).
        #[arg(value_name = "ID")]
        trash_id: String,
        /// The name to restore it as.
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove every expired entry that no clone depends on.
    Purge {
        /// `pool` or `pool/namespace`.
        pool: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

fn pool_spec(pool: &str) -> Result<ImageSpec> {
    let (p, ns) = pool.split_once('/').unwrap_or((pool, ""));
    // The image part is a placeholder: only the pool and namespace are used.
    ImageSpec::new(p, "-")?.in_namespace(ns)
}

/// Runs a trash subcommand.
pub fn run(cmd: TrashCommand) -> Result<()> {
    match cmd {
        TrashCommand::Ls { pool, conn } => {
            let c = conn.connect()?;
            let io = ops::ioctx(&c, &pool_spec(&pool)?)?;
            for e in io.trash_list()? {
                println!("{}  {}  {:?}  deferred until {}", e.id, e.name, e.source, e.deferment_end_time);
            }
        }
        TrashCommand::Restore { pool, trash_id, name, conn } => {
            let c = conn.connect()?;
            ops::validate_name("image", &name)?;
            ops::ioctx(&c, &pool_spec(&pool)?)?.trash_restore(&trash_id, &name)?;
            println!("restored {trash_id} as {pool}/{name}");
        }
        TrashCommand::Purge { pool, conn } => {
            let c = conn.connect()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let p = ops::trash_purge(&c, &pool_spec(&pool)?, now)?;
            println!("purged {} entries; kept {} that clones still use", p.removed.len(), p.kept.len());
        }
    }
    Ok(())
}
