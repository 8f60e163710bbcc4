//! What an image holds, or what changed in it since one of its snapshots, read
//! in aligned runs: the source of full and incremental backups. Only the
//! changed data is read (librbd's diff, with fast-diff from the object map).

use crate::error::{Error, Result};
use crate::rbd::Image;

/// One changed extent: `len` bytes at `offset`, holding data (`exists`) or
/// discarded since (reading zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Whether the extent holds data (false: it reads as zeros now).
    pub exists: bool,
}

/// The extents of `img` (open at a snapshot or the head) that changed since its
/// snapshot `since`, or that hold data (its own or its parent's) with `None`.
///
/// # Errors
/// Ceph errors; `NotFound` when `since` is not a snapshot of the image.
pub fn changed_extents(img: &Image<'_>, since: Option<&str>) -> Result<Vec<Extent>> {
    let mut v = Vec::new();
    img.diff_iterate(since, true, false, |offset, len, exists| {
        v.push(Extent { offset, len, exists });
        Ok(())
    })?;
    Ok(v)
}

/// Calls `f(offset, data)` for each run of `unit`-aligned blocks of `img` that
/// [`changed_extents`] touches, in offset order, each run at most `max_run`
/// bytes (a multiple of `unit`). `data` is the image's content over the run (the
/// last run stops at the image's size). Returns the bytes read.
///
/// # Errors
/// Ceph errors, or the first error of `f`.
pub fn for_each_changed_run(
    img: &Image<'_>,
    since: Option<&str>,
    unit: u64,
    max_run: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    if unit == 0 || max_run < unit || max_run % unit != 0 {
        return Err(Error::Invalid(format!("bad run sizes {unit}/{max_run}")));
    }
    let size = img.info()?.size;
    let runs = aligned_runs(&changed_extents(img, since)?, unit, max_run, size);
    let mut buf = vec![0u8; usize::try_from(max_run).unwrap_or(usize::MAX)];
    let mut read = 0;
    for (off, len) in runs {
        let b = &mut buf[..usize::try_from(len).unwrap_or(0)];
        read_exact_at(img, off, b)?;
        f(off, b)?;
        read += len;
    }
    Ok(read)
}

/// The `unit`-aligned runs covering `extents` (sorted, merged, split at
/// `max_run`), clipped to `size`.
fn aligned_runs(extents: &[Extent], unit: u64, max_run: u64, size: u64) -> Vec<(u64, u64)> {
    let mut blocks: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| e.len > 0 && e.offset < size)
        .map(|e| (e.offset / unit, (e.offset + e.len).min(size).div_ceil(unit)))
        .collect();
    blocks.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in blocks {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let per_run = max_run / unit;
    let mut runs = Vec::new();
    for (mut s, e) in merged {
        while s < e {
            let n = per_run.min(e - s);
            let off = s * unit;
            runs.push((off, ((s + n) * unit).min(size) - off));
            s += n;
        }
    }
    runs
}

/// Reads exactly `buf.len()` bytes at `offset` (librbd may return fewer at once).
///
/// # Errors
/// Ceph errors; `Invalid` when the image ends first.
pub fn read_exact_at(img: &Image<'_>, offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let got = img.read_at(offset + done as u64, &mut buf[done..])?;
        if got == 0 {
            return Err(Error::Invalid(format!("{} ended at {}", img.name(), offset + done as u64)));
        }
        done += got;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(offset: u64, len: u64) -> Extent {
        Extent { offset, len, exists: true }
    }

    #[test]
    fn runs_are_aligned_merged_split_and_clipped() {
        // Two extents in one 64 KiB block, one straddling two, one far away.
        let x = [e(70_000, 10), e(100, 5), e(65_000, 2000), e(10 << 20, 1)];
        let runs = aligned_runs(&x, 65536, 131_072, 20 << 20);
        assert_eq!(runs, vec![(0, 131_072), (10 << 20, 65536)]);
        // A long extent is split at max_run; the last run stops at the size.
        let runs = aligned_runs(&[e(0, 300_000)], 65536, 131_072, 250_000);
        assert_eq!(runs, vec![(0, 131_072), (131_072, 250_000 - 131_072)]);
        assert!(aligned_runs(&[e(300_000, 10)], 65536, 131_072, 250_000).is_empty());
        assert!(aligned_runs(&[], 65536, 131_072, 250_000).is_empty());
    }
}
