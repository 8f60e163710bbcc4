//! Asynchronous writes to an open image with a bounded window: up to `window`
//! writes in flight, each owning its buffer until librbd is done with it. A
//! sequential copy waits one round trip per chunk; with a window it keeps the
//! OSDs busy, as `rbd import` does with its concurrent operations.

use std::collections::VecDeque;
use std::ptr;

use super::image::Image;
use crate::error::{CephError, Result, check};
use crate::ffi::rbd as sys;

/// One write in flight: its completion, where it goes, and the buffer librbd
/// reads from.
struct Pending {
    completion: sys::rbd_completion_t,
    offset: u64,
    data: Vec<u8>,
}

/// Writes in flight to one image (see the module docs). Dropping it waits for
/// every write still in flight (their outcome is then lost: call
/// [`Writes::finish`] to learn it).
pub struct Writes<'i, 'io> {
    image: &'i Image<'io>,
    window: usize,
    pending: VecDeque<Pending>,
    spare: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Writes<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("image", &self.image.name())
            .field("in_flight", &self.pending.len())
            .finish()
    }
}

impl<'i, 'io> Writes<'i, 'io> {
    /// Writes to `image`, at most `window` (at least 1) at a time.
    pub fn new(image: &'i Image<'io>, window: usize) -> Self {
        Self { image, window: window.max(1), pending: VecDeque::new(), spare: Vec::new() }
    }

    /// The image written to.
    pub fn image(&self) -> &'i Image<'io> {
        self.image
    }

    /// A buffer of `len` bytes to fill and hand to [`Writes::write`]: one that a
    /// finished write gave back when there is one (its old bytes are still in it).
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.resize(len, 0);
        b
    }

    /// Gives back a buffer that was not written.
    pub fn recycle(&mut self, data: Vec<u8>) {
        self.spare.push(data);
    }

    /// Starts writing `data` at `offset`, first waiting for the oldest write if
    /// the window is full.
    ///
    /// # Errors
    /// A [`CephError`] from a write that finished (`rbd_aio_write2`: its
    /// offset is named) or from starting this one.
    pub fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<()> {
        while self.pending.len() >= self.window {
            self.wait_oldest()?;
        }
        let what = || self.at(offset, data.len());
        let mut completion: sys::rbd_completion_t = ptr::null_mut();
        // SAFETY: no callback; `completion` is a valid out-pointer.
        let r = unsafe { sys::rbd_aio_create_completion(ptr::null_mut(), None, &mut completion) };
        check(r.into(), "rbd_aio_create_completion", what)?;
        // SAFETY: the image is open for as long as `self` borrows it; `data`'s
        // heap buffer stays where it is, unread by anyone else, until the
        // completion is waited for (in `wait_oldest` or on drop).
        let r = unsafe {
            sys::rbd_aio_write2(self.image.raw(), offset, data.len(), data.as_ptr().cast(), completion, 0)
        };
        if r < 0 {
            // SAFETY: the write was not started; nothing else holds the completion.
            unsafe { sys::rbd_aio_release(completion) };
            return Err(CephError::new("rbd_aio_write2", r.into(), what()).into());
        }
        self.pending.push_back(Pending { completion, offset, data });
        Ok(())
    }

    /// Waits for every write in flight.
    ///
    /// # Errors
    /// The first failed write's [`CephError`] (the others are still waited for).
    pub fn finish(mut self) -> Result<()> {
        self.drain()
    }

    /// Waits for every write in flight; the first failure, if any.
    fn drain(&mut self) -> Result<()> {
        let mut first = Ok(());
        while !self.pending.is_empty() {
            if let Err(e) = self.wait_oldest() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Names a write for errors: the image, offset and length.
    fn at(&self, offset: u64, len: usize) -> String {
        format!("{} at {offset} ({len} bytes)", self.image.spec())
    }

    /// Waits for the oldest write in flight and keeps its buffer for reuse.
    fn wait_oldest(&mut self) -> Result<()> {
        let Some(p) = self.pending.pop_front() else { return Ok(()) };
        // SAFETY: `p.completion` came from `rbd_aio_create_completion` and is
        // released exactly once, here, after librbd is done with it.
        let r = unsafe {
            sys::rbd_aio_wait_for_complete(p.completion);
            let r = sys::rbd_aio_get_return_value(p.completion);
            sys::rbd_aio_release(p.completion);
            r
        };
        let (offset, len) = (p.offset, p.data.len());
        self.spare.push(p.data);
        check(r as i64, "rbd_aio_write2", || self.at(offset, len))?;
        Ok(())
    }
}

impl Drop for Writes<'_, '_> {
    fn drop(&mut self) {
        // The buffers must outlive librbd's use of them.
        let _ = self.drain();
    }
}
