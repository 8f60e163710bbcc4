//! `ln fe:SOURCE host:<sysdir>/disk.N VMID DSID` — a persistent image used in
//! place. Its base snapshot (from a non-persistent past) is dropped so that a
//! later non-persistent use never clones stale data; clones that still use it
//! keep it (format 2 moves it to the trash namespace instead of failing).

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, disk};

/// Usage as oned writes it.
pub const USAGE: &str = "ln <fe:SOURCE> <host:path/disk.N> <vmid> <dsid>";

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
    let job = Job::LinkDisk { ceph: ctx.ceph(Some(d), &ds), source: source.to_string() };
    ctx.run(&job, &dst.host, &ds)
}
