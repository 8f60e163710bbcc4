//! The OpenNebula datastore actions, run as oned's datastore MAD runs them (the
//! real binary, the id as argument, the base64 `DS_DRIVER_ACTION_DATA` on stdin),
//! against the real test cluster as the restricted client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use md5::Digest;
use rbdx_core::Cluster;
use rbdx_core::ops::disk::{Disk, DiskConfig};
use rbdx_core::ops::{self, ImageSpec};
use rbdx_tests::http::FileServer;
use rbdx_tests::one::{OneEnv, assert_fails, assert_ok};
use rbdx_tests::{MIB, checksum, fill};

const DS: u32 = 100;

fn env() -> OneEnv {
    OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), "EXECUTION = local\nCEPH_TIMEOUT = 20\n")
}

fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 5_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

fn stdout(out: &std::process::Output) -> String {
    assert_ok(out);
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `<IMAGE>` with these elements, and the image datastore.
fn message(e: &OneEnv, ec: bool, ds_extra: &[(&str, String)], image: &[(&str, &str)]) -> String {
    let img: String = image.iter().map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>")).collect();
    format!("<IMAGE>{img}</IMAGE>{}", e.image_ds(DS, ec, ds_extra))
}

/// A 24 MiB raw file with data in three places and holes between.
fn raw_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; 24 << 20];
    for (off, seed) in [(0usize, 1u8), (9 << 20, 2), (20 << 20, 3)] {
        for (i, b) in data[off..off + (1 << 20)].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
        }
    }
    let p = dir.join("disk.raw");
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn qcow2_of(raw: &Path) -> PathBuf {
    let q = raw.with_extension("qcow2");
    let ok = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&q)
        .status()
        .unwrap();
    assert!(ok.success(), "qemu-img (qemu-utils) is needed");
    q
}

fn image_bytes(c: &Cluster, s: &ImageSpec) -> Vec<u8> {
    let io = ops::ioctx(c, s).unwrap();
    let img = io.open_read_only(&s.name, None).unwrap();
    let mut v = vec![0u8; img.info().unwrap().size as usize];
    img.read_at(0, &mut v).unwrap();
    v
}

fn gone(c: &Cluster, pool: &str, prefix: &str) {
    let io = c.ioctx(pool).unwrap();
    let m = |n: &String| {
        n == prefix || n.starts_with(&format!("{prefix}-")) || n.starts_with(&format!("{prefix}."))
    };
    let images: Vec<String> = io.list_images().unwrap().into_iter().map(|e| e.name).filter(m).collect();
    let trash: Vec<String> = io.trash_list().unwrap().into_iter().map(|e| e.name).filter(m).collect();
    assert!(images.is_empty() && trash.is_empty(), "left: {images:?} {trash:?}");
}

fn cp_all_sources(ec: bool) {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (raw, data) = raw_file(e.dir.path());
    let qcow = qcow2_of(&raw);
    let server = FileServer::start(e.dir.path());
    let sources = [
        raw.display().to_string(),
        qcow.display().to_string(),
        format!("{}/disk.raw", server.base),
        format!("{}/disk.qcow2", server.base),
        format!("{}/nolength/disk.raw", server.base),
    ];
    let md5: String = md5::Md5::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    for src in &sources {
        let id = fresh_id();
        let md5_attr = if src.ends_with(".raw") { md5.as_str() } else { "" };
        let msg = message(&e, ec, &[], &[("PATH", src), ("SIZE", "24"), ("TEMPLATE/MD5", md5_attr)]);
        let msg =
            msg.replace("<TEMPLATE/MD5>", "<TEMPLATE><MD5>").replace("</TEMPLATE/MD5>", "</MD5></TEMPLATE>");
        let out = stdout(&e.ds("cp", id, &msg));
        assert_eq!(out, format!("{pool}/one-{id} raw\n"), "{src}");
        let s = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
        assert!(image_bytes(c, &s) == data, "{src}: byte-identical content");
        let st = ops::stat(c, &s).unwrap();
        assert_eq!(st.data_pool, ec.then(|| e.cluster.ec_pool.clone()), "{src}");
        let io = ops::ioctx(c, &s).unwrap();
        let used = ops::used_bytes(&io.open_read_only(&s.name, None).unwrap(), None).unwrap();
        assert!(used <= 12 * MIB, "{src}: sparse ({used} bytes allocated for 3 MiB of data)");
        assert_eq!(stdout(&e.ds("cp", id, &msg)), out, "{src}: a re-run succeeds");
        ops::remove(c, &s, ops::RemoveOptions::default()).unwrap();
    }
}

#[test]
fn cp_imports_raw_and_qcow2_from_files_and_urls_byte_identical() {
    cp_all_sources(false);
}

