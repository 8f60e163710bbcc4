//! `clone fe:SOURCE host:<sysdir>/disk.N VMID DSID` — a non-persistent disk as a
//! CoW clone of the image's base snapshot, in the image's pool, with the image
//! datastore's EC_POOL_NAME (the datastore the clone lives in and is counted
//! against; CLONE_TARGET=SELF).

use rbdx_one::args::{expect_args, parse_size_mb};
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, data_pool, source_action};

/// Usage as oned writes it.
pub const USAGE: &str = "clone <fe:SOURCE> <host:path/disk.N> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, 4)?;
    let (source, da) = source_action(ctx, a)?;
    let d = da.disk()?;
    let size = d.get("SIZE").map(parse_size_mb).transpose()?;
    let original = d.get("ORIGINAL_SIZE").map(parse_size_mb).transpose()?;
    let job = Job::CloneDisk {
        ceph: da.ceph(ctx)?,
        target: format!("{source}-{}-{}", da.vm_id, da.disk_id),
        source: source.to_string(),
        data_pool: data_pool(&da.ds),
        size_mb: size.filter(|s| original.is_none_or(|o| s > &o)),
        max_depth: da.max_depth(ctx)?,
    };
    ctx.run(&job, &da.hp.host, &da.ds)
}
