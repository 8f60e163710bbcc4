//! `snap_delete host:<sysdir>/disk.N SNAP_ID VMID DSID` — any snapshot, in any
//! order, whatever reverts happened.

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, disk, disk_image};

/// Usage as oned writes it.
pub const USAGE: &str = "snap_delete <host:path/disk.N> <snap_id> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, 4).map_err(|e| e.to_string())?;
    let hp = HostPath::parse(&a[0]).map_err(|e| e.to_string())?;
    let disk_id = hp.disk_id().map_err(|e| e.to_string())?;
    let snap = parse_id("snapshot id", &a[1]).map_err(|e| e.to_string())?;
    let vm_id = parse_id("VM id", &a[2]).map_err(|e| e.to_string())?;
    let ds_id = parse_id("datastore id", &a[3]).map_err(|e| e.to_string())?;
    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    let ds = ctx.datastore(ds_id)?;
    let job = Job::SnapDelete {
        ceph: ctx.ceph(Some(d), &ds),
        head: disk_image(d, vm_id, disk_id)?,
        snap: snap.to_string(),
    };
    ctx.run(&job, &hp.host, &ds)
}