#[test]
fn cp_on_an_ec_datastore_puts_the_data_in_the_ec_pool() {
    cp_all_sources(true);
}

#[test]
fn cp_refuses_bad_sources_and_leaves_nothing() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (raw, _) = raw_file(e.dir.path());
    let restricted = e.dir.path().display().to_string();
    let server = FileServer::start(e.dir.path());
    /// Datastore attributes, PATH, MD5, the error expected.
    type Case<'a> = (Vec<(&'a str, String)>, String, String, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("RESTRICTED_DIRS", restricted.clone())],
            raw.display().to_string(),
            String::new(),
            "Not allowed to copy image file",
        ),
        (vec![], "relative/disk.raw".into(), String::new(), "invalid image path"),
        (vec![], "/nonexistent/disk.raw".into(), String::new(), "cannot read"),
        (vec![], "http://127.0.0.1:9/disk.raw".into(), String::new(), "cannot download"),
        (vec![], raw.display().to_string(), "0123456789abcdef0123456789abcdef".into(), "MD5 mismatch"),
        // A download cut short is not an image with zeros where its end was.
        (
            vec![],
            format!("{}/short/{}/{}", server.base, 8 << 20, 3 << 20),
            String::new(),
            "reading the source",
        ),
    ];
    for (extra, path, md5, want) in cases {
        let id = fresh_id();
        let mut image = vec![("PATH", path.as_str()), ("SIZE", "24")];
        if !md5.is_empty() {
            image.push(("MD5", md5.as_str()));
        }
        let msg = message(&e, false, &extra, &image)
            .replace("<MD5>", "<TEMPLATE><MD5>")
            .replace("</MD5>", "</MD5></TEMPLATE>");
        assert_fails(&e.ds("cp", id, &msg), want);
        gone(c, &pool, &format!("one-{id}"));
    }
    // SAFE_DIRS lifts the restriction.
    let id = fresh_id();
    let msg = message(
        &e,
        false,
        &[("RESTRICTED_DIRS", restricted.clone()), ("SAFE_DIRS", restricted)],
        &[("PATH", &raw.display().to_string())],
    );
    assert_ok(&e.ds("cp", id, &msg));
    ops::remove(c, &ImageSpec::new(&pool, &format!("one-{id}")).unwrap(), ops::RemoveOptions::default())
        .unwrap();
}

#[test]
fn garbage_messages_fail_in_one_line() {
    let e = env();
    for (args, stdin, want) in [
        (vec!["1"], b"%%% not base64".to_vec(), "not base64"),
        (vec!["1"], rbdx_one::base64::encode(b"<DS_DRIVER_ACTION_DATA><IMAGE>").into_bytes(), "truncated"),
        (vec!["1"], rbdx_one::base64::encode(b"<VM/>").into_bytes(), "expected DS_DRIVER_ACTION_DATA"),
        (vec!["1"], rbdx_one::base64::encode(b"<DS_DRIVER_ACTION_DATA/>").into_bytes(), "no DATASTORE"),
        (vec!["x"], Vec::new(), "invalid id"),
        (vec![], Vec::new(), "wrong number of arguments"),
    ] {
        assert_fails(&e.ds_raw("cp", &args, &stdin), want);
    }
    let msg = message(&e, false, &[], &[("SIZE", "1")]);
    assert_fails(&e.ds("rm", 1, &msg), "no IMAGE/SOURCE");
    assert_fails(&e.ds("cp", 1, &msg), "no IMAGE/PATH");
    assert_fails(&e.ds("mkfs", 1, &message(&e, false, &[], &[("SIZE", "-4")])), "invalid size");
    assert_fails(&e.ds("bogus", 1, &msg), "unknown datastore action");
}

#[test]
fn mkfs_makes_empty_or_formatted_images_with_the_data_pool() {
    mkfs_on(false);
    mkfs_on(true);
}

