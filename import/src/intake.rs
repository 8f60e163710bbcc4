//! Image intake: what a user's disk image may be before qemu-img converts it.
//!
//! An image file is a tenant's, and several formats can name *other* files that
//! qemu-img would read into the result: a qcow2 or QED backing file or a qcow2
//! external data file, a VMDK descriptor's extents or its parent, any of them as
//! `json:`/`nbd:` protocol names. Converted, a host file (oned's password, an ssh
//! key) would land in the tenant's RBD image. So, before qemu-img runs:
//!
//! 1. the header is read here, and anything that references another file or is
//!    not a plain single-file image is refused ([`check_header`]);
//! 2. `qemu-img info --output=json` must agree: the expected format, no backing
//!    file, no data file, VMDK extents only in the file itself ([`check_info`]);
//! 3. qemu-img runs with the format given explicitly (the filename is
//!    `json:{"driver":<fmt>,"backing":null,"file":{"driver":"file","filename":…}}`:
//!    never probing, never opening a backing file), in the staging directory,
//!    under a deadline and `prlimit` limits (address space, open files, output
//!    size).
//!
//! Formats allowed: raw, qcow2 (v2/v3), vmdk (monolithicSparse, streamOptimized),
//! vhdx, vdi, vpc, qed: what OpenNebula's and Proxmox's users upload.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rbdx_core::ops::Extent;
use serde_json::Value;

use crate::{Error, Format, Result};

/// Largest header region read for the checks.
const HEADER: usize = 64 << 10;
/// Address space qemu-img may use (it needs far less for these conversions).
const MAX_AS: u64 = 4 << 30;

/// Reads up to [`HEADER`] bytes from `off` of `f`.
fn read_at(f: &mut std::fs::File, off: u64, len: usize) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(off)).map_err(Error::io("reading the image"))?;
    let mut buf = Vec::with_capacity(len.min(HEADER));
    f.take(len.min(HEADER) as u64).read_to_end(&mut buf).map_err(Error::io("reading the image"))?;
    Ok(buf)
}

fn be32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4).map_or(0, |s| u64::from(u32::from_be_bytes(s.try_into().unwrap_or_default())))
}
fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_be_bytes(s.try_into().unwrap_or_default()))
}
fn le32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4).map_or(0, |s| u64::from(u32::from_le_bytes(s.try_into().unwrap_or_default())))
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

fn refuse(what: impl std::fmt::Display) -> Error {
    Error::Refused(format!("refusing the image: {what}"))
}

/// The header checks for `format` (step 1 of the module docs), on the file.
///
/// # Errors
/// One line naming what the image references or why its kind is refused.
pub fn check_header(file: &Path, format: Format) -> Result<()> {
    let mut f = std::fs::File::open(file).map_err(Error::io(format!("cannot read {}", file.display())))?;
    let head = read_at(&mut f, 0, HEADER)?;
    check_head(&head, format, &mut |off, len| read_at(&mut f, off, len))
}

/// [`check_header`] on the first bytes of an image; `more(offset, len)` reads
/// further (a VMDK's embedded descriptor).
///
/// # Errors
/// As [`check_header`].
pub fn check_head(
    head: &[u8],
    format: Format,
    more: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>>,
) -> Result<()> {
    match format {
        Format::Qcow2 => qcow2(head),
        Format::Vmdk => vmdk(head, more),
        Format::Qed => qed(head),
        // vhdx, vdi and vpc can describe differencing images only through
        // parent locators qemu does not open; qemu-img info is checked for a
        // backing file anyway, and conversion never opens one.
        Format::Vhdx | Format::Vdi | Format::Vpc | Format::Raw => Ok(()),
        Format::Gzip | Format::Xz | Format::Bzip2 => Err(refuse("a compressed file is not a disk image")),
    }
}

