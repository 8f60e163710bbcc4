//! Copies, removal, the trash and pool capacity, against the real test cluster
//! as the restricted client.

use rbdx_core::Error;
use rbdx_core::ops::{self, CloneOptions, CreateOptions, PoolKind, Removal, RemoveOptions};
use rbdx_core::rbd::TrashSource;
use rbdx_tests::{MIB, Scratch, checksum, fill};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn copy_into_the_data_pool_is_byte_identical() {
    let s = Scratch::new("copy");
    let c = s.env.connect();
    let src = s.spec("src");
    ops::create(c, &src, 40 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &src).unwrap();
    fill(&io.open(&src.name).unwrap(), 2 * MIB, 30 * MIB, 3);

    let dst = s.spec("dst");
    ops::copy(c, &src, &dst, Some(&s.env.ec_pool)).unwrap();
    let st = ops::stat(c, &dst).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert!(st.parent.is_none() && st.snapshots.is_empty());
    assert_eq!(
        checksum(&io.open_read_only(&dst.name, None).unwrap()),
        checksum(&io.open_read_only(&src.name, None).unwrap())
    );
    let again = ops::copy(c, &src, &dst, Some(&s.env.ec_pool)).unwrap_err();
    assert!(again.is_exists(), "{again}");
    s.finish(c);
}

