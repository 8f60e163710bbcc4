//! rbdx-import: the image import engine behind the datastore driver's `cp` and the
//! operator command `rbdx import`.
//!
//! A source (a local path, an `http(s)://` URL, or an already open stream of known
//! size) is read once, front to back:
//! - **raw** data goes straight into the RBD image, skipping all-zero chunks
//!   (sparse), with no staging file;
//! - any other format qemu-img understands (qcow2, vmdk, vhdx, vdi…) is read
//!   from the source file itself when it is local, else from a staged copy of
//!   the stream. Where `qemu-img map` says the guest data is stored raw in the
//!   file (no compressed clusters), those ranges are copied straight into the
//!   image, in one pass; otherwise `qemu-img convert` writes a sparse raw file in
//!   the staging directory, which is then written sparse into the image. Staging
//!   files are removed on every path;
//! - MD5 and SHA1 are verified on the bytes read when expected values are given
//!   (a mismatch removes the image); the transfer can be rate-limited; progress
//!   is reported through a callback.
//!
//! - a gzip file is an OpenNebula RBD backup tarball ([`backup`]), as the stock
//!   driver treats it.
//!
//! The data goes into a temporary image ([`temp_name`]) that is renamed into
//! place once complete, so an image under the target's name is always a finished
//! import, and a completed import is not repeated. An interrupted import leaves
//! only the temporary image (or, from older versions, the target marked
//! [`KEY_IMPORTING`]); importing again removes it and starts over.

#![deny(missing_docs)]

pub mod backup;
pub mod child;
pub mod error;
pub mod export;
pub mod intake;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec, RemoveOptions};
use sha1::Sha1;

/// Metadata key on an image whose import has not finished (set by older versions,
/// which imported under the target's name).
pub const KEY_IMPORTING: &str = "rbdx.importing";

/// The temporary image an import into `target` writes before renaming it into place.
pub fn temp_name(target: &str) -> String {
    format!("{target}.rbdx-import")
}

/// Bytes read to recognise the format.
const SNIFF: usize = 64 << 10;

/// What the first bytes say the data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No known header: raw.
    Raw,
    /// qcow2 (`QFI\xfb`).
    Qcow2,
    /// VMware (`KDMV`, or a text descriptor).
    Vmdk,
    /// Hyper-V (`vhdxfile`).
    Vhdx,
    /// VirtualBox.
    Vdi,
    /// Virtual PC / Hyper-V VHD (dynamic: `conectix` at the start).
    Vpc,
    /// QEMU enhanced disk.
    Qed,
    /// gzip: a compressed image, or an OpenNebula RBD backup tarball.
    Gzip,
    /// xz: a compressed image.
    Xz,
    /// bzip2: a compressed image.
    Bzip2,
}

impl Format {
    /// The qemu-img format name.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vdi => "vdi",
            Self::Vpc => "vpc",
            Self::Qed => "qed",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
        }
    }

    /// True for the compressions an image may arrive in.
    pub fn is_compressed(self) -> bool {
        matches!(self, Self::Gzip | Self::Xz | Self::Bzip2)
    }
}

/// Recognises a format from the first bytes of the data.
pub fn sniff(head: &[u8]) -> Format {
    if head.starts_with(b"QFI\xfb") {
        Format::Qcow2
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        Format::Vmdk
    } else if head.starts_with(b"vhdxfile") {
        Format::Vhdx
    } else if head.len() >= 0x44 && head[0x40..0x44] == [0x7f, 0x10, 0xda, 0xbe] {
        Format::Vdi
    } else if head.starts_with(b"conectix") {
        Format::Vpc
    } else if head.starts_with(b"QED\0") {
        Format::Qed
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Format::Xz
    } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        Format::Bzip2
    } else {
        Format::Raw
    }
}

pub use error::{Context, Error, Result};

/// Where the data comes from.
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// A local file already open (what is read is this file, never a path
    /// opened again); it must be a regular file.
    Open(File),
    /// An http or https URL.
    Url(String),
    /// An open stream of `size` bytes (e.g. a file sent over ssh).
    Stream {
        /// The reader.
        reader: Box<dyn Read>,
        /// Its length in bytes.
        size: u64,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Open(_) => write!(f, "Open(file)"),
            Self::Url(u) => write!(f, "Url({u})"),
            Self::Stream { size, .. } => write!(f, "Stream({size} bytes)"),
        }
    }
}

