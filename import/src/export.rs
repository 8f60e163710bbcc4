//! Writers for the two backup formats OpenNebula's backup datastores take, fed
//! with bytes (from librbd or anything else) and written without temporary files
//! or helper processes.
//!
//! # qcow2 ([`Qcow2Writer`])
//!
//! A version 3 image (qemu `docs/interop/qcow2.txt`): 64 KiB clusters, 16-bit
//! refcounts, no backing file, compression, encryption, snapshots nor header
//! extensions. The file is laid out in cluster units, in the order written:
//!
//! | clusters | hold                                                           |
//! |----------|----------------------------------------------------------------|
//! | 0        | the header (104 bytes), then the end-of-extensions marker      |
//! | 1 ..     | data clusters, appended in the order they are given            |
//! | then     | the L2 tables (one per 512 MiB of virtual space with an entry) |
//! | then     | the L1 table (none for an empty image)                         |
//! | then     | the refcount blocks, covering every cluster of the file        |
//! | last     | the refcount table                                             |
//!
//! Only the L2 entries are kept in memory (one 64 KiB table per 512 MiB of
//! virtual space touched). Every cluster of the file is used once (refcount 1),
//! and the L1 and L2 entries of allocated clusters carry the COPIED flag. A
//! cluster never given stays unallocated, so it reads through to a backing file
//! should the image be rebased onto one; a zero cluster has the zero flag and
//! reads as zeros even then. The header is written last, by [`Qcow2Writer::finish`]:
//! an unfinished file has no qcow2 magic and is not mistaken for an image.
//!
//! # rbd export-diff ([`RbdDiffWriter`])
//!
//! The `rbd diff v1` stream that `rbd import-diff` applies (Ceph
//! `doc/dev/rbd-diff.rst`, read back by [`crate::backup`]): the banner, the
//! optional `f` and `t` records (snapshot names), the `s` record (image size),
//! `w` (data) and `z` (zeroed) extents, and the `e` end record; all integers
//! little-endian.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The cluster size of the images [`Qcow2Writer`] writes (bytes).
pub const CLUSTER: u64 = 65536;
const CLUSTER_BITS: u32 = 16;
/// Entries in an L2 table or a refcount table cluster (8 bytes each).
const PER_TABLE: u64 = CLUSTER / 8;
/// Refcounts in a refcount block (16 bits each).
const PER_REFBLOCK: u64 = CLUSTER / 2;
/// qemu refuses L1 tables above 32 MiB (a virtual size above 2 PiB).
const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// L1/L2 entry: the cluster's refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// L2 entry: the cluster reads as zeros.
const ZERO: u64 = 1;
/// L1/L2 entry: the host offset bits (9-55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn be_bytes(v: impl IntoIterator<Item = u64>) -> Vec<u8> {
    v.into_iter().flat_map(u64::to_be_bytes).collect()
}

/// Writes a qcow2 image cluster by cluster (see the [module](self) doc for the
/// layout).
pub struct Qcow2Writer {
    file: File,
    size: u64,
    /// The next free host cluster.
    next: u64,
    /// L2 tables by L1 index, created when first touched.
    l2: BTreeMap<u64, Box<[u64]>>,
}

impl std::fmt::Debug for Qcow2Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Writer")
            .field("size", &self.size)
            .field("next", &self.next)
            .field("l2_tables", &self.l2.len())
            .finish()
    }
}

impl Qcow2Writer {
    /// Creates (truncates) `path`, an image of virtual size `size` bytes,
    /// rounded up to a multiple of 512 as `qemu-img create` does (qemu ignores
    /// a partial last sector).
    ///
    /// # Errors
    /// The file cannot be created, or `size` is above what qemu opens (2 PiB).
    pub fn create(path: &Path, size: u64) -> io::Result<Self> {
        let size = size
            .checked_next_multiple_of(512)
            .filter(|s| s.div_ceil(CLUSTER).div_ceil(PER_TABLE) <= MAX_L1_ENTRIES)
            .ok_or_else(|| invalid(format!("a qcow2 image of {size} bytes is too large")))?;
        let file = File::create(path)?;
        Ok(Self { file, size, next: 1, l2: BTreeMap::new() })
    }

    fn entry(&self, index: u64) -> u64 {
        self.l2.get(&(index / PER_TABLE)).map_or(0, |t| t[(index % PER_TABLE) as usize])
    }

