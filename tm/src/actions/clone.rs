//! `clone fe:SOURCE host:<sysdir>/disk.N VMID DSID` — a non-persistent disk as a
//! CoW clone of the image's base snapshot, in the image's pool, with the image
//! datastore's EC_POOL_NAME (the datastore the clone lives in and is counted
//! against; CLONE_TARGET=SELF).

use rbdx_one::args::{HostPath, expect_args, parse_id, parse_size_mb};
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, data_pool, disk};

/// Usage as oned writes it.
pub const USAGE: &str = "clone <fe:SOURCE> <host:path/disk.N> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, 4).map_err(|e| e.to_string())?;
    let src = HostPath::parse(&a[0]).map_err(|e| e.to_string())?;
    let dst = HostPath::parse(&a[1]).map_err(|e| e.to_string())?;
    let disk_id = dst.disk_id().map_err(|e| e.to_string())?;
    let vm_id = parse_id("VM id", &a[2]).map_err(|e| e.to_string())?;
    let ds_id = parse_id("datastore id", &a[3]).map_err(|e| e.to_string())?;
    let source: rbdx_core::ops::ImageSpec = src.path.parse().map_err(|e: rbdx_core::Error| e.to_string())?;

    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    let ds = ctx.datastore(ds_id)?;
    let size = d.get("SIZE").map(parse_size_mb).transpose().map_err(|e| e.to_string())?;
    let original = d.get("ORIGINAL_SIZE").map(parse_size_mb).transpose().map_err(|e| e.to_string())?;
    let target = format!("{source}-{vm_id}-{disk_id}");
    let job = Job::CloneDisk {
        ceph: ctx.ceph(Some(d), &ds),
        source: source.to_string(),
        target,
        data_pool: data_pool(&ds),
        size_mb: size.filter(|s| original.is_none_or(|o| s > &o)),
        max_depth: ctx.cfg.for_datastore(ds.template())?.max_clone_depth,
    };
    ctx.run(&job, &dst.host, &ds)
}
