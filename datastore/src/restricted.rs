//! RESTRICTED_DIRS and SAFE_DIRS, as the stock driver applies them to the image
//! files a user names (`cp`, `stat`): never from OpenNebula's own directories or
//! oneadmin's home (nor the datastore's RESTRICTED_DIRS), unless under one of its
//! SAFE_DIRS. The file is opened once and the check is made on the path it
//! really is (links resolved from the open file), so a link swapped in after the
//! check changes nothing.

use std::fs::File;
use std::path::Path;

use crate::context::{DsCtx, Result};
use rbdx_one::Error;

/// Directories images may never be read from, plus the datastore's RESTRICTED_DIRS.
fn restricted(ctx: &DsCtx) -> Vec<String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/var/lib/one".into());
    let mut dirs = vec![
        "/var/lib/one/".to_string(),
        "/etc/one/".to_string(),
        format!("{}/", home.trim_end_matches('/')),
    ];
    dirs.extend(ctx.ds.settings().restricted_dirs.iter().cloned());
    dirs
}

/// True if `real` (an absolute path, links resolved) may be read.
fn allowed(ctx: &DsCtx, real: &Path) -> bool {
    let real = real.to_string_lossy();
    let under = |dir: &str| {
        let d = dir.trim_end_matches('/');
        !d.is_empty() && (real == d || real.starts_with(&format!("{d}/")))
    };
    let safe = &ctx.ds.settings().safe_dirs;
    !restricted(ctx).iter().any(|d| under(d)) || safe.iter().any(|d| under(d))
}

/// Opens the image file `path` (absolute, a regular file, not restricted).
///
/// # Errors
/// One line: a relative path, not a regular file, or "Not allowed to copy image
/// file …" as the stock driver says.
pub fn open(ctx: &DsCtx, path: &str) -> Result<File> {
    if !Path::new(path).is_absolute() {
        return Err(Error::Invalid(format!(
            "invalid image path {path:?}: expected an absolute path or an http(s) URL"
        )));
    }
    let (f, real) = rbdx_import::open_regular(Path::new(path))?;
    if !allowed(ctx, &real) {
        return Err(Error::Invalid(format!("Not allowed to copy image file {path}")));
    }
    Ok(f)
}
