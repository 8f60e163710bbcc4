//! Actions with nothing to do for RBD disks, checked like the others:
//! `mvds` (a persistent disk already lives in RBD), `failmigrate`, `delete.ssh`,
//! and `mv` of a disk path (the image stays where it is).

use rbdx_one::args::{HostPath, expect_args, parse_id, validate_host};

use crate::context::Result;
use rbdx_one::Error;

/// `mvds host:path SOURCE VMID DSID`.
///
/// # Errors
/// Malformed arguments.
pub fn mvds(args: &[String]) -> Result {
    let a = expect_args(args, "mvds <host:path/disk.N> <source> <vmid> <dsid>", 4, 4)?;
    HostPath::parse(&a[0])?;
    a[1].parse::<rbdx_core::ops::ImageSpec>()?;
    parse_id("VM id", &a[2])?;
    parse_id("datastore id", &a[3])?;
    Ok(())
}

/// `failmigrate SRC DST VM_DIR VMID DSID [CALLER]`: premigrate's arguments.
///
/// # Errors
/// Malformed arguments.
pub fn failmigrate(args: &[String]) -> Result {
    let usage = "failmigrate <src_host> <dst_host> <vm_dir> <vmid> <dsid> [caller]";
    let a = expect_args(args, usage, 5, 6)?;
    validate_host(&a[0])?;
    validate_host(&a[1])?;
    rbdx_one::hostfs::check_path(&a[2])?;
    parse_id("VM id", &a[3])?;
    parse_id("datastore id", &a[4])?;
    Ok(())
}

/// `delete.ssh host:path VMID DSID`: delete's arguments.
///
/// # Errors
/// Malformed arguments.
pub fn delete_ssh(args: &[String]) -> Result {
    let a = expect_args(args, "delete.ssh <host:path> <vmid> <dsid>", 3, 3)?;
    HostPath::parse(&a[0])?;
    parse_id("VM id", &a[1])?;
    parse_id("datastore id", &a[2])?;
    Ok(())
}

/// `mv src_host:path dst_host:path VMID DSID` for disk paths.
///
/// # Errors
/// Malformed arguments, or a VM directory (not supported yet).
pub fn mv(args: &[String]) -> Result {
    let a = expect_args(args, "mv <host:path> <host:path> <vmid> <dsid>", 4, 4)?;
    let src = HostPath::parse(&a[0])?;
    HostPath::parse(&a[1])?;
    parse_id("VM id", &a[2])?;
    parse_id("datastore id", &a[3])?;
    if src.is_disk() {
        return Ok(());
    }
    Err(Error::Invalid("moving a VM directory between hosts is not supported by rbdx yet".into()))
}
