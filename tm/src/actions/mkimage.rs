//! `mkimage SIZE FORMAT host:<sysdir>/disk.N VMID DSID` (and `mkswap`) — a
//! volatile disk `<POOL_NAME>/one-sys-<vmid>-<diskid>`, formatted when the DISK
//! has FS (or is swap), always with the system datastore's EC_POOL_NAME.

use rbdx_one::args::{HostPath, expect_args, parse_id, parse_size_mb};
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, data_pool, disk, disk_image};
use rbdx_one::Error;

/// Usage as oned writes it.
pub const USAGE: &str = "mkimage <size MB> <format> <host:path/disk.N> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 5, 5)?;
    let size = parse_size_mb(&a[0])?;
    make(size, &a[1], &a[2], &a[3], &a[4], ctx)
}

/// Shared with `mkswap`.
pub(crate) fn make(size: u64, format: &str, path: &str, vm: &str, ds: &str, ctx: &Ctx) -> Result {
    let dst = HostPath::parse(path)?;
    let disk_id = dst.disk_id()?;
    let vm_id = parse_id("VM id", vm)?;
    let ds_id = parse_id("datastore id", ds)?;
    if size == 0 {
        return Err(Error::Invalid("invalid size 0: a disk needs at least 1 MiB".into()));
    }
    if !format.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || format.is_empty() {
        return Err(Error::Invalid(format!("invalid format {format:?}")));
    }
    let vm = ctx.vm(vm_id)?;
    let d = disk(&vm, disk_id)?;
    // A volatile disk's image is always one-sys-<vm>-<disk>: a SOURCE would make
    // this action create (or replace) an image the DISK chose.
    if d.get("SOURCE").is_some() {
        return Err(Error::Invalid(format!(
            "disk {disk_id} of VM {vm_id} has a SOURCE: it is not a volatile disk"
        )));
    }
    let ds = ctx.datastore(ds_id)?;
    let fs = if format == "swap" { Some("swap".to_string()) } else { d.get("FS").map(str::to_string) };
    if let Some(f) = &fs {
        rbdx_one::format::check_supported(f)?;
    }
    let job = Job::MakeImage {
        ceph: ctx.ceph(Some(d), &ds)?,
        target: disk_image(d, vm_id, disk_id, &ds)?,
        size_mb: size,
        data_pool: data_pool(&ds),
        fs,
    };
    ctx.run(&job, &dst.host, &ds)
}
