//! `delete host:<path> VMID DSID` — for a disk: remove the VM's own image with
//! every snapshot and carrier it owns (a persistent image is left alone), then
//! drop the image's base snapshot if no clone uses it; for the VM directory:
//! remove the suspend checkpoint, then the directory on its host (only ever
//! `<BASE_PATH>/<vmid>` of the system datastore). Deleting what is already gone
//! succeeds.
//! CEPH_TRASH moves the images to the RBD trash (for TRASH_DELAY seconds).

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::datastore::yes_no;
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, disk, disk_image, is_persistent};

/// Usage as oned writes it.
pub const USAGE: &str = "delete <host:path> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 3, 3)?;
    let hp = HostPath::parse(&a[0])?;
    let vm_id = parse_id("VM id", &a[1])?;
    let ds_id = parse_id("datastore id", &a[2])?;
    let ds = ctx.datastore(ds_id)?;
    let cfg = ctx.cfg.for_datastore(ds.template())?;

    if !hp.is_disk() {
        // The VM directory: its suspend checkpoint (in the system datastore's
        // pool), then the directory itself on its host, as upstream.
        let dir = ds.confine_vm_dir(&hp.path, vm_id)?;
        let s = ds.settings();
        let job = Job::RemoveImage {
            ceph: ctx.ceph(None, &ds)?,
            image: rbdx_one::naming::checkpoint(&s.pool, vm_id),
            trash_delay: s.trash.then_some(cfg.trash_delay),
        };
        let vm = ctx.vm(vm_id)?;
        let host = ctx.host_for(&hp, &vm, &ds)?;
        ctx.run(&job, &host, &ds)?;
        return ctx.run_on_host(&Job::RemoveDir { path: dir }, &hp.host, &ds);
    }
    let disk_id = hp.disk_id()?;
    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    if is_persistent(d) {
        return Ok(());
    }
    let disk_trash = d.get("CEPH_TRASH").map(|v| yes_no("DISK CEPH_TRASH", v)).transpose()?;
    let trash = disk_trash.unwrap_or(false) || ds.settings().trash;
    let job = Job::DeleteDisk {
        ceph: ctx.ceph(Some(d), &ds)?,
        head: disk_image(d, vm_id, disk_id, &ds)?,
        base: d.get("SOURCE").map(str::to_string),
        trash_delay: trash.then_some(cfg.trash_delay),
        reclaim: cfg.reclaim,
    };
    let host = ctx.host_for(&hp, &vm, &ds)?;
    ctx.run(&job, &host, &ds)
}