    fn set_entry(&mut self, index: u64, value: u64) {
        let table = self.l2.entry(index / PER_TABLE).or_insert_with(|| vec![0; PER_TABLE as usize].into());
        table[(index % PER_TABLE) as usize] = value;
    }

    fn check(&self, index: u64) -> io::Result<()> {
        if index >= self.size.div_ceil(CLUSTER) {
            return Err(invalid(format!("cluster {index} is past the end of a {} byte image", self.size)));
        }
        Ok(())
    }

    /// Cluster `index` (virtual offset `index * CLUSTER`) holds `data`: at most
    /// [`CLUSTER`] bytes, zero-padded when shorter (the image's last, partial
    /// cluster). All-zero data is recorded as a zero cluster
    /// ([`zero_cluster`](Self::zero_cluster)) and writes nothing.
    ///
    /// Clusters may come in any order. Giving a cluster again replaces its
    /// content: its data cluster, if it has one, is rewritten in place (or kept
    /// as a preallocation under the zero flag), so nothing leaks.
    ///
    /// # Errors
    /// `index` past the end of the image, `data` longer than a cluster, or a
    /// write error.
    pub fn write_cluster(&mut self, index: u64, data: &[u8]) -> io::Result<()> {
        self.check(index)?;
        if data.len() as u64 > CLUSTER {
            return Err(invalid(format!("{} bytes do not fit in a cluster", data.len())));
        }
        if data.iter().all(|b| *b == 0) {
            return self.zero_cluster(index);
        }
        let old = self.entry(index) & OFFSET_MASK;
        let host = if old == 0 { self.next * CLUSTER } else { old };
        self.next += u64::from(old == 0);
        self.file.write_all_at(data, host)?;
        // A new short cluster's tail is a hole in the file (zeros: metadata
        // always follows); one rewritten in place loses its earlier tail.
        if old != 0 && (data.len() as u64) < CLUSTER {
            self.file.write_all_at(&vec![0; CLUSTER as usize - data.len()], host + data.len() as u64)?;
        }
        self.set_entry(index, host | COPIED);
        Ok(())
    }

    /// Cluster `index` reads as zeros (the zero flag), even where a backing
    /// image would have data.
    ///
    /// # Errors
    /// `index` past the end of the image.
    pub fn zero_cluster(&mut self, index: u64) -> io::Result<()> {
        self.check(index)?;
        let host = self.entry(index) & OFFSET_MASK;
        self.set_entry(index, ZERO | if host == 0 { 0 } else { host | COPIED });
        Ok(())
    }

