//! `rm <image id>` — the image with every snapshot and carrier it owns. Refused
//! while a client has it open; never destroyed under its CoW children (they keep
//! reading it from the trash until they are gone, or are flattened first with
//! RECLAIM=flatten); CEPH_TRASH moves it to the RBD trash.

use rbdx_one::job::Job;

use crate::context::{DsCtx, Result};

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let source: rbdx_core::ops::ImageSpec = ctx.image_attr("SOURCE")?.parse()?;
    let trash = ctx.template().is_yes("CEPH_TRASH");
    let job = Job::DeleteDisk {
        ceph: ctx.ceph(),
        head: source.to_string(),
        base: None,
        trash_delay: trash.then_some(ctx.cfg.trash_delay),
        reclaim: ctx.cfg.reclaim,
    };
    ctx.run(&job)?;
    Ok(String::new())
}
