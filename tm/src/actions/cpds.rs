//! `cpds host:<sysdir>/disk.N NEW_SOURCE SNAP_ID VMID DSID` — disk save-as: the
//! new image is a CoW clone of a crash-consistent snapshot (SNAP_ID, or one taken
//! now when it is -1), O(1), with the EC_POOL_NAME of datastore DSID. Source and
//! copy stay deletable in either order.

use rbdx_one::args::{expect_args, parse_id};
use rbdx_one::job::Job;

use crate::context::{Ctx, DiskAction, Result, data_pool};

/// Usage as oned writes it.
pub const USAGE: &str = "cpds <host:path/disk.N> <new_source> <snap_id|-1> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 5, 5)?;
    let target: rbdx_core::ops::ImageSpec = a[1].parse()?;
    let snap = match a[2].as_str() {
        "-1" => None,
        s => Some(parse_id("snapshot id", s)?.to_string()),
    };
    let da = DiskAction::load(ctx, &a[0], &a[3], &a[4])?;
    let cfg = ctx.cfg.for_datastore(da.ds.template())?;
    let job = Job::SaveAs {
        ceph: da.ceph(ctx)?,
        head: da.image()?,
        snap,
        target: target.to_string(),
        data_pool: data_pool(&da.ds),
        max_depth: cfg.max_clone_depth,
        copy_max_mb: cfg.saveas_copy_max_mb,
    };
    let host = ctx.host_for(&da.hp, &da.vm, &da.ds)?;
    ctx.run(&job, &host, &da.ds)
}
