//! `resize host:<sysdir>/disk.N SIZE VMID [DSID]` — grow a disk. While the VM
//! runs (LCM_STATE 62, DISK_RESIZE) the hypervisor resizes it, as upstream.

use rbdx_one::args::{HostPath, expect_args, parse_id, parse_size_mb};
use rbdx_one::job::Job;
use rbdx_one::oned::LcmState;

use crate::context::{Ctx, Result, disk, disk_image};
use rbdx_one::Error;

/// Usage as oned writes it.
pub const USAGE: &str = "resize <host:path/disk.N> <size MB> <vmid> [dsid]";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 3, 4)?;
    let hp = HostPath::parse(&a[0])?;
    let disk_id = hp.disk_id()?;
    let size = parse_size_mb(&a[1])?;
    if size == 0 {
        return Err(Error::Invalid("invalid size 0: a disk needs at least 1 MiB".into()));
    }
    let vm_id = parse_id("VM id", &a[2])?;
    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    let ds_id = match a.get(3) {
        Some(s) => parse_id("datastore id", s)?,
        None => parse_id("datastore id", d.get("DATASTORE_ID").unwrap_or(""))
            .map_err(|_| Error::Invalid("the DISK has no DATASTORE_ID and none was given".into()))?,
    };
    if vm.lcm() == Some(LcmState::DiskResize) {
        rbdx_one::log::info("the VM is running: the hypervisor resizes the disk");
        return Ok(());
    }
    let ds = ctx.datastore(ds_id)?;
    let job = Job::Resize {
        ceph: ctx.ceph(Some(d), &ds)?,
        image: disk_image(d, vm_id, disk_id, &ds)?,
        size_mb: size,
    };
    ctx.run(&job, &hp.host, &ds)
}