impl Source {
    /// A path or an `http(s)://` URL.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            Self::Url(s.to_string())
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

/// Progress: bytes read so far and the total, if known.
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

/// How to import.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The image's data pool.
    pub data_pool: Option<String>,
    /// Make the image at least this large (bytes).
    pub min_size: Option<u64>,
    /// Expected MD5 (hex) of the bytes read.
    pub md5: Option<String>,
    /// Expected SHA1 (hex) of the bytes read.
    pub sha1: Option<String>,
    /// Read at most this many bytes per second.
    pub limit_bps: Option<u64>,
    /// Where a non-raw stream is staged for qemu-img (default: the temp dir).
    pub staging_dir: Option<PathBuf>,
    /// How long an http transfer may go without data (idle, not total).
    pub timeout: Option<Duration>,
    /// How long qemu-img may take for one inspection or conversion (default 1 h).
    pub convert_timeout: Option<Duration>,
    /// Refuse an image whose virtual size is larger (bytes; default
    /// [`DEFAULT_MAX_SIZE`]).
    pub max_size: Option<u64>,
}

/// The largest virtual size an import accepts unless told otherwise: 64 TiB.
/// A 1 KiB qcow2 can claim exabytes; the claim is refused before anything is
/// created or staged.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 40;

/// Free space an import leaves on its staging file system: 5 % of it, at least
/// 1 GiB (at most half of it). Staging and conversion stop, and fail in one
/// line, rather than fill it.
fn staging_reserve(total: u64) -> u64 {
    (total / 20).max(1 << 30).min(total / 2)
}

/// Fails when the staging file system at `dir` has less than `need` bytes free
/// above its reserve.
fn staging_room(dir: &Path, need: u64) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::Io { context: format!("staging in {}", dir.display()), source: e.into() })?;
    let frag = st.fragment_size().max(1);
    let total = st.blocks().saturating_mul(frag);
    let avail = st.blocks_available().saturating_mul(frag);
    let reserve = staging_reserve(total);
    if avail <= reserve.saturating_add(need) {
        let needs = if need > 0 { format!(", {} MiB more needed", need >> 20) } else { String::new() };
        return Err(Error::NoSpace(format!(
            "stopped: the staging directory {} is nearly full ({} MiB free, {} MiB kept free{needs})",
            dir.display(),
            avail >> 20,
            reserve >> 20
        )));
    }
    Ok(())
}

impl Options {
    fn convert_timeout(&self) -> Duration {
        self.convert_timeout.unwrap_or(Duration::from_secs(3600))
    }

    fn staging_dir(&self) -> PathBuf {
        self.staging_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// Refuses a virtual size above the cap.
    fn check_size(&self, size: u64) -> Result<()> {
        let max = self.max_size.unwrap_or(DEFAULT_MAX_SIZE);
        if size > max {
            return Err(Error::Refused(format!(
                "the image's virtual size ({} MiB) is above the {} MiB this datastore accepts",
                size >> 20,
                max >> 20
            )));
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The format found.
    pub format: Format,
    /// Bytes read from the source.
    pub read: u64,
    /// Virtual size of the image (bytes).
    pub size: u64,
    /// True if the image was imported by an earlier run.
    pub already_done: bool,
}

/// Opens `url` for reading; returns the body and its length if the server said.
/// `idle` bounds each wait for the server (connecting, the response, and every
/// read of the body): a transfer that keeps moving is never cut, however long it
/// takes; the action's own deadline bounds the whole.
///
/// # Errors
/// One line: unreachable, HTTP error status.
pub fn open_url(url: &str, idle: Option<Duration>) -> Result<(Box<dyn Read>, Option<u64>)> {
    let idle = idle.unwrap_or(Duration::from_secs(60));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(idle.min(Duration::from_secs(30))))
        .timeout_recv_response(Some(idle))
        .timeout_recv_body(None)
        .timeout_per_read(Some(idle))
        .http_status_as_error(true)
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| Error::Download(format!("cannot download {url}: {e}")))?;
    let len = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
    Ok((Box::new(IdleNamed { inner: reader, idle }), len))
}

/// A body reader whose idle timeout reads as a sentence.
struct IdleNamed<R> {
    inner: R,
    idle: Duration,
}

impl<R: Read> Read for IdleNamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut || e.to_string().contains("timeout") {
                io::Error::new(io::ErrorKind::TimedOut, format!("no data for {}s", self.idle.as_secs()))
            } else {
                e
            }
        })
    }
}

