//! `snap_create host:<sysdir>/disk.N SNAP_ID VMID DSID` (and `snap_create_live`,
//! which freezes the guest's file systems around it, thaws on every path, and
//! reports a failed freeze).

use rbdx_one::args::{expect_args, parse_id};
use rbdx_one::job::Job;

use crate::context::{Ctx, DiskAction, Result};

/// Usage as oned writes it.
pub const USAGE: &str = "snap_create <host:path/disk.N> <snap_id> <vmid> <dsid>";

/// Runs the action; `live` freezes the guest.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx, live: bool) -> Result {
    let a = expect_args(args, USAGE, 4, 4)?;
    let snap = parse_id("snapshot id", &a[1])?;
    let da = DiskAction::load(ctx, &a[0], &a[2], &a[3])?;
    da.require_rbd()?;
    let freeze = live.then(|| da.freeze());
    let job = Job::SnapCreate { ceph: da.ceph(ctx)?, head: da.image()?, snap: snap.to_string(), freeze };
    ctx.run(&job, &da.hp.host, &da.ds)
}
