//! `rbdx one detach`: the images of a pool that rbdx made as CoW clones of
//! another disk's snapshot, listed, or flattened so that they no longer depend
//! on it (before the stock drivers, which remove a snapshot's children with it,
//! are put back); then the trashed images that only they held are reclaimed.

use rbdx_core::Cluster;
use rbdx_core::ops::{self, ImageSpec, disk};
use serde_json::json;

use super::Done;
use crate::error::{Context, Result};

/// Lists (and with `flatten`, flattens) the dependent clones of `pool`; the
/// output is `{"images": [...]}`, the ones found.
///
/// # Errors
/// Ceph errors.
pub fn run(c: &Cluster, pool: &str, flatten: bool, log: &mut Vec<String>) -> Result<Done> {
    let any = ImageSpec::new(pool, "-")?;
    let io = ops::ioctx(c, &any).context(pool.to_string())?;
    let images = disk::dependent_clones(&io).context(format!("listing the images of {pool}"))?;
    if flatten {
        for name in &images {
            let spec = any.sibling(name)?;
            ops::flatten(c, &spec).context(format!("flattening {spec}"))?;
            log.push(format!("flattened {spec}: it no longer depends on another disk"));
        }
        if let Ok((freed, _)) = disk::reclaim(c, &any)
            && freed > 0
        {
            log.push(format!("reclaimed {freed} trashed image(s) nothing depends on any more"));
        }
    }
    Done::output(json!({ "images": images }).to_string())
}
