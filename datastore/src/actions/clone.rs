//! `clone <image id>` — a new image `<POOL_NAME>/one-<id>` as a CoW clone of a
//! snapshot of IMAGE/PATH (the source image), O(1), with this datastore's
//! EC_POOL_NAME. Source and clone stay deletable in either order. Prints
//! `SOURCE raw`.

use rbdx_one::job::Job;

use crate::context::{DsCtx, Result};

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let source: rbdx_core::ops::ImageSpec = ctx.image_attr("PATH")?.parse()?;
    let target = ctx.new_source();
    let job = Job::SaveAs {
        ceph: ctx.ceph(),
        head: source.to_string(),
        snap: None,
        target: target.clone(),
        data_pool: ctx.data_pool(),
        max_depth: ctx.cfg.max_clone_depth,
        copy_max_mb: ctx.cfg.saveas_copy_max_mb,
    };
    ctx.run(&job)?;
    Ok(format!("{target} raw\n"))
}