    /// Writes the metadata (L2 tables, L1 table, refcount blocks and table,
    /// then the header) and syncs the file; returns the file's size.
    ///
    /// # Errors
    /// A write error.
    pub fn finish(self) -> io::Result<u64> {
        let mut next = self.next;
        let l1_size = self.size.div_ceil(CLUSTER).div_ceil(PER_TABLE);
        let mut l1 = vec![0u64; l1_size as usize];
        for (&i, table) in &self.l2 {
            self.file.write_all_at(&be_bytes(table.iter().copied()), next * CLUSTER)?;
            l1[i as usize] = (next * CLUSTER) | COPIED;
            next += 1;
        }
        let l1_offset = if l1_size == 0 { 0 } else { next * CLUSTER };
        self.file.write_all_at(&be_bytes(l1), l1_offset)?;
        next += (l1_size * 8).div_ceil(CLUSTER);

        let (blocks, table_clusters) = refcount_layout(next);
        let total = next + blocks + table_clusters;
        let ones: Vec<u8> = (0..PER_REFBLOCK).flat_map(|_| 1u16.to_be_bytes()).collect();
        for b in 0..blocks {
            let counted = (total - b * PER_REFBLOCK).min(PER_REFBLOCK) as usize;
            self.file.write_all_at(&ones[..counted * 2], (next + b) * CLUSTER)?;
        }
        let table_offset = (next + blocks) * CLUSTER;
        self.file.write_all_at(&be_bytes((0..blocks).map(|b| (next + b) * CLUSTER)), table_offset)?;

        let mut h = [0u8; 112]; // the header, then the end-of-extensions marker
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
        h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
        h[48..56].copy_from_slice(&table_offset.to_be_bytes());
        h[56..60].copy_from_slice(&(table_clusters as u32).to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16 bits
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        self.file.write_all_at(&h, 0)?;
        self.file.set_len(total * CLUSTER)?;
        self.file.sync_all()?;
        Ok(total * CLUSTER)
    }
}

/// The refcount blocks and refcount table clusters needed for a file of `used`
/// clusters followed by those blocks and that table: all of them counted.
fn refcount_layout(used: u64) -> (u64, u64) {
    let (mut blocks, mut table) = (0, 0);
    loop {
        let b = (used + blocks + table).div_ceil(PER_REFBLOCK);
        let t = b.div_ceil(PER_TABLE);
        if (b, t) == (blocks, table) {
            return (b, t);
        }
        (blocks, table) = (b, t);
    }
}

/// Largest `w` record written (longer data is split).
const MAX_RECORD: usize = 64 << 20;

/// Writes an `rbd export-diff` v1 stream (see the [module](self) doc).
#[derive(Debug)]
pub struct RbdDiffWriter<W: Write> {
    out: W,
    size: u64,
}

impl<W: Write> RbdDiffWriter<W> {
    /// Starts the stream: the banner, the snapshot names given (`from_snap`:
    /// the snapshot the diff starts from; `to_snap`: the one it leads to) and
    /// the image `size` (bytes).
    ///
    /// # Errors
    /// A write error.
    pub fn new(mut out: W, from_snap: Option<&str>, to_snap: Option<&str>, size: u64) -> io::Result<Self> {
        out.write_all(b"rbd diff v1\n")?;
        for (tag, name) in [(b'f', from_snap), (b't', to_snap)] {
            if let Some(name) = name {
                let len = u32::try_from(name.len()).map_err(|_| invalid("snapshot name too long".into()))?;
                out.write_all(&[tag])?;
                out.write_all(&len.to_le_bytes())?;
                out.write_all(name.as_bytes())?;
            }
        }
        out.write_all(b"s")?;
        out.write_all(&size.to_le_bytes())?;
        Ok(Self { out, size })
    }