#[test]
fn copy_of_a_snapshot_of_a_clone_keeps_the_parent_data() {
    // The librbd copy bug: base with data -> snapshot -> clone -> snapshot s2 of the
    // clone -> copy clone@s2 must read back exactly clone@s2.
    let s = Scratch::new("copybug");
    let c = s.env.connect();
    let base = s.spec("base");
    ops::create(c, &base, 64 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    let b = io.open(&base.name).unwrap();
    fill(&b, 0, 32 * MIB, 9);
    b.snap_create("snap").unwrap();
    let clone = s.spec("clone");
    let opts = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    ops::clone(c, &base.at("snap").unwrap(), &clone, &opts).unwrap();
    let cl = io.open(&clone.name).unwrap();
    fill(&cl, 8 * MIB, 4 * MIB, 10);
    cl.snap_create("s2").unwrap();
    fill(&cl, 0, MIB, 11); // after s2: must not show up in the copy

    let want = checksum(&io.open_read_only(&clone.name, Some("s2")).unwrap());
    let dst = s.spec("copy");
    ops::copy(c, &clone.at("s2").unwrap(), &dst, Some(&s.env.ec_pool)).unwrap();
    let st = ops::stat(c, &dst).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert!(st.parent.is_none(), "the copy stands alone");
    assert_eq!(checksum(&io.open_read_only(&dst.name, None).unwrap()), want);

    // The deep copy path, flattened, into the data pool.
    let deep = s.spec("deep");
    ops::deep_copy(c, &clone.at("s2").unwrap(), &deep, Some(&s.env.ec_pool), true).unwrap();
    let st = ops::stat(c, &deep).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert!(st.parent.is_none());
    assert_eq!(checksum(&io.open_read_only(&deep.name, None).unwrap()), want);
    drop((b, cl));
    s.finish(c);
}

#[test]
fn deep_copy_keeps_snapshots_and_parent_unless_flattened() {
    let s = Scratch::new("deepcp");
    let c = s.env.connect();
    let base = s.spec("base");
    ops::create(c, &base, 16 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    let b = io.open(&base.name).unwrap();
    fill(&b, 0, 4 * MIB, 1);
    b.snap_create("one").unwrap();
    fill(&b, 4 * MIB, 4 * MIB, 2);
    let dst = s.spec("dst");
    ops::deep_copy(c, &base, &dst, Some(&s.env.ec_pool), false).unwrap();
    let st = ops::stat(c, &dst).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert_eq!(st.snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["one"]);
    assert_eq!(checksum(&io.open_read_only(&dst.name, None).unwrap()), checksum(&b));
    drop(b);
    s.finish(c);
}

#[test]
fn remove_refuses_while_open_and_names_the_watcher() {
    let s = Scratch::new("watch");
    let c = s.env.connect();
    let spec = s.spec("busy");
    ops::create(c, &spec, 8 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();

    // Another client (a second connection, like a running VM) has it open.
    let other = s.env.connect_new();
    let oio = ops::ioctx(&other, &spec).unwrap();
    let held = oio.open_as_client(&spec.name).unwrap();
    held.write_at(0, b"in use").unwrap();

    let io = ops::ioctx(c, &spec).unwrap();
    let watchers = io.open_read_only(&spec.name, None).unwrap().watchers().unwrap();
    assert_eq!(watchers.len(), 1, "{watchers:?}");
    let e = ops::remove(c, &spec, RemoveOptions::default()).unwrap_err();
    match &e {
        Error::InUse { watchers: w, .. } => assert_eq!(w, &[watchers[0].addr.clone()]),
        other => panic!("expected InUse, got {other}"),
    }
    assert!(e.to_string().contains(&watchers[0].addr), "{e}");
    let e = ops::remove(c, &spec, RemoveOptions { trash_delay: Some(0) }).unwrap_err();
    assert!(matches!(e, Error::InUse { .. }), "{e}");
    assert!(ops::stat(c, &spec).is_ok(), "a refused removal changes nothing");

    drop(held);
    drop(oio);
    drop(other);
    assert_eq!(ops::remove(c, &spec, RemoveOptions::default()).unwrap(), Removal::Removed);
    assert_eq!(ops::remove(c, &spec, RemoveOptions::default()).unwrap(), Removal::AlreadyGone);
    s.finish(c);
}

#[test]
fn remove_takes_the_snapshots_with_it() {
    let s = Scratch::new("rmsnaps");
    let c = s.env.connect();
    let spec = s.spec("d");
    ops::create(c, &spec, 8 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &spec).unwrap();
    let img = io.open(&spec.name).unwrap();
    img.snap_create("a").unwrap();
    img.snap_create("b").unwrap();
    img.snap_protect("b").unwrap();
    drop(img);
    assert_eq!(ops::remove(c, &spec, RemoveOptions::default()).unwrap(), Removal::Removed);
    assert!(ops::stat(c, &spec).unwrap_err().is_not_found());
    s.finish(c);
}

#[test]
fn trash_move_list_restore_and_purge() {
    let s = Scratch::new("trash");
    let c = s.env.connect();
    let spec = s.spec("t");
    ops::create(c, &spec, 8 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &spec).unwrap();
    io.open(&spec.name).unwrap().snap_create("s").unwrap();

    let Removal::Trashed { id } = ops::remove(c, &spec, RemoveOptions { trash_delay: Some(3600) }).unwrap()
    else {
        panic!("expected the image in the trash");
    };
    assert!(ops::stat(c, &spec).unwrap_err().is_not_found());
    let entry = io.trash_list().unwrap().into_iter().find(|e| e.id == id).expect("in the trash");
    assert_eq!(entry.name, spec.name);
    assert_eq!(entry.source, TrashSource::User);
    assert!(entry.deferment_end_time >= entry.deletion_time + 3600);

    // Not expired: purge leaves it; removal without force is refused.
    let p = ops::trash_purge(c, &spec, now()).unwrap();
    assert!(!p.removed.iter().any(|e| e.id == id));
    assert!(io.trash_remove(&id, false).is_err());

    io.trash_restore(&id, &spec.name).unwrap();
    let st = ops::stat(c, &spec).unwrap();
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert!(st.snapshots.is_empty(), "snapshots were removed before trashing");

    let Removal::Trashed { id } = ops::remove(c, &spec, RemoveOptions { trash_delay: Some(0) }).unwrap()
    else {
        panic!("expected the image in the trash");
    };
    let p = ops::trash_purge(c, &spec, now() + 1).unwrap();
    assert_purged(&io, &p, &id);
    s.finish(c);
}

#[test]
fn a_parent_with_clone_v2_children_waits_in_the_trash_until_they_are_gone() {
    let s = Scratch::new("trashparent");
    let c = s.env.connect();
    let base = s.spec("base");
    ops::create(c, &base, 16 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    let b = io.open(&base.name).unwrap();
    fill(&b, 0, 8 * MIB, 5);
    b.snap_create("snap").unwrap();
    drop(b);
    let child = s.spec("child");
    let opts = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    ops::clone(c, &base.at("snap").unwrap(), &child, &opts).unwrap();
    let want = checksum(&io.open_read_only(&child.name, None).unwrap());

    let e = ops::remove(c, &base, RemoveOptions::default()).unwrap_err();
    assert!(matches!(e, Error::HasChildren { .. }), "{e}");
    let Removal::Trashed { id } = ops::remove(c, &base, RemoveOptions { trash_delay: Some(0) }).unwrap()
    else {
        panic!("expected the parent in the trash");
    };
    // The child still reads the same bytes; purge keeps the parent.
    assert_eq!(checksum(&io.open_read_only(&child.name, None).unwrap()), want);
    let p = ops::trash_purge(c, &base, now() + 1).unwrap();
    assert!(p.kept.iter().any(|e| e.id == id), "{p:?}");
    assert!(io.trash_list().unwrap().iter().any(|e| e.id == id));

    assert_eq!(ops::remove(c, &child, RemoveOptions::default()).unwrap(), Removal::Removed);
    let p = ops::trash_purge(c, &base, now() + 1).unwrap();
    assert_purged(&io, &p, &id);
    s.finish(c);
}

/// The expired trash entry `id` is gone after the purge `p`. Tests purge the
/// shared pool in parallel, so another test's purge may have been the one that
/// removed it; what must hold is that no purge kept it and the trash no longer
/// lists it.
fn assert_purged(io: &rbdx_core::IoCtx<'_>, p: &ops::Purge, id: &str) {
    assert!(!p.kept.iter().any(|e| e.id == id), "expired and free, yet kept: {p:?}");
    assert!(!io.trash_list().unwrap().iter().any(|e| e.id == id), "{id} still in the trash after {p:?}");
}

#[test]
fn pool_usage_knows_replicated_and_erasure_coded_pools() {
    let env = rbdx_tests::cluster();
    let c = env.connect();
    let u = ops::pool_usage(c, &[&env.pool, &env.ec_pool]).unwrap();
    assert_eq!(u[0].name, env.pool);
    assert_eq!(u[0].kind, PoolKind::Replicated { size: 1 });
    assert!(matches!(&u[1].kind, PoolKind::Erasure { k: 2, m: 1, .. }), "{:?}", u[1].kind);
    for p in &u {
        assert!(p.max_avail > 0, "{p:?}");
        assert_eq!(p.quota_bytes, None);
        assert_eq!(p.capacity(), p.stored + p.max_avail);
    }
    // 3 OSDs of equal size: k=2,m=1 stores 2/3 of raw as data, size-1 replication
    // all of it, so the EC pool's max_avail is about 2/3 of the replicated one's.
    let ratio = u[1].max_avail as f64 / u[0].max_avail as f64;
    assert!((0.55..0.8).contains(&ratio), "EC/replicated max_avail ratio {ratio}");
    let e = ops::pool_usage(c, &["no-such-pool"]).unwrap_err();
    assert!(e.to_string().contains("no-such-pool"), "{e}");
}