fn mkfs_on(ec: bool) {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (a, b, s) = (fresh_id(), fresh_id(), fresh_id());
    assert_eq!(
        stdout(&e.ds("mkfs", a, &message(&e, ec, &[], &[("SIZE", "32"), ("FORMAT", "raw")]))),
        format!("{pool}/one-{a}\n")
    );
    assert_eq!(
        stdout(&e.ds("mkfs", b, &message(&e, ec, &[], &[("SIZE", "64"), ("FS", "ext4")]))),
        format!("{pool}/one-{b}\n")
    );
    assert_eq!(
        stdout(&e.ds("mkfs", s, &message(&e, ec, &[], &[("SIZE", "64"), ("FORMAT", "save_as")]))),
        format!("{pool}/one-{s}\n")
    );
    let (sa, sb) = (
        ImageSpec::new(&pool, &format!("one-{a}")).unwrap(),
        ImageSpec::new(&pool, &format!("one-{b}")).unwrap(),
    );
    for (spec, mb) in [(&sa, 32), (&sb, 64)] {
        let st = ops::stat(c, spec).unwrap();
        assert_eq!((st.size, st.data_pool), (mb * MIB, ec.then(|| e.cluster.ec_pool.clone())));
    }
    assert_eq!(&image_bytes(c, &sb)[1024 + 56..1024 + 58], [0x53, 0xef], "ext4 superblock");
    gone(c, &pool, &format!("one-{s}"));
    let staged: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with("rbdx-mkfs-"))
        .collect();
    assert!(staged.is_empty(), "no staging file left: {staged:?}");
    for spec in [&sa, &sb] {
        assert_ok(&e.ds("rm", 0, &message(&e, ec, &[], &[("SOURCE", &spec.to_string())])));
        assert_ok(&e.ds("rm", 0, &message(&e, ec, &[], &[("SOURCE", &spec.to_string())])));
        gone(c, &pool, &spec.name);
    }
}

/// The datastore attribute that makes every save take a snapshot (no copy of
/// the little data the tests' images hold).
fn snapshot_always() -> [(&'static str, String); 1] {
    [("RBDX_SAVEAS_COPY_MAX_MB", "0".to_string())]
}

#[test]
fn clone_is_cow_and_both_sides_delete_in_any_order() {
    clone_on(false);
    clone_on(true);
}

/// An image with little data (16 MiB, under SAVEAS_COPY_MAX_MB) that nothing
/// has open is copied: no snapshot on the source, no parent, the same bytes,
/// the target's data pool; either side deletes alone, nothing waits in the trash.
#[test]
fn clone_of_an_image_with_little_data_copies_it() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (src, dst) = (fresh_id(), fresh_id());
    let src_s = ImageSpec::new(&pool, &format!("one-{src}")).unwrap();
    ops::create(c, &src_s, 32 * MIB, &ops::CreateOptions::default()).unwrap();
    fill(&ops::ioctx(c, &src_s).unwrap().open(&src_s.name).unwrap(), 4 * MIB, 16 * MIB, 4);
    let m = message(&e, true, &[], &[("PATH", &src_s.to_string()), ("SIZE", "32")]);
    assert_eq!(stdout(&e.ds("clone", dst, &m)), format!("{pool}/one-{dst} raw\n"));
    let dst_s = ImageSpec::new(&pool, &format!("one-{dst}")).unwrap();
    let (st, src_st) = (ops::stat(c, &dst_s).unwrap(), ops::stat(c, &src_s).unwrap());
    assert!(st.parent.is_none() && src_st.snapshots.is_empty(), "a copy: {st:?} {src_st:?}");
    assert_eq!((st.size, st.data_pool.as_deref()), (32 * MIB, Some(e.cluster.ec_pool.as_str())));
    let sum = |s: &ImageSpec| checksum(&ops::ioctx(c, s).unwrap().open_read_only(&s.name, None).unwrap());
    assert_eq!(sum(&dst_s), sum(&src_s));
    assert_ok(&e.ds("rm", src, &message(&e, false, &[], &[("SOURCE", &src_s.to_string())])));
    gone(c, &pool, &src_s.name);
    assert_ok(&e.ds("rm", dst, &message(&e, true, &[], &[("SOURCE", &dst_s.to_string())])));
    gone(c, &pool, &dst_s.name);
}

fn clone_on(ec: bool) {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (src, dst) = (fresh_id(), fresh_id());
    let src_s = ImageSpec::new(&pool, &format!("one-{src}")).unwrap();
    ops::create(c, &src_s, 32 * MIB, &ops::CreateOptions::default()).unwrap();
    fill(&ops::ioctx(c, &src_s).unwrap().open(&src_s.name).unwrap(), 0, 16 * MIB, 4);
    let m = message(&e, ec, &snapshot_always(), &[("PATH", &src_s.to_string()), ("SIZE", "32")]);
    let out = stdout(&e.ds("clone", dst, &m));
    assert_eq!(out, format!("{pool}/one-{dst} raw\n"));
    let dst_s = ImageSpec::new(&pool, &format!("one-{dst}")).unwrap();
    let st = ops::stat(c, &dst_s).unwrap();
    assert!(st.parent.is_some(), "a CoW clone");
    assert_eq!(st.data_pool, ec.then(|| e.cluster.ec_pool.clone()), "the target datastore's data pool");
    let want = checksum(&ops::ioctx(c, &dst_s).unwrap().open_read_only(&dst_s.name, None).unwrap());
    // Source first: the clone still reads the same bytes.
    assert_ok(&e.ds("rm", src, &message(&e, false, &[], &[("SOURCE", &src_s.to_string())])));
    assert!(ops::stat(c, &src_s).unwrap_err().is_not_found());
    assert_eq!(checksum(&ops::ioctx(c, &dst_s).unwrap().open_read_only(&dst_s.name, None).unwrap()), want);
    // Then the clone: nothing is left, in the pools or the trash. Removing the
    // last clone frees the source it kept in the trash, there and then.
    assert_ok(&e.ds("rm", dst, &message(&e, ec, &[], &[("SOURCE", &dst_s.to_string())])));
    gone(c, &pool, &src_s.name);
    gone(c, &pool, &dst_s.name);
}

