//! `snap_delete`, `snap_revert`, `snap_flatten <image id>` — image snapshots
//! (IMAGE/SOURCE, IMAGE/TARGET_SNAPSHOT) with the same scheme as the TM driver:
//! any snapshot deletable in any order, O(1) revert, and flatten that keeps the
//! data pool.

use rbdx_one::args::parse_id;
use rbdx_one::job::Job;

use crate::context::{DsCtx, Result};

fn target(ctx: &DsCtx) -> Result<(String, String)> {
    let source: rbdx_core::ops::ImageSpec = ctx.image_attr("SOURCE")?.parse()?;
    let snap = parse_id("snapshot id", ctx.image_attr("TARGET_SNAPSHOT")?)?;
    Ok((source.to_string(), snap.to_string()))
}

/// `snap_delete`.
///
/// # Errors
/// One line for oned.
pub fn delete(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let (head, snap) = target(ctx)?;
    ctx.run(&Job::SnapDelete { ceph: ctx.ceph(), head, snap })?;
    Ok(String::new())
}

/// `snap_revert`.
///
/// # Errors
/// One line for oned.
pub fn revert(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let (head, snap) = target(ctx)?;
    let job = Job::SnapRevert {
        ceph: ctx.ceph(),
        head,
        snap,
        data_pool: ctx.data_pool(),
        max_depth: ctx.cfg.max_clone_depth,
        rollback_max_mb: ctx.cfg.rollback_max_mb,
    };
    ctx.run(&job)?;
    Ok(String::new())
}

/// `snap_flatten`: the image becomes the snapshot, with no snapshot left.
///
/// # Errors
/// One line for oned.
pub fn flatten(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let (head, snap) = target(ctx)?;
    let job = Job::Flatten {
        ceph: ctx.ceph(),
        head,
        snap,
        data_pool: ctx.data_pool(),
        max_depth: ctx.cfg.max_clone_depth,
    };
    ctx.run(&job)?;
    Ok(String::new())
}