/// A reader that hashes, rate-limits and reports progress.
struct Tap<'a, R> {
    inner: R,
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    read: u64,
    total: Option<u64>,
    limit_bps: Option<u64>,
    start: Instant,
    progress: Option<Progress<'a>>,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.md5 {
            h.update(&buf[..n]);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(&buf[..n]);
        }
        self.read += n as u64;
        if let Some(p) = &mut self.progress {
            p(self.read, self.total);
        }
        if let Some(bps) = self.limit_bps.filter(|b| *b > 0) {
            let due = Duration::from_secs_f64(self.read as f64 / bps as f64);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Imports `source` into the new image `target`.
///
/// # Errors
/// One line; the temporary image is removed on any failure after it was created.
pub fn import(
    cluster: &Cluster,
    source: Source,
    target: &ImageSpec,
    opts: &Options,
    progress: Option<Progress<'_>>,
) -> Result<Report> {
    // A finished earlier run is not repeated (the target's name only ever holds
    // a complete image); an unfinished one is started over. Only "not found" means
    // there is none (a timeout fails the import at once).
    let existing = match ops::stat(cluster, target) {
        Ok(st) => Some(st),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(st) = existing {
        let io = ops::ioctx(cluster, target)?;
        let marker = io.open_read_only(&target.name, None).and_then(|i| i.metadata_get(KEY_IMPORTING));
        match marker? {
            None => {
                // An earlier run's: its rename may have stopped half-way.
                let temp = target.sibling(&temp_name(&target.name))?;
                ops::finish_stopped_rename(cluster, &temp, &target.name)
                    .context(format!("renaming {temp} to {target}"))?;
                return Ok(Report { format: Format::Raw, read: 0, size: st.size, already_done: true });
            }
            Some(_) => {
                ops::remove(cluster, target, RemoveOptions::default())
                    .context(format!("removing the unfinished {target}"))?;
            }
        }
    }
    let temp = target.sibling(&temp_name(&target.name))?;
    ops::remove(cluster, &temp, RemoveOptions::default())
        .context(format!("removing the unfinished {temp}"))?;
    // A local file is opened once: qemu-img reads that open file (through an
    // inherited descriptor), never the path again.
    // The reader, its length if known, and the open file children read.
    type Opened = (Box<dyn Read>, Option<u64>, Option<OpenFile>);
    let local_file = |f: File| -> Result<Opened> {
        let meta = f.metadata().map_err(Error::io("reading the source"))?;
        if !meta.is_file() {
            return Err(Error::Refused("the source is not a regular file".into()));
        }
        let shared = OpenFile::new(&f)?;
        Ok((Box::new(f), Some(meta.len()), Some(shared)))
    };
    let (reader, total, local): Opened = match source {
        Source::File(p) => local_file(open_regular(&p)?.0)?,
        Source::Open(f) => local_file(f)?,
        Source::Url(u) => {
            let (r, len) = open_url(&u, opts.timeout)?;
            (r, len, None)
        }
        Source::Stream { reader, size } => (reader, Some(size), None),
    };
    let mut tap = Tap {
        inner: reader,
        md5: opts.md5.as_ref().map(|_| Md5::new()),
        sha1: opts.sha1.as_ref().map(|_| Sha1::new()),
        read: 0,
        total,
        limit_bps: opts.limit_bps,
        start: Instant::now(),
        progress,
    };
    let mut head = vec![0u8; SNIFF];
    let mut got = 0;
    while got < head.len() {
        let n = tap.read(&mut head[got..]).map_err(Error::io("reading the source"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    let format = sniff(&head);
    let result = if format.is_compressed() {
        // Read (and hashed) whole, then decompressed beside it: a gzip holding an
        // OpenNebula RBD backup tarball is restored; anything else compressed is
        // the image it decompresses to.
        let (file, _staged) = as_file(local.as_ref().map(OpenFile::path), &head, &mut tap, opts)?;
        let dir = opts.staging_dir();
        if format == Format::Gzip && gzip_holds_tar(&file)? {
            let b = backup::unpack(&file, &dir)?;
            let declared = backup::declared_size(&b.full)?;
            opts.check_size(declared)?;
            let size = declared.max(opts.min_size.unwrap_or(0));
            create(cluster, &temp, size, opts)?;
            let io = ops::ioctx(cluster, &temp)?;
            io.open(&temp.name).map_err(Error::from).and_then(|img| backup::apply(&img, &b)).map(|()| size)
        } else {
            let plain = decompress(&file, format, opts)?;
            from_file(cluster, &temp, plain.path(), opts)
        }
    } else if let (Format::Raw, Some(total)) = (format, total) {
        opts.check_size(total)?;
        let size = total.max(opts.min_size.unwrap_or(0));
        create(cluster, &temp, size, opts)?;
        write_raw(cluster, &temp, head.as_slice().chain(&mut tap)).and_then(|()| {
            // A source that ends early would leave zeros where its data was.
            if tap.read == total {
                Ok(size)
            } else {
                Err(Error::Refused(format!("the source ended after {} of its {total} bytes", tap.read)))
            }
        })
    } else if format == Format::Raw {
        // A server that does not say the size: stage the data to learn it.
        let staged = stage(&head, &mut tap, opts)?;
        let len = staged.as_file().metadata().map_err(Error::io("reading the staged data"))?.len();
        let size = len.max(opts.min_size.unwrap_or(0));
        create(cluster, &temp, size, opts)?;
        let f = File::open(staged.path()).map_err(Error::io("reading the staged data"))?;
        write_file(cluster, &temp, &f).map(|()| size)
    } else {
        let (file, _staged) = as_file(local.as_ref().map(OpenFile::path), &head, &mut tap, opts)?;
        let dir = opts.staging_dir.clone().unwrap_or_else(std::env::temp_dir);
        let virtual_size = intake::inspect(&file, format, &dir, opts.convert_timeout())?.virtual_size;
        opts.check_size(virtual_size)?;
        let size = virtual_size.max(opts.min_size.unwrap_or(0));
        let total = tap.total;
        let mut report = |n| {
            if let Some(p) = tap.progress.as_mut() {
                p(n, total);
            }
        };
        write_image(cluster, &temp, &file, format, (virtual_size, size), opts, &mut report).map(|()| size)
    };
    let verified = result.and_then(|size| {
        // Drain what a short format read left (for the checksums), then verify.
        if opts.md5.is_some() || opts.sha1.is_some() {
            io::copy(&mut tap, &mut io::sink()).map_err(Error::io("reading the source"))?;
        }
        let checks = [
            ("MD5", opts.md5.as_ref(), tap.md5.take().map(|h| hex(&h.finalize()))),
            ("SHA1", opts.sha1.as_ref(), tap.sha1.take().map(|h| hex(&h.finalize()))),
        ];
        for (name, want, got) in checks {
            if let (Some(want), Some(got)) = (want, got) {
                if !want.eq_ignore_ascii_case(got.trim()) {
                    return Err(Error::Refused(format!(
                        "{name} mismatch: expected {want}, the source has {got}"
                    )));
                }
            }
        }
        Ok(size)
    });
    let size = match verified {
        Ok(s) => s,
        Err(e) => {
            let _ = ops::remove(cluster, &temp, RemoveOptions::default());
            return Err(e);
        }
    };
    ops::rename(cluster, &temp, &target.name).context(format!("renaming {temp} to {target}"))?;
    Ok(Report { format, read: tap.read, size, already_done: false })
}

/// True if the gzip file's content starts with a tar header (`ustar` at 257).
fn gzip_holds_tar(file: &Path) -> Result<bool> {
    let f = File::open(file).map_err(Error::io("reading the compressed file"))?;
    let mut head = Vec::with_capacity(512);
    // A corrupt stream is no tarball; the decompression says what is wrong.
    let _ = flate2::read::MultiGzDecoder::new(f).take(512).read_to_end(&mut head);
    Ok(head.get(257..262) == Some(b"ustar"))
}

/// Decompresses `file` (`format`: gzip, xz or bzip2) into a sparse file in the
/// staging directory (removed when the handle drops), never past the size cap
/// (counted as it streams) nor into the staging file system's reserve.
fn decompress(file: &Path, format: Format, opts: &Options) -> Result<tempfile::NamedTempFile> {
    use std::io::{Seek, SeekFrom};
    let dir = opts.staging_dir();
    staging_room(&dir, 0)?;
    let mut out = tempfile::Builder::new()
        .prefix("rbdx-import-")
        .suffix(".plain")
        .tempfile_in(&dir)
        .map_err(Error::io(format!("staging in {}", dir.display())))?;
    let input = File::open(file).map_err(Error::io("reading the compressed file"))?;
    let tool = format.qemu_name();
    let mut cmd = Command::new(tool);
    cmd.arg("-dc").stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = child::spawn(&mut cmd).map_err(Error::io(format!("running {tool}")))?;
    let errors = child.stderr.take().map(|e| child::drain(e, 1 << 16));
    let mut from = child.stdout.take().ok_or_else(|| Error::Tool(format!("{tool}: no output")))?;
    let max = opts.max_size.unwrap_or(DEFAULT_MAX_SIZE);
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut since_check) = (0u64, 0u64);
    let copied = (|| -> Result<()> {
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io { context: format!("reading {tool}'s output"), source: e }),
            };
            len += n as u64;
            if len > max {
                return Err(Error::Refused(format!(
                    "the decompressed image is larger than the {} MiB accepted",
                    max >> 20
                )));
            }
            let f = out.as_file_mut();
            if buf[..n].iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(n as i64)).map_err(Error::io("staging"))?;
            } else {
                f.write_all(&buf[..n]).map_err(Error::io(format!("staging in {}", dir.display())))?;
            }
            since_check += n as u64;
            if since_check >= 64 << 20 {
                since_check = 0;
                staging_room(&dir, 0)?;
            }
        }
    })();
    drop(from);
    if let Err(e) = copied {
        child::kill(&mut child);
        return Err(e);
    }
    let status = child::wait(&mut child, opts.convert_timeout())?;
    if !status.success() {
        let err = errors.and_then(|h| h.join().ok()).unwrap_or_default();
        return Err(Error::Refused(format!("cannot decompress the {tool} file: {}", one_line(&err))));
    }
    out.as_file().set_len(len).map_err(Error::io("staging"))?;
    Ok(out)
}

