//! Image intake, through every entry point that takes a user's image file
//! (`rbdx import`, DS `cp`, DS `stat`): images that name other files — a qcow2
//! or QED backing file (a host path, a `json:` or `nbd:` name, a chain), a qcow2
//! external data file, a VMDK descriptor's extent, a VMDK parent, a sparse VMDK
//! whose empty capacity makes its descriptor's extents count, a qcow version 1
//! image — are refused with one line, nothing is created, the host file's bytes
//! reach no image, and no connection is made to the `nbd:` address. Every
//! allowed format still imports byte-identical. A FIFO is refused without
//! blocking, and so is a path longer than PATH_MAX.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rbdx_core::ops::{self, ImageSpec};
use rbdx_tests::one::OneEnv;

const BIN: &str = env!("CARGO_BIN_EXE_rbdx");
const DS: u32 = 100;

fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 6_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

fn qemu_img(dir: &Path, args: &[&str]) {
    let out = Command::new("qemu-img").args(args).current_dir(dir).output().expect("qemu-img");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A host file whose bytes must never reach an image.
fn secret(dir: &Path) -> (PathBuf, Vec<u8>) {
    let marker = format!("HOST-SECRET-{}-", std::process::id()).into_bytes();
    let data: Vec<u8> = marker.iter().copied().cycle().take(1 << 20).collect();
    let p = dir.join("one_auth");
    std::fs::write(&p, &data).unwrap();
    (p, marker)
}

/// A sparse VMDK made by qemu-img, with its embedded descriptor replaced by
/// `edit(descriptor)` and its capacity by `capacity` (sectors) when given.
fn patched_vmdk(dir: &Path, name: &str, capacity: Option<u64>, edit: impl Fn(&str) -> String) -> PathBuf {
    let p = dir.join(name);
    qemu_img(dir, &["create", "-q", "-f", "vmdk", &p.display().to_string(), "1M"]);
    let mut bytes = std::fs::read(&p).unwrap();
    let le = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let (off, len) = (le(28) as usize * 512, le(36) as usize * 512);
    let text = String::from_utf8_lossy(&bytes[off..off + len]).trim_end_matches('\0').to_string();
    let new = edit(&text);
    assert!(new.len() < len, "the new descriptor fits");
    bytes[off..off + len].fill(0);
    bytes[off..off + new.len()].copy_from_slice(new.as_bytes());
    if let Some(c) = capacity {
        bytes[12..20].copy_from_slice(&c.to_le_bytes());
    }
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every hostile image: (label, file, what the refusal says).
fn hostile_images(dir: &Path, secret: &Path, nbd_port: u16) -> Vec<(&'static str, PathBuf, &'static str)> {
    let s = secret.display().to_string();
    let d = |n: &str| dir.join(n).display().to_string();
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-b", &s, "-F", "raw", &d("backing.qcow2"), "1M"]);
    let json = format!("json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"file\",\"filename\":\"{s}\"}}}}");
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-u", "-b", &json, "-F", "raw", &d("json.qcow2"), "1M"]);
    let nbd = format!("nbd:127.0.0.1:{nbd_port}");
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-u", "-b", &nbd, "-F", "raw", &d("nbd.qcow2"), "1M"]);
    qemu_img(
        dir,
        &["create", "-q", "-f", "qcow2", "-b", &d("backing.qcow2"), "-F", "qcow2", &d("chain.qcow2"), "1M"],
    );
    let data_opt = format!("data_file={},data_file_raw=on", d("data.raw"));
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-o", &data_opt, &d("datafile.qcow2"), "1M"]);
    std::fs::copy(secret, dir.join("data.raw")).unwrap();
    qemu_img(dir, &["create", "-q", "-f", "qed", "-b", &s, "-F", "raw", &d("backing.qed"), "1M"]);
    qemu_img(dir, &["create", "-q", "-f", "qcow", &d("v1.qcow"), "1M"]);
    std::fs::write(
        dir.join("flat.vmdk"),
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"{s}\" 0\n\nddb.virtualHWVersion = \"4\"\n"
        ),
    )
    .unwrap();
    let parent = patched_vmdk(dir, "parent.vmdk", None, |t| {
        t.replace("parentCID=ffffffff", &format!("parentCID=12345678\nparentFileNameHint=\"{s}\""))
    });
    let empty = patched_vmdk(dir, "empty.vmdk", Some(0), |t| {
        let line = t.lines().find(|l| l.starts_with("RW ")).unwrap().to_string();
        t.replace(&line, &format!("RW 2048 FLAT \"{s}\" 0"))
    });
    vec![
        ("qcow2 backing file", dir.join("backing.qcow2"), "names a backing file"),
        ("qcow2 json: backing", dir.join("json.qcow2"), "names a backing file"),
        ("qcow2 nbd: backing", dir.join("nbd.qcow2"), "names a backing file"),
        ("qcow2 chain", dir.join("chain.qcow2"), "names a backing file"),
        ("qcow2 external data file", dir.join("datafile.qcow2"), "external"),
        ("QED backing file", dir.join("backing.qed"), "names a backing file"),
        ("qcow version 1", dir.join("v1.qcow"), "qcow version 1"),
        ("VMDK descriptor with a flat extent", dir.join("flat.vmdk"), "VMDK descriptor"),
        ("VMDK with a parent", parent, "parent"),
        ("VMDK with no capacity", empty, "no capacity"),
    ]
}

fn one_line_failure(out: &Output, want: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> =
        err.lines().filter(|l| !l.starts_with("INFO:") && !l.starts_with("ERROR:")).collect();
    assert!(!out.status.success(), "{what}: succeeded");
    assert_eq!(lines.len(), 1, "{what}: one line: {err}");
    assert!(lines[0].contains(want), "{what}: {want:?} in {err}");
}

fn image_exists(e: &OneEnv, spec: &ImageSpec) -> bool {
    let names: Vec<String> = e
        .cluster
        .connect()
        .ioctx(&spec.pool)
        .unwrap()
        .list_images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.iter().any(|n| *n == spec.name || n.starts_with(&format!("{}.", spec.name)))
}

fn cli(e: &OneEnv, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--conf")
        .arg(&e.cluster.conf)
        .args(["--id", &e.cluster.id, "--keyring"])
        .arg(&e.cluster.keyring)
        .output()
        .unwrap()
}

fn ds_message(e: &OneEnv, path: &str) -> String {
    format!("<IMAGE><PATH><![CDATA[{path}]]></PATH><SIZE>1</SIZE></IMAGE>{}", e.image_ds(DS, true, &[]))
}

#[test]
fn images_that_name_other_files_are_refused_everywhere() {
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nCEPH_TIMEOUT = 20\n");
    let dir = tempfile::tempdir().unwrap();
    let (secret, marker) = secret(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    std::thread::spawn(move || {
        for _ in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let pool = e.cluster.pool.clone();
    let mut refused = 0;
    for (label, file, want) in hostile_images(dir.path(), &secret, port) {
        let f = file.display().to_string();
        let id = fresh_id();
        let spec = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
        let out = cli(&e, &["import", &f, &spec.to_string(), "--data-pool", &e.cluster.ec_pool]);
        one_line_failure(&out, want, &format!("rbdx import of {label}"));
        assert!(!image_exists(&e, &spec), "{label}: rbdx import created nothing");
        let out = e.ds("cp", id, &ds_message(&e, &f));
        one_line_failure(&out, want, &format!("DS cp of {label}"));
        assert!(!image_exists(&e, &spec), "{label}: cp created nothing");
        let out = e.ds("stat", id, &ds_message(&e, &f));
        one_line_failure(&out, want, &format!("DS stat of {label}"));
        refused += 3;
    }
    assert_eq!(refused, 30);
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing connected to the nbd: address");
    // No image of the pool holds the host file's bytes.
    let c = e.cluster.connect();
    let io = c.ioctx(&pool).unwrap();
    for entry in io.list_images().unwrap() {
        let Ok(img) = io.open_read_only(&entry.name, None) else { continue };
        let n = img.info().unwrap().size.min(2 << 20) as usize;
        let mut buf = vec![0u8; n];
        let got = img.read_at(0, &mut buf).unwrap_or(0);
        assert!(
            !buf[..got].windows(marker.len()).any(|w| w == marker),
            "{} holds the host file's bytes",
            entry.name
        );
    }
}

#[test]
fn every_allowed_format_imports_byte_identical() {
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nCEPH_TIMEOUT = 20\n");
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data[(1 << 20)..(3 << 20)].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(5);
    }
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &data).unwrap();
    let c = e.cluster.connect();
    for (fmt, opts) in [
        ("qcow2", ""),
        // Compressed clusters have no raw offset in the file: converted first.
        ("qcow2", "compress"),
        ("vmdk", "subformat=monolithicSparse"),
        ("vmdk", "subformat=streamOptimized"),
        ("vhdx", ""),
        ("vdi", ""),
        ("vpc", ""),
        ("qed", ""),
    ] {
        let file = dir.path().join(format!("disk-{fmt}-{}.{fmt}", opts.len()));
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", fmt];
        if opts == "compress" {
            args.push("-c");
        } else if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        let (r, f) = (raw.display().to_string(), file.display().to_string());
        args.extend([r.as_str(), f.as_str()]);
        qemu_img(dir.path(), &args);
        let spec = ImageSpec::new(&e.cluster.pool, &format!("one-{}", fresh_id())).unwrap();
        let out = cli(&e, &["import", &f, &spec.to_string()]);
        assert!(out.status.success(), "{fmt} {opts}: {}", String::from_utf8_lossy(&out.stderr));
        let io = ops::ioctx(c, &spec).unwrap();
        let img = io.open_read_only(&spec.name, None).unwrap();
        let size = img.info().unwrap().size as usize;
        assert!(size >= data.len(), "{fmt}: virtual size {size}");
        let mut got = vec![0u8; data.len()];
        img.read_at(0, &mut got).unwrap();
        assert!(got == data, "{fmt} {opts}: byte-identical");
        drop(img);
        ops::remove(c, &spec, ops::RemoveOptions::default()).unwrap();
    }
}

#[test]
fn fifos_and_overlong_paths_are_refused_at_once() {
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nCEPH_TIMEOUT = 20\n");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let f = fifo.display().to_string();
    for action in ["stat", "cp"] {
        let t = Instant::now();
        let out = e.ds(action, fresh_id(), &ds_message(&e, &f));
        one_line_failure(&out, "not a regular file", &format!("{action} of a FIFO"));
        assert!(t.elapsed() < Duration::from_secs(10), "{action} did not wait on the FIFO");
    }
    let long = format!("/tmp/{}", "a/".repeat(2100));
    for action in ["stat", "cp"] {
        let out = e.ds(action, fresh_id(), &ds_message(&e, &long));
        assert!(!out.status.success(), "{action} of a path longer than PATH_MAX");
    }
    // A link into a restricted directory is refused by what it points to.
    let restricted = dir.path().join("restricted");
    std::fs::create_dir(&restricted).unwrap();
    let mut target = std::fs::File::create(restricted.join("disk.raw")).unwrap();
    target.write_all(&[1u8; 4096]).unwrap();
    let link = dir.path().join("innocent.raw");
    std::os::unix::fs::symlink(restricted.join("disk.raw"), &link).unwrap();
    let msg = format!(
        "<IMAGE><PATH>{}</PATH><SIZE>1</SIZE></IMAGE>{}",
        link.display(),
        e.image_ds(DS, false, &[("RESTRICTED_DIRS", restricted.display().to_string())])
    );
    for action in ["stat", "cp"] {
        one_line_failure(&e.ds(action, fresh_id(), &msg), "Not allowed", &format!("{action} of a link"));
    }
}

/// A tmpfs of `mib` MiB at a fresh directory, unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(mib: u64) -> Self {
        let d = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
            .arg(d.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(d)
    }

    fn path(&self) -> String {
        self.0.path().display().to_string()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn oversized_images_and_a_full_staging_directory_are_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    // A 200 KiB qcow2 that claims 2 TiB, and one that claims 100 TiB.
    qemu_img(dir.path(), &["create", "-q", "-f", "qcow2", &d("big.qcow2"), "2T"]);
    qemu_img(dir.path(), &["create", "-q", "-f", "qcow2", &d("huge.qcow2"), "100T"]);
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nCEPH_TIMEOUT = 20\nMAX_IMAGE_SIZE = 1048576\n");
    let pool = e.cluster.pool.clone();
    let id = fresh_id();
    let spec = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    let out = cli(&e, &["import", &d("big.qcow2"), &spec.to_string(), "--max-size", "1048576"]);
    one_line_failure(&out, "virtual size (2097152 MiB) is above the 1048576 MiB", "rbdx import --max-size");
    let out = cli(&e, &["import", &d("huge.qcow2"), &spec.to_string()]);
    one_line_failure(&out, "above the 67108864 MiB", "rbdx import past the default cap");
    let out = e.ds("cp", id, &ds_message(&e, &d("big.qcow2")));
    one_line_failure(&out, "above the 1048576 MiB", "DS cp past MAX_IMAGE_SIZE");
    assert!(!image_exists(&e, &spec), "nothing was created");

    // Staging: a 128 MiB file system keeps 64 MiB free (half of it, as 5 % is
    // below the 1 GiB floor). A compressed qcow2 holding 100 MiB is converted
    // there first, and that does not fit.
    let small = SmallFs::mount(128);
    let data: Vec<u8> = (0..100u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(dir.path().join("data.raw"), &data).unwrap();
    qemu_img(
        dir.path(),
        &["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", &d("data.raw"), &d("data.qcow2")],
    );
    let out = cli(&e, &["import", &d("data.qcow2"), &spec.to_string(), "--staging-dir", &small.path()]);
    one_line_failure(&out, "is nearly full", "a conversion that does not fit");
    assert!(!image_exists(&e, &spec), "nothing was created");
    // Uncompressed, its data is copied straight from the file: nothing staged.
    qemu_img(dir.path(), &["convert", "-q", "-f", "raw", "-O", "qcow2", &d("data.raw"), &d("plain.qcow2")]);
    let out = cli(&e, &["import", &d("plain.qcow2"), &spec.to_string(), "--staging-dir", &small.path()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let io = ops::ioctx(e.cluster.connect(), &spec).unwrap();
    let img = io.open_read_only(&spec.name, None).unwrap();
    let mut got = vec![0u8; data.len()];
    img.read_at(0, &mut got).unwrap();
    assert!(got == data, "the uncompressed qcow2 imports byte-identical");
    drop(img);
    drop(io);
    ops::remove(e.cluster.connect(), &spec, ops::RemoveOptions::default()).unwrap();
    // A download of unknown length is staged until the reserve, then stopped.
    let server = rbdx_tests::http::FileServer::start(dir.path());
    let url = format!("{}/nolength/data.raw", server.base);
    let out = cli(&e, &["import", &url, &spec.to_string(), "--staging-dir", &small.path()]);
    one_line_failure(&out, "is nearly full", "a download staged past the reserve");
    assert!(!image_exists(&e, &spec), "nothing was created");
    assert_eq!(
        std::fs::read_dir(small.0.path()).unwrap().count(),
        0,
        "nothing is left in the staging directory"
    );
    // Where it fits, the same download imports.
    let roomy = tempfile::tempdir().unwrap();
    let out =
        cli(&e, &["import", &url, &spec.to_string(), "--staging-dir", &roomy.path().display().to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ops::remove(e.cluster.connect(), &spec, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn compressed_images_are_decompressed_and_sized_as_the_stock_driver_does() {
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nCEPH_TIMEOUT = 20\n");
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    // 8 MiB of raw data with a hole, and the same as qcow2.
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().take(3 << 20) {
        *b = (i % 253) as u8 | 1;
    }
    std::fs::write(dir.path().join("disk.raw"), &data).unwrap();
    qemu_img(dir.path(), &["convert", "-q", "-f", "raw", "-O", "qcow2", &d("disk.raw"), &d("disk.qcow2")]);
    let compress = |tool: &str, src: &str, ext: &str| -> String {
        let out = format!("{src}.{ext}");
        let ok = Command::new("sh").arg("-c").arg(format!("{tool} -c '{src}' > '{out}'")).status().unwrap();
        assert!(ok.success(), "{tool}");
        out
    };
    let pool = e.cluster.pool.clone();
    let c = e.cluster.connect();
    for (tool, ext) in [("gzip", "gz"), ("xz", "xz"), ("bzip2", "bz2")] {
        for src in [d("disk.raw"), d("disk.qcow2")] {
            let file = compress(tool, &src, ext);
            let what = format!("{}", Path::new(&file).file_name().unwrap().to_string_lossy());
            // stat: the image's size, as the stock driver computes it.
            let out = e.ds("stat", fresh_id(), &ds_message(&e, &file));
            assert!(out.status.success(), "stat of {what}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8", "stat of {what} in MiB");
            // cp and rbdx import: the decompressed image, byte for byte.
            let id = fresh_id();
            let out = e.ds("cp", id, &ds_message(&e, &file));
            assert!(out.status.success(), "cp of {what}: {}", String::from_utf8_lossy(&out.stderr));
            let spec = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
            let io = ops::ioctx(c, &spec).unwrap();
            let img = io.open_read_only(&spec.name, None).unwrap();
            assert_eq!(img.info().unwrap().size, 8 << 20, "{what}");
            let mut got = vec![0u8; 8 << 20];
            img.read_at(0, &mut got).unwrap();
            assert!(got == data, "{what}: the decompressed image, byte for byte");
            drop(img);
            drop(io);
            ops::remove(c, &spec, ops::RemoveOptions::default()).unwrap();
        }
    }
    // A corrupt stream, and a file compressed twice: one line, nothing made.
    let raw_xz = compress("xz", &d("disk.raw"), "xz");
    let mut bytes = std::fs::read(&raw_xz).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(dir.path().join("cut.xz"), &bytes).unwrap();
    let twice = compress("gzip", &raw_xz, "gz");
    for (file, want) in [(d("cut.xz"), "cannot decompress"), (twice, "inside a compressed file")] {
        let id = fresh_id();
        one_line_failure(&e.ds("cp", id, &ds_message(&e, &file)), want, &file);
        assert!(
            !image_exists(&e, &ImageSpec::new(&pool, &format!("one-{id}")).unwrap()),
            "{file}: nothing made"
        );
    }
    // A bomb: 64 MiB of zeros that decompresses past the cap is stopped there.
    let zeros = dir.path().join("zeros.raw");
    std::fs::File::create(&zeros).unwrap().set_len(64 << 20).unwrap();
    let bomb = compress("xz", &zeros.display().to_string(), "xz");
    let id = fresh_id();
    let spec = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    let out = cli(&e, &["import", &bomb, &spec.to_string(), "--max-size", "16"]);
    one_line_failure(&out, "larger than the 16 MiB accepted", "a decompression bomb");
    assert!(!image_exists(&e, &spec));
}

#[test]
fn other_sources_come_through_opennebulas_downloader_with_argv_only() {
    // A remotes tree with a downloader.sh stand-in: it records its argv and
    // serves s3://bucket/<name> from a directory; anything else fails.
    let dir = tempfile::tempdir().unwrap();
    let remotes = dir.path().join("remotes");
    std::fs::create_dir_all(remotes.join("datastore")).unwrap();
    std::fs::create_dir_all(remotes.join("rbdx")).unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let log = dir.path().join("argv.log");
    let downloader = remotes.join("datastore/downloader.sh");
    std::fs::write(
        &downloader,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{log}'\ncase \"$2\" in\n  s3://bucket/*) cat '{served}'/\"${{2#s3://bucket/}}\" ;;\n  *) echo 'Error copying' >&2; exit 255 ;;\nesac\n",
            log = log.display(),
            served = served.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&downloader, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate().take(1 << 20) {
        *b = (i % 251) as u8 | 1;
    }
    std::fs::write(served.join("disk.raw"), &data).unwrap();
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\n");
    let run = |action: &str, id: u32, url: &str| -> Output {
        let msg = ds_message_with(url);
        let b64 = rbdx_one::base64::encode(
            format!("<DS_DRIVER_ACTION_DATA>{msg}{}</DS_DRIVER_ACTION_DATA>", e.image_ds(DS, true, &[]))
                .as_bytes(),
        );
        let mut cmd = e.command(&["ds", action, &id.to_string()]);
        cmd.env("RBDX_REMOTES", &remotes)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b64.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if action == "cp" && out.status.success() {
            let spec = ImageSpec::new(&e.cluster.pool, &format!("one-{id}")).unwrap();
            let c = e.cluster.connect();
            let io = ops::ioctx(c, &spec).unwrap();
            let img = io.open_read_only(&spec.name, None).unwrap();
            let mut got = vec![0u8; data.len()];
            img.read_at(0, &mut got).unwrap();
            assert!(
                got == data && img.info().unwrap().size == data.len() as u64,
                "the downloaded image, byte for byte"
            );
            drop(img);
            drop(io);
            ops::remove(c, &spec, ops::RemoveOptions::default()).unwrap();
        }
        out
    };
    let out = run("stat", fresh_id(), "s3://bucket/disk.raw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
    let out = run("cp", fresh_id(), "s3://bucket/disk.raw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The downloader got an argument vector: no decompression, the URL, stdout.
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(argv.ends_with("--nodecomp\ns3://bucket/disk.raw\n-\n"), "{argv:?}");
    // A failed download imports nothing.
    let id = fresh_id();
    one_line_failure(&run("cp", id, "rsync://host/nothing"), "failed: Error copying", "a failed download");
    assert!(!image_exists(&e, &ImageSpec::new(&e.cluster.pool, &format!("one-{id}")).unwrap()));
}

fn ds_message_with(path: &str) -> String {
    format!("<IMAGE><PATH><![CDATA[{path}]]></PATH><SIZE>1</SIZE></IMAGE>")
}