fn qcow2(h: &[u8]) -> Result<()> {
    let version = be32(h, 4);
    if version != 2 && version != 3 {
        return Err(refuse(format!("qcow version {version} (only qcow2 versions 2 and 3 are accepted)")));
    }
    if be64(h, 8) != 0 || be32(h, 16) != 0 {
        return Err(refuse("the qcow2 image names a backing file"));
    }
    if be32(h, 32) != 0 {
        return Err(refuse("the qcow2 image is encrypted"));
    }
    let (header_len, incompatible) = if version == 3 { (be32(h, 100), be64(h, 72)) } else { (72, 0) };
    // Incompatible feature bit 2: an external data file holds the guest data.
    if incompatible & 0b100 != 0 {
        return Err(refuse("the qcow2 image keeps its data in an external file"));
    }
    if incompatible & !0b1_1111 != 0 {
        return Err(refuse(format!("unknown qcow2 incompatible features {incompatible:#x}")));
    }
    // Header extensions: type, length, data padded to 8; type 0 ends them.
    let mut at = usize::try_from(header_len).unwrap_or(usize::MAX);
    for _ in 0..64 {
        let (kind, len) = (be32(h, at), be32(h, at + 4));
        if kind == 0 {
            return Ok(());
        }
        match kind {
            0x4441_5441 => return Err(refuse("the qcow2 image names an external data file")),
            0x0537_be77 => return Err(refuse("the qcow2 image is encrypted")),
            0xe279_2aca => return Err(refuse("the qcow2 image names a backing file format")),
            _ => {}
        }
        let padded = usize::try_from(len.div_ceil(8) * 8).unwrap_or(usize::MAX);
        at = at.saturating_add(8).saturating_add(padded);
        if at >= h.len() {
            break;
        }
    }
    Err(refuse("the qcow2 header extensions do not end where they should"))
}

fn qed(h: &[u8]) -> Result<()> {
    // features bit 0: a backing file; the name's offset and size at 56 and 60.
    if le64(h, 16) & 1 != 0 || le32(h, 60) != 0 {
        return Err(refuse("the QED image names a backing file"));
    }
    Ok(())
}

/// The createTypes of VMDK files that hold their data themselves.
const VMDK_SINGLE_FILE: [&str; 2] = ["monolithicSparse", "streamOptimized"];

fn vmdk(h: &[u8], more: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>>) -> Result<()> {
    if h.starts_with(b"# Disk DescriptorFile") || !h.starts_with(b"KDMV") {
        return Err(refuse(
            "a VMDK descriptor (or an ESX sparse extent) names other files: upload a monolithicSparse or streamOptimized VMDK",
        ));
    }
    // A sparse extent with no capacity is read as a descriptor with extents.
    if le64(h, 12) == 0 {
        return Err(refuse("the VMDK header has no capacity (its descriptor would name other files)"));
    }
    let (off, len) = (le64(h, 28).saturating_mul(512), le64(h, 36).saturating_mul(512));
    if off == 0 || len == 0 {
        return Err(refuse("the VMDK file has no embedded descriptor"));
    }
    let desc = more(off, usize::try_from(len).unwrap_or(HEADER))?;
    let text = String::from_utf8_lossy(&desc);
    let text = text.trim_end_matches('\0');
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    let kind = value("createType").unwrap_or_default();
    if !VMDK_SINGLE_FILE.contains(&kind.as_str()) {
        return Err(refuse(format!("VMDK createType {kind:?} (only monolithicSparse and streamOptimized)")));
    }
    if value("parentFileNameHint").is_some() {
        return Err(refuse("the VMDK image names a parent file"));
    }
    if value("parentCID").is_some_and(|c| !c.eq_ignore_ascii_case("ffffffff")) {
        return Err(refuse("the VMDK image has a parent"));
    }
    let extents = text
        .lines()
        .map(str::trim)
        .filter(|l| ["RW ", "RDONLY ", "NOACCESS "].iter().any(|p| l.starts_with(p)))
        .count();
    if extents > 1 {
        return Err(refuse("the VMDK descriptor names several extents"));
    }
    Ok(())
}

/// What `qemu-img info` says of an image that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Virtual size in bytes.
    pub virtual_size: u64,
}