/// The size of the image compressed in local file `file` (`format`: gzip, xz or
/// bzip2), as the stock `stat` reports it: a raw image's decompressed length
/// (counted, never stored), or a qcow2's virtual size from its header (after
/// the intake's header checks). Another format inside is refused.
///
/// # Errors
/// One line: refused, or the decompressor failed.
pub fn compressed_image_size(file: &Path, format: Format, deadline: Duration) -> Result<u64> {
    let input = File::open(file).map_err(Error::io(format!("cannot read {}", file.display())))?;
    let mut cmd = Command::new(format.qemu_name());
    cmd.arg("-dc").stdin(input).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = child::spawn(&mut cmd).map_err(Error::io(format!("running {}", format.qemu_name())))?;
    let mut out = child.stdout.take().ok_or_else(|| Error::Tool("no decompressor output".into()))?;
    let mut head = Vec::with_capacity(64 << 10);
    let read = (&mut out).take(64 << 10).read_to_end(&mut head);
    let inner = sniff(&head);
    let size = match (read, inner) {
        (Err(e), _) => Err(Error::Io { context: "decompressing".into(), source: e }),
        (Ok(_), Format::Qcow2) if head.len() >= 32 => {
            intake::check_head(&head, Format::Qcow2, &mut |_, _| {
                Err(Error::Refused("beyond the header".into()))
            })
            .map(|()| u64::from_be_bytes(head[24..32].try_into().unwrap_or_default()))
        }
        (Ok(_), Format::Raw) => {
            let n = io::copy(&mut out, &mut io::sink()).map_err(Error::io("decompressing"))?;
            drop(out);
            // A corrupt stream ends early: only a clean end gives the size.
            let status = child::wait(&mut child, deadline)?;
            return if status.success() {
                Ok(n + head.len() as u64)
            } else {
                Err(Error::Refused(format!("cannot decompress the {} file", format.qemu_name())))
            };
        }
        (Ok(_), f) => Err(Error::Refused(format!(
            "cannot read the size of a {} image inside a {} file",
            f.qemu_name(),
            format.qemu_name()
        ))),
    };
    drop(out);
    child::kill(&mut child);
    size
}