#[test]
fn clones_of_an_unchanged_image_share_one_snapshot_and_a_change_takes_a_new_one() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let src = fresh_id();
    let src_s = ImageSpec::new(&pool, &format!("one-{src}")).unwrap();
    ops::create(c, &src_s, 16 * MIB, &ops::CreateOptions::default()).unwrap();
    let write = |seed| fill(&ops::ioctx(c, &src_s).unwrap().open(&src_s.name).unwrap(), 0, 4 * MIB, seed);
    let sum = |s: &ImageSpec| checksum(&ops::ioctx(c, s).unwrap().open_read_only(&s.name, None).unwrap());
    let clone = || {
        let dst = fresh_id();
        let m = message(&e, false, &snapshot_always(), &[("PATH", &src_s.to_string()), ("SIZE", "16")]);
        assert_eq!(stdout(&e.ds("clone", dst, &m)), format!("{pool}/one-{dst} raw\n"));
        let dst_s = ImageSpec::new(&pool, &format!("one-{dst}")).unwrap();
        let parent = ops::stat(c, &dst_s).unwrap().parent.expect("a CoW clone");
        (dst_s, parent.snap)
    };
    let snapshots = || ops::stat(c, &src_s).unwrap().snapshots.len();
    write(1);
    let first = sum(&src_s);
    let (a, a_snap) = clone();
    let (b, b_snap) = clone();
    assert_eq!(a_snap, b_snap, "the unchanged source's snapshot is cloned again");
    assert_eq!(snapshots(), 1);
    assert_eq!((sum(&a), sum(&b)), (first, first));
    // A write since the snapshot: the next clone sees it, the earlier ones do not.
    write(2);
    let second = sum(&src_s);
    assert_ne!(first, second);
    let (d, d_snap) = clone();
    assert_ne!(d_snap, a_snap);
    assert_eq!(snapshots(), 2);
    assert_eq!((sum(&a), sum(&b), sum(&d)), (first, first, second));
    // A resize since the last snapshot: a new one, at the new size.
    ops::resize(c, &src_s, 32 * MIB, false).unwrap();
    let grown = sum(&src_s);
    let (g, g_snap) = clone();
    assert!(g_snap != d_snap && snapshots() == 3);
    assert_eq!(ops::stat(c, &g).unwrap().size, 32 * MIB);
    // A discard since the last snapshot is a change too.
    ops::ioctx(c, &src_s).unwrap().open(&src_s.name).unwrap().discard(0, 4 * MIB).unwrap();
    let (h, h_snap) = clone();
    assert!(h_snap != g_snap && snapshots() == 4);
    assert_eq!(sum(&g), grown, "a clone taken before the discard keeps the data");
    for dst in [a, b, d, g, h] {
        let id: u32 = dst.name.trim_start_matches("one-").parse().unwrap();
        assert_ok(&e.ds("rm", id, &message(&e, false, &[], &[("SOURCE", &dst.to_string())])));
    }
    assert_ok(&e.ds("rm", src, &message(&e, false, &[], &[("SOURCE", &src_s.to_string())])));
}

#[test]
fn image_snapshots_revert_flatten_and_delete() {
    snapshots_on(false);
    snapshots_on(true);
}

