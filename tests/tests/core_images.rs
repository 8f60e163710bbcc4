//! Core image operations against the real test cluster, as the restricted client:
//! create, stat, clone (both formats), snapshots, rollback, flatten, rename, resize,
//! metadata, usage. Every image created in the EC setup is checked for its data pool.

use rbdx_core::ops::{self, CloneFormat, CloneOptions, CreateOptions, ImageSpec};
use rbdx_core::rbd::{CloneAs, ImageOptions, SnapNamespace, Writes, features};
use rbdx_core::{Error, ErrorKind};
use rbdx_tests::{MIB, Scratch, checksum, fill};

#[test]
fn connects_as_a_restricted_client_that_cannot_administer() {
    let env = rbdx_tests::cluster();
    let c = env.connect();
    assert_eq!(c.entity(), format!("client.{}", env.id));
    assert_eq!(c.fsid().unwrap().len(), 36);
    // `profile rbd` may not list the cluster's keys: proves we are not admin.
    let e = c.mon_command(&serde_json::json!({"prefix": "auth ls"})).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::PermissionDenied), "{e}");
}

#[test]
fn create_puts_data_in_the_ec_pool_only_when_asked() {
    let s = Scratch::new("create");
    let c = s.env.connect();
    let ec = s.spec("ec");
    let plain = s.spec("plain");
    ops::create(c, &ec, 64 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    ops::create(c, &plain, 32 * MIB, &CreateOptions::default()).unwrap();

    let st = ops::stat(c, &ec).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert_eq!(st.size, 64 * MIB);
    assert_ne!(st.features & features::DATA_POOL, 0);
    assert_ne!(st.features & features::OBJECT_MAP, 0, "object-map keeps rollback and usage fast");
    assert!(st.parent.is_none());
    let st = ops::stat(c, &plain).unwrap();
    assert_eq!(st.data_pool, None);
    assert_eq!(st.features & features::DATA_POOL, 0);

    let again = ops::create(c, &ec, MIB, &CreateOptions::default()).unwrap_err();
    assert!(again.is_exists(), "{again}");
    let missing = ops::create(c, &s.spec("x"), MIB, &CreateOptions::with_data_pool(Some("no-such-pool")));
    assert!(missing.is_err());
    assert!(s.leftovers(c).0.iter().all(|n| !n.ends_with("-x")), "a failed create leaves nothing");

    let names: Vec<String> =
        c.ioctx(&s.env.pool).unwrap().list_images().unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&ec.name) && names.contains(&plain.name));
    s.finish(c);
}

#[test]
fn exact_features_are_honoured() {
    let s = Scratch::new("features");
    let c = s.env.connect();
    let spec = s.spec("lay");
    let opts =
        CreateOptions { features: Some(features::LAYERING), order: Some(23), ..CreateOptions::default() };
    ops::create(c, &spec, 16 * MIB, &opts).unwrap();
    let st = ops::stat(c, &spec).unwrap();
    assert_eq!(st.features, features::LAYERING);
    assert_eq!(st.object_size, 8 * MIB);
    s.finish(c);
}

/// A base image on the EC pool with data and a snapshot, as the drivers make them.
fn base_with_snapshot(s: &Scratch, c: &rbdx_core::Cluster, ec: bool) -> ImageSpec {
    let base = s.spec("base");
    ops::create(c, &base, 64 * MIB, &CreateOptions::with_data_pool(s.env.data_pool(ec))).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    let img = io.open(&base.name).unwrap();
    fill(&img, 0, 20 * MIB, 7);
    img.snap_create("snap").unwrap();
    base.at("snap").unwrap()
}

#[test]
fn clone_v2_gets_the_data_pool_and_reads_its_parent() {
    let s = Scratch::new("clone2");
    let c = s.env.connect();
    let snap = base_with_snapshot(&s, c, true);
    assert_eq!(ops::cluster_clone_format(c).unwrap(), 2, "the test cluster requires mimic clients");
    // Read from the OSD map the client holds: the release `osd dump` names.
    let dump = c.mon_command(&serde_json::json!({"prefix": "osd dump"})).unwrap();
    let named = dump["require_min_compat_client"].as_str().unwrap().to_string();
    let releases = ["luminous", "mimic", "nautilus", "octopus", "pacific", "quincy", "reef", "squid"];
    let at = releases.iter().position(|r| *r == named).unwrap_or_else(|| panic!("{named}"));
    assert_eq!(c.require_min_compat_client().unwrap(), 12 + at as i8, "{named}");

    let child = s.spec("child");
    let opts = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    assert_eq!(ops::clone(c, &snap, &child, &opts).unwrap(), 2);

    let st = ops::stat(c, &child).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    let p = st.parent.expect("a clone has a parent");
    assert_eq!((p.image.name.as_str(), p.snap.as_str()), (snap.name.as_str(), "snap"));
    assert_eq!(p.image.pool, s.env.pool);
    assert_eq!(p.overlap, 64 * MIB);
    assert_eq!(p.snap_namespace, SnapNamespace::User);

    let io = ops::ioctx(c, &snap).unwrap();
    let base_snap = io.open_read_only(&snap.name, Some("snap")).unwrap();
    assert!(!base_snap.snap_is_protected("snap").unwrap(), "v2 needs no protection");
    let kids = base_snap.children().unwrap();
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].name, child.name);
    let child_img = io.open_read_only(&child.name, None).unwrap();
    assert_eq!(checksum(&child_img), checksum(&base_snap));

    let again = ops::clone(c, &snap, &child, &opts).unwrap_err();
    assert!(again.is_exists(), "{again}");
    drop((child_img, base_snap));
    s.finish(c);
}

