//! `snap_create host:<sysdir>/disk.N SNAP_ID VMID DSID` (and `snap_create_live`,
//! which freezes the guest's file systems around it, thaws on every path, and
//! reports a failed freeze).

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::job::{Freeze, Job};

use crate::context::{Ctx, Result, disk, disk_image};

/// Usage as oned writes it.
pub const USAGE: &str = "snap_create <host:path/disk.N> <snap_id> <vmid> <dsid>";

/// Runs the action; `live` freezes the guest.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx, live: bool) -> Result {
    let a = expect_args(args, USAGE, 4, 4).map_err(|e| e.to_string())?;
    let hp = HostPath::parse(&a[0]).map_err(|e| e.to_string())?;
    let disk_id = hp.disk_id().map_err(|e| e.to_string())?;
    let snap = parse_id("snapshot id", &a[1]).map_err(|e| e.to_string())?;
    let vm_id = parse_id("VM id", &a[2]).map_err(|e| e.to_string())?;
    let ds_id = parse_id("datastore id", &a[3]).map_err(|e| e.to_string())?;
    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    let ds = ctx.datastore(ds_id)?;
    let freeze = live.then(|| Freeze {
        domain: vm.deploy_id().map_or_else(|| format!("one-{vm_id}"), str::to_string),
        virsh: ctx.cfg.virsh.clone(),
        uri: ctx.cfg.libvirt_uri.clone(),
        timeout_secs: ctx.cfg.freeze_timeout.as_secs(),
    });
    let job = Job::SnapCreate {
        ceph: ctx.ceph(Some(d), &ds),
        head: disk_image(d, vm_id, disk_id)?,
        snap: snap.to_string(),
        freeze,
    };
    ctx.run(&job, &hp.host, &ds)
}
