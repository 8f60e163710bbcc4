//! `snap_revert host:<sysdir>/disk.N SNAP_ID VMID DSID` — O(1) revert (or a
//! rollback in place, when cheaper: ROLLBACK_MAX_MB); a new head gets the
//! EC_POOL_NAME of the disk's datastore (DSID).

use rbdx_one::args::{expect_args, parse_id};
use rbdx_one::job::Job;

use crate::context::{Ctx, DiskAction, Result, data_pool};

/// Usage as oned writes it.
pub const USAGE: &str = "snap_revert <host:path/disk.N> <snap_id> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, 4)?;
    let snap = parse_id("snapshot id", &a[1])?;
    let da = DiskAction::load(ctx, &a[0], &a[2], &a[3])?;
    da.require_rbd()?;
    // The datastore's settings, read once for both bounds.
    let cfg = ctx.cfg.for_datastore(da.ds.template())?;
    let job = Job::SnapRevert {
        ceph: da.ceph(ctx)?,
        head: da.image()?,
        snap: snap.to_string(),
        data_pool: data_pool(&da.ds),
        max_depth: cfg.max_clone_depth,
        rollback_max_mb: cfg.rollback_max_mb,
    };
    ctx.run(&job, &da.hp.host, &da.ds)
}