#[test]
fn clone_without_a_data_pool_does_not_inherit_it() {
    // Ceph behaviour the drivers design around: the data pool must be passed.
    let s = Scratch::new("noinherit");
    let c = s.env.connect();
    let snap = base_with_snapshot(&s, c, true);
    let child = s.spec("child");
    ops::clone(c, &snap, &child, &CloneOptions::default()).unwrap();
    assert_eq!(ops::stat(c, &child).unwrap().data_pool, None);
    s.finish(c);
}

#[test]
fn clone_v1_protects_the_snapshot_which_then_cannot_go() {
    let s = Scratch::new("clone1");
    let c = s.env.connect();
    let snap = base_with_snapshot(&s, c, true);
    let child = s.spec("child");
    let opts = CloneOptions {
        data_pool: Some(s.env.ec_pool.clone()),
        format: CloneFormat::V1,
        ..CloneOptions::default()
    };
    assert_eq!(ops::clone(c, &snap, &child, &opts).unwrap(), 1);
    assert_eq!(ops::stat(c, &child).unwrap().data_pool.as_deref(), Some(s.env.ec_pool.as_str()));

    let io = ops::ioctx(c, &snap).unwrap();
    let base = io.open(&snap.name).unwrap();
    assert!(base.snap_is_protected("snap").unwrap());
    let e = base.snap_unprotect("snap").unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Busy), "{e}");
    // A second v1 clone of the already protected snapshot works too.
    ops::clone(c, &snap, &s.spec("child2"), &opts).unwrap();
    drop(base);

    let removal = ops::remove(c, &snap.head(), ops::RemoveOptions::default()).unwrap_err();
    assert!(matches!(removal, Error::HasChildren { .. }), "{removal}");
    assert!(removal.to_string().contains(&child.name), "{removal}");
    s.finish(c);
}

#[test]
fn snapshots_list_rollback_protect_and_remove() {
    let s = Scratch::new("snaps");
    let c = s.env.connect();
    let spec = s.spec("disk");
    ops::create(c, &spec, 32 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &spec).unwrap();
    let img = io.open(&spec.name).unwrap();
    fill(&img, 0, 8 * MIB, 1);
    let before = checksum(&img);
    img.snap_create("s1").unwrap();
    fill(&img, 4 * MIB, 8 * MIB, 2);
    img.snap_create("s2").unwrap();
    assert_ne!(checksum(&img), before);

    let snaps = img.snapshots().unwrap();
    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s1", "s2"]);
    assert!(snaps[0].id < snaps[1].id);
    assert_eq!(snaps[0].size, 32 * MIB);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let ts = img.snap_timestamp(snaps[0].id).unwrap();
    assert!((now - 600..=now + 5).contains(&ts), "timestamp {ts} vs now {now}");
    assert_eq!(img.snap_namespace(snaps[0].id).unwrap(), SnapNamespace::User);

    img.snap_rollback("s1").unwrap();
    assert_eq!(checksum(&img), before, "rollback restores the snapshot's data");

    img.snap_protect("s1").unwrap();
    assert!(img.snap_is_protected("s1").unwrap());
    img.snap_unprotect("s1").unwrap();
    assert!(!img.snap_is_protected("s1").unwrap());
    img.snap_protect("s2").unwrap();
    img.snap_remove("s2").unwrap(); // unprotects first
    img.snap_remove("s1").unwrap();
    assert!(img.snapshots().unwrap().is_empty());
    let e = img.snap_remove("s1").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = img.snap_create("bad\0name").unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    drop(img);
    s.finish(c);
}

