//! The sending half of an `rbd://` import: an image (at a snapshot) streamed
//! to stdout, its size first (8 bytes, little-endian).

use std::io::{BufWriter, Write};

use rbdx_core::ops::{self, ImageReader};

use super::spec;
use crate::access::CephAccess;
use crate::error::{Context, Result};

/// Writes `image`'s size, then (unless `size_only`) its bytes, to `out`.
///
/// # Errors
/// Ceph errors; the reader going away.
pub fn run(ceph: &CephAccess, image: &str, size_only: bool, out: impl Write) -> Result<()> {
    let s = spec(image)?;
    let c = ceph.connect()?;
    let io = ops::ioctx(&c, &s)?;
    let img = io.open_read_only(&s.name, s.snap.as_deref())?;
    let mut reader = ImageReader::new(&img)?;
    let mut out = BufWriter::with_capacity(4 << 20, out);
    out.write_all(&reader.size().to_le_bytes()).context("sending the size")?;
    if !size_only {
        // Reads of one object at a time (io::copy's 8 KiB would be a round trip each).
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf).context(format!("reading {s}"))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).context(format!("sending {s}"))?;
        }
    }
    out.flush().context("sending")?;
    Ok(())
}