/// The image in local file `file` (raw, or a qemu-img format; a file compressed
/// again is refused) written into the new image `temp`; returns its size.
fn from_file(cluster: &Cluster, temp: &ImageSpec, file: &Path, opts: &Options) -> Result<u64> {
    let f = File::open(file).map_err(Error::io("reading the decompressed image"))?;
    let len = f.metadata().map_err(Error::io("reading the decompressed image"))?.len();
    let mut head = Vec::with_capacity(SNIFF);
    (&f).take(SNIFF as u64).read_to_end(&mut head).map_err(Error::io("reading the decompressed image"))?;
    let format = sniff(&head);
    if format.is_compressed() {
        return Err(Error::Refused(format!(
            "a {} file inside a compressed file is not an image",
            format.qemu_name()
        )));
    }
    if format == Format::Raw {
        opts.check_size(len)?;
        let size = len.max(opts.min_size.unwrap_or(0));
        create(cluster, temp, size, opts)?;
        return write_file(cluster, temp, &f).map(|()| size);
    }
    let dir = opts.staging_dir();
    let virtual_size = intake::inspect(file, format, &dir, opts.convert_timeout())?.virtual_size;
    opts.check_size(virtual_size)?;
    let size = virtual_size.max(opts.min_size.unwrap_or(0));
    write_image(cluster, temp, file, format, (virtual_size, size), opts, &mut |_| {}).map(|()| size)
}