#[test]
fn flatten_detaches_a_clone_and_keeps_data_and_data_pool() {
    let s = Scratch::new("flatten");
    let c = s.env.connect();
    let snap = base_with_snapshot(&s, c, true);
    let child = s.spec("child");
    let opts = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    ops::clone(c, &snap, &child, &opts).unwrap();
    let io = ops::ioctx(c, &child).unwrap();
    let want = checksum(&io.open_read_only(&snap.name, Some("snap")).unwrap());

    ops::flatten(c, &child).unwrap();
    ops::flatten(c, &child).unwrap(); // re-running is a no-op
    let st = ops::stat(c, &child).unwrap();
    assert!(st.parent.is_none());
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert_eq!(checksum(&io.open_read_only(&child.name, None).unwrap()), want);
    assert!(io.open_read_only(&snap.name, Some("snap")).unwrap().children().unwrap().is_empty());
    s.finish(c);
}

#[test]
fn rename_and_resize() {
    let s = Scratch::new("resize");
    let c = s.env.connect();
    let spec = s.spec("a");
    ops::create(c, &spec, 16 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let renamed = s.spec("b");
    ops::rename(c, &spec, &renamed.name).unwrap();
    assert!(ops::stat(c, &spec).unwrap_err().is_not_found());
    assert_eq!(ops::stat(c, &renamed).unwrap().data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert!(ops::rename(c, &renamed, "bad/name").is_err());

    ops::resize(c, &renamed, 48 * MIB, false).unwrap();
    assert_eq!(ops::stat(c, &renamed).unwrap().size, 48 * MIB);
    let e = ops::resize(c, &renamed, 8 * MIB, false).unwrap_err();
    assert!(e.to_string().contains("refusing to shrink"), "{e}");
    assert_eq!(ops::stat(c, &renamed).unwrap().size, 48 * MIB, "a refused shrink changes nothing");
    ops::resize(c, &renamed, 8 * MIB, true).unwrap();
    assert_eq!(ops::stat(c, &renamed).unwrap().size, 8 * MIB);
    s.finish(c);
}

#[test]
fn metadata_get_set_list_remove() {
    let s = Scratch::new("meta");
    let c = s.env.connect();
    let spec = s.spec("m");
    ops::create(c, &spec, MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &spec).unwrap();
    let img = io.open(&spec.name).unwrap();
    assert_eq!(img.metadata_get("rbdx.none").unwrap(), None);
    img.metadata_set("rbdx.snap.1", "one-7-0:1").unwrap();
    img.metadata_set("rbdx.empty", "").unwrap();
    img.metadata_set("other", "x").unwrap();
    // The prefix itself is a key; keys beside it sort before and after it.
    img.metadata_set("rbdx.", "itself").unwrap();
    img.metadata_set("rbdx-before", "x").unwrap();
    img.metadata_set("rbdx/after", "x").unwrap();
    // More keys than one librbd page (256) under the prefix.
    for i in 0..300 {
        img.metadata_set(&format!("rbdx.k{i:04}"), &format!("v{i}")).unwrap();
    }
    assert_eq!(img.metadata_get("rbdx.snap.1").unwrap().as_deref(), Some("one-7-0:1"));
    let all = img.metadata_list("rbdx.").unwrap();
    assert_eq!(all.len(), 303);
    assert_eq!(all[0], ("rbdx.".to_string(), "itself".to_string()));
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "sorted by key");
    assert!(all.contains(&("rbdx.empty".to_string(), String::new())));
    assert!(all.contains(&("rbdx.k0299".to_string(), "v299".to_string())));
    assert!(!all.iter().any(|(k, _)| k == "other" || k == "rbdx-before" || k == "rbdx/after"));
    assert_eq!(img.metadata_list("").unwrap().len(), 306);
    img.metadata_remove("rbdx.snap.1").unwrap();
    img.metadata_remove("rbdx.snap.1").unwrap(); // missing is fine
    assert_eq!(img.metadata_get("rbdx.snap.1").unwrap(), None);
    // One write removes (a missing key among them) and sets.
    img.edit_metadata(&["rbdx.k0000", "rbdx.missing"], &[("rbdx.k0001", "new"), ("rbdx.added", "a")])
        .unwrap();
    assert_eq!(img.metadata_get("rbdx.k0000").unwrap(), None);
    assert_eq!(img.metadata_get("rbdx.k0001").unwrap().as_deref(), Some("new"));
    assert_eq!(img.metadata_get("rbdx.added").unwrap().as_deref(), Some("a"));
    // A NUL in a key or value (librbd reads C strings) is refused, nothing written.
    assert!(img.edit_metadata(&[], &[("rbdx.ok", "1"), ("rbdx.a\0b", "x")]).is_err());
    assert!(img.metadata_set("rbdx.v", "a\0b").is_err());
    assert_eq!(img.metadata_get("rbdx.ok").unwrap(), None);
    assert_eq!(img.metadata_get("rbdx.v").unwrap(), None);
    // librbd's own settings go through librbd, which reads them back.
    img.metadata_set("conf_rbd_cache_policy", "writeback").unwrap();
    assert_eq!(img.metadata_get("conf_rbd_cache_policy").unwrap().as_deref(), Some("writeback"));
    img.metadata_remove("conf_rbd_cache_policy").unwrap();
    assert_eq!(img.metadata_get("conf_rbd_cache_policy").unwrap(), None);
    // A read-only handle writes nothing.
    let ro = io.open_read_only(&spec.name, None).unwrap();
    let e = ro.metadata_set("rbdx.ro", "x").unwrap_err();
    assert!(e.to_string().contains("rbd_metadata_set"), "{e}");
    assert!(ro.metadata_remove("rbdx.added").is_err());
    assert_eq!(img.metadata_get("rbdx.ro").unwrap(), None);
    assert_eq!(img.metadata_get("rbdx.added").unwrap().as_deref(), Some("a"));
    drop(ro);
    drop(img);
    s.finish(c);
}

#[test]
fn usage_counts_allocated_objects_from_the_object_map() {
    let s = Scratch::new("usage");
    let c = s.env.connect();
    let spec = s.spec("u");
    ops::create(c, &spec, 1024 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &spec).unwrap();
    let img = io.open(&spec.name).unwrap();
    assert_eq!(ops::used_bytes(&img, None).unwrap(), 0);
    // 3 writes into 3 distinct 4 MiB objects, far apart.
    for off in [0, 100 * MIB, 900 * MIB] {
        img.write_at(off, b"data").unwrap();
    }
    img.flush().unwrap();
    assert_eq!(ops::used_bytes(&img, None).unwrap(), 12 * MIB);
    img.snap_create("s").unwrap();
    img.write_at(500 * MIB, b"more").unwrap();
    img.flush().unwrap();
    assert_eq!(ops::used_bytes(&img, Some("s")).unwrap(), 4 * MIB, "only what changed since s");
    assert_eq!(ops::used_bytes(&img, None).unwrap(), 16 * MIB);
    img.discard(0, 4 * MIB).unwrap();
    img.flush().unwrap();
    assert_eq!(ops::used_bytes(&img, None).unwrap(), 12 * MIB);
    drop(img);
    s.finish(c);
}

#[test]
fn windowed_writes_land_where_sent_and_report_a_failed_write() {
    let s = Scratch::new("aio");
    let c = s.env.connect();
    let spec = s.spec("w");
    let size = 40 * MIB;
    ops::create(c, &spec, size, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &spec).unwrap();
    let img = io.open(&spec.name).unwrap();

    // A stream of 37 MiB + 5 bytes: data, an all-zero 4 MiB chunk (skipped), data
    // again, and a short tail; more chunks than the window, so writes overlap.
    let len = 37 * MIB as usize + 5;
    let mut src: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(1)).collect();
    let zero = 8 * MIB as usize..12 * MIB as usize;
    src[zero.clone()].fill(0);
    let written = ops::write_sparse(&img, std::io::Cursor::new(&src)).unwrap();
    assert_eq!(written, (len - zero.len()) as u64, "the zero chunk is not written");
    let mut back = vec![0u8; size as usize];
    assert_eq!(img.read_at(0, &mut back).unwrap(), back.len());
    assert!(back[..len] == src[..], "every chunk landed at its offset");
    assert!(back[len..].iter().all(|b| *b == 0));
    assert_eq!(ops::used_bytes(&img, None).unwrap(), 36 * MIB, "the zero chunk's object was never made");

    // Directly: a write past the image's end fails with librbd's error, named,
    // and the writes around it still land; dropping with writes in flight
    // waits for them.
    let mut w = Writes::new(&img, 3);
    for k in 0..4u64 {
        let mut b = w.buffer(MIB as usize);
        b.fill(0xa0 + k as u8);
        w.write(k * MIB, b).unwrap();
    }
    let b = w.buffer(16);
    w.write(size + 4 * MIB, b).unwrap();
    let mut b = w.buffer(MIB as usize);
    b.fill(0xb0);
    w.write(5 * MIB, b).unwrap();
    let e = w.finish().unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::InvalidArgument), "{e}");
    assert!(e.to_string().contains("rbd_aio_write2"), "{e}");
    assert!(e.to_string().contains(&format!(" at {} (16 bytes)", size + 4 * MIB)), "the write is named: {e}");
    let mut w = Writes::new(&img, 2);
    for k in 0..3u64 {
        let mut b = w.buffer(MIB as usize);
        b.fill(0xc0 + k as u8);
        w.write((20 + k) * MIB, b).unwrap();
    }
    drop(w);
    let mut one = vec![0u8; MIB as usize];
    for (off, want) in [(0, 0xa0), (3 * MIB, 0xa3), (5 * MIB, 0xb0), (20 * MIB, 0xc0), (22 * MIB, 0xc2)] {
        img.read_at(off, &mut one).unwrap();
        assert!(one.iter().all(|b| *b == want), "at {off}");
    }
    drop(img);
    s.finish(c);
}

