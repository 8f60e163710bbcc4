//! The actions for a Ceph image datastore used with an **ssh** system datastore
//! (oned calls them as `<action>.ssh`): the VM runs from a local file on the host,
//! copied from and back into RBD. They always run on that host.

use rbdx_one::args::{HostPath, expect_args, parse_id, parse_size_mb};
use rbdx_one::hostfs::VmPath;
use rbdx_one::job::{BASE_SNAP, Job};
use rbdx_one::oned::LcmState;

use crate::context::{Ctx, Result, data_pool, disk, source_action};
use rbdx_one::Error;

fn ids(a: &[String], vm: usize, ds: usize) -> Result<(u32, u32)> {
    Ok((parse_id("VM id", &a[vm])?, parse_id("datastore id", &a[ds])?))
}

/// `clone.ssh fe:SOURCE host:<sysdir>/disk.N VMID DSID`: copy the image's base
/// snapshot into the disk file.
///
/// # Errors
/// One line for oned.
pub fn clone(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, "clone.ssh <fe:SOURCE> <host:path/disk.N> <vmid> <dsid>", 4, 4)?;
    export(a, ctx, Some(BASE_SNAP), false)
}

/// `ln.ssh fe:SOURCE host:<sysdir>/disk.N VMID DSID`: copy the persistent image
/// itself into the disk file (dropping its stale base snapshot).
///
/// # Errors
/// One line for oned.
pub fn ln(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, "ln.ssh <fe:SOURCE> <host:path/disk.N> <vmid> <dsid>", 4, 4)?;
    export(a, ctx, None, true)
}

/// The disk file of a `*.ssh` action: `<sysdir>/disk.N` of the VM, in the system
/// datastore the path names.
fn disk_file(hp: &HostPath, vm_id: u32) -> Result<VmPath> {
    VmPath::file(&hp.path, hp.system_ds_id()?, vm_id)
}

fn export(a: &[String], ctx: &Ctx, snap: Option<&str>, drop_base_snap: bool) -> Result {
    let (source, da) = source_action(ctx, a)?;
    let size = da.disk()?.get("SIZE").map(parse_size_mb).transpose()?;
    let job = Job::ExportToFile {
        ceph: da.ceph(ctx)?,
        source: source.to_string(),
        snap: snap.map(str::to_string),
        drop_base_snap,
        path: disk_file(&da.hp, da.vm_id)?,
        size_mb: size,
    };
    ctx.run_on_host(&job, &da.hp.host, &da.ds)
}

/// `mvds.ssh host:<sysdir>/disk.N SOURCE VMID DSID`: write the disk file back
/// into the persistent image, then remove the file.
///
/// # Errors
/// One line for oned.
pub fn mvds(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, "mvds.ssh <host:path/disk.N> <source> <vmid> <dsid>", 4, 4)?;
    let hp = HostPath::parse(&a[0])?;
    let disk_id = hp.disk_id()?;
    let target: rbdx_core::ops::ImageSpec = a[1].parse::<rbdx_core::ops::ImageSpec>()?;
    let (vm_id, ds_id) = ids(a, 2, 3)?;
    let vm = ctx.vm(vm_id)?;
    if vm.lcm() == Some(LcmState::HotplugSaveas) && vm.last_history("VM_MAD") != Some("kvm") {
        return Err(Error::Invalid("saving a disk of a running VM is only supported with KVM".into()));
    }
    if vm.last_history("HOSTNAME").is_some_and(|h| h != hp.host) {
        return Err(Error::Invalid(format!(
            "VM {vm_id} is not on {}: its disk file cannot be saved",
            hp.host
        )));
    }
    let d = disk(&vm, disk_id)?;
    let ds = ctx.datastore(ds_id)?;
    let size = d.get("SIZE").map(parse_size_mb).transpose()?;
    let job = Job::ImportFile {
        ceph: ctx.ceph(Some(d), &ds)?,
        path: disk_file(&hp, vm_id)?,
        target: target.to_string(),
        create: false,
        data_pool: None,
        size_mb: size,
        remove_file: true,
        freeze: None,
    };
    ctx.run_on_host(&job, &hp.host, &ds)
}

/// `cpds.ssh host:<sysdir>/disk.N NEW_SOURCE SNAP_ID VMID DSID`: copy the disk
/// file into a new image (with the datastore's EC_POOL_NAME), freezing a running
/// guest while reading it.
///
/// # Errors
/// One line for oned.
pub fn cpds(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, "cpds.ssh <host:path/disk.N> <new_source> <snap_id|-1> <vmid> <dsid>", 5, 5)?;
    let hp = HostPath::parse(&a[0])?;
    let disk_id = hp.disk_id()?;
    let target: rbdx_core::ops::ImageSpec = a[1].parse::<rbdx_core::ops::ImageSpec>()?;
    if a[2] != "-1" {
        parse_id("snapshot id", &a[2])?;
        return Err(Error::Invalid(
            "saving a snapshot of a disk on an ssh system datastore is not supported".into(),
        ));
    }
    let (vm_id, ds_id) = ids(a, 3, 4)?;
    let vm = ctx.vm(vm_id)?;
    if vm.last_history("HOSTNAME").is_some_and(|h| h != hp.host) {
        return Err(Error::Invalid(format!(
            "VM {vm_id} is not on {}: its disk file cannot be read",
            hp.host
        )));
    }
    disk(&vm, disk_id)?;
    let ds = ctx.datastore(ds_id)?;
    // A running VM's disk is copied frozen, else suspended, else not at all
    // (as upstream's cpds.ssh).
    let freeze = (vm.lcm() == Some(LcmState::HotplugSaveas))
        .then(|| rbdx_one::job::Freeze { or_suspend: true, ..crate::context::freeze_of(&vm, vm_id) });
    let job = Job::ImportFile {
        ceph: ctx.ceph(None, &ds)?,
        path: disk_file(&hp, vm_id)?,
        target: target.to_string(),
        create: true,
        data_pool: data_pool(&ds),
        size_mb: None,
        remove_file: false,
        freeze,
    };
    ctx.run_on_host(&job, &hp.host, &ds)
}

/// `resize.ssh host:<sysdir>/disk.N SIZE VMID [DSID]`: grow the disk file.
///
/// # Errors
/// One line for oned.
pub fn resize(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, "resize.ssh <host:path/disk.N> <size MB> <vmid> [dsid]", 3, 4)?;
    let hp = HostPath::parse(&a[0])?;
    hp.disk_id()?;
    let size = parse_size_mb(&a[1])?;
    let vm_id = parse_id("VM id", &a[2])?;
    let vm = ctx.vm(vm_id)?;
    if vm.lcm() == Some(LcmState::DiskResize) {
        rbdx_one::log::info("the VM is running: the hypervisor resizes the disk");
        return Ok(());
    }
    let ds_id = match a.get(3) {
        Some(s) => parse_id("datastore id", s)?,
        None => hp.system_ds_id()?,
    };
    let ds = ctx.datastore(ds_id)?;
    ctx.run_on_host(&Job::ResizeFile { path: disk_file(&hp, vm_id)?, size_mb: size }, &hp.host, &ds)
}
