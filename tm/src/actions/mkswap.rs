//! `mkswap SIZE host:<sysdir>/disk.N VMID DSID` — `mkimage SIZE swap …`.

use rbdx_one::args::{expect_args, parse_size_mb};

use crate::context::{Ctx, Result};

/// Usage as oned writes it.
pub const USAGE: &str = "mkswap <size MB> <host:path/disk.N> <vmid> <dsid>";

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, 4)?;
    let size = parse_size_mb(&a[0])?;
    super::mkimage::make(size, "swap", &a[1], &a[2], &a[3], ctx)
}