#[test]
fn images_live_in_rados_namespaces_too() {
    let env = rbdx_tests::cluster();
    let c = env.connect();
    let ns = rbdx_tests::unique("ns");
    c.ioctx(&env.pool).unwrap().namespace_create(&ns).unwrap();
    let spec = ImageSpec::new(&env.pool, "disk").unwrap().in_namespace(&ns).unwrap();
    ops::create(c, &spec, 8 * MIB, &CreateOptions::with_data_pool(Some(&env.ec_pool))).unwrap();
    assert_eq!(spec.to_string(), format!("{}/{ns}/disk", env.pool));
    let st = ops::stat(c, &spec).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(env.ec_pool.as_str()));
    let io = ops::ioctx(c, &spec).unwrap();
    io.open(&spec.name).unwrap().snap_create("s").unwrap();
    let child = spec.sibling("child").unwrap();
    let o = CloneOptions { data_pool: Some(env.ec_pool.clone()), ..CloneOptions::default() };
    ops::clone(c, &spec.at("s").unwrap(), &child, &o).unwrap();
    let p = ops::stat(c, &child).unwrap().parent.unwrap();
    assert_eq!((p.image.namespace.as_str(), p.image.name.as_str()), (ns.as_str(), "disk"));
    let names: Vec<String> = io.list_images().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let default: Vec<String> =
        c.ioctx(&env.pool).unwrap().list_images().unwrap().into_iter().map(|e| e.name).collect();
    assert!(!default.contains(&"child".to_string()), "the default namespace does not see them");
    ops::remove(c, &child, ops::RemoveOptions::default()).unwrap();
    ops::remove(c, &spec, ops::RemoveOptions::default()).unwrap();
    c.ioctx(&env.pool).unwrap().namespace_remove(&ns).unwrap();
}

