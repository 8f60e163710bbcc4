//! TM mkimage / mkswap: a volatile disk, made and formatted under a temporary
//! name and renamed into place once complete (core's `make_image`). An image
//! already at the name is never removed or replaced.

use rbdx_core::Cluster;
use rbdx_core::ops;

use super::{Done, spec};
use crate::error::{Error, Result};

/// Makes `target` of `size_mb` MiB, formatted with `fs` if given.
///
/// # Errors
/// An unsupported file system (before anything is created); Ceph and mkfs errors.
pub fn run(
    c: &Cluster,
    target: &str,
    size_mb: u64,
    data_pool: Option<&str>,
    fs: Option<&str>,
    log: &mut Vec<String>,
) -> Result<Done> {
    let dst = spec(target)?;
    let size =
        size_mb.checked_mul(1 << 20).ok_or_else(|| Error::Invalid("invalid size: too large".into()))?;
    if let Some(fs) = fs {
        crate::format::check_supported(fs)?;
    }
    // mkfs's failure, kept whole while core sees only that filling failed.
    let mut failed: Option<Error> = None;
    let made = ops::make_image(c, &dst, size, data_pool, &mut |img| {
        let Some(fs) = fs else { return Ok(()) };
        crate::format::format_image(img, size, fs).map_err(|e| {
            let msg = format!("formatting {dst} as {fs}: {e}");
            failed = Some(Error::Failed(msg.clone()));
            rbdx_core::Error::Invalid(msg)
        })
    });
    match made {
        Ok(true) => {
            if let Some(fs) = fs {
                log.push(format!("formatted {dst} as {fs}"));
            }
        }
        Ok(false) => {}
        Err(e) => {
            return Err(failed.take().unwrap_or_else(|| Error::from(e).within(format!("making {dst}"))));
        }
    }
    Done::nothing()
}