fn snapshots_on(ec: bool) {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let id = fresh_id();
    let s = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    let dp = ec.then(|| e.cluster.ec_pool.clone());
    ops::create(c, &s, 16 * MIB, &ops::CreateOptions::with_data_pool(dp.as_deref())).unwrap();
    let d = Disk::new(c, s.clone(), &rbdx_one::naming::ONE);
    let mut want = Vec::new();
    for snap in ["0", "1", "2"] {
        fill(&ops::ioctx(c, &s).unwrap().open(&s.name).unwrap(), 0, MIB, snap.as_bytes()[0]);
        d.snapshot_create(snap).unwrap();
        want.push(image_bytes(c, &s));
    }
    let msg = |snap: &str| message(&e, ec, &[], &[("SOURCE", &s.to_string()), ("TARGET_SNAPSHOT", snap)]);
    assert_ok(&e.ds("snap_revert", id, &msg("0")));
    assert!(image_bytes(c, &s) == want[0]);
    assert_ok(&e.ds("snap_delete", id, &msg("2")));
    assert_ok(&e.ds("snap_delete", id, &msg("2")));
    assert_ok(&e.ds("snap_flatten", id, &msg("1")));
    assert!(image_bytes(c, &s) == want[1], "the image is now snapshot 1");
    let st = ops::stat(c, &s).unwrap();
    assert!(st.parent.is_none() && st.snapshots.is_empty(), "alone: {st:?}");
    assert_eq!(st.data_pool, dp, "flatten keeps the data pool");
    let left: Vec<String> = c
        .ioctx(&pool)
        .unwrap()
        .list_images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.starts_with(&format!("one-{id}-")))
        .collect();
    assert!(left.is_empty(), "no carrier left: {left:?}");
    assert_fails(&e.ds("snap_revert", id, &msg("7")), "has no snapshot 7");
    assert_ok(&e.ds("rm", id, &message(&e, ec, &[], &[("SOURCE", &s.to_string())])));
    gone(c, &pool, &s.name);
    let _ = DiskConfig::default();
}

#[test]
fn stat_reports_the_virtual_size_in_mib() {
    let e = env();
    let (raw, _) = raw_file(e.dir.path());
    let qcow = qcow2_of(&raw);
    let server = FileServer::start(e.dir.path());
    for path in [
        raw.display().to_string(),
        qcow.display().to_string(),
        format!("{}/disk.raw", server.base),
        format!("{}/disk.qcow2", server.base),
    ] {
        assert_eq!(stdout(&e.ds("stat", 1, &message(&e, false, &[], &[("PATH", &path)]))), "24\n", "{path}");
    }
    assert_fails(
        &e.ds("stat", 1, &message(&e, false, &[], &[("PATH", "/nonexistent")])),
        "Cannot determine size for /nonexistent",
    );
}

#[test]
fn export_describes_the_image_for_the_marketplace() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let id = fresh_id();
    let s = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    ops::create(c, &s, 8 * MIB, &ops::CreateOptions::default()).unwrap();
    fill(&ops::ioctx(c, &s).unwrap().open(&s.name).unwrap(), 0, MIB, 5);
    let md5: String = md5::Md5::digest(image_bytes(c, &s)).iter().map(|b| format!("{b:02x}")).collect();
    let out =
        stdout(&e.ds("export", 7, &message(&e, false, &[], &[("SOURCE", &s.to_string()), ("SIZE", "8")])));
    let doc = rbdx_one::xml::Element::parse(out.trim()).expect("a well-formed document, no stray quote");
    assert_eq!(doc.name, "IMPORT_INFO");
    assert_eq!(doc.text_at("MD5"), Some(md5.as_str()));
    assert_eq!(doc.text_at("SIZE"), Some("8"));
    assert_eq!(doc.text_at("FORMAT"), Some("raw"));
    assert_eq!(doc.text_at("DISPOSE"), Some("NO"));
    let src = doc.text_at("IMPORT_SOURCE").unwrap();
    assert!(src.starts_with(&format!("rbd://localhost/{s}?CEPH_USER=")), "{src}");
    // The key itself, not "AQ" (every cephx key's start), which a random temp
    // directory name in the path can contain.
    assert!(!src.contains(&e.key()), "a key never appears, only the key file's path: {src}");
    assert!(src.contains(&format!("CEPH_KEY={}", e.key_file.display())), "{src}");
    ops::remove(c, &s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn monitor_is_the_same_action_as_the_tms() {
    let e = env();
    let doc = e.image_ds(DS, true, &[]);
    let values = |text: &str| -> Vec<(String, u64)> {
        text.lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("KEY=value lines: {text}"));
                (k.to_string(), v.parse().unwrap_or_else(|_| panic!("a number of MiB: {l}")))
            })
            .collect()
    };
    let ds = values(&stdout(&e.ds("monitor", DS, &doc)));
    let keys: Vec<&str> = ds.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["USED_MB", "TOTAL_MB", "FREE_MB"]);
    // As the stock monitor, each value is rounded down from bytes: the total
    // is the sum of the two within 1 MiB.
    assert!(ds[1].1.abs_diff(ds[0].1 + ds[2].1) <= 1, "TOTAL = USED + FREE: {ds:?}");
    // The TM's monitor of the same datastore reports the same capacity (other
    // tests write meanwhile: within a few percent).
    let mut child = e
        .command(&["tm", "monitor", &DS.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let msg =
        rbdx_one::base64::encode(format!("<DS_DRIVER_ACTION_DATA>{doc}</DS_DRIVER_ACTION_DATA>").as_bytes());
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), msg.as_bytes()).unwrap();
    let tm = values(&stdout(&child.wait_with_output().unwrap()));
    for ((k, a), (_, b)) in ds.iter().zip(&tm) {
        assert!(a.abs_diff(*b) <= b / 20 + 64, "{k}: DS {a} MiB, TM {b} MiB");
    }
}