#[test]
fn head_usage_counts_what_an_open_counts_without_opening() {
    let s = Scratch::new("usage");
    let c = s.env.connect();
    let io = c.ioctx(&s.env.pool).unwrap();
    let make = |name: &str, size: u64, opts: &CreateOptions, writes: &[(u64, u64)]| {
        let spec = s.spec(name);
        ops::create(c, &spec, size, opts).unwrap();
        let img = io.open(&spec.name).unwrap();
        for &(off, len) in writes {
            fill(&img, off, len, 7);
        }
        spec
    };
    let plain = CreateOptions::default();
    let mut want = vec![
        // The last object cut at the image's end.
        (make("full", 10 * MIB, &plain, &[(0, 10 * MIB)]), 10 * MIB),
        (make("sparse", 64 * MIB, &plain, &[(0, 1), (40 * MIB, 1)]), 8 * MIB),
        (
            make("ec", 64 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool)), &[(0, 9 * MIB)]),
            12 * MIB,
        ),
        (
            make("order20", 8 * MIB, &CreateOptions { order: Some(20), ..plain.clone() }, &[(MIB / 2, MIB)]),
            2 * MIB,
        ),
        (make("empty", 64 * MIB, &plain, &[]), 0),
    ];
    // A discarded object is gone from the map; a shrink cuts the map.
    let discarded = make("discarded", 16 * MIB, &plain, &[(0, 8 * MIB)]);
    io.open(&discarded.name).unwrap().discard(0, 4 * MIB).unwrap();
    want.push((discarded, 4 * MIB));
    let shrunk = make("shrunk", 16 * MIB, &plain, &[(0, 12 * MIB)]);
    io.open(&shrunk.name).unwrap().resize(6 * MIB, true).unwrap();
    want.push((shrunk, 6 * MIB));
    // A clone counts its own objects only.
    let snap = base_with_snapshot(&s, c, false);
    let clone = s.spec("clone");
    ops::clone(c, &snap, &clone, &CloneOptions::default()).unwrap();
    fill(&io.open(&clone.name).unwrap(), 5 * MIB, 1, 9);
    want.push((clone, 4 * MIB));
    // No object map: the image is opened and its extents listed.
    let unmapped = CreateOptions { features: Some(features::LAYERING), ..plain.clone() };
    want.push((make("unmapped", 16 * MIB, &unmapped, &[(0, MIB), (8 * MIB, MIB)]), 8 * MIB));

    let listed = io.list_images().unwrap();
    for (spec, bytes) in &want {
        let entry = listed.iter().find(|e| e.name == spec.name).unwrap();
        let opened = ops::used_bytes(&io.open_read_only(&spec.name, None).unwrap(), None).unwrap();
        assert_eq!(io.head_usage(entry).unwrap(), Some(*bytes), "{spec}");
        assert_eq!(opened, *bytes, "{spec}: what an open counts");
    }
    let gone = rbdx_core::rbd::ImageEntry { id: "0000000000ffff".into(), name: s.spec("gone").name };
    assert_eq!(io.head_usage(&gone).unwrap(), None);
}

