//! Whether a VM directory exists on its host, leaving or finding a marker: the
//! probe that tells two names for one directory apart.

use super::Done;
use crate::error::Result;
use crate::hostfs::VmPath;

/// Probes `path`; the output is `{"exists":…,"found":…}`.
///
/// # Errors
/// File errors, an invalid marker.
pub fn run(path: &VmPath, mark: Option<&str>, find: Option<&str>) -> Result<Done> {
    let (exists, found) = crate::hostfs::probe_dir(path, mark, find)?;
    Done::output(serde_json::json!({"exists": exists, "found": found}).to_string())
}