/// Writes the image in `file` (passed [`intake::inspect`] as `format`) into the
/// new image `temp` of `size` bytes (`virtual_size` is the file's own). What `qemu-img map` finds stored raw in
/// the file is copied straight from it, in one pass; an image with compressed
/// data (or a format whose map gives no offsets) is converted by qemu-img into
/// a raw file first. `progress` is told how far into the file a direct copy is.
fn write_image(
    cluster: &Cluster,
    temp: &ImageSpec,
    file: &Path,
    format: Format,
    (virtual_size, size): (u64, u64),
    opts: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let dir = opts.staging_dir();
    if let Some(extents) = intake::data_map(file, format, virtual_size, &dir, opts.convert_timeout())? {
        let f = File::open(file).map_err(Error::io("reading the image"))?;
        create(cluster, temp, size, opts)?;
        let io = ops::ioctx(cluster, temp)?;
        let img = io.open(&temp.name)?;
        ops::write_extents_sparse(&img, &f, &extents, progress).context(format!("writing {temp}"))?;
        return Ok(());
    }
    let raw = convert_to_raw(file, format, virtual_size, opts)?;
    create(cluster, temp, size, opts)?;
    let f = File::open(raw.path()).map_err(Error::io("reading the converted image"))?;
    write_file(cluster, temp, &f)
}

/// The data as a file for tools that need one (qemu-img, tar): the source file
/// itself when it is local (read through once here, for the checksums), else a
/// staged copy, removed when the returned handle drops.
fn as_file(
    local: Option<&Path>,
    head: &[u8],
    rest: &mut impl Read,
    opts: &Options,
) -> Result<(PathBuf, Option<tempfile::NamedTempFile>)> {
    match local {
        Some(p) => {
            if opts.md5.is_some() || opts.sha1.is_some() {
                io::copy(rest, &mut io::sink()).map_err(Error::io("reading the source"))?;
            }
            Ok((p.to_path_buf(), None))
        }
        None => {
            let staged = stage(head, rest, opts)?;
            Ok((staged.path().to_path_buf(), Some(staged)))
        }
    }
}