/// The `qemu-img info --output=json` checks (step 2 of the module docs).
///
/// # Errors
/// One line naming what the image references.
pub fn check_info(info: &Value, format: Format, file: &Path) -> Result<Info> {
    let got = info.get("format").and_then(Value::as_str).unwrap_or("");
    if got != format.qemu_name() {
        return Err(refuse(format!("qemu-img reads it as {got:?}, not {}", format.qemu_name())));
    }
    for key in ["backing-filename", "full-backing-filename", "backing-filename-format"] {
        if info.get(key).is_some() {
            return Err(refuse("it names a backing file"));
        }
    }
    let data = info.pointer("/format-specific/data");
    if data.and_then(|d| d.get("data-file")).is_some() {
        return Err(refuse("it names an external data file"));
    }
    if data.and_then(|d| d.get("encrypt")).is_some() || info.get("encrypted") == Some(&Value::Bool(true)) {
        return Err(refuse("it is encrypted"));
    }
    if format == Format::Vmdk {
        let kind = data.and_then(|d| d.get("create-type")).and_then(Value::as_str).unwrap_or("");
        if !VMDK_SINGLE_FILE.contains(&kind) {
            return Err(refuse(format!("VMDK createType {kind:?}")));
        }
        let me = file.to_string_lossy();
        for e in data.and_then(|d| d.get("extents")).and_then(Value::as_array).into_iter().flatten() {
            let name = e.get("filename").and_then(Value::as_str).unwrap_or("");
            if name != me {
                return Err(refuse("its VMDK extents are in other files"));
            }
        }
    }
    let virtual_size = info
        .get("virtual-size")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Tool("qemu-img info gave no virtual size".into()))?;
    Ok(Info { virtual_size })
}

/// The qemu filename that opens `file` as `format` and nothing else: a `json:`
/// description with the driver named and no backing file.
pub fn qemu_filename(file: &Path, format: Format) -> String {
    let mut spec = serde_json::json!({
        "driver": format.qemu_name(),
        "file": {"driver": "file", "filename": file.to_string_lossy()},
    });
    if format != Format::Raw {
        spec["backing"] = Value::Null;
    }
    format!("json:{spec}")
}

/// Limits a qemu-img child runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Killed after this long.
    pub deadline: Duration,
    /// Largest file it may write (bytes): the output's virtual size.
    pub max_output: u64,
}

/// `qemu-img <args>` under `prlimit` (address space, open files, output size), in
/// `cwd`, killed at the deadline; its stdout, or its stderr as one line.
///
/// # Errors
/// One line.
pub fn qemu_img(args: &[&str], cwd: &Path, limits: Limits) -> Result<Vec<u8>> {
    qemu_img_checked(args, cwd, limits, &mut || Ok(()))
}

