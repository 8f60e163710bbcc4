//! The disk snapshot scheme against the real cluster: O(1) revert, every snapshot
//! deletable in any order, bounded chains, save-as clones independent of their
//! source, adoption of disks made by the stock drivers, interrupted reverts.

use rbdx_core::Cluster;
use rbdx_core::ops::disk::{self, Disk, DiskConfig, KEY_DISK, Reclaim, Saved};
use rbdx_core::ops::{self, CloneFormat, CloneOptions, CreateOptions, ImageSpec};
use rbdx_tests::{MIB, Scratch, checksum, fill};

/// The clone swap on every revert (no rollback in place) and a snapshot for
/// every save: the scheme's structure.
fn ec_config(s: &Scratch) -> DiskConfig {
    DiskConfig {
        data_pool: Some(s.env.ec_pool.clone()),
        rollback_max_bytes: 0,
        copy_max_bytes: 0,
        ..DiskConfig::default()
    }
}

fn sum(c: &Cluster, spec: &ImageSpec) -> u64 {
    let io = ops::ioctx(c, spec).unwrap();
    checksum(&io.open_read_only(&spec.name, spec.snap.as_deref()).unwrap())
}

fn write(c: &Cluster, spec: &ImageSpec, off: u64, seed: u8) {
    let io = ops::ioctx(c, spec).unwrap();
    fill(&io.open(&spec.name).unwrap(), off, 2 * MIB, seed);
}

/// Every image of the test, with its data pool; asserts all are in the EC pool.
fn assert_all_ec(s: &Scratch, c: &Cluster) {
    for name in s.leftovers(c).0 {
        let st = ops::stat(c, &ImageSpec::new(&s.env.pool, &name).unwrap()).unwrap();
        assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()), "{name}");
    }
}

