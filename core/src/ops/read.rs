//! An image (as opened: head or snapshot) read as a [`std::io::Read`] stream,
//! for checksums and exports.

use std::io;

use crate::rbd::Image;

/// Reads `img` from offset 0 to its size, in the chunks the caller asks for;
/// a short read from librbd is continued, never taken for the end.
#[derive(Debug)]
pub struct ImageReader<'a> {
    img: &'a Image<'a>,
    pos: u64,
    size: u64,
}

impl<'a> ImageReader<'a> {
    /// A reader over the whole of `img`.
    ///
    /// # Errors
    /// A Ceph error reading the image's size.
    pub fn new(img: &'a Image<'a>) -> crate::Result<Self> {
        Ok(Self { img, pos: 0, size: img.info()?.size })
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl io::Read for ImageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let got = self.img.read_at(self.pos, &mut buf[..n]).map_err(io::Error::other)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended at {} of {} bytes", self.img.name(), self.pos, self.size),
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}
