//! DS export: the MD5 of an image's whole contents.

use md5::Digest;
use rbdx_core::Cluster;
use rbdx_core::ops::{self, ImageReader};

use super::{Done, spec};
use crate::error::{Context, Result};

/// Hashes `image`; the output is the hex digest.
///
/// # Errors
/// Ceph errors reading it.
pub fn run(c: &Cluster, image: &str) -> Result<Done> {
    let i = spec(image)?;
    let io = ops::ioctx(c, &i)?;
    let img = io.open_read_only(&i.name, None)?;
    let mut h = md5::Md5::new();
    std::io::copy(&mut ImageReader::new(&img)?, &mut h).context(format!("reading {i}"))?;
    Done::output(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