/// An 8 MiB image `img` with default features and no data pool, and its pool.
fn plain_image<'c>(s: &Scratch, c: &'c Cluster) -> (ImageSpec, rbdx_core::IoCtx<'c>) {
    let base = s.spec("img");
    ops::create(c, &base, 8 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    (base, io)
}

/// A non-persistent disk as a VM uses it: a CoW clone of an image's base snapshot.
fn vm_disk(s: &Scratch, c: &Cluster) -> ImageSpec {
    let base = s.spec("img");
    ops::create(c, &base, 32 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    write(c, &base, 0, 1);
    let io = ops::ioctx(c, &base).unwrap();
    disk::ensure_snapshot(&io, &base.name, "snap").unwrap();
    let head = s.spec("img-7-0");
    let o = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    ops::clone(c, &base.at("snap").unwrap(), &head, &o).unwrap();
    head
}

#[test]
fn revert_restores_any_snapshot_and_every_snapshot_stays_deletable() {
    let s = Scratch::new("scheme");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let cfg = ec_config(&s);

    let mut want = Vec::new();
    for id in 0..3u8 {
        write(c, &head, u64::from(id) * 4 * MIB, 10 + id);
        d.snapshot_create(&id.to_string()).unwrap();
        want.push(sum(c, &head));
    }
    write(c, &head, 20 * MIB, 99); // not in any snapshot: a revert discards it

    d.revert("1", &cfg).unwrap();
    assert_eq!(sum(c, &head), want[1]);
    assert_eq!(d.locate("0").unwrap().as_deref(), Some(format!("{}-0:1:2", head.name).as_str()));
    d.snapshot_create("3").unwrap();
    write(c, &head, 8 * MIB, 50);
    d.revert("0", &cfg).unwrap();
    assert_eq!(sum(c, &head), want[0]);
    d.revert("2", &cfg).unwrap();
    assert_eq!(sum(c, &head), want[2]);
    d.revert("3", &cfg).unwrap(); // a snapshot taken after a revert
    assert_eq!(sum(c, &head), want[1]);
    assert_all_ec(&s, c);

    // Delete in an order that crosses the carrier tree; each one goes.
    for snap in ["1", "3", "0", "2"] {
        d.snapshot_delete(snap).unwrap();
        assert_eq!(d.locate(snap).unwrap(), None);
        assert_eq!(sum(c, &head), want[1], "deleting {snap} must not change the head");
    }
    d.snapshot_delete("1").unwrap(); // again: a no-op
    assert!(d.snapshots().unwrap().is_empty());

    d.remove(None, Reclaim::Trash).unwrap();
    d.remove(None, Reclaim::Trash).unwrap(); // again: a no-op
    let (left, trash) = s.leftovers(c);
    assert_eq!(left, [s.spec("img").name], "only the image remains");
    assert!(trash.is_empty(), "{trash:?}");
    s.finish(c);
}

#[test]
fn a_revert_rolls_back_in_place_while_that_visits_little_data() {
    let s = Scratch::new("rollback");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    // At most 8 objects of 4 MiB: the head holds 1 and it changes.
    let cfg = DiskConfig { rollback_max_bytes: 32 * MIB, ..ec_config(&s) };
    let io = ops::ioctx(c, &head).unwrap();
    let parent = |io: &rbdx_core::IoCtx<'_>| {
        let p = io.open_read_only(&head.name, None).unwrap().parent().unwrap().unwrap();
        (p.image.name, p.snap_name)
    };
    write(c, &head, 0, 5);
    d.snapshot_create("0").unwrap();
    let want = sum(c, &head);
    write(c, &head, 0, 6);
    d.revert("0", &cfg).unwrap();
    assert_eq!(sum(c, &head), want);
    assert_eq!(d.locate("0").unwrap().as_deref(), Some(head.name.as_str()), "no carrier");
    assert_eq!(parent(&io), (s.spec("img").name, "snap".to_string()), "no new clone link");
    assert_eq!(s.leftovers(c).0.len(), 2, "the image and the head");

    // An interrupted rollback (its marker written) is finished by a re-run,
    // whatever the data would now suggest.
    write(c, &head, 0, 7);
    io.open(&head.name).unwrap().metadata_set("rbdx.rollback.to", "0").unwrap();
    d.revert("0", &ec_config(&s)).unwrap();
    assert_eq!(sum(c, &head), want);
    assert_eq!(d.locate("0").unwrap().as_deref(), Some(head.name.as_str()));
    let img = io.open_read_only(&head.name, None).unwrap();
    assert_eq!(img.metadata_get("rbdx.rollback.to").unwrap(), None);
    drop(img);

    // A bound of twice the image or more needs no estimate: in place, however
    // much the head holds and changed.
    for i in 0..8 {
        write(c, &head, i * 4 * MIB, 9);
    }
    d.revert("0", &DiskConfig { rollback_max_bytes: 64 * MIB, ..ec_config(&s) }).unwrap();
    assert_eq!(sum(c, &head), want);
    assert_eq!(d.locate("0").unwrap().as_deref(), Some(head.name.as_str()), "no carrier");

    // Past the bound (the head now holds all 8 objects), the clone swap; a
    // marker left for another snapshot does not follow the old head to its carrier.
    for i in 0..8 {
        write(c, &head, i * 4 * MIB, 8);
    }
    io.open(&head.name).unwrap().metadata_set("rbdx.rollback.to", "1").unwrap();
    d.revert("0", &cfg).unwrap();
    assert_eq!(sum(c, &head), want);
    let carrier = format!("{}-0", head.name);
    assert_eq!(d.locate("0").unwrap().as_deref(), Some(carrier.as_str()));
    assert_eq!(parent(&io), (carrier.clone(), "0".to_string()));
    let old = io.open_read_only(&carrier, None).unwrap();
    assert_eq!(old.metadata_get("rbdx.rollback.to").unwrap(), None);
    drop(old);
    d.remove(None, Reclaim::Trash).unwrap();
    assert_eq!(s.leftovers(c).0, [s.spec("img").name]);
    s.finish(c);
}

#[test]
fn the_head_keeps_its_name_and_metadata_through_reverts() {
    let s = Scratch::new("names");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    d.snapshot_create("0").unwrap();
    d.revert("0", &ec_config(&s)).unwrap();
    let io = ops::ioctx(c, &head).unwrap();
    let img = io.open_read_only(&head.name, None).unwrap();
    assert_eq!(img.metadata_get(KEY_DISK).unwrap().as_deref(), Some(head.name.as_str()));
    assert_eq!(img.metadata_get("rbdx.revert.to").unwrap(), None, "no revert left half-done");
    let p = img.parent().unwrap().unwrap();
    assert_eq!((p.image.name.as_str(), p.snap_name.as_str()), (format!("{}-0", head.name).as_str(), "0"));
    drop(img);
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

/// The depth is counted from the images' headers as an open of each sees its
/// chain: a head flattened while a snapshot still reads from its parent (no
/// deep-flatten) counts no parent.
#[test]
fn depth_counts_the_links_an_open_sees() {
    use rbdx_core::rbd::features;
    let s = Scratch::new("links");
    let c = s.env.connect();
    let (base, io) = plain_image(&s, c);
    disk::ensure_snapshot(&io, &base.name, "snap").unwrap();
    let head = s.spec("img-7-0");
    let shallow =
        CloneOptions { features: Some(features::DEFAULT & !features::DEEP_FLATTEN), ..Default::default() };
    ops::clone(c, &base.at("snap").unwrap(), &head, &shallow).unwrap();
    io.open(&head.name).unwrap().snap_create("t").unwrap();
    let grandchild = s.spec("img-7-0-1");
    ops::clone(c, &head.at("t").unwrap(), &grandchild, &CloneOptions::default()).unwrap();
    let depths = || [&base, &head, &grandchild].map(|i| disk::depth(&io, &i.name).unwrap());
    assert_eq!(depths(), [0, 1, 2]);
    io.open(&head.name).unwrap().flatten().unwrap();
    assert!(io.open_read_only(&head.name, None).unwrap().parent().unwrap().is_none());
    assert!(
        io.open_read_only(&head.name, Some("t")).unwrap().parent().unwrap().is_some(),
        "the snapshot still reads from the image"
    );
    assert_eq!(depths(), [0, 0, 1]);
    ops::remove(c, &grandchild, ops::RemoveOptions::default()).unwrap();
    io.open(&head.name).unwrap().snap_remove("t").unwrap();
    s.finish(c);
}

/// A base snapshot goes once no clone reads from it: format-2 clones are
/// counted in the header, format-1 ones (a protected snapshot) listed.
#[test]
fn an_unused_snapshot_goes_and_a_used_one_stays() {
    let s = Scratch::new("unused");
    let c = s.env.connect();
    let (base, io) = plain_image(&s, c);
    assert!(!disk::drop_unused_snapshot(&io, &base.name, "snap").unwrap(), "no such snapshot");
    for format in [CloneFormat::V2, CloneFormat::V1] {
        disk::ensure_snapshot(&io, &base.name, "snap").unwrap();
        let child = s.spec("child");
        let o = CloneOptions { format, ..CloneOptions::default() };
        ops::clone(c, &base.at("snap").unwrap(), &child, &o).unwrap();
        assert!(
            !disk::drop_unused_snapshot(&io, &base.name, "snap").unwrap(),
            "{format:?}: a clone reads it"
        );
        assert_eq!(io.open_read_only(&base.name, None).unwrap().snapshots().unwrap().len(), 1);
        ops::remove(c, &child, ops::RemoveOptions::default()).unwrap();
        if format == CloneFormat::V1 {
            io.open(&base.name).unwrap().snap_unprotect("snap").unwrap();
        }
        assert!(disk::drop_unused_snapshot(&io, &base.name, "snap").unwrap(), "{format:?}: unused");
        assert!(io.open_read_only(&base.name, None).unwrap().snapshots().unwrap().is_empty());
    }
    s.finish(c);
}

#[test]
fn clone_chains_stay_within_the_configured_depth() {
    let s = Scratch::new("depth");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let cfg = DiskConfig { max_depth: 2, ..ec_config(&s) };
    let io = ops::ioctx(c, &head).unwrap();
    for i in 0..4 {
        let snap = i.to_string();
        write(c, &head, i * 2 * MIB, i as u8);
        d.snapshot_create(&snap).unwrap();
        let want = sum(c, &head);
        d.revert(&snap, &cfg).unwrap();
        assert_eq!(sum(c, &head), want);
        let depth = disk::depth(&io, &head.name).unwrap();
        assert!(depth <= 2, "depth {depth} after revert {i}");
    }
    for i in 0..4 {
        d.snapshot_delete(&i.to_string()).unwrap();
    }
    d.remove(None, Reclaim::Trash).unwrap();
    assert_eq!(s.leftovers(c).0, [s.spec("img").name]);
    s.finish(c);
}

#[test]
fn an_unchanged_snapshot_taken_outside_the_book_is_entered_and_cloned() {
    let s = Scratch::new("reuse");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    write(c, &head, 4 * MIB, 5);
    d.snapshot_create("0").unwrap(); // the disk has a book
    let io = ops::ioctx(c, &head).unwrap();
    disk::ensure_snapshot(&io, &head.name, "snap").unwrap(); // as TM clone takes its base
    let reusable = |n: &str| n == "snap";
    let (target, later) = (s.spec("saved"), s.spec("later"));
    let saved = d.save_now("save.1", &target, reusable, &ec_config(&s)).unwrap();
    assert_eq!(saved, Saved::Unchanged("snap".into()));
    assert_eq!(d.locate("snap").unwrap().as_deref(), Some(head.name.as_str()), "now in the book");
    assert_eq!(sum(c, &target), sum(c, &head));
    assert_eq!(d.cloned_into(&target).unwrap().as_deref(), Some("snap"));
    write(c, &head, MIB, 6);
    let saved = d.save_now("save.2", &later, reusable, &ec_config(&s)).unwrap();
    assert_eq!(saved, Saved::Taken("save.2".into()), "written since");
    for t in [target, later] {
        Disk::new(c, t, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    }
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

/// A head changed in any way since its newest snapshot is never saved as
/// unchanged (its clone would miss the change): an object written, one
/// written for the first time, one discarded, a shrink grown back to the same
/// size, a growth. Each save takes a snapshot and holds the head as it is;
/// the save after it, with nothing changed, clones that snapshot.
#[test]
fn a_save_sees_every_change_since_the_newest_snapshot() {
    let s = Scratch::new("changes");
    let c = s.env.connect();
    let head = s.spec("img");
    ops::create(c, &head, 16 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &head).unwrap();
    write(c, &head, 0, 1);
    write(c, &head, 4 * MIB, 2);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let cfg = ec_config(&s);
    let saves = |n: &str| n.starts_with("save.");
    let open = || io.open(&head.name).unwrap();
    // Objects of 4 MiB: 0 and 1 hold data.
    let changes: [(&str, &dyn Fn()); 5] = [
        ("an object written", &|| write(c, &head, MIB, 3)),
        ("an object written for the first time", &|| write(c, &head, 8 * MIB, 4)),
        ("shrunk and grown back", &|| {
            open().resize(8 * MIB, true).unwrap();
            open().resize(16 * MIB, false).unwrap();
        }),
        ("an object discarded", &|| open().discard(4 * MIB, 4 * MIB).unwrap()),
        ("grown", &|| open().resize(20 * MIB, false).unwrap()),
    ];
    let mut targets = Vec::new();
    let first = s.spec("saved-0");
    assert_eq!(d.save_now("save.0", &first, saves, &cfg).unwrap(), Saved::Taken("save.0".into()));
    targets.push(first);
    for (i, (what, change)) in changes.iter().enumerate() {
        let unchanged = s.spec(&format!("same-{i}"));
        let newest = format!("save.{i}");
        assert_eq!(
            d.save_now("save.x", &unchanged, saves, &cfg).unwrap(),
            Saved::Unchanged(newest),
            "{what}"
        );
        assert_eq!(sum(c, &unchanged), sum(c, &head), "{what}");
        targets.push(unchanged);
        change();
        let (snap, target) = (format!("save.{}", i + 1), s.spec(&format!("saved-{}", i + 1)));
        assert_eq!(d.save_now(&snap, &target, saves, &cfg).unwrap(), Saved::Taken(snap.clone()), "{what}");
        assert_eq!(sum(c, &target), sum(c, &head), "{what}");
        targets.push(target);
    }
    for t in targets {
        ops::remove(c, &t, ops::RemoveOptions::default()).unwrap();
    }
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

/// A save of a disk with little data of its own that nothing has open copies
/// that data onto a clone of the disk's parent: no snapshot, the same content
/// (a region the disk discarded hides the parent's data in the copy too, and
/// so does a shrink that lowered its overlap), finished once on a re-run. A
/// leftover of an interrupted copy is replaced; a disk another client has open,
/// or with more data than the bound, gets its snapshot.
#[test]
fn save_now_copies_a_disk_with_little_data_that_nothing_has_open() {
    let s = Scratch::new("savecopy");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let io = ops::ioctx(c, &head).unwrap();
    d.snapshot_create("0").unwrap();
    write(c, &head, 5 * MIB, 4);
    io.open(&head.name).unwrap().discard(0, 4 * MIB).unwrap(); // the parent's data, hidden
    io.open(&head.name).unwrap().resize(40 * MIB, false).unwrap();
    write(c, &head, 36 * MIB, 5); // past the parent's end
    let cfg = DiskConfig { copy_max_bytes: 16 * MIB, ..ec_config(&s) };
    let never = |_: &str| false;
    let [a, b, big, watched, plain_copy] = ["a", "b", "big", "watched", "plaincopy"].map(|n| s.spec(n));
    let snaps = || ops::stat(c, &head).unwrap().snapshots.into_iter().map(|s| s.name).collect::<Vec<_>>();
    let before = snaps();
    // A leftover of an interrupted copy is replaced.
    ops::create(c, &a.sibling(&disk::copy_temp_name(&a.name)).unwrap(), MIB, &CreateOptions::default())
        .unwrap();
    assert_eq!(d.save_now("save.a", &a, never, &cfg).unwrap(), Saved::Copied);
    assert_eq!(sum(c, &a), sum(c, &head));
    assert_eq!(snaps(), before, "no snapshot taken");
    let parent = |spec: &ImageSpec| ops::stat(c, spec).unwrap().parent.map(|p| (p.image.name, p.snap));
    assert_eq!(parent(&a), parent(&head), "a clone of what the disk was cloned from");
    assert_eq!(ops::stat(c, &a).unwrap().data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert_eq!(d.save_now("save.a", &a, never, &cfg).unwrap(), Saved::Copied, "a re-run");
    assert_eq!(d.cloned_into(&a).unwrap(), None, "it reads nothing from the disk");
    let dependent = disk::dependent_clones(&io).unwrap();
    assert!(dependent.contains(&a.name), "a child of another disk's snapshot: {dependent:?}");

    // A shrink lowered a disk's overlap: its copy must not read the parent
    // past it either (the parent has data at 8 MiB, the disk reads zeros).
    let base2 = s.spec("base2");
    ops::create(c, &base2, 32 * MIB, &CreateOptions::default()).unwrap();
    write(c, &base2, 8 * MIB, 2);
    disk::ensure_snapshot(&io, &base2.name, "snap").unwrap();
    let shrunk = s.spec("base2-9-0");
    ops::clone(c, &base2.at("snap").unwrap(), &shrunk, &CloneOptions::default()).unwrap();
    io.open(&shrunk.name).unwrap().resize(4 * MIB, true).unwrap();
    io.open(&shrunk.name).unwrap().resize(32 * MIB, false).unwrap();
    write(c, &shrunk, 0, 3);
    let sd = Disk::new(c, shrunk.clone(), &rbdx_one::naming::ONE);
    assert_eq!(sd.save_now("save.b", &b, never, &cfg).unwrap(), Saved::Copied);
    assert_eq!(sum(c, &b), sum(c, &shrunk));
    assert_ne!(sum(c, &b), sum(c, &base2.at("snap").unwrap()));

    // More data of its own than the bound: a snapshot.
    write(c, &head, 12 * MIB, 6);
    write(c, &head, 20 * MIB, 7);
    let small = DiskConfig { copy_max_bytes: 4 * MIB, ..cfg.clone() };
    assert_eq!(d.save_now("save.big", &big, never, &small).unwrap(), Saved::Taken("save.big".into()));
    assert_eq!(sum(c, &big), sum(c, &head));

    // Another client (a running VM) has it open: a snapshot, consistent.
    let other = s.env.connect_new();
    let oio = ops::ioctx(&other, &head).unwrap();
    let vm = oio.open_as_client(&head.name).unwrap();
    assert_eq!(d.save_now("save.w", &watched, never, &cfg).unwrap(), Saved::Taken("save.w".into()));
    drop(vm);
    drop(oio);
    drop(other);
    assert_eq!(sum(c, &watched), sum(c, &head));

    // A disk without a parent: a new image with its data.
    let plain = s.spec("plain");
    ops::create(c, &plain, 8 * MIB, &CreateOptions::default()).unwrap();
    write(c, &plain, 2 * MIB, 8);
    let p = Disk::new(c, plain.clone(), &rbdx_one::naming::ONE);
    assert_eq!(p.save_now("save.p", &plain_copy, never, &cfg).unwrap(), Saved::Copied);
    assert_eq!(sum(c, &plain_copy), sum(c, &plain));
    assert_eq!(parent(&plain_copy), None);

    for t in [a, b, big, watched, plain_copy] {
        Disk::new(c, t, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    }
    // An interrupted copy that is never re-run goes with the image it was for
    // (oned's image in ERROR, deleted).
    let failed = s.spec("failed");
    let left = failed.sibling(&disk::copy_temp_name(&failed.name)).unwrap();
    ops::clone(c, &base2.at("snap").unwrap(), &left, &CloneOptions::default()).unwrap();
    Disk::new(c, failed, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    assert!(ops::stat(c, &left).unwrap_err().is_not_found(), "the leftover is removed");
    p.remove(None, Reclaim::Trash).unwrap();
    sd.remove(None, Reclaim::Trash).unwrap();
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

/// A save-as of the disk as it is now, in one operation: a new snapshot, then
/// the same one again while the disk has not changed, the clone's own on a
/// re-run; a target that is something else is refused before any snapshot.
#[test]
fn save_now_takes_a_snapshot_reuses_an_unchanged_one_and_finishes_a_rerun() {
    let s = Scratch::new("savenow");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    write(c, &head, 4 * MIB, 8);
    let (cfg, reusable) = (ec_config(&s), |n: &str| n.starts_with("save."));
    let [a, b, later, other] = ["a", "b", "later", "other"].map(|n| s.spec(n));
    let taken = |n: &str| Saved::Taken(n.to_string());
    assert_eq!(d.save_now("save.a", &a, reusable, &cfg).unwrap(), taken("save.a"));
    assert_eq!(d.save_now("save.a", &a, reusable, &cfg).unwrap(), Saved::Again("save.a".into()), "a re-run");
    assert_eq!(
        d.save_now("save.b", &b, reusable, &cfg).unwrap(),
        Saved::Unchanged("save.a".into()),
        "the disk has not changed since save.a"
    );
    assert_eq!(d.locate("save.b").unwrap(), None, "no snapshot taken for b");
    assert_eq!((sum(c, &a), sum(c, &b)), (sum(c, &head), sum(c, &head)));
    write(c, &head, MIB, 9);
    assert_eq!(
        d.save_now("save.later", &later, reusable, &cfg).unwrap(),
        taken("save.later"),
        "written since"
    );
    assert_eq!(sum(c, &later), sum(c, &head));
    ops::create(c, &other, MIB, &CreateOptions::default()).unwrap();
    let err = d.save_now("save.other", &other, reusable, &cfg).unwrap_err();
    assert!(matches!(err, rbdx_core::Error::Exists(_)), "{err}");
    assert_eq!(d.locate("save.other").unwrap(), None, "refused before its snapshot was taken");
    for t in [a, b, later] {
        Disk::new(c, t, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    }
    ops::remove(c, &other, ops::RemoveOptions::default()).unwrap();
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

#[test]
fn a_save_as_clone_outlives_its_source_disk() {
    let s = Scratch::new("saveas");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    write(c, &head, 4 * MIB, 3);
    d.snapshot_create("rbdx.saveas.x").unwrap();
    let target = s.spec("saved");
    d.clone_snapshot("rbdx.saveas.x", &target, &ec_config(&s)).unwrap();
    d.clone_snapshot("rbdx.saveas.x", &target, &ec_config(&s)).unwrap(); // re-run
    let want = sum(c, &head);
    assert_eq!(sum(c, &target), want);
    assert_all_ec(&s, c);

    // Source first: its images wait in the trash for the clone.
    d.remove(None, Reclaim::Trash).unwrap();
    assert!(ops::stat(c, &head).unwrap_err().is_not_found());
    assert_eq!(sum(c, &target), want, "the clone still reads the same bytes");
    let waiting = s.leftovers(c).1;
    assert!(!waiting.is_empty(), "the source waits in the trash");
    disk::reclaim(c, &head).unwrap();
    assert_eq!(s.leftovers(c).1, waiting, "nothing is freed while the clone lives");

    // Then the clone: reclaim frees the source.
    ops::remove(c, &target, ops::RemoveOptions::default()).unwrap();
    rbdx_tests::reclaim_until_gone(c, &head.pool, |n| waiting.iter().any(|w| w == n));
    let (left, trash) = s.leftovers(c);
    assert_eq!(left, [s.spec("img").name]);
    assert!(trash.is_empty(), "{trash:?}");
    s.finish(c);
}

#[test]
fn disks_made_by_the_stock_drivers_are_adopted() {
    // The stock layout after `snap_create 0; snap_create 1; snap_revert 0`:
    // protected numeric snapshots on a carrier named <head>-0:1, the head a clone
    // of <head>-0:1@0, no metadata anywhere.
    let s = Scratch::new("stock");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let io = ops::ioctx(c, &head).unwrap();
    let img = io.open(&head.name).unwrap();
    fill(&img, 0, MIB, 20);
    img.snap_create("0").unwrap();
    img.snap_protect("0").unwrap();
    let want0 = checksum(&io.open_read_only(&head.name, Some("0")).unwrap());
    fill(&img, MIB, MIB, 21);
    img.snap_create("1").unwrap();
    img.snap_protect("1").unwrap();
    let want1 = checksum(&io.open_read_only(&head.name, Some("1")).unwrap());
    drop(img);
    let carrier = format!("{}-0:1", head.name);
    io.rename_image(&head.name, &carrier).unwrap();
    let o = CloneOptions {
        data_pool: Some(s.env.ec_pool.clone()),
        format: CloneFormat::V1,
        ..CloneOptions::default()
    };
    ops::clone(c, &head.sibling(&carrier).unwrap().at("0").unwrap(), &head, &o).unwrap();

    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let snaps: Vec<(String, String)> =
        d.snapshots().unwrap().into_iter().map(|s| (s.name, s.holder)).collect();
    assert_eq!(snaps, [("0".into(), carrier.clone()), ("1".into(), carrier.clone())]);
    d.revert("1", &ec_config(&s)).unwrap();
    assert_eq!(sum(c, &head), want1);
    d.snapshot_create("2").unwrap();
    d.revert("0", &ec_config(&s)).unwrap();
    assert_eq!(sum(c, &head), want0);
    for snap in ["0", "1", "2"] {
        d.snapshot_delete(snap).unwrap();
    }
    d.remove(None, Reclaim::Trash).unwrap();
    assert_eq!(s.leftovers(c).0, [s.spec("img").name]);
    assert!(s.leftovers(c).1.is_empty());
    s.finish(c);
}

#[test]
fn an_interrupted_revert_is_finished_by_the_next_call() {
    let s = Scratch::new("resume");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    d.snapshot_create("0").unwrap();
    let want = sum(c, &head);
    write(c, &head, 0, 77);
    d.revert("0", &ec_config(&s)).unwrap();
    // Simulate a crash between "old head moved away" and "clone renamed into place".
    let io = ops::ioctx(c, &head).unwrap();
    let temp = disk::revert_temp_name(&head.name);
    io.rename_image(&head.name, &temp).unwrap();
    io.open(&temp).unwrap().metadata_set("rbdx.revert.to", "0").unwrap();
    assert!(ops::stat(c, &head).unwrap_err().is_not_found());

    // Any later call (here: the same revert, re-run) converges.
    d.revert("0", &ec_config(&s)).unwrap();
    assert_eq!(sum(c, &head), want);
    assert!(ops::stat(c, &head.sibling(&temp).unwrap()).unwrap_err().is_not_found());
    d.remove(None, Reclaim::Trash).unwrap();
    assert_eq!(s.leftovers(c).0, [s.spec("img").name]);
    s.finish(c);
}

#[test]
fn clone_format_1_reverts_and_deletes_in_any_order() {
    let s = Scratch::new("v1");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let cfg = DiskConfig { clone_format: CloneFormat::V1, ..ec_config(&s) };
    d.snapshot_create("0").unwrap();
    write(c, &head, 0, 5);
    d.snapshot_create("1").unwrap();
    let want1 = sum(c, &head);
    d.revert("0", &cfg).unwrap();
    d.revert("1", &cfg).unwrap();
    assert_eq!(sum(c, &head), want1);
    d.snapshot_delete("1").unwrap(); // the head's own parent snapshot
    assert_eq!(sum(c, &head), want1);
    d.snapshot_delete("0").unwrap();
    d.remove(None, Reclaim::Trash).unwrap();
    assert_eq!(s.leftovers(c).0, [s.spec("img").name]);
    assert!(s.leftovers(c).1.is_empty());
    s.finish(c);
}

#[test]
fn concurrent_first_deploys_make_exactly_one_base_snapshot() {
    let s = Scratch::new("race");
    let c = s.env.connect();
    let base = s.spec("img");
    ops::create(c, &base, 8 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let env = s.env.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (env, base) = (env.clone(), base.clone());
            std::thread::spawn(move || {
                let c = env.connect();
                let io = ops::ioctx(c, &base).unwrap();
                disk::ensure_snapshot(&io, &base.name, "snap").unwrap();
                let child = base.sibling(&format!("{}-{i}-0", base.name)).unwrap();
                let o = CloneOptions { data_pool: Some(env.ec_pool.clone()), ..CloneOptions::default() };
                ops::clone(c, &base.at("snap").unwrap(), &child, &o).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let io = ops::ioctx(c, &base).unwrap();
    let snaps = io.open_read_only(&base.name, None).unwrap().snapshots().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(io.open_read_only(&base.name, Some("snap")).unwrap().children().unwrap().len(), 8);
    assert_all_ec(&s, c);
    s.finish(c);
}

#[test]
fn the_flatten_policy_frees_the_source_at_once() {
    let s = Scratch::new("flatpolicy");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    write(c, &head, 4 * MIB, 3);
    d.snapshot_create("rbdx.saveas.y").unwrap();
    let target = s.spec("saved");
    d.clone_snapshot("rbdx.saveas.y", &target, &ec_config(&s)).unwrap();
    let want = sum(c, &target);
    d.remove(None, Reclaim::Flatten).unwrap();
    let st = ops::stat(c, &target).unwrap();
    assert!(st.parent.is_none(), "the clone was made independent");
    assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
    assert_eq!(sum(c, &target), want);
    let (left, trash) = s.leftovers(c);
    assert_eq!(left.len(), 2, "the image and the saved clone: {left:?}");
    assert!(trash.is_empty(), "nothing waits in the trash: {trash:?}");
    s.finish(c);
}

#[test]
fn a_clone_of_a_disk_does_not_inherit_its_bookkeeping() {
    // librbd copies image metadata into clones: the child must not believe it
    // owns the parent's carriers, or deleting it would take them.
    let s = Scratch::new("inherit");
    let c = s.env.connect();
    let head = vm_disk(&s, c);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    d.snapshot_create("0").unwrap();
    d.revert("0", &ec_config(&s)).unwrap(); // the head now has a carrier
    d.snapshot_create("1").unwrap();
    let child = s.spec("child");
    let o = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
    ops::clone(c, &head.at("1").unwrap(), &child, &o).unwrap();
    let io = ops::ioctx(c, &child).unwrap();
    assert!(io.open_read_only(&child.name, None).unwrap().metadata_list("rbdx.").unwrap().is_empty());
    // The same through clone_from_snapshot, which removes the keys it read from
    // the source in one call on the new clone's header: other keys stay.
    io.open(&head.name).unwrap().metadata_set("other.key", "kept").unwrap();
    let quick = s.spec("quick");
    ops::clone_from_snapshot(c, &head, "1", &quick, &o, false, 16).unwrap();
    let img = io.open_read_only(&quick.name, None).unwrap();
    assert!(img.metadata_list("rbdx.").unwrap().is_empty(), "{:?}", img.metadata_list("").unwrap());
    assert_eq!(img.metadata_get("other.key").unwrap().as_deref(), Some("kept"));
    drop(img);
    ops::remove(c, &quick, ops::RemoveOptions::default()).unwrap();
    // A save-as writes its clone's marker and sheds the rest in one call on the
    // new header, after listing the keys there: more than one page of them too.
    let head_img = io.open(&head.name).unwrap();
    for i in 0..300 {
        head_img.metadata_set(&format!("rbdx.zz.{i:03}"), "x").unwrap();
    }
    drop(head_img);
    let saved = s.spec("saved");
    let snap = d.save_now("save.1", &saved, |_| false, &ec_config(&s)).unwrap();
    let img = io.open_read_only(&saved.name, None).unwrap();
    let marker =
        vec![("rbdx.cloned-from".to_string(), format!("{}@{}", head.name, snap.snapshot().unwrap()))];
    assert_eq!(img.metadata_list("rbdx.").unwrap(), marker);
    assert_eq!(img.metadata_get("other.key").unwrap().as_deref(), Some("kept"));
    drop(img);
    Disk::new(c, saved, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    d.snapshot_delete("save.1").unwrap();
    let before = s.leftovers(c).0;
    Disk::new(c, child.clone(), &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    let after = s.leftovers(c).0;
    assert_eq!(after.len(), before.len() - 1, "only the child went: {before:?} -> {after:?}");
    assert_eq!(d.snapshots().unwrap().len(), 2, "the parent disk keeps its snapshots");
    d.snapshot_delete("1").unwrap();
    d.snapshot_delete("0").unwrap();
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

#[test]
fn removal_takes_only_the_images_the_disk_owns() {
    let s = Scratch::new("own");
    let c = s.env.connect();
    let io = ops::ioctx(c, &s.spec("x")).unwrap();
    let exists = |spec: &ImageSpec| io.open_read_only(&spec.name, None).is_ok();
    let mk = |spec: &ImageSpec| ops::create(c, spec, 8 * MIB, &CreateOptions::default()).unwrap();

    // Proxmox naming adopts nothing by name: a volume vm-100-disk-1-2 is another
    // volume, even with the form of a stock carrier of vm-100-disk-1.
    let (pve_head, pve_other) = (s.spec("vm-100-disk-1"), s.spec("vm-100-disk-1-2"));
    mk(&pve_head);
    mk(&pve_other);
    let d = Disk::new(c, pve_head.clone(), &disk::RBDX_NAMING);
    d.snapshot_create("s1").unwrap();
    d.revert("s1", &DiskConfig::default()).unwrap();
    d.remove(None, Reclaim::Trash).unwrap();
    assert!(!exists(&pve_head), "the disk is gone");
    assert!(exists(&pve_other), "the other volume stays");

    // OpenNebula naming adopts stock carriers without metadata, but never an
    // image whose own metadata names another disk.
    let (head, own_disk, stock) = (s.spec("one-5"), s.spec("one-5-3"), s.spec("one-5-1"));
    mk(&head);
    mk(&own_disk);
    Disk::new(c, own_disk.clone(), &rbdx_one::naming::ONE).snapshot_create("1").unwrap();
    assert_eq!(
        io.open_read_only(&own_disk.name, None).unwrap().metadata_get(KEY_DISK).unwrap().as_deref(),
        Some(own_disk.name.as_str()),
        "one-5-3 is a disk of its own"
    );
    mk(&stock);
    Disk::new(c, head.clone(), &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    assert!(!exists(&head), "the disk is gone");
    assert!(!exists(&stock), "its stock carrier (no metadata) went with it");
    assert!(exists(&own_disk), "a disk of its own stays, whatever its name");
    Disk::new(c, own_disk, &rbdx_one::naming::ONE).remove(None, Reclaim::Trash).unwrap();
    ops::remove(c, &pve_other, ops::RemoveOptions::default()).unwrap();
    s.finish(c);
}

#[test]
fn removing_a_parent_whose_protected_clones_wait_in_the_trash_trashes_it_for_reclaim() {
    // CEPH_TRASH with format-1 clones (clusters below mimic, or disks the stock
    // drivers made): the parent's protected snapshot cannot be removed while its
    // clones sit in the RBD trash; the parent follows them there and reclaim
    // frees it once they are purged.
    let s = Scratch::new("trashv1");
    let c = s.env.connect();
    let io = ops::ioctx(c, &s.spec("x")).unwrap();
    let parent = s.spec("one-11");
    ops::create(c, &parent, 8 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    write(c, &parent, 0, 3);
    disk::ensure_snapshot(&io, &parent.name, "snap").unwrap();
    let child = s.spec("one-11-7-0");
    let v1 = CloneOptions {
        data_pool: Some(s.env.ec_pool.clone()),
        format: CloneFormat::V1,
        ..CloneOptions::default()
    };
    ops::clone(c, &parent.at("snap").unwrap(), &child, &v1).unwrap();
    assert!(io.open_read_only(&parent.name, None).unwrap().snap_is_protected("snap").unwrap());
    // The VM disk goes to the trash (CEPH_TRASH), then the image is removed.
    Disk::new(c, child.clone(), &rbdx_one::naming::ONE).remove(Some(0), Reclaim::Trash).unwrap();
    Disk::new(c, parent.clone(), &rbdx_one::naming::ONE).remove(Some(0), Reclaim::Trash).unwrap();
    let trash: Vec<String> =
        io.trash_list().unwrap().into_iter().map(|e| e.name).filter(|n| n.starts_with(s.prefix())).collect();
    assert_eq!(trash.len(), 2, "both wait in the trash: {trash:?}");
    // Reclaim waits while the clone is in the trash (no churn), and frees the
    // parent once the clone is purged.
    // (The count is pool-wide and other tests reclaim in parallel: look at ours.)
    disk::reclaim(c, &parent).unwrap();
    assert!(io.trash_list().unwrap().iter().any(|e| e.name == parent.name), "the parent still waits");
    let child_entry = io.trash_list().unwrap().into_iter().find(|e| e.name == child.name).unwrap();
    io.trash_remove(&child_entry.id, true).unwrap();
    let left = rbdx_tests::reclaim_until_gone(c, &s.env.pool, |n| n == parent.name);
    assert!(left.is_empty(), "the parent was reclaimed: {left:?}");
    s.finish(c);
}
