//! rbdx-tm: the OpenNebula transfer manager actions, as drop-in replacements for
//! `remotes/tm/ceph/*`: the same argv, the same RBD names, exit 0 on success and
//! one line on stderr on failure (with `ERROR:`/`INFO:` log lines).

#![deny(missing_docs)]

pub mod actions;
pub mod context;

use context::Ctx;

/// Every action name, as installed under `remotes/tm/<driver>/`.
pub const ACTIONS: [&str; 15] = [
    "clone",
    "ln",
    "mkimage",
    "mkswap",
    "delete",
    "delete.ssh",
    "snap_create",
    "snap_create_live",
    "snap_delete",
    "snap_revert",
    "cpds",
    "resize",
    "mvds",
    "mv",
    "failmigrate",
];

/// Runs TM action `action` with oned's arguments; returns the exit code.
pub fn main(action: &str, args: &[String]) -> i32 {
    let result = Ctx::load().and_then(|ctx| dispatch(action, args, &ctx));
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
        "mv" => noop::mv(args),
        "failmigrate" | "delete.ssh" => noop::accept(args),
        other => Err(format!("unknown TM action {other:?}")),
    }
}
