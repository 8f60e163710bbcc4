//! OpenNebula's RBD backup tarballs (what the stock `cp` imports when the file is
//! gzip): `disk.<id>.rbd2`, an `rbd export --export-format 2` stream, and
//! optional incrementals `disk.<id>.<n>.rbdiff` (`rbd export-diff` streams),
//! applied in order of `<n>`. The result is the newest state, with no snapshots,
//! as the stock driver leaves it.
//!
//! Stream formats (Ceph `doc/dev/rbd-export.rst`, `rbd-diff.rst`):
//! - export v2: `rbd image v2\n`, then tagged records (`u8 tag`, `u64 len`,
//!   payload) up to `E`, then `rbd image diffs v2\n`, a `u64` diff count and
//!   that many diff v2 streams;
//! - diff v1: `rbd diff v1\n`, records `f`/`t` (`u32 len`, name), `s` (`u64` size),
//!   `w` (`u64 off`, `u64 len`, data), `z` (`u64 off`, `u64 len`), `e`;
//! - diff v2: `rbd diff v2\n`, every record but `e` also carries a `u64` length
//!   first; the snapshot protection record `p` holds one byte (its length field
//!   says 8 on Ceph 16).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rbdx_core::Image;

use crate::{Error, Result};

const EXPORT_V2: &[u8] = b"rbd image v2\n";
const DIFF_V1: &[u8] = b"rbd diff v1\n";
const DIFF_V2: &[u8] = b"rbd diff v2\n";
const DIFFS_V2: &[u8] = b"rbd image diffs v2\n";
/// How long unpacking a backup tarball may take.
const UNPACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Largest single write record accepted.
const MAX_EXTENT: u64 = 1 << 30;

/// The files of an unpacked backup, in the order they apply.
#[derive(Debug)]
pub struct Backup {
    /// The directory they were unpacked into (removed on drop).
    pub dir: tempfile::TempDir,
    /// `disk.<id>.rbd2`.
    pub full: PathBuf,
    /// `disk.<id>.<n>.rbdiff`, by `<n>`.
    pub incrementals: Vec<PathBuf>,
}

/// Unpacks a gzip tarball into a staging directory and finds the backup files.
///
/// # Errors
/// One line: not a tarball, or no `disk.*.rbd2` inside.
pub fn unpack(tarball: &Path, staging: &Path) -> Result<Backup> {
    let dir = tempfile::Builder::new()
        .prefix("rbdx-backup-")
        .tempdir_in(staging)
        .map_err(Error::io(format!("staging in {}", staging.display())))?;
    let out = crate::child::run(
        Command::new("tar")
            .args(["-xzf"])
            .arg(tarball)
            .arg("-C")
            .arg(dir.path())
            .args(["--no-same-owner", "--no-same-permissions"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        UNPACK_LIMIT,
    )?;
    if !out.status.success() {
        return Err(Error::Refused(
            "the gzip file is not an OpenNebula RBD backup (tar could not unpack it)".into(),
        ));
    }
    let mut full = None;
    let mut incs: Vec<(u64, PathBuf)> = Vec::new();
    for entry in walk(dir.path()) {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["disk", _, "rbd2"] => full = Some(entry),
            ["disk", _, n, "rbdiff"] => {
                let n = n.parse().map_err(|_| Error::Refused(format!("unexpected backup file {name}")))?;
                incs.push((n, entry));
            }
            _ => {}
        }
    }
    incs.sort();
    let full = full.ok_or_else(|| {
        Error::Refused("the gzip file is not an OpenNebula RBD backup (no disk.*.rbd2 inside)".into())
    })?;
    Ok(Backup { dir, full, incrementals: incs.into_iter().map(|(_, p)| p).collect() })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&p));
            } else if e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(p);
            }
        }
    }
    out
}

struct Stream<R> {
    r: R,
}

impl<R: Read> Stream<R> {
    fn exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.r.read_exact(&mut v).map_err(Error::io("truncated backup stream"))?;
        Ok(v)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.exact(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.exact(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.exact(8)?.try_into().unwrap_or_default()))
    }
    fn skip(&mut self, n: u64) -> Result<()> {
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(Error::io("reading the backup"))?;
        if copied == n { Ok(()) } else { Err(Error::Refused("truncated backup stream".into())) }
    }
}

