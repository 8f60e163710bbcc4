//! `ln fe:SOURCE host:<sysdir>/disk.N VMID DSID` — a persistent image used in
//! place. Its base snapshot (from a non-persistent past) is dropped so that a
//! later non-persistent use never clones stale data; clones that still use it
//! keep it (format 2 moves it to the trash namespace instead of failing).

use rbdx_one::args::expect_args;
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, source_action};

/// Usage as oned writes it.
pub const USAGE: &str = "ln <fe:SOURCE> <host:path/disk.N> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, 4)?;
    let (source, da) = source_action(ctx, a)?;
    let job = Job::LinkDisk { ceph: da.ceph(ctx)?, source: source.to_string() };
    ctx.run(&job, &da.hp.host, &da.ds)
}
