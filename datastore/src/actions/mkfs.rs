//! `mkfs <image id>` — an empty image `<POOL_NAME>/one-<id>` of IMAGE/SIZE MiB with
//! the datastore's EC_POOL_NAME, formatted when IMAGE/FS is set (through a
//! temporary file that is always removed). FORMAT=save_as only names the image
//! (TM cpds makes it). Prints the SOURCE.

use rbdx_one::args::parse_size_mb;
use rbdx_one::job::Job;

use crate::context::{DsCtx, Result};
use rbdx_one::Error;

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let source = ctx.new_source();
    let img = ctx.image()?;
    if img.get("FORMAT") == Some("save_as") {
        return Ok(format!("{source}\n"));
    }
    let size = parse_size_mb(ctx.image_attr("SIZE")?)?;
    if size == 0 {
        return Err(Error::Invalid("invalid size 0: an image needs at least 1 MiB".into()));
    }
    let fs = img.get("FS").map(str::to_string);
    if let Some(f) = &fs {
        rbdx_one::format::check_supported(f)?;
    }
    let job = Job::MakeImage {
        ceph: ctx.ceph(),
        target: source.clone(),
        size_mb: size,
        data_pool: ctx.data_pool(),
        fs,
    };
    ctx.run(&job)?;
    Ok(format!("{source}\n"))
}
