//! `volume_export`: a volume (or snapshot) as `raw+size` on stdout: its size
//! (8 bytes, little-endian), then its bytes.

use std::io::{Read, Write};

use rbdx_core::ops::{self, ImageReader};

use crate::error::{Error, Result};
use crate::helper::Helper;

/// How much is read from the image at a time.
const CHUNK: usize = 4 << 20;

/// Writes `volname` (at `snap`, read where it is kept: after a rollback, an
/// older image) to `out`.
///
/// # Errors
/// [`Error::SnapshotNotFound`], [`Error::Stream`]; Ceph errors.
pub fn run(h: &Helper, volname: &str, snap: Option<&str>, out: &mut impl Write) -> Result<()> {
    let spec = h.existing_kernel_spec(volname, snap)?;
    let io = ops::ioctx(&h.cluster, &spec)?;
    let img = io.open_read_only(&spec.name, snap)?;
    let mut reader = ImageReader::new(&img)?;
    let writing = |source| Error::Stream { what: "writing the stream", source };
    out.write_all(&reader.size().to_le_bytes()).map_err(writing)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).map_err(Error::reading_image)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(writing)?;
    }
    out.flush().map_err(writing)
}
