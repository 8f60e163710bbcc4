//! The one way rbdx calls librbd's list functions: a caller-sized buffer that grows
//! when librbd answers `-ERANGE`, and the matching `*_cleanup` always called.

use crate::error::{CephError, Result, check};

/// Most entries a list call may ask room for: far above any real pool, low enough
/// that a corrupt count cannot make us allocate without bound.
const MAX_ENTRIES: usize = 1 << 24;

/// Calls `call(buf, &mut n)` with room for `n` entries until librbd stops
/// answering `-ERANGE`, then returns the `n` entries it filled. On `-ERANGE`,
/// librbd sets `n` to the size it needs; a call that does not is given twice the room.
///
/// # Safety
/// `call` must write at most `n` (the value it was called with) entries into the
/// buffer, and on a non-negative return must have initialised the first `n`
/// entries, `n` being the value it leaves behind.
pub(crate) unsafe fn grow_list<T>(
    op: &'static str,
    object: &dyn Fn() -> String,
    mut call: impl FnMut(*mut T, &mut usize) -> i64,
) -> Result<Vec<T>> {
    let mut room = 32usize;
    loop {
        let mut buf: Vec<T> = Vec::with_capacity(room);
        let mut n = room;
        let r = call(buf.as_mut_ptr(), &mut n);
        if r == -i64::from(libc::ERANGE) {
            room = if n > room { n } else { room * 2 };
            if room > MAX_ENTRIES {
                return Err(CephError::new(op, r, object()).into());
            }
            continue;
        }
        check(r, op, object)?;
        if n > buf.capacity() {
            return Err(CephError::new(op, -i64::from(libc::ERANGE), object()).into());
        }
        // SAFETY: the caller's contract: on success `call` initialised the first
        // `n` entries, and `n` fits the capacity (checked above).
        unsafe { buf.set_len(n) };
        return Ok(buf);
    }
}

/// Entries filled by librbd, freed with their `*_cleanup` function on drop.
pub(crate) struct CList<T> {
    items: Vec<T>,
    cleanup: unsafe extern "C" fn(*mut T, libc::size_t),
}

impl<T> CList<T> {
    /// Takes ownership of entries that `cleanup` frees.
    ///
    /// # Safety
    /// Every entry must have been filled by the librbd list call that `cleanup`
    /// belongs to, and not be freed elsewhere.
    pub(crate) unsafe fn new(items: Vec<T>, cleanup: unsafe extern "C" fn(*mut T, libc::size_t)) -> Self {
        Self { items, cleanup }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }
}

impl<T> Drop for CList<T> {
    fn drop(&mut self) {
        if !self.items.is_empty() {
            // SAFETY: the entries were filled by the list call `cleanup` belongs to
            // (constructor contract) and are freed only here.
            unsafe { (self.cleanup)(self.items.as_mut_ptr(), self.items.len()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A stand-in for a librbd list call over `have` entries: answers -ERANGE with
    /// the size it needs when the buffer is too small.
    fn fake(have: usize, calls: &Cell<usize>) -> impl FnMut(*mut u32, &mut usize) -> i64 + '_ {
        move |buf, n| {
            calls.set(calls.get() + 1);
            if *n < have {
                *n = have;
                return -i64::from(libc::ERANGE);
            }
            for i in 0..have {
                // SAFETY: `i < have <= *n`, the room the buffer was given.
                unsafe { buf.add(i).write(i as u32 * 10) };
            }
            *n = have;
            0
        }
    }

    #[test]
    fn small_lists_take_one_call() {
        let calls = Cell::new(0);
        // SAFETY: `fake` honours the contract.
        let v = unsafe { grow_list("rbd_list2", &String::new, fake(3, &calls)) }.unwrap();
        assert_eq!(v, [0, 10, 20]);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn erange_grows_to_the_size_librbd_asks_for() {
        let calls = Cell::new(0);
        // SAFETY: `fake` honours the contract.
        let v = unsafe { grow_list("rbd_list2", &String::new, fake(1000, &calls)) }.unwrap();
        assert_eq!(v.len(), 1000);
        assert_eq!(v[999], 9990);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn erange_without_a_size_doubles_the_room() {
        let calls = Cell::new(0);
        let mut seen = Vec::new();
        let call = |_: *mut u32, n: &mut usize| {
            calls.set(calls.get() + 1);
            seen.push(*n);
            if *n < 100 {
                return -i64::from(libc::ERANGE); // n left unchanged
            }
            *n = 0;
            0
        };
        // SAFETY: the closure initialises no entry and reports 0.
        let v: Vec<u32> = unsafe { grow_list("rbd_snap_list", &String::new, call) }.unwrap();
        assert!(v.is_empty());
        assert_eq!(seen, [32, 64, 128]);
    }

    #[test]
    fn errors_keep_errno_op_and_object() {
        let call = |_: *mut u32, _: &mut usize| -i64::from(libc::ENOENT);
        // SAFETY: the closure writes nothing.
        let e = unsafe { grow_list("rbd_list_children3", &|| "one/img".into(), call) }.unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "rbd_list_children3 one/img: no such file or directory");
    }

    #[test]
    fn endless_erange_is_bounded() {
        let call = |_: *mut u32, n: &mut usize| {
            *n = n.saturating_mul(2);
            -i64::from(libc::ERANGE)
        };
        // SAFETY: the closure writes nothing.
        let e = unsafe { grow_list("rbd_list2", &String::new, call) }.unwrap_err();
        assert_eq!(e.kind(), Some(crate::ErrorKind::Range));
    }

    #[test]
    fn cleanup_runs_once_with_the_filled_count() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FREED: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" fn cleanup(_: *mut u8, n: libc::size_t) {
            FREED.fetch_add(n, Ordering::SeqCst);
        }
        // SAFETY: `cleanup` frees nothing; it only counts.
        let list = unsafe { CList::new(vec![1u8, 2, 3], cleanup) };
        assert_eq!(list.iter().count(), 3);
        drop(list);
        assert_eq!(FREED.load(Ordering::SeqCst), 3);
    }
}
