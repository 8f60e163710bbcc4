//! `rbdx snap …`.

use clap::Subcommand;
use rbdx_core::Result;
use rbdx_core::ops::{self, ImageSpec};

use super::spec_arg;
use crate::connection::ConnectArgs;
use crate::size::human;

/// Snapshot subcommands; each takes `pool/image@snap` (or `pool/image` for `ls`).
#[derive(Debug, Subcommand)]
pub enum SnapCommand {
    /// Take a snapshot.
    Create {
        /// `pool/image@snap`.
        #[arg(value_parser = spec_arg)]
        snap: ImageSpec,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List an image's snapshots.
    Ls {
        /// `pool/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Roll the image back to a snapshot.
    Rollback {
        /// `pool/image@snap`.
        #[arg(value_parser = spec_arg)]
        snap: ImageSpec,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove a snapshot (unprotecting it first).
    Rm {
        /// `pool/image@snap`.
        #[arg(value_parser = spec_arg)]
        snap: ImageSpec,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// Runs a snapshot subcommand.
pub fn run(cmd: SnapCommand) -> Result<()> {
    match cmd {
        SnapCommand::Create { snap, conn } => {
            let c = conn.connect()?;
            let io = ops::ioctx(&c, &snap)?;
            io.open(&snap.name)?.snap_create(snap.require_snap()?)?;
            println!("created snapshot {snap}");
        }
        SnapCommand::Ls { image, conn } => {
            let c = conn.connect()?;
            let io = ops::ioctx(&c, &image)?;
            let img = io.open_read_only(&image.name, None)?;
            for s in img.snapshots()? {
                println!("{:>6}  {:<24} {}", s.id, s.name, human(s.size));
            }
        }
        SnapCommand::Rollback { snap, conn } => {
            let c = conn.connect()?;
            let io = ops::ioctx(&c, &snap)?;
            io.open(&snap.name)?.snap_rollback(snap.require_snap()?)?;
            println!("rolled {} back to {snap}", snap.head());
        }
        SnapCommand::Rm { snap, conn } => {
            let c = conn.connect()?;
            let io = ops::ioctx(&c, &snap)?;
            io.open(&snap.name)?.snap_remove(snap.require_snap()?)?;
            println!("removed snapshot {snap}");
        }
    }
    Ok(())
}