/// [`qemu_img`], killed as soon as `check` fails (run about four times a second).
///
/// # Errors
/// One line.
pub fn qemu_img_checked(
    args: &[&str],
    cwd: &Path,
    limits: Limits,
    check: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<u8>> {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={MAX_AS}"))
        .arg("--nofile=64")
        .arg(format!("--fsize={}", limits.max_output.max(1)))
        .args(["--", "qemu-img"])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = crate::child::spawn(&mut cmd)
        .map_err(Error::io("running qemu-img (qemu-utils) under prlimit (util-linux)"))?;
    let out = crate::child::wait_output_checked(child, limits.deadline, check)
        .map_err(|e| e.prefixed("qemu-img"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::Tool(format!(
            "qemu-img {} failed: {}",
            args.first().unwrap_or(&""),
            crate::one_line(&out.stderr)
        )))
    }
}

/// Every check of the module docs for `file` read as `format`, then its info.
///
/// # Errors
/// One line: refused, or qemu-img failed.
pub fn inspect(file: &Path, format: Format, cwd: &Path, deadline: Duration) -> Result<Info> {
    check_header(file, format)?;
    let name = qemu_filename(file, format);
    let out = qemu_img(&["info", "--output=json", &name], cwd, Limits { deadline, max_output: 1 })?;
    let v: Value = serde_json::from_slice(&out).map_err(|e| Error::Tool(format!("qemu-img info: {e}")))?;
    check_info(&v, format, file)
}

/// Where the guest data of `file` (passed [`inspect`] as `format`) lies in the
/// file itself, from `qemu-img map`: the extents to copy as they are, zeros and
/// unallocated ranges left out. `None` when some data is not stored raw
/// (compressed clusters, a format whose map gives no offsets) or the map is not
/// one rbdx can trust whole: that image is converted by qemu-img instead.
///
/// # Errors
/// One line when qemu-img fails or runs past `deadline`.
pub fn data_map(
    file: &Path,
    format: Format,
    virtual_size: u64,
    cwd: &Path,
    deadline: Duration,
) -> Result<Option<Vec<Extent>>> {
    let file_len = std::fs::metadata(file).map_err(Error::io("reading the image"))?.len();
    let name = qemu_filename(file, format);
    let out = qemu_img(&["map", "--output=json", &name], cwd, Limits { deadline, max_output: 1 })?;
    Ok(parse_map(&out, virtual_size, file_len))
}

/// One entry of `qemu-img map --output=json`.
#[derive(serde::Deserialize)]
struct MapEntry {
    start: u64,
    length: u64,
    depth: u64,
    zero: bool,
    data: bool,
    #[serde(default)]
    compressed: bool,
    offset: Option<u64>,
}

/// The data extents of a map that covers `0..virtual_size` in order, with
/// every data range stored raw inside the `file_len` bytes of the file; `None`
/// otherwise (a map cut at the output limit does not parse).
fn parse_map(out: &[u8], virtual_size: u64, file_len: u64) -> Option<Vec<Extent>> {
    let entries: Vec<MapEntry> = serde_json::from_slice(out).ok()?;
    let mut extents: Vec<Extent> = Vec::new();
    let mut next = 0u64;
    for e in entries {
        let end = e.start.checked_add(e.length)?;
        if e.start != next || e.length == 0 || end > virtual_size || e.depth != 0 {
            return None;
        }
        next = end;
        if e.zero {
            continue;
        }
        if !e.data || e.compressed {
            return None;
        }
        let from = e.offset?;
        if from.checked_add(e.length)? > file_len {
            return None;
        }
        match extents.last_mut() {
            Some(l) if l.at + l.len == e.start && l.from + l.len == from => l.len += e.length,
            _ => extents.push(Extent { at: e.start, from, len: e.length }),
        }
    }
    (next == virtual_size).then_some(extents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qcow2_header(version: u32, backing: u64, incompatible: u64, ext: &[(u32, &[u8])]) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        let mut at = if version == 3 { 104 } else { 72 };
        for (kind, data) in ext {
            h[at..at + 4].copy_from_slice(&kind.to_be_bytes());
            h[at + 4..at + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
            h[at + 8..at + 8 + data.len()].copy_from_slice(data);
            at += 8 + data.len().div_ceil(8) * 8;
        }
        h
    }

    #[test]
    fn qcow2_headers_that_name_other_files_are_refused() {
        assert!(qcow2(&qcow2_header(3, 0, 0, &[])).is_ok());
        assert!(qcow2(&qcow2_header(2, 0, 0, &[])).is_ok());
        assert!(qcow2(&qcow2_header(3, 0, 0, &[(0x6803_f857, b"features")])).is_ok());
        for (h, want) in [
            (qcow2_header(3, 4096, 0, &[]), "backing file"),
            (qcow2_header(3, 0, 0b100, &[]), "external file"),
            (qcow2_header(3, 0, 0, &[(0x4441_5441, b"/etc/passwd")]), "external data file"),
            (qcow2_header(3, 0, 0, &[(0xe279_2aca, b"raw")]), "backing file format"),
            (qcow2_header(1, 0, 0, &[]), "qcow version 1"),
            (qcow2_header(3, 0, 1 << 40, &[]), "unknown qcow2 incompatible"),
        ] {
            let e = qcow2(&h).unwrap_err();
            assert!(matches!(e, Error::Refused(_)) && e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn a_map_is_used_only_when_it_covers_the_image_with_raw_data_inside_the_file() {
        let map = |entries: &[String]| format!("[{}]", entries.join(",\n")).into_bytes();
        let hole = |s: u64, l: u64| {
            format!(
                r#"{{"start":{s},"length":{l},"depth":0,"present":false,"zero":true,"data":false,"compressed":false}}"#
            )
        };
        let data = |s: u64, l: u64, o: u64| {
            format!(
                r#"{{"start":{s},"length":{l},"depth":0,"present":true,"zero":false,"data":true,"compressed":false,"offset":{o}}}"#
            )
        };
        let ok =
            map(&[hole(0, 100), data(100, 50, 1000), data(150, 10, 1050), hole(160, 40), data(200, 8, 0)]);
        assert_eq!(
            parse_map(&ok, 208, 1060),
            Some(vec![Extent { at: 100, from: 1000, len: 60 }, Extent { at: 200, from: 0, len: 8 }]),
            "adjacent ranges are merged"
        );
        assert_eq!(parse_map(&ok, 208, 1059), None, "data past the end of the file");
        assert_eq!(parse_map(&ok, 300, 1060), None, "the map stops short of the virtual size");
        assert_eq!(parse_map(&ok, 207, 1060), None, "the map runs past the virtual size");
        let gap = map(&[hole(0, 100), data(101, 50, 0)]);
        assert_eq!(parse_map(&gap, 151, 1000), None, "a gap");
        let compressed =
            r#"[{"start":0,"length":8,"depth":0,"present":true,"zero":false,"data":true,"compressed":true}]"#;
        assert_eq!(parse_map(compressed.as_bytes(), 8, 1000), None);
        let no_offset = r#"[{"start":0,"length":8,"depth":0,"present":true,"zero":false,"data":true}]"#;
        assert_eq!(parse_map(no_offset.as_bytes(), 8, 1000), None);
        let backing =
            r#"[{"start":0,"length":8,"depth":1,"present":true,"zero":false,"data":true,"offset":0}]"#;
        assert_eq!(parse_map(backing.as_bytes(), 8, 1000), None);
        let neither = r#"[{"start":0,"length":8,"depth":0,"present":true,"zero":false,"data":false}]"#;
        assert_eq!(parse_map(neither.as_bytes(), 8, 1000), None, "not data, not zero: unknown");
        let overflow = format!("[{}]", data(u64::MAX - 1, 8, 0));
        assert_eq!(parse_map(overflow.as_bytes(), u64::MAX, u64::MAX), None);
        assert_eq!(parse_map(&ok[..ok.len() - 10], 208, 1060), None, "cut at the output limit");
        assert_eq!(parse_map(b"[]", 0, 0), Some(vec![]));
    }

    #[test]
    fn qed_backing_files_are_refused() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"QED\0");
        assert!(qed(&h).is_ok());
        h[16] = 1;
        assert!(qed(&h).is_err());
    }

    #[test]
    fn qemu_img_info_must_agree() {
        let f = Path::new("/staging/x.vmdk");
        let ok = json!({"format": "qcow2", "virtual-size": 1048576, "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}});
        assert_eq!(check_info(&ok, Format::Qcow2, f).unwrap().virtual_size, 1 << 20);
        let backing = json!({"format": "qcow2", "virtual-size": 1, "backing-filename": "/etc/shadow"});
        assert!(check_info(&backing, Format::Qcow2, f).unwrap_err().to_string().contains("backing"));
        let data =
            json!({"format": "qcow2", "virtual-size": 1, "format-specific": {"data": {"data-file": "/x"}}});
        assert!(check_info(&data, Format::Qcow2, f).unwrap_err().to_string().contains("data file"));
        assert!(check_info(&ok, Format::Vmdk, f).unwrap_err().to_string().contains("reads it as"));
        let extents = |name: &str| json!({"format": "vmdk", "virtual-size": 1, "format-specific": {"data": {"create-type": "monolithicSparse", "extents": [{"filename": name}]}}});
        assert!(check_info(&extents("/staging/x.vmdk"), Format::Vmdk, f).is_ok());
        assert!(check_info(&extents("/var/lib/one/.one/one_auth"), Format::Vmdk, f).is_err());
    }

    #[test]
    fn qemu_filenames_never_probe_and_never_open_a_backing_file() {
        let n = qemu_filename(Path::new("/s/a\",b.qcow2"), Format::Qcow2);
        let v: Value = serde_json::from_str(n.strip_prefix("json:").unwrap()).unwrap();
        assert_eq!(v["driver"], "qcow2");
        assert_eq!(v["backing"], Value::Null);
        assert!(v.as_object().unwrap().contains_key("backing"));
        assert_eq!(v["file"]["filename"], "/s/a\",b.qcow2");
    }
}