fn create(cluster: &Cluster, image: &ImageSpec, size: u64, opts: &Options) -> Result<()> {
    ops::create(cluster, image, size, &CreateOptions::with_data_pool(opts.data_pool.as_deref()))
        .context(format!("creating {image}"))
}

fn write_raw(cluster: &Cluster, target: &ImageSpec, src: impl Read) -> Result<()> {
    let io = ops::ioctx(cluster, target)?;
    let img = io.open(&target.name)?;
    ops::write_sparse(&img, src).context(format!("writing {target}"))?;
    Ok(())
}

/// Writes a local file into a new image: only its data extents are read.
fn write_file(cluster: &Cluster, target: &ImageSpec, src: &File) -> Result<()> {
    let io = ops::ioctx(cluster, target)?;
    let img = io.open(&target.name)?;
    ops::write_file_sparse(&img, src, false).context(format!("writing {target}"))?;
    Ok(())
}

/// Copies the stream to a file in the staging directory, never past the size
/// cap nor into the staging file system's reserve.
fn stage(head: &[u8], rest: &mut impl Read, opts: &Options) -> Result<tempfile::NamedTempFile> {
    let dir = opts.staging_dir();
    staging_room(&dir, 0)?;
    let mut f = tempfile::Builder::new()
        .prefix("rbdx-import-")
        .tempfile_in(&dir)
        .map_err(Error::io(format!("staging in {}", dir.display())))?;
    f.write_all(head).map_err(Error::io("staging"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut staged = head.len() as u64;
    let mut since_check = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io { context: "reading the source".into(), source: e }),
        };
        staged += n as u64;
        opts.check_size(staged)?;
        since_check += n as u64;
        if since_check >= 4 << 20 {
            since_check = 0;
            staging_room(&dir, 0)?;
        }
        f.write_all(&buf[..n]).map_err(Error::io(format!("staging in {}", dir.display())))?;
    }
    f.flush().map_err(Error::io("staging"))?;
    Ok(f)
}

/// The virtual size of `file` read as `format`, once it passed every intake
/// check ([`intake`]); qemu-img runs in `cwd` for at most `deadline`.
///
/// # Errors
/// One line: refused, or qemu-img failed.
pub fn virtual_size(file: &Path, format: Format, cwd: &Path, deadline: Duration) -> Result<u64> {
    intake::inspect(file, format, cwd, deadline).map(|i| i.virtual_size)
}

/// Opens `path` for reading only if it is a regular file (a FIFO or a device
/// is refused without blocking); returns the file and the path it really is
/// (links resolved, from the open file itself, so that a check on it holds for
/// what is read).
///
/// # Errors
/// One line naming the path.
pub fn open_regular(path: &Path) -> Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().len() >= 4096 {
        return Err(Error::Refused(format!("path too long ({} bytes)", path.as_os_str().len())));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(Error::io(format!("cannot read {}", path.display())))?;
    let meta = f.metadata().map_err(Error::io(format!("cannot read {}", path.display())))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!("{} is not a regular file", path.display())));
    }
    let real = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f)))
        .map_err(Error::io(format!("cannot resolve {}", path.display())))?;
    Ok((f, real))
}

