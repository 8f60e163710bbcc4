//! rbdx-tm: the OpenNebula transfer manager actions, as drop-in replacements for
//! `remotes/tm/ceph/*`: the same argv, the same RBD names, exit 0 on success and
//! one line on stderr on failure (with `ERROR:`/`INFO:` log lines).

#![deny(missing_docs)]

pub mod actions;
pub mod context;

use context::Ctx;
use rbdx_one::Error;

/// Every action name, as installed under `remotes/tm/<driver>/`.
pub const ACTIONS: [&str; 29] = [
    "clone",
    "clone.ssh",
    "context",
    "cpds",
    "cpds.ssh",
    "delete",
    "delete.ssh",
    "failmigrate",
    "ln",
    "ln.ssh",
    "mkimage",
    "mkswap",
    "monitor",
    "mv",
    "mvds",
    "mvds.ssh",
    "postbackup",
    "postbackup_live",
    "postmigrate",
    "prebackup",
    "prebackup_live",
    "premigrate",
    "resize",
    "resize.ssh",
    "restore",
    "snap_create",
    "snap_create_live",
    "snap_delete",
    "snap_revert",
];

/// The actions that copy whole images or directories: TRANSFER_TIMEOUT is their
/// deadline, ACTION_TIMEOUT every other's.
const TRANSFERS: [&str; 11] = [
    "clone.ssh",
    "ln.ssh",
    "mvds.ssh",
    "cpds.ssh",
    "mv",
    "premigrate",
    "postmigrate",
    "context",
    "prebackup",
    "prebackup_live",
    "restore",
];

/// Runs TM action `action` with oned's arguments; returns the exit code.
pub fn main(action: &str, args: &[String]) -> i32 {
    let result = Ctx::load(TRANSFERS.contains(&action)).and_then(|ctx| {
        rbdx_one::deadline::arm(
            ctx.cfg.action_timeout,
            rbdx_one::deadline::Output::Stderr,
            rbdx_one::log::failure,
        );
        dispatch(action, args, &ctx)
    });
    rbdx_one::deadline::finished();
    match result {
        Ok(()) => 0,
        Err(e) => {
            rbdx_one::log::fail(&e);
            1
        }
    }
}

fn dispatch(action: &str, args: &[String], ctx: &Ctx) -> context::Result {
    use actions::*;
    match action {
        "clone" => clone::run(args, ctx),
        "ln" => ln::run(args, ctx),
        "mkimage" => mkimage::run(args, ctx),
        "mkswap" => mkswap::run(args, ctx),
        "delete" => delete::run(args, ctx),
        "snap_create" => snap_create::run(args, ctx, false),
        "snap_create_live" => snap_create::run(args, ctx, true),
        "snap_delete" => snap_delete::run(args, ctx),
        "snap_revert" => snap_revert::run(args, ctx),
        "cpds" => cpds::run(args, ctx),
        "resize" => resize::run(args, ctx),
        "mvds" => noop::mvds(args),
        "mv" => migrate::mv(args, ctx),
        "prebackup" => backup::pre(args, ctx, false),
        "prebackup_live" => backup::pre(args, ctx, true),
        "postbackup" | "postbackup_live" => backup::post(args, ctx),
        "restore" => restore::run(args, ctx),
        "premigrate" => migrate::premigrate(args, ctx, false),
        "postmigrate" => migrate::premigrate(args, ctx, true),
        "clone.ssh" => ssh_variants::clone(args, ctx),
        "ln.ssh" => ssh_variants::ln(args, ctx),
        "mvds.ssh" => ssh_variants::mvds(args, ctx),
        "cpds.ssh" => ssh_variants::cpds(args, ctx),
        "resize.ssh" => ssh_variants::resize(args, ctx),
        "context" => actions::context::run(args, ctx),
        "monitor" => {
            let out = rbdx_one::monitor::action(args, std::io::stdin().lock(), &ctx.cfg)?;
            print!("{out}");
            Ok(())
        }
        "failmigrate" => noop::failmigrate(args),
        "delete.ssh" => noop::delete_ssh(args),
        other => Err(Error::Invalid(format!("unknown TM action {other:?}"))),
    }
}
