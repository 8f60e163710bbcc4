//! TM resize.ssh: a raw disk file on the host grown.

use std::fs::OpenOptions;

use super::Done;
use crate::error::{Context, Error, Result};
use crate::hostfs::VmPath;

/// Grows file `path` (confined to a VM directory) to `size_mb` MiB.
///
/// # Errors
/// A path outside the VM directories; file errors.
pub fn run(path: &VmPath, size_mb: u64) -> Result<Done> {
    let p = path.path.as_str();
    let f = OpenOptions::new().write(true).open(path.check_file()?).context(format!("opening {p}"))?;
    let size = size_mb.checked_mul(1 << 20).ok_or_else(|| Error::Invalid("invalid size".into()))?;
    if f.metadata().context(format!("reading {p}"))?.len() < size {
        f.set_len(size).context(format!("resizing {p}"))?;
    }
    Done::nothing()
}
