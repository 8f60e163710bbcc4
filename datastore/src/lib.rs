//! rbdx-ds: the OpenNebula datastore (DS) actions, as drop-in replacements for
//! `remotes/datastore/ceph/*`: argv is the object id, stdin oned's base64
//! `DS_DRIVER_ACTION_DATA`, stdout what oned parses (`cp`/`clone`: `SOURCE
//! FORMAT`; `mkfs`: `SOURCE`; `stat`: MiB; `monitor`: `USED_MB=…` lines;
//! `export`: `IMPORT_INFO`), failures one line on stderr.

#![deny(missing_docs)]

pub mod actions;
pub mod context;
pub mod restricted;

use rbdx_one::Error;

/// Every action name, as installed under `remotes/datastore/<driver>/`.
pub const ACTIONS: [&str; 10] =
    ["clone", "cp", "export", "mkfs", "monitor", "rm", "snap_delete", "snap_flatten", "snap_revert", "stat"];

/// The actions that copy whole images: TRANSFER_TIMEOUT is their deadline,
/// ACTION_TIMEOUT every other's.
const TRANSFERS: [&str; 2] = ["cp", "export"];

/// Runs DS action `action` with oned's arguments and stdin; returns the exit code.
pub fn main(action: &str, args: &[String]) -> i32 {
    let result = context::DsCtx::load(args, TRANSFERS.contains(&action)).and_then(|ctx| {
        rbdx_one::deadline::arm(
            ctx.cfg.action_timeout,
            rbdx_one::deadline::Output::Stderr,
            rbdx_one::log::failure,
        );
        dispatch(action, &ctx)
    });
    rbdx_one::deadline::finished();
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            rbdx_one::log::fail(&e);
            1
        }
    }
}

fn dispatch(action: &str, ctx: &context::DsCtx) -> context::Result<String, Error> {
    use actions::*;
    match action {
        "cp" => cp::run(ctx),
        "mkfs" => mkfs::run(ctx),
        "rm" => rm::run(ctx),
        "clone" => clone::run(ctx),
        "stat" => stat::run(ctx),
        "snap_delete" => snap::delete(ctx),
        "snap_revert" => snap::revert(ctx),
        "snap_flatten" => snap::flatten(ctx),
        "export" => export::run(ctx),
        "monitor" => monitor::run(ctx),
        other => Err(Error::Invalid(format!("unknown datastore action {other:?}"))),
    }
}
