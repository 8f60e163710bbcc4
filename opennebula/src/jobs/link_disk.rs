//! TM ln: a persistent image used in place. A base snapshot from a
//! non-persistent past must not be cloned again once the image changes in
//! place; clones that still use it keep it (format 2 moves it to the trash
//! namespace).

use rbdx_core::Cluster;
use rbdx_core::ops;

use super::{Done, spec};
use crate::error::{Context, Result};
use crate::naming::BASE_SNAP;

/// Drops `source@BASE_SNAP` if there is one.
///
/// # Errors
/// Ceph errors other than "not found".
pub fn run(c: &Cluster, source: &str, log: &mut Vec<String>) -> Result<Done> {
    let src = spec(source)?;
    let io = ops::ioctx(c, &src).context(src.to_string())?;
    match io.open(&src.name).and_then(|img| img.snap_remove(BASE_SNAP)) {
        Ok(()) => log.push(format!("removed the base snapshot {src}@{BASE_SNAP}")),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e).context(format!("dropping {src}@{BASE_SNAP}")),
    }
    Done::nothing()
}
