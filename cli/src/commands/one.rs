//! `rbdx one …`: OpenNebula front-end commands (run as oneadmin, with its oned
//! credentials and the driver config).

use clap::Subcommand;

use crate::error::{Error, Result};

/// OpenNebula front-end commands.
#[derive(Debug, Subcommand)]
pub enum OneCommand {
    /// Flattens the images rbdx made as CoW clones of another disk's snapshot
    /// (save-as images, image clones) in every rbdx datastore, so that the stock
    /// ceph drivers, which delete a snapshot's children with it, can be put back
    /// without losing them. Exit 0 when nothing depends on another disk any more.
    Detach {
        /// Only this datastore.
        #[arg(long, value_name = "ID")]
        datastore: Option<u32>,
        /// Only list them: exit 1 if there are any (nothing is changed).
        #[arg(long)]
        check: bool,
    },
    /// Times the smallest round trip an action makes: one oned call, the ssh hop
    /// to the host (a bridge of the datastore, or --host), a Ceph connection with
    /// the datastore's credentials and its pool opened. Nothing is changed.
    Ping {
        /// The datastore.
        #[arg(long, value_name = "ID")]
        datastore: u32,
        /// Run it on this host (default: where the datastore's actions run).
        #[arg(long)]
        host: Option<String>,
    },
}

/// Runs the command; returns whether all is well (nothing depends, or all was
/// detached).
///
/// # Errors
/// oned, the driver config, or a datastore's job failed.
pub fn run(cmd: OneCommand) -> Result<bool> {
    let cfg = rbdx_one::config::Config::load().map_err(|e| Error::Usage(e.to_string()))?;
    let (datastore, check) = match cmd {
        OneCommand::Detach { datastore, check } => (datastore, check),
        OneCommand::Ping { datastore, host } => {
            let p = rbdx_one::ping::run(&cfg, datastore, host.as_deref(), &mut |m| eprintln!("{m}"))
                .map_err(|e| Error::Usage(e.to_string()))?;
            let from = p.host.as_deref().unwrap_or("this host");
            println!(
                "datastore {datastore}: pool {} reached from {from} as client.{} in {} ms",
                p.pool,
                p.user,
                p.took.as_millis()
            );
            return Ok(true);
        }
    };
    let found = rbdx_one::detach::run(&cfg, datastore, check, &mut |m| eprintln!("{m}"))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut dependent = 0;
    for f in &found {
        for img in &f.images {
            let what = if check { "depends on another disk's snapshot" } else { "flattened" };
            println!("datastore {}: {}/{img}: {what}", f.datastore, f.pool);
        }
        dependent += f.images.len();
        if f.images.is_empty() {
            println!("datastore {}: {}: no image depends on another disk", f.datastore, f.pool);
        }
    }
    if check && dependent > 0 {
        println!(
            "{dependent} image(s) would be deleted with their source by the stock drivers: run `rbdx one detach` first"
        );
    }
    Ok(!check || dependent == 0)
}
