//! `cpds host:<sysdir>/disk.N NEW_SOURCE SNAP_ID VMID DSID` — disk save-as: the
//! new image is a CoW clone of a crash-consistent snapshot (SNAP_ID, or one taken
//! now when it is -1), O(1), with the EC_POOL_NAME of datastore DSID. Source and
//! copy stay deletable in either order.

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, data_pool, disk, disk_image};

/// Usage as oned writes it.
pub const USAGE: &str = "cpds <host:path/disk.N> <new_source> <snap_id|-1> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 5, 5).map_err(|e| e.to_string())?;
    let hp = HostPath::parse(&a[0]).map_err(|e| e.to_string())?;
    let disk_id = hp.disk_id().map_err(|e| e.to_string())?;
    let target: rbdx_core::ops::ImageSpec = a[1].parse().map_err(|e: rbdx_core::Error| e.to_string())?;
    let snap = match a[2].as_str() {
        "-1" => None,
        s => Some(parse_id("snapshot id", s).map_err(|e| e.to_string())?.to_string()),
    };
    let vm_id = parse_id("VM id", &a[3]).map_err(|e| e.to_string())?;
    let ds_id = parse_id("datastore id", &a[4]).map_err(|e| e.to_string())?;
    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    let ds = ctx.datastore(ds_id)?;
    let job = Job::SaveAs {
        ceph: ctx.ceph(Some(d), &ds),
        head: disk_image(d, vm_id, disk_id)?,
        snap,
        target: target.to_string(),
        data_pool: data_pool(&ds),
        max_depth: ctx.cfg.for_datastore(ds.template())?.max_clone_depth,
    };
    let host = ctx.host_for(&hp, &vm, &ds)?;
    ctx.run(&job, &host, &ds)
}
