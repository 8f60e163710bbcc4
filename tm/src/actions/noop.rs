//! Actions with nothing to do for RBD disks, checked like the others:
//! `mvds` (a persistent disk already lives in RBD), `failmigrate`, `delete.ssh`,
//! and `mv` of a disk path (the image stays where it is).

use rbdx_one::args::{HostPath, expect_args, parse_id};

use crate::context::Result;

/// `mvds host:path SOURCE VMID DSID`.
///
/// # Errors
/// Malformed arguments.
pub fn mvds(args: &[String]) -> Result {
    let a = expect_args(args, "mvds <host:path/disk.N> <source> <vmid> <dsid>", 4, 4)?;
    HostPath::parse(&a[0])?;
    parse_id("VM id", &a[2])?;
    parse_id("datastore id", &a[3])?;
    Ok(())
}

/// `failmigrate` and `delete.ssh`: accept what oned sends.
///
/// # Errors
/// Never.
pub fn accept(_args: &[String]) -> Result {
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
    Err("moving a VM directory between hosts is not supported by rbdx yet".into())
}
