//! The settings of the last new Ceph connection a run made through the agent:
//! what the agent's spare run connects with ahead of the next request. They
//! live in one anonymous shared mapping the agent makes before it forks
//! anything, so the agent and every process it forks see the same page and
//! nothing else does (an `exec` drops it). They are paths and names only
//! ([`ConnectConfig`] holds no secret), and a hint is only ever a guess: the
//! run compares its own settings and the files they name before it takes a
//! connection made with them ([`rbdx_core::spare`]).
//!
//! Writers take a lock word holding their pid (a dead holder's lock is taken
//! over); the data carries a checksum, so a writer killed half-way leaves no
//! hint rather than a wrong one.

use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rbdx_core::ConnectConfig;

/// The mapping's size; a hint longer than fits is not recorded.
const BYTES: usize = 16 << 10;
/// Lock word (u32), length (u32), checksum (u64); the data follows.
const HEADER: usize = 16;

static PAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Makes the shared page (once, before the agent forks anything).
///
/// # Errors
/// `mmap`'s.
pub fn create() -> io::Result<()> {
    if !PAGE.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    // SAFETY: a new anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    PAGE.store(p.cast(), Ordering::Release);
    Ok(())
}

fn page() -> Option<*mut u8> {
    let p = PAGE.load(Ordering::Acquire);
    (!p.is_null()).then_some(p)
}

fn lock_word(p: *mut u8) -> &'static AtomicU32 {
    // SAFETY: the page is mapped for the process's life, page-aligned, and
    // its first four bytes are only ever accessed as this atomic.
    unsafe { &*p.cast::<AtomicU32>() }
}

fn len_word(p: *mut u8) -> &'static AtomicU32 {
    // SAFETY: as above, bytes 4..8.
    unsafe { &*p.add(4).cast::<AtomicU32>() }
}

fn sum_word(p: *mut u8) -> &'static AtomicU64 {
    // SAFETY: as above, bytes 8..16 (8-aligned).
    unsafe { &*p.add(8).cast::<AtomicU64>() }
}

/// Holds the page's lock; released on drop.
struct Locked(*mut u8);

impl Drop for Locked {
    fn drop(&mut self) {
        lock_word(self.0).store(0, Ordering::Release);
    }
}

/// Takes the lock, waiting a little (a holder writes a few hundred bytes), and
/// taking over from a holder that died.
fn lock(p: *mut u8) -> Option<Locked> {
    let me = std::process::id();
    let word = lock_word(p);
    for _ in 0..100 {
        match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Some(Locked(p)),
            Err(holder) if !alive(holder) => {
                if word.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Some(Locked(p));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_micros(100)),
        }
    }
    None
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

fn checksum(data: &[u8]) -> u64 {
    // FNV-1a: catches a torn write, nothing more is asked of it.
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Whether a hint was ever recorded.
pub fn present() -> bool {
    page().is_some_and(|p| len_word(p).load(Ordering::Acquire) != 0)
}

/// Records `config` (a run's new connection): what the next spare run connects
/// with. Skipped when the page is busy or `config` is already there.
pub fn record(config: &ConnectConfig) {
    if let Ok(data) = serde_json::to_vec(config) {
        record_bytes(&data);
    }
}

fn record_bytes(data: &[u8]) {
    let Some(p) = page() else { return };
    if data.len() > BYTES - HEADER {
        return;
    }
    let Some(_held) = lock(p) else { return };
    let sum = checksum(data);
    if len_word(p).load(Ordering::Relaxed) as usize == data.len()
        && sum_word(p).load(Ordering::Relaxed) == sum
    {
        return;
    }
    // SAFETY: the data area is BYTES - HEADER long and `data` fits (checked);
    // the lock keeps other writers and readers out.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(HEADER), data.len()) };
    sum_word(p).store(sum, Ordering::Relaxed);
    len_word(p).store(u32::try_from(data.len()).unwrap_or(0), Ordering::Release);
}

/// The recorded hint, if there is a whole one.
pub fn read() -> Option<ConnectConfig> {
    let p = page()?;
    let data = {
        let _held = lock(p)?;
        let len = (len_word(p).load(Ordering::Acquire) as usize).min(BYTES - HEADER);
        let mut data = vec![0u8; len];
        // SAFETY: `len` bytes of the data area, read under the lock.
        unsafe { std::ptr::copy_nonoverlapping(p.add(HEADER), data.as_mut_ptr(), len) };
        (len != 0 && checksum(&data) == sum_word(p).load(Ordering::Relaxed)).then_some(data)?
    };
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_shared_with_forked_processes_and_a_torn_one_is_none() {
        create().unwrap();
        let config = ConnectConfig { client_id: Some("oneadmin".into()), ..ConnectConfig::default() };
        let data = serde_json::to_vec(&config).unwrap();
        // SAFETY: the child allocates nothing (the test harness has other
        // threads): it writes the page and exits.
        match unsafe { libc::fork() } {
            0 => {
                record_bytes(&data);
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for that child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
        }
        assert!(present());
        assert_eq!(read(), Some(config));
        // A lock left by a dead writer is taken over.
        let p = page().unwrap();
        lock_word(p).store(i32::MAX as u32, Ordering::SeqCst);
        assert!(read().is_some());
        // A torn write: no hint.
        // SAFETY: one byte of the data area.
        unsafe { *p.add(HEADER) ^= 0xff };
        assert_eq!(read(), None);
    }
}