#[test]
fn head_views_say_what_an_open_says_without_opening() {
    let s = Scratch::new("views");
    let c = s.env.connect();
    let opts = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    let snap = base_with_snapshot(&s, c, true);
    let io = ops::ioctx(c, &snap).unwrap();
    let clone = |name: &str, from: &ImageSpec| {
        let spec = s.spec(name);
        ops::clone(c, from, &spec, &opts).unwrap();
        spec
    };
    let child = clone("child", &snap);
    let sibling = clone("sibling", &snap);
    let grandchild = {
        let img = io.open(&child.name).unwrap();
        img.snap_create("c1").unwrap();
        clone("grandchild", &child.at("c1").unwrap())
    };
    let flat = clone("flat", &snap);
    io.open(&flat.name).unwrap().flatten().unwrap();
    let bare = s.spec("bare");
    let no_layering = CreateOptions { features: Some(0), ..CreateOptions::default() };
    ops::create(c, &bare, 8 * MIB, &no_layering).unwrap();
    assert_eq!(ops::stat(c, &bare).unwrap().features & features::LAYERING, 0);
    io.open(&bare.name).unwrap().resize(12 * MIB, false).unwrap();
    // A parent snapshot removed while clones use it waits in the trash
    // namespace; a parent image removed so waits in the trash.
    let orphan_base = s.spec("obase");
    ops::create(c, &orphan_base, 16 * MIB, &CreateOptions::default()).unwrap();
    io.open(&orphan_base.name).unwrap().snap_create("gone").unwrap();
    let orphan = clone("orphan", &orphan_base.at("gone").unwrap());
    io.open(&orphan_base.name).unwrap().snap_remove("gone").unwrap();
    let trashed_base = s.spec("tbase");
    ops::create(c, &trashed_base, 16 * MIB, &CreateOptions::default()).unwrap();
    io.open(&trashed_base.name).unwrap().snap_create("s").unwrap();
    let of_trashed = clone("oftrashed", &trashed_base.at("s").unwrap());
    ops::remove(c, &trashed_base, ops::RemoveOptions { trash_delay: Some(0) }).unwrap();

    let mine: Vec<_> =
        io.list_images().unwrap().into_iter().filter(|e| e.name.starts_with(s.prefix())).collect();
    let mut entries = mine.clone();
    entries.push(rbdx_core::rbd::ImageEntry { id: "0000000000ffff".into(), name: s.spec("gone").name });
    let views = io.head_views(&entries).unwrap();
    assert_eq!(views.len(), entries.len());
    assert_eq!(views.last().unwrap(), &None, "an image gone is not listed");
    for (e, v) in mine.iter().zip(&views) {
        let img = io.open_read_only(&e.name, None).unwrap();
        let v = v.as_ref().unwrap_or_else(|| panic!("{} is there", e.name));
        assert_eq!(v.size, img.info().unwrap().size, "{}", e.name);
        assert_eq!(v.parent, img.parent().unwrap(), "{}", e.name);
    }
    let by_name = |spec: &ImageSpec| {
        let i = mine.iter().position(|e| e.name == spec.name).unwrap();
        views[i].clone().unwrap()
    };
    // What the open agreed on is what a listing needs.
    for (spec, parent) in [(&child, &snap), (&sibling, &snap), (&grandchild, &child)] {
        let p = by_name(spec).parent.unwrap();
        assert_eq!((p.image.name.as_str(), p.image.trash), (parent.name.as_str(), false));
    }
    assert_eq!(by_name(&grandchild).parent.unwrap().snap_name, "c1");
    assert_eq!(by_name(&flat).parent, None);
    assert_eq!((by_name(&bare).size, by_name(&bare).parent), (12 * MIB, None));
    assert_eq!(by_name(&orphan).parent.unwrap().snap_namespace, SnapNamespace::Trash);
    assert!(by_name(&of_trashed).parent.unwrap().image.trash);

    for spec in [&grandchild, &child, &sibling, &flat, &orphan, &of_trashed] {
        ops::remove(c, spec, ops::RemoveOptions::default()).unwrap();
    }
    s.finish(c);
}