#[test]
fn rbdx_import_is_the_same_engine_for_operators() {
    let e = env();
    let c = e.cluster.connect();
    let (raw, data) = raw_file(e.dir.path());
    let qcow = qcow2_of(&raw);
    let s = ImageSpec::new(&e.cluster.pool, &format!("one-{}", fresh_id())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rbdx"))
        .args([
            "import",
            &qcow.display().to_string(),
            &s.to_string(),
            "--data-pool",
            &e.cluster.ec_pool,
            "--size",
            "32M",
        ])
        .env("RBDX_CONF", &e.cluster.conf)
        .env("RBDX_ID", &e.cluster.id)
        .env("RBDX_KEYRING", &e.cluster.keyring)
        .output()
        .unwrap();
    assert_ok(&out);
    let st = ops::stat(c, &s).unwrap();
    assert_eq!((st.size, st.data_pool.as_deref()), (32 * MIB, Some(e.cluster.ec_pool.as_str())));
    assert!(image_bytes(c, &s)[..data.len()] == data[..]);
    ops::remove(c, &s, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn monitor_reports_vm_disk_sizes_to_monitord() {
    use std::io::Read;
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let (img, vm) = (fresh_id(), fresh_id());
    let names = [format!("one-{img}-{vm}-0"), format!("one-sys-{vm}-1")];
    for (i, n) in names.iter().enumerate() {
        let s = ImageSpec::new(&pool, n).unwrap();
        ops::create(c, &s, 64 * MIB, &ops::CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
        fill(&ops::ioctx(c, &s).unwrap().open(n).unwrap(), 0, (i as u64 + 1) * 5 * MIB, 1);
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let one = e.dir.path().join("one");
    std::fs::create_dir_all(one.join("etc")).unwrap();
    std::fs::write(
        one.join("etc/monitord.conf"),
        format!("NETWORK = [\n    ADDRESS = \"0.0.0.0\",\n    MONITOR_ADDRESS = \"auto\",\n    PORT = {},\n    THREADS = 8,\n    PUBKEY = \"\",\n    PRIKEY = \"\"\n]\n", sock.local_addr().unwrap().port()),
    )
    .unwrap();
    let msg = format!("{}<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS>", e.image_ds(DS, true, &[]));
    let b64 =
        rbdx_one::base64::encode(format!("<DS_DRIVER_ACTION_DATA>{msg}</DS_DRIVER_ACTION_DATA>").as_bytes());
    let start = std::time::Instant::now();
    let mut cmd = e.command(&["ds", "monitor", &DS.to_string()]);
    cmd.env("ONE_LOCATION", &one)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b64.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("USED_MB="), "capacity still goes to stdout");
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).unwrap();
    let text = String::from_utf8(buf[..n].to_vec()).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(&parts[..4], ["MONITOR_VM", "SUCCESS", "-1", "0"], "{text}");
    let mut payload = String::new();
    flate2::read::ZlibDecoder::new(&rbdx_one::base64::decode(parts[4]).unwrap()[..])
        .read_to_string(&mut payload)
        .unwrap();
    let line = payload
        .lines()
        .find(|l| l.starts_with(&format!("VM=[ID={vm},")))
        .unwrap_or_else(|| panic!("VM {vm} in {payload}"));
    let b64 = line.split("MONITOR=\"").nth(1).unwrap().trim_end_matches("\"]");
    let disks = String::from_utf8(rbdx_one::base64::decode(b64).unwrap()).unwrap();
    assert_eq!(
        disks, " DISK_SIZE = [ ID=0, SIZE=8 ] DISK_SIZE = [ ID=1, SIZE=12 ]",
        "allocated MiB, whole objects"
    );
    eprintln!("monitor with VM disks took {:?}", start.elapsed());
    for n in &names {
        ops::remove(c, &ImageSpec::new(&pool, n).unwrap(), ops::RemoveOptions::default()).unwrap();
    }
}

#[test]
fn cp_restores_an_opennebula_rbd_backup_tarball() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let src = ImageSpec::new(&pool, &format!("one-{}", fresh_id())).unwrap();
    ops::create(c, &src, 32 * MIB, &ops::CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &src).unwrap();
    let dir = e.dir.path().join("bk");
    std::fs::create_dir_all(&dir).unwrap();
    let out = |n: &str| dir.join(n).display().to_string();
    // A full backup, then two incrementals (one of them discards data).
    fill(&io.open(&src.name).unwrap(), 0, 6 * MIB, 1);
    io.open(&src.name).unwrap().snap_create("one_backup_0").unwrap();
    e.rbd_admin(&["export", "--export-format", "2", &format!("{src}@one_backup_0"), &out("disk.0.rbd2")]);
    fill(&io.open(&src.name).unwrap(), 10 * MIB, 3 * MIB, 2);
    io.open(&src.name).unwrap().snap_create("one_backup_1").unwrap();
    e.rbd_admin(&[
        "export-diff",
        "--from-snap",
        "one_backup_0",
        &format!("{src}@one_backup_1"),
        &out("disk.0.1.rbdiff"),
    ]);
    io.open(&src.name).unwrap().discard(0, 4 * MIB).unwrap();
    fill(&io.open(&src.name).unwrap(), 20 * MIB, MIB, 3);
    io.open(&src.name).unwrap().snap_create("one_backup_2").unwrap();
    e.rbd_admin(&[
        "export-diff",
        "--from-snap",
        "one_backup_1",
        &format!("{src}@one_backup_2"),
        &out("disk.0.2.rbdiff"),
    ]);
    let want = image_bytes(c, &src);
    let tarball = e.dir.path().join("backup.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .args(["disk.0.rbd2", "disk.0.1.rbdiff", "disk.0.2.rbdiff"])
        .status()
        .unwrap();
    assert!(ok.success());

    let id = fresh_id();
    let msg = message(&e, true, &[], &[("PATH", &tarball.display().to_string()), ("SIZE", "32")]);
    assert_eq!(stdout(&e.ds("cp", id, &msg)), format!("{pool}/one-{id} raw\n"));
    let s = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    assert!(image_bytes(c, &s) == want, "the newest backup state, byte for byte");
    let st = ops::stat(c, &s).unwrap();
    assert!(st.snapshots.is_empty(), "no snapshots left, as upstream");
    assert_eq!(st.data_pool.as_deref(), Some(e.cluster.ec_pool.as_str()));
    for spec in [&s, &src] {
        ops::remove(c, spec, ops::RemoveOptions::default()).unwrap();
    }
    // A gzipped tarball that is not a backup: one clear line, nothing created.
    let other = e.dir.path().join("other.tar.gz");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && echo hi > note && tar czf '{}' note",
            e.dir.path().display(),
            other.display()
        ))
        .status()
        .unwrap();
    assert!(ok.success());
    let id = fresh_id();
    assert_fails(
        &e.ds("cp", id, &message(&e, false, &[], &[("PATH", &other.display().to_string())])),
        "not an OpenNebula RBD backup",
    );
    gone(c, &pool, &format!("one-{id}"));
}

#[test]
fn with_ceph_trash_parents_of_trashed_clones_are_removed_and_nothing_is_left_after_a_purge() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let trash_ds = [("CEPH_TRASH", "YES".to_string())];
    e.oned.set_datastore(DS, e.image_ds(DS, true, &trash_ds));
    let (img, saved, vm) = (fresh_id(), fresh_id(), fresh_id());
    let img_s = ImageSpec::new(&pool, &format!("one-{img}")).unwrap();
    ops::create(c, &img_s, 8 * MIB, &ops::CreateOptions::with_data_pool(Some(&e.cluster.ec_pool))).unwrap();
    fill(&ops::ioctx(c, &img_s).unwrap().open(&img_s.name).unwrap(), 0, MIB, 4);
    e.oned.set_vm(
        vm,
        rbdx_tests::one::vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img_s.to_string(), true, DS, 8)]),
    );
    let disk = format!("localhost:/var/lib/one//datastores/0/{vm}/disk.0");
    let (vms, ds) = (vm.to_string(), DS.to_string());
    // A VM disk (a clone of the image), a save-as of it (a clone of its snapshot).
    assert_ok(&e.tm("clone", &[&format!("frontend:{img_s}"), &disk, &vms, &ds]));
    let saved_s = format!("{pool}/one-{saved}");
    assert_ok(&e.tm("cpds", &[&disk, &saved_s, "-1", &vms, &ds]));
    // Everything removed with CEPH_TRASH, children first, as oned does it.
    assert_ok(&e.tm("delete", &[&disk, &vms, &ds]));
    let msg = |source: &str| message(&e, true, &trash_ds, &[("SOURCE", source)]);
    assert_ok(&e.ds("rm", saved, &msg(&saved_s)));
    assert_ok(&e.ds("rm", img, &msg(&img_s.to_string())));
    let io = c.ioctx(&pool).unwrap();
    let ours = |n: &str| n.starts_with(&format!("one-{img}")) || n == format!("one-{saved}");
    let names: Vec<String> =
        io.list_images().unwrap().into_iter().map(|i| i.name).filter(|n| ours(n)).collect();
    assert!(names.is_empty(), "nothing is left outside the trash: {names:?}");
    // The operator purges the trash (what `rbd trash purge` does after TRASH_DELAY).
    for entry in io.trash_list().unwrap().into_iter().filter(|t| ours(&t.name)) {
        let _ = io.trash_remove(&entry.id, true);
    }
    let left = rbdx_tests::reclaim_until_gone(c, &pool, |n| ours(n));
    assert!(left.is_empty(), "reclaim freed what waited: {left:?}");
    gone(c, &pool, &format!("one-{img}"));
    gone(c, &pool, &format!("one-{saved}"));
}