/// An open file that children started meanwhile can read as `/dev/fd/<n>` (a
/// duplicate descriptor without close-on-exec, closed on drop).
#[derive(Debug)]
pub struct OpenFile {
    /// Kept open for the children; closed on drop.
    _dup: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl OpenFile {
    /// Shares `f` with children.
    ///
    /// # Errors
    /// One line.
    pub fn new(f: &File) -> Result<Self> {
        use std::os::fd::{AsFd, AsRawFd};
        let dup = f.as_fd().try_clone_to_owned().map_err(Error::io("duplicating the file"))?;
        nix::fcntl::fcntl(&dup, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
            .map_err(|e| Error::Io { context: "sharing the file".into(), source: e.into() })?;
        let path = PathBuf::from(format!("/dev/fd/{}", dup.as_raw_fd()));
        Ok(Self { _dup: dup, path })
    }

    /// The path children open it by.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The image formats rbdx hands to qemu-img.
pub const QEMU_FORMATS: [&str; 7] = ["raw", "qcow2", "vmdk", "vhdx", "vdi", "vpc", "qed"];

/// Which of [`QEMU_FORMATS`] the installed qemu-img lacks (empty: all there).
///
/// # Errors
/// One line when qemu-img cannot be run.
pub fn qemu_img_formats() -> Result<Vec<String>, crate::Error> {
    let out = child::run(
        Command::new("qemu-img")
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
        Duration::from_secs(30),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Supported formats:" (older) or "Supported image formats:" (newer), then
    // the names, on the same line or the following ones.
    let listed: Vec<&str> = text
        .split_once("formats:")
        .map(|(_, rest)| rest.split("\n\n").find(|p| !p.trim().is_empty()).unwrap_or(""))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    Ok(QEMU_FORMATS.iter().filter(|f| !listed.contains(f)).map(|f| (*f).to_string()).collect())
}

pub(crate) fn one_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Converts `file` (checked by [`intake::inspect`]) to a sparse raw file in the
/// staging directory (removed when the returned handle drops), under the intake
/// limits: qemu-img may write nothing larger than the virtual size. qemu-img
/// cannot write raw to a pipe, and its rbd driver is an optional module; the raw
/// file is then written sparse in-process.
fn convert_to_raw(
    file: &Path,
    format: Format,
    virtual_size: u64,
    opts: &Options,
) -> Result<tempfile::NamedTempFile> {
    let dir = opts.staging_dir.clone().unwrap_or_else(std::env::temp_dir);
    let raw = tempfile::Builder::new()
        .prefix("rbdx-import-")
        .suffix(".raw")
        .tempfile_in(&dir)
        .map_err(Error::io(format!("staging in {}", dir.display())))?;
    let name = intake::qemu_filename(file, format);
    let out = raw.path().to_string_lossy().into_owned();
    let limits =
        intake::Limits { deadline: opts.convert_timeout(), max_output: virtual_size.saturating_add(1 << 20) };
    // The raw file holds at least the source's data (more when it is compressed:
    // the watch below stops the conversion before the reserve is reached).
    let data = std::fs::metadata(file).map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512).unwrap_or(0);
    staging_room(&dir, data)?;
    let converted =
        intake::qemu_img_checked(&["convert", "-O", "raw", &name, &out], &dir, limits, &mut || {
            staging_room(&dir, 0)
        });
    // The watch runs four times a second: a conversion may finish (or fail for
    // want of room) between two looks, and the reserve is judged once more.
    staging_room(&dir, 0)?;
    converted?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_their_magic() {
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
        assert_eq!(sniff(b"KDMV\x01"), Format::Vmdk);
        assert_eq!(sniff(b"vhdxfile"), Format::Vhdx);
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Format::Gzip);
        let mut vdi = vec![0u8; 0x50];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(sniff(&vdi), Format::Vdi);
        assert_eq!(sniff(&[0u8; 512]), Format::Raw);
        assert_eq!(sniff(b""), Format::Raw);
    }

    #[test]
    fn the_tap_hashes_and_limits() {
        let data = vec![7u8; 100_000];
        let mut t = Tap {
            inner: data.as_slice(),
            md5: Some(Md5::new()),
            sha1: Some(Sha1::new()),
            read: 0,
            total: Some(100_000),
            limit_bps: Some(400_000),
            start: Instant::now(),
            progress: None,
        };
        io::copy(&mut t, &mut io::sink()).unwrap();
        assert!(t.start.elapsed() >= Duration::from_millis(200), "100 kB at 400 kB/s takes 250 ms");
        assert_eq!(t.read, 100_000);
        assert_eq!(hex(&t.md5.unwrap().finalize()).len(), 32);
    }
}
