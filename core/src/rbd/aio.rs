//! Asynchronous writes and reads of an open image with a bounded window: up to
//! `window` requests in flight, each owning its buffer until librbd is done
//! with it. A sequential copy waits one round trip per chunk; with a window it
//! keeps the OSDs busy, as `rbd import` does with its concurrent operations.

use std::collections::VecDeque;
use std::ptr;

use super::image::Image;
use crate::error::{CephError, Result, check};
use crate::ffi::rbd as sys;

/// One request in flight: its completion, where it goes, and the buffer librbd
/// reads from (a write) or fills (a read).
struct Pending {
    completion: sys::rbd_completion_t,
    offset: u64,
    data: Vec<u8>,
}

impl Pending {
    /// Waits for the request and releases its completion; librbd's return value.
    fn wait(&self) -> i64 {
        // SAFETY: `completion` came from `rbd_aio_create_completion` and is
        // released exactly once, here: every caller waits once on a `Pending`
        // it has just taken out of its queue, and then drops it.
        unsafe {
            sys::rbd_aio_wait_for_complete(self.completion);
            let r = sys::rbd_aio_get_return_value(self.completion);
            sys::rbd_aio_release(self.completion);
            r as i64
        }
    }
}

/// A new completion with no callback.
fn completion(what: impl FnOnce() -> String) -> Result<sys::rbd_completion_t> {
    let mut c: sys::rbd_completion_t = ptr::null_mut();
    // SAFETY: no callback; `c` is a valid out-pointer.
    let r = unsafe { sys::rbd_aio_create_completion(ptr::null_mut(), None, &mut c) };
    check(r.into(), "rbd_aio_create_completion", what)?;
    Ok(c)
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
        let completion = completion(what)?;
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
        let r = p.wait();
        let (offset, len) = (p.offset, p.data.len());
        self.spare.push(p.data);
        check(r, "rbd_aio_write2", || self.at(offset, len))?;
        Ok(())
    }
}

impl Drop for Writes<'_, '_> {
    fn drop(&mut self) {
        // The buffers must outlive librbd's use of them.
        let _ = self.drain();
    }
}

/// Reads in flight from one image, answered in the order they were started
/// (see the module docs). Dropping it waits for every read still in flight.
pub struct Reads<'i, 'io> {
    image: &'i Image<'io>,
    window: usize,
    pending: VecDeque<Pending>,
}

impl std::fmt::Debug for Reads<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("image", &self.image.name())
            .field("in_flight", &self.pending.len())
            .finish()
    }
}

impl<'i, 'io> Reads<'i, 'io> {
    /// Reads from `image`, at most `window` (at least 1) at a time.
    pub fn new(image: &'i Image<'io>, window: usize) -> Self {
        Self { image, window: window.max(1), pending: VecDeque::new() }
    }

    /// Starts filling `buf` from `offset`, first waiting for the oldest read if
    /// the window is full: that one is returned, as [`Reads::oldest`] returns it.
    ///
    /// # Errors
    /// A [`CephError`] from the read that finished or from starting this one.
    pub fn read(&mut self, offset: u64, mut buf: Vec<u8>) -> Result<Option<(u64, Vec<u8>)>> {
        let done = if self.pending.len() >= self.window { self.oldest()? } else { None };
        let completion = completion(|| self.at(offset, buf.len()))?;
        // SAFETY: the image is open for as long as `self` borrows it; `buf`'s
        // heap buffer stays where it is, touched by no one else, until the
        // completion is waited for (in `oldest` or on drop).
        let r = unsafe {
            sys::rbd_aio_read2(self.image.raw(), offset, buf.len(), buf.as_mut_ptr().cast(), completion, 0)
        };
        if r < 0 {
            // SAFETY: the read was not started; nothing else holds the completion.
            unsafe { sys::rbd_aio_release(completion) };
            return Err(CephError::new("rbd_aio_read2", r.into(), self.at(offset, buf.len())).into());
        }
        self.pending.push_back(Pending { completion, offset, data: buf });
        Ok(done)
    }

    /// The oldest read in flight, once done: its offset and its buffer, filled
    /// whole; `None` when none is in flight.
    ///
    /// # Errors
    /// A [`CephError`] from the read; a short read is `EIO`.
    pub fn oldest(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(p) = self.pending.pop_front() else { return Ok(None) };
        let r = p.wait();
        let (offset, len) = (p.offset, p.data.len());
        let n = check(r, "rbd_aio_read2", || self.at(offset, len))?;
        if n != len as u64 {
            return Err(CephError::new("rbd_aio_read2", -i64::from(libc::EIO), self.at(offset, len)).into());
        }
        Ok(Some((offset, p.data)))
    }

    /// Names a read for errors: the image, offset and length.
    fn at(&self, offset: u64, len: usize) -> String {
        format!("{} at {offset} ({len} bytes)", self.image.spec())
    }
}

impl Drop for Reads<'_, '_> {
    fn drop(&mut self) {
        // The buffers must outlive librbd's use of them.
        while let Some(p) = self.pending.pop_front() {
            p.wait();
        }
    }
}