#[test]
fn cp_reads_rbd_sources_natively_where_the_datastore_allows_them() {
    let e = env();
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let src = ImageSpec::new(&pool, &format!("one-{}", fresh_id())).unwrap();
    ops::create(c, &src, 12 * MIB, &ops::CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &src).unwrap();
    fill(&io.open(&src.name).unwrap(), 3 * MIB, 2 * MIB, 6);
    io.open(&src.name).unwrap().snap_create("v1").unwrap();
    fill(&io.open(&src.name).unwrap(), 0, MIB, 7);
    let at_v1 = {
        let img = io.open_read_only(&src.name, Some("v1")).unwrap();
        let mut v = vec![0u8; 12 << 20];
        ops::changes::read_exact_at(&img, 0, &mut v).unwrap();
        v
    };
    let query = format!(
        "CEPH_USER={}&CEPH_KEY={}&CEPH_CONF={}",
        e.cluster.id,
        e.key_file.display(),
        e.cluster.conf.display()
    );
    let url = format!("rbd://localhost/{src}@v1?{query}");
    let allow = [("RBDX_RBD_SOURCES", "yes".to_string())];

    // Off by default: one line, nothing made.
    let id = fresh_id();
    let msg = message(&e, false, &[], &[("PATH", &url), ("SIZE", "12")]);
    assert_fails(&e.ds("cp", id, &msg), "RBD_SOURCES is off");
    assert!(ops::stat(c, &ImageSpec::new(&pool, &format!("one-{id}")).unwrap()).is_err());

    // Allowed: the snapshot's bytes, sparse, in a new image; stat says 12 MiB.
    let msg = message(&e, true, &allow, &[("PATH", &url), ("SIZE", "12")]);
    assert_eq!(stdout(&e.ds("stat", id, &msg)), "12\n");
    assert_eq!(stdout(&e.ds("cp", id, &msg)), format!("{pool}/one-{id} raw\n"));
    let t = std::time::Instant::now();
    assert_eq!(stdout(&e.ds("cp", id, &msg)), format!("{pool}/one-{id} raw\n"), "a re-run succeeds");
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "and does not wait for the sender");
    let new = ImageSpec::new(&pool, &format!("one-{id}")).unwrap();
    assert!(image_bytes(c, &new) == at_v1, "the snapshot's content");
    assert_eq!(ops::stat(c, &new).unwrap().data_pool, Some(e.cluster.ec_pool.clone()));
    let used = ops::used_bytes(&ops::ioctx(c, &new).unwrap().open_read_only(&new.name, None).unwrap(), None)
        .unwrap();
    // 2 MiB of data across two 4 MiB objects; the third (all zeros) not written.
    assert!(used <= 8 * MIB, "sparse: {used} bytes for 2 MiB of data");

    // Hostile URLs and a missing image: one line, nothing made.
    for (bad, want) in [
        (format!("rbd://localhost/{pool}/no-such-image?{query}"), "no such file"),
        (format!("rbd://root@localhost/{src}?{query}"), "a user in the URL"),
        (format!("rbd://localhost/{src}?CEPH_KEY=/etc/../etc/shadow"), "not an absolute path"),
        (format!("rbd://-oProxyCommand=id/{src}"), "refusing the rbd:// source"),
        (format!("rbd://localhost/{src}?SECRET=x"), "unknown parameter"),
    ] {
        let id = fresh_id();
        let msg = message(&e, false, &allow, &[("PATH", &bad), ("SIZE", "12")]);
        assert_fails(&e.ds("cp", id, &msg), want);
        assert!(ops::stat(c, &ImageSpec::new(&pool, &format!("one-{id}")).unwrap()).is_err(), "{bad}");
    }
    ops::remove(c, &new, ops::RemoveOptions::default()).unwrap();
    Disk::new(c, src, &rbdx_one::naming::ONE).remove(None, ops::disk::Reclaim::Flatten).unwrap();
}