/// A listing of the names that start with a prefix (the pool directory read
/// from the prefix on, a page at a time) is the full listing's entries with
/// that prefix: the prefix itself, names that extend it in any way, across a
/// page boundary; none for a prefix nothing has.
#[test]
fn a_prefixed_listing_is_the_full_listing_of_those_names() {
    let s = Scratch::new("prefixed");
    let c = s.env.connect();
    let io = c.ioctx(&s.env.pool).unwrap();
    let small = CreateOptions { features: Some(features::LAYERING), ..CreateOptions::default() };
    let mut names: Vec<String> =
        ["a", "aa", "ab", "ab-3", "ab.rbdx-new", "abc", "b"].map(String::from).into();
    // More than a page (256 names) with one prefix.
    names.extend((0..258).map(|i| format!("many-{i:03}")));
    for n in &names {
        ops::create(c, &s.spec(n), MIB, &small).unwrap();
    }
    let full = io.list_images().unwrap();
    let with = |prefix: &str| {
        let mut want: Vec<_> = full.iter().filter(|e| e.name.starts_with(prefix)).cloned().collect();
        want.sort_by(|x, y| x.name.cmp(&y.name));
        want
    };
    for p in ["ab", "a", "many-", "many-25", "b"] {
        let prefix = s.spec(p).name;
        let got = io.list_images_prefixed(&prefix).unwrap();
        assert_eq!(got, with(&prefix), "{prefix}");
        assert!(!got.is_empty(), "{prefix}");
    }
    assert_eq!(io.list_images_prefixed(&s.spec("ab").name).unwrap().len(), 4);
    assert_eq!(io.list_images_prefixed(&s.spec("many-").name).unwrap().len(), 258);
    assert!(io.list_images_prefixed(&s.spec("none").name).unwrap().is_empty());
    for n in &names {
        ops::remove(c, &s.spec(n), ops::RemoveOptions::default()).unwrap();
    }
    s.finish(c);
}