/// The size the stream's first diff declares (to create the image).
///
/// # Errors
/// A malformed stream.
pub fn declared_size(full: &Path) -> Result<u64> {
    let mut s =
        Stream { r: BufReader::new(File::open(full).map_err(Error::io(full.display().to_string()))?) };
    if s.exact(EXPORT_V2.len())? != EXPORT_V2 {
        return Err(Error::Refused("disk.*.rbd2 is not an rbd export-format 2 stream".into()));
    }
    skip_header_tags(&mut s)?;
    let count = s.u64()?;
    if count == 0 {
        return Err(Error::Refused("the backup holds no data".into()));
    }
    if s.exact(DIFF_V2.len())? != DIFF_V2 {
        return Err(Error::Refused("unexpected diff format in disk.*.rbd2".into()));
    }
    loop {
        let tag = s.u8()?;
        let len = s.u64()?;
        match tag {
            b's' => return s.u64(),
            b'e' => return Err(Error::Refused("the backup declares no size".into())),
            b'p' => s.skip(1)?, // protection status: one byte, whatever the length says
            _ => s.skip(len)?,
        }
    }
}

/// Skips the image metadata records up to `E` and the diffs banner.
fn skip_header_tags<R: Read>(s: &mut Stream<R>) -> Result<()> {
    loop {
        let tag = s.u8()?;
        if tag == b'E' {
            break;
        }
        let len = s.u64()?;
        s.skip(len)?;
    }
    if s.exact(DIFFS_V2.len())? != DIFFS_V2 {
        return Err(Error::Refused("disk.*.rbd2: missing the image diffs banner".into()));
    }
    Ok(())
}

/// Applies the full stream, then each incremental, to `img`.
///
/// # Errors
/// A malformed stream or a Ceph error.
pub fn apply(img: &Image<'_>, backup: &Backup) -> Result<()> {
    let mut s = Stream {
        r: BufReader::new(File::open(&backup.full).map_err(Error::io(backup.full.display().to_string()))?),
    };
    if s.exact(EXPORT_V2.len())? != EXPORT_V2 {
        return Err(Error::Refused("disk.*.rbd2 is not an rbd export-format 2 stream".into()));
    }
    skip_header_tags(&mut s)?;
    let count = s.u64()?;
    for _ in 0..count {
        apply_diff(img, &mut s)?;
    }
    for inc in &backup.incrementals {
        let mut s =
            Stream { r: BufReader::new(File::open(inc).map_err(Error::io(inc.display().to_string()))?) };
        apply_diff(img, &mut s)?;
    }
    Ok(img.flush()?)
}

fn apply_diff<R: Read>(img: &Image<'_>, s: &mut Stream<R>) -> Result<()> {
    let magic = s.exact(DIFF_V1.len())?;
    let v2 = match magic.as_slice() {
        DIFF_V1 => false,
        DIFF_V2 => true,
        _ => return Err(Error::Refused("unexpected diff stream in the backup".into())),
    };
    loop {
        let tag = s.u8()?;
        if v2 && tag != b'e' {
            s.u64()?; // the record's length: the fields below say the same
        }
        match tag {
            b'f' | b't' => {
                let n = s.u32()?;
                s.skip(n.into())?;
            }
            b's' => {
                let size = s.u64()?;
                if img.info()?.size != size {
                    img.resize(size, true)?;
                }
            }
            b'w' => {
                let (off, len) = (s.u64()?, s.u64()?);
                if len > MAX_EXTENT {
                    return Err(Error::Refused(format!("backup record of {len} bytes is too large")));
                }
                let data = s.exact(len as usize)?;
                img.write_at(off, &data)?;
            }
            b'z' => {
                let (off, len) = (s.u64()?, s.u64()?);
                img.discard(off, len)?;
            }
            // Snapshot protection status (export v2): one byte, whatever the
            // length field says.
            b'p' => s.skip(1)?,
            b'e' => return Ok(()),
            other => {
                return Err(Error::Refused(format!(
                    "unknown record {:?} in the backup stream",
                    other as char
                )));
            }
        }
    }
}