    fn extent(&mut self, tag: u8, offset: u64, len: u64) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(invalid(format!(
                "extent {offset}+{len} is past the end of a {} byte image",
                self.size
            )));
        }
        self.out.write_all(&[tag])?;
        self.out.write_all(&offset.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())
    }

    /// `data` at `offset` (a `w` record; split when longer than 64 MiB).
    ///
    /// # Errors
    /// An extent past the image's end, or a write error.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut at = offset;
        for chunk in data.chunks(MAX_RECORD) {
            self.extent(b'w', at, chunk.len() as u64)?;
            self.out.write_all(chunk)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// `len` bytes at `offset` read as zeros (a `z` record; none when `len` is 0).
    ///
    /// # Errors
    /// An extent past the image's end, or a write error.
    pub fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 { Ok(()) } else { self.extent(b'z', offset, len) }
    }

    /// Ends the stream (the `e` record), flushes and returns the writer.
    ///
    /// # Errors
    /// A write error.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"e")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A small deterministic generator (xorshift64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Runs qemu-img (a test dependency: `tests/deps` installs it; its absence
    /// fails the test). Always `Some`.
    fn qemu_img(args: &[&str]) -> Option<Vec<u8>> {
        let out = Command::new("qemu-img").args(args).output().expect("qemu-img (installed by tests/deps)");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out.stdout)
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// `qemu-img check` is clean (no errors, no leaks; it exits non-zero otherwise).
    fn check_clean(p: &Path) -> bool {
        let Some(out) = qemu_img(&["check", "--output=json", s(p)]) else { return false };
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.get("check-errors"), Some(&serde_json::json!(0)), "{v}");
        assert!(v.get("leaks").is_none() && v.get("corruptions").is_none(), "{v}");
        true
    }

    fn to_raw(p: &Path, dir: &Path) -> Vec<u8> {
        let raw = dir.join("out.raw");
        qemu_img(&["convert", "-O", "raw", s(p), s(&raw)]).unwrap();
        std::fs::read(raw).unwrap()
    }

    fn info(p: &Path) -> serde_json::Value {
        serde_json::from_slice(&qemu_img(&["info", "--output=json", s(p)]).unwrap()).unwrap()
    }

    #[test]
    fn refcounts_cover_the_file_and_themselves() {
        let mut used: Vec<u64> = vec![1, 2, 100, 1 << 40];
        for edge in [PER_REFBLOCK, PER_REFBLOCK * PER_TABLE, 3 * PER_REFBLOCK * PER_TABLE] {
            used.extend(edge.saturating_sub(PER_TABLE + 10)..edge + 10);
        }
        for n in used {
            let (b, t) = refcount_layout(n);
            let total = n + b + t;
            assert!(b * PER_REFBLOCK >= total && t * PER_TABLE >= b, "{n}: {b} {t}");
            assert!((b - 1) * PER_REFBLOCK < total && (t - 1) * PER_TABLE < b, "{n}: not minimal: {b} {t}");
        }
        assert_eq!(refcount_layout(PER_REFBLOCK - 2), (1, 1));
        assert_eq!(refcount_layout(PER_REFBLOCK - 1), (2, 1));
        assert_eq!(refcount_layout(PER_REFBLOCK * PER_TABLE - PER_TABLE - 1), (PER_TABLE, 1));
        assert_eq!(refcount_layout(PER_REFBLOCK * PER_TABLE - PER_TABLE), (PER_TABLE + 1, 2));
    }

    #[test]
    fn sparse_content_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.qcow2");
        let size = 300 * CLUSTER + 12345;
        let clusters = size.div_ceil(CLUSTER);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut expected = vec![0u8; size as usize];
        let mut w = Qcow2Writer::create(&path, size).unwrap();
        let mut order: Vec<u64> = (0..clusters).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let start = (i * CLUSTER) as usize;
            let end = (start + CLUSTER as usize).min(size as usize);
            match rng.next() % 5 {
                0 | 1 => {
                    let data = rng.bytes(end - start);
                    w.write_cluster(i, &data).unwrap();
                    expected[start..end].copy_from_slice(&data);
                }
                2 => w.write_cluster(i, &vec![0; end - start]).unwrap(),
                3 => w.zero_cluster(i).unwrap(),
                _ => {}
            }
        }
        // Given again: data over data (shorter), zero over data, data over zero.
        let short = rng.bytes(1000);
        w.write_cluster(order[0], &rng.bytes(CLUSTER as usize)).unwrap();
        w.write_cluster(order[0], &short).unwrap();
        let at = (order[0] * CLUSTER) as usize;
        let end = (at + CLUSTER as usize).min(size as usize);
        expected[at..end].fill(0);
        expected[at..at + 1000].copy_from_slice(&short);
        w.write_cluster(order[1], &rng.bytes(100)).unwrap();
        w.zero_cluster(order[1]).unwrap();
        let at = (order[1] * CLUSTER) as usize;
        expected[at..(at + CLUSTER as usize).min(size as usize)].fill(0);
        w.zero_cluster(order[2]).unwrap();
        let data = rng.bytes(10);
        w.write_cluster(order[2], &data).unwrap();
        let at = (order[2] * CLUSTER) as usize;
        expected[at..(at + CLUSTER as usize).min(size as usize)].fill(0);
        expected[at..at + 10].copy_from_slice(&data);

        assert!(w.write_cluster(clusters, b"x").is_err());
        assert!(w.zero_cluster(clusters).is_err());
        assert!(w.write_cluster(0, &vec![1; CLUSTER as usize + 1]).is_err());
        let len = w.finish().unwrap();
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        if !check_clean(&path) {
            return;
        }
        expected.resize(size.next_multiple_of(512) as usize, 0);
        assert!(to_raw(&path, dir.path()) == expected, "the image reads back differently");
        let v = info(&path);
        assert_eq!(v["format"], "qcow2");
        assert_eq!(v["virtual-size"], size.next_multiple_of(512));
        assert_eq!(v["cluster-size"], CLUSTER);
        assert_eq!(v["format-specific"]["data"]["compat"], "1.1");
        assert!(v.get("backing-filename").is_none() && v.get("full-backing-filename").is_none(), "{v}");
    }

    #[test]
    fn an_overlay_reads_through_where_nothing_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, base, overlay) =
            (dir.path().join("base.raw"), dir.path().join("base.qcow2"), dir.path().join("o.qcow2"));
        let size = 40 * CLUSTER + 4096;
        let mut rng = Rng(7);
        let mut expected = rng.bytes(size as usize);
        std::fs::write(&raw, &expected).unwrap();
        if qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&base)]).is_none() {
            return;
        }
        let mut w = Qcow2Writer::create(&overlay, size).unwrap();
        for i in 0..size.div_ceil(CLUSTER) {
            let start = (i * CLUSTER) as usize;
            let end = (start + CLUSTER as usize).min(size as usize);
            match i % 4 {
                0 => {
                    let data = rng.bytes(end - start);
                    w.write_cluster(i, &data).unwrap();
                    expected[start..end].copy_from_slice(&data);
                }
                1 => {
                    w.zero_cluster(i).unwrap();
                    expected[start..end].fill(0);
                }
                2 => {
                    w.write_cluster(i, &vec![0; end - start]).unwrap();
                    expected[start..end].fill(0);
                }
                _ => {} // reads the base
            }
        }
        w.finish().unwrap();
        assert!(check_clean(&overlay));
        qemu_img(&["rebase", "-u", "-b", s(&base), "-F", "qcow2", s(&overlay)]).unwrap();
        assert!(check_clean(&overlay));
        assert!(to_raw(&overlay, dir.path()) == expected, "the overlay reads differently");
    }

    #[test]
    fn odd_empty_and_huge_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, 511, CLUSTER - 1, CLUSTER, CLUSTER + 1, PER_TABLE * CLUSTER + 3] {
            let path = dir.path().join(format!("{size}.qcow2"));
            let mut w = Qcow2Writer::create(&path, size).unwrap();
            let mut expected = vec![0u8; size.next_multiple_of(512) as usize];
            if size > 0 {
                let last = (size - 1) / CLUSTER;
                let tail = (size - last * CLUSTER) as usize;
                w.write_cluster(last, &vec![0xa5; tail]).unwrap();
                expected[(last * CLUSTER) as usize..size as usize].fill(0xa5);
            }
            w.finish().unwrap();
            if !check_clean(&path) {
                return;
            }
            assert_eq!(info(&path)["virtual-size"], size.next_multiple_of(512));
            assert!(to_raw(&path, dir.path()) == expected, "size {size} reads differently");
        }

        // 64 GiB with a handful of clusters: a small file, read back at those places.
        let path = dir.path().join("huge.qcow2");
        let size = 64u64 << 30;
        let mut w = Qcow2Writer::create(&path, size).unwrap();
        let places = [0, 1, 8191, 8192, 500_000, size / CLUSTER - 1];
        for &i in &places {
            w.write_cluster(i, &[i as u8 | 1; CLUSTER as usize]).unwrap();
        }
        w.zero_cluster(700_000).unwrap();
        let len = w.finish().unwrap();
        assert!(len < 2 << 20, "{len} bytes");
        assert!(check_clean(&path));
        let v = info(&path);
        assert_eq!((v["format"].as_str(), v["virtual-size"].as_u64()), (Some("qcow2"), Some(size)));
        let raw = dir.path().join("huge.raw");
        qemu_img(&["convert", "-O", "raw", s(&path), s(&raw)]).unwrap();
        let f = File::open(&raw).unwrap();
        assert_eq!(f.metadata().unwrap().len(), size);
        let mut buf = vec![0u8; CLUSTER as usize];
        for i in places.iter().copied().chain([2, 700_000, size / CLUSTER - 2]) {
            f.read_exact_at(&mut buf, i * CLUSTER).unwrap();
            let want = if places.contains(&i) { i as u8 | 1 } else { 0 };
            assert!(buf.iter().all(|b| *b == want), "cluster {i}");
        }
        assert!(Qcow2Writer::create(&path, u64::MAX).is_err());
    }

    #[test]
    fn several_refcount_blocks() {
        // Leave 70,000 clusters unused in a hole of the file: the metadata then
        // lies past the third refcount block's start. qemu-img check counts
        // exactly those as leaked, and nothing else wrong.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.qcow2");
        let mut w = Qcow2Writer::create(&path, 8 << 30).unwrap();
        w.write_cluster(3, &[1; 10]).unwrap();
        w.next += 70_000;
        w.write_cluster(100_000, &[2; 10]).unwrap();
        w.finish().unwrap();
        let out = match Command::new("qemu-img").args(["check", "--output=json", s(&path)]).output() {
            Ok(out) => out,
            Err(_) => return,
        };
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((v["leaks"].as_u64(), v["check-errors"].as_u64()), (Some(70_000), Some(0)), "{v}");
        assert!(v.get("corruptions").is_none(), "{v}");
        let raw = dir.path().join("big.raw");
        qemu_img(&["convert", "-O", "raw", s(&path), s(&raw)]).unwrap();
        let f = File::open(&raw).unwrap();
        let mut buf = [0u8; 11];
        f.read_exact_at(&mut buf, 3 * CLUSTER).unwrap();
        assert_eq!(buf, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        f.read_exact_at(&mut buf, 100_000 * CLUSTER).unwrap();
        assert_eq!(buf, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0]);
    }

    /// Applies a diff v1 stream to `image`; returns the snapshot names and size.
    fn apply(mut s: &[u8], image: &mut Vec<u8>) -> (Option<String>, Option<String>, u64) {
        fn take<'a>(s: &mut &'a [u8], n: usize) -> &'a [u8] {
            let (head, rest) = s.split_at(n);
            *s = rest;
            head
        }
        fn u64le(s: &mut &[u8]) -> u64 {
            u64::from_le_bytes(take(s, 8).try_into().unwrap())
        }
        assert_eq!(take(&mut s, 12), b"rbd diff v1\n");
        let (mut from, mut to, mut size) = (None, None, 0);
        loop {
            match take(&mut s, 1)[0] {
                tag @ (b'f' | b't') => {
                    let n = u32::from_le_bytes(take(&mut s, 4).try_into().unwrap()) as usize;
                    let name = Some(String::from_utf8(take(&mut s, n).to_vec()).unwrap());
                    if tag == b'f' { from = name } else { to = name }
                }
                b's' => {
                    size = u64le(&mut s);
                    image.resize(size as usize, 0);
                }
                b'w' => {
                    let (off, len) = (u64le(&mut s) as usize, u64le(&mut s) as usize);
                    image[off..off + len].copy_from_slice(take(&mut s, len));
                }
                b'z' => {
                    let (off, len) = (u64le(&mut s) as usize, u64le(&mut s) as usize);
                    image[off..off + len].fill(0);
                }
                b'e' => {
                    assert!(s.is_empty(), "data after the end record");
                    return (from, to, size);
                }
                t => panic!("unknown record {t}"),
            }
        }
    }

    #[test]
    fn diff_stream_round_trip() {
        let mut rng = Rng(42);
        let size = 1 << 20;
        let mut image = rng.bytes(size as usize);
        let mut expected = image.clone();
        let mut w = RbdDiffWriter::new(Vec::new(), Some("one-0"), Some("one-1"), size).unwrap();
        for _ in 0..50 {
            let off = rng.next() % size;
            let len = rng.next() % (size - off).min(100_000);
            if rng.next() % 2 == 0 {
                let data = rng.bytes(len as usize);
                w.write(off, &data).unwrap();
                expected[off as usize..(off + len) as usize].copy_from_slice(&data);
            } else {
                w.zero(off, len).unwrap();
                expected[off as usize..(off + len) as usize].fill(0);
            }
        }
        assert!(w.write(size - 1, b"ab").is_err() && w.zero(u64::MAX, 2).is_err());
        let stream = w.finish().unwrap();
        let names = apply(&stream, &mut image);
        assert_eq!(names, (Some("one-0".into()), Some("one-1".into()), size));
        assert!(image == expected);

        // A full stream, no snapshots, byte for byte.
        let mut w = RbdDiffWriter::new(Vec::new(), None, None, 16).unwrap();
        w.write(2, b"hi").unwrap();
        w.zero(8, 4).unwrap();
        w.write(0, b"").unwrap();
        let mut want = b"rbd diff v1\ns".to_vec();
        want.extend(16u64.to_le_bytes());
        want.push(b'w');
        want.extend([2u64.to_le_bytes(), 2u64.to_le_bytes()].concat());
        want.extend(b"hi");
        want.push(b'z');
        want.extend([8u64.to_le_bytes(), 4u64.to_le_bytes()].concat());
        want.push(b'e');
        assert_eq!(w.finish().unwrap(), want);
    }
}