/// Clones `base@snap` into `lib` through librbd and into `direct` written
/// directly, in namespace `ns` with the data pool `dp`, and checks that the
/// second holds what the first does: every key of the header (the
/// timestamps and the object prefix's id aside), the object map, the id
/// object, both listed as the snapshot's children, the data read through
/// the parent, and a removal that leaves the parent's snapshot free.
fn a_direct_clone_matches_librbd(ns: &str, dp: Option<&str>) {
    let env = rbdx_tests::cluster();
    let c = env.connect();
    let base = ImageSpec::new(&env.pool, &rbdx_tests::unique("dbase")).unwrap().in_namespace(ns).unwrap();
    ops::create(c, &base, 64 * MIB, &CreateOptions::with_data_pool(Some(&env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    let img = io.open(&base.name).unwrap();
    fill(&img, 4 * MIB, 20 * MIB, 5);
    img.metadata_set("user.k", "v").unwrap();
    img.metadata_set("rbdx.x", "y").unwrap();
    img.snap_create("snap").unwrap();
    fill(&img, 0, 8 * MIB, 6);
    drop(img);
    let name = |n: &str| format!("{}-{n}", base.name);
    let (lib, direct, shed) = (name("lib"), name("direct"), name("shed"));
    let o = ImageOptions::new().clone_format(2).unwrap().maybe_data_pool(dp).unwrap();
    io.clone_image(&base.name, "snap", &io, &lib, &o).unwrap();
    let how = CloneAs { data_pool: dp, features: None, shed: "", marks: &[] };
    assert!(io.clone_directly(&base.name, "snap", &io, &direct, &how).unwrap(), "written directly");

    let id = |n: &str| io.open_read_only(n, None).unwrap().info().unwrap().id;
    let (lib_id, direct_id) = (id(&lib), id(&direct));
    assert_ne!(lib_id, direct_id);
    let header = |id: &str| {
        let mut h = env.omap(&env.pool, ns, &format!("rbd_header.{id}"));
        for k in ["create_timestamp", "access_timestamp", "modify_timestamp"] {
            assert_eq!(h.remove(k).map(|v| v.len()), Some(8), "{k} of {id}");
        }
        let prefix = h.remove("object_prefix").unwrap();
        let prefix = String::from_utf8(prefix[4..].to_vec()).unwrap();
        assert!(prefix.ends_with(&format!(".{id}")), "{prefix}");
        (h, prefix.replace(id, "<id>"))
    };
    let (lib_h, direct_h) = (header(&lib_id), header(&direct_id));
    assert_eq!(direct_h, lib_h, "the header keys");
    assert!(
        lib_h.0.contains_key("parent") && lib_h.0.contains_key("metadata_rbdx.x"),
        "{:?}",
        lib_h.0.keys()
    );
    let object = |oid: &str| env.admin_rados(&["-p", &env.pool, "-N", ns, "get", oid, "/dev/stdout"]);
    assert_eq!(object(&format!("rbd_object_map.{direct_id}")), object(&format!("rbd_object_map.{lib_id}")));
    let mut id_object = (direct_id.len() as u32).to_le_bytes().to_vec();
    id_object.extend_from_slice(direct_id.as_bytes());
    assert_eq!(object(&format!("rbd_id.{direct}")), id_object);

    let at_snap = io.open_read_only(&base.name, Some("snap")).unwrap();
    let mut kids: Vec<String> = at_snap.children().unwrap().into_iter().map(|k| k.name).collect();
    kids.sort();
    assert_eq!(kids, [direct.clone(), lib.clone()]);
    let child = io.open(&direct).unwrap();
    let p = child.parent().unwrap().unwrap();
    assert_eq!((p.image.name.as_str(), p.snap_name.as_str()), (base.name.as_str(), "snap"));
    assert_eq!(checksum(&child), checksum(&at_snap));
    fill(&child, 0, MIB, 9);
    assert_ne!(checksum(&child), checksum(&at_snap));
    drop(child);

    // rbdx's own keys stay with the parent when asked.
    let how = CloneAs { shed: "rbdx.", ..how };
    assert!(io.clone_directly(&base.name, "snap", &io, &shed, &how).unwrap());
    let keys: Vec<String> = io
        .open_read_only(&shed, None)
        .unwrap()
        .metadata_list("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["user.k"]);
    let taken = io.clone_directly(&base.name, "snap", &io, &lib, &how).unwrap_err();
    assert!(taken.is_exists(), "{taken}");
    assert!(!io.clone_directly(&base.name, "none", &io, &name("none"), &how).unwrap(), "no such snapshot");

    for n in [&lib, &direct, &shed] {
        ops::remove(c, &base.sibling(n).unwrap(), ops::RemoveOptions::default()).unwrap();
    }
    assert!(at_snap.children().unwrap().is_empty());
    drop(at_snap);
    let img = io.open(&base.name).unwrap();
    img.snap_remove("snap").unwrap();
    assert!(img.snapshots().unwrap().is_empty(), "the snapshot went, not to the trash");
    drop(img);
    ops::remove(c, &base, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn a_clone_written_directly_holds_what_librbd_writes() {
    let env = rbdx_tests::cluster();
    a_direct_clone_matches_librbd("", Some(&env.ec_pool));
    a_direct_clone_matches_librbd("", None);
    let ns = rbdx_tests::unique("dns");
    env.connect().ioctx(&env.pool).unwrap().namespace_create(&ns).unwrap();
    a_direct_clone_matches_librbd(&ns, Some(&env.ec_pool));
    env.connect().ioctx(&env.pool).unwrap().namespace_remove(&ns).unwrap();
}

/// A clone stopped before its last step (the pool directory lists its name,
/// no id object opens it) is finished by a clone again under that name, and
/// finished then removed as a whole by a removal: the parent snapshot lets go
/// of it and nothing of it stays.
#[test]
fn a_clone_stopped_before_its_name_opens_is_finished_or_removed_whole() {
    let s = Scratch::new("unfinished");
    let c = s.env.connect();
    let snap = base_with_snapshot(&s, c, true);
    let io = ops::ioctx(c, &snap).unwrap();
    let child = s.spec("child");
    let how = CloneAs { data_pool: Some(&s.env.ec_pool), features: None, shed: "rbdx.", marks: &[] };
    let stop = || s.env.admin_rados(&["-p", &s.env.pool, "rm", &format!("rbd_id.{}", child.name)]);
    assert!(io.clone_directly(&snap.name, "snap", &io, &child.name, &how).unwrap());
    let id = io.open_read_only(&child.name, None).unwrap().info().unwrap().id;
    stop();
    assert!(ops::stat(c, &child).unwrap_err().is_not_found(), "the name opens nothing");
    let listed = |name: &str| io.list_images_prefixed(name).unwrap().into_iter().any(|e| e.name == name);
    assert!(listed(&child.name));

    assert!(io.clone_directly(&snap.name, "snap", &io, &child.name, &how).unwrap());
    let img = io.open_read_only(&child.name, None).unwrap();
    assert_eq!(img.info().unwrap().id, id, "the clone the directory names, finished");
    let at_snap = io.open_read_only(&snap.name, Some("snap")).unwrap();
    assert_eq!(checksum(&img), checksum(&at_snap));
    drop(img);
    assert_eq!(at_snap.children().unwrap().len(), 1);

    stop();
    assert_eq!(ops::remove(c, &child, ops::RemoveOptions::default()).unwrap(), ops::Removal::Removed);
    assert!(!listed(&child.name), "the directory lets go of the name");
    assert!(at_snap.children().unwrap().is_empty(), "the parent snapshot lets go of the clone");
    let rados_ls = String::from_utf8(s.env.admin_rados(&["-p", &s.env.pool, "ls"])).unwrap();
    assert!(!rados_ls.contains(&id), "nothing of {id} stays: {rados_ls}");
    drop(at_snap);
    s.finish(c);
}
