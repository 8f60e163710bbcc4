//! `monitor <ds_id>`: the datastore's capacity and usage for oned
//! (`USED_MB`, `TOTAL_MB`, `FREE_MB`), EC-aware, measured where the datastore's
//! actions run; VM disk sizes go to monitord; trashed images whose clones are
//! gone are reclaimed on the way (`rbdx_one::monitor`).

use crate::context::{DsCtx, Result};

/// One line per value for oned.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    rbdx_one::monitor::measure_action(ctx.id, &ctx.data, &ctx.cfg)
}
