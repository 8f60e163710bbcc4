//! Traced removals name the OSD map update librbd waits for inside them; an
//! image's usage is read without opening it. A test binary of its own: tracing
//! is switched on for the whole process (and its tests take turns).

use std::sync::Mutex;

use rbdx_core::ops::{self, CloneFormat, CloneOptions, CreateOptions, RemoveOptions};
use rbdx_core::rbd::features;
use rbdx_core::trace;
use rbdx_tests::{MIB, Scratch, checksum, fill};

/// The spans are the process's: one test at a time looks at them.
static TRACED: Mutex<()> = Mutex::new(());

const FREED: &str = "snapshot remove (freed with its last clone)";

#[test]
fn a_removal_that_frees_a_trashed_snapshot_counts_as_a_snapshot_remove() {
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("trace");
    let c = s.env.connect();
    let base = s.spec("base");
    ops::create(c, &base, 8 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    io.open(&base.name).unwrap().snap_create("s").unwrap();
    let (a, b) = (s.spec("a"), s.spec("b"));
    let o = CloneOptions { format: CloneFormat::V2, ..CloneOptions::default() };
    ops::clone(c, &base.at("s").unwrap(), &a, &o).unwrap();
    ops::clone(c, &base.at("s").unwrap(), &b, &o).unwrap();
    // Removed while two clones use it: librbd keeps it in the trash namespace.
    io.open(&base.name).unwrap().snap_remove("s").unwrap();
    let snapshots = || io.open_read_only(&base.name, None).unwrap().snapshots().unwrap().len();
    assert_eq!(snapshots(), 1, "the trashed snapshot");

    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    let _ = names();
    ops::remove(c, &a, RemoveOptions::default()).unwrap();
    let first = names();
    assert!(first.iter().any(|n| n == "remove (librbd)"), "{first:?}");
    assert!(!first.iter().any(|n| n.starts_with("snapshot remove")), "one clone is left: {first:?}");
    assert_eq!(snapshots(), 1);

    ops::remove(c, &b, RemoveOptions::default()).unwrap();
    let second = names();
    assert_eq!(second.iter().filter(|n| *n == FREED).count(), 1, "the last clone: {second:?}");
    assert!(!second.iter().any(|n| n.starts_with("remove")), "{second:?}");
    assert_eq!(snapshots(), 0, "librbd freed it");
    s.finish(c);
}

#[test]
fn head_usage_opens_only_an_image_without_an_object_map() {
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("usage");
    let c = s.env.connect();
    let io = c.ioctx(&s.env.pool).unwrap();
    let (mapped, unmapped) = (s.spec("mapped"), s.spec("unmapped"));
    ops::create(c, &mapped, 16 * MIB, &CreateOptions::default()).unwrap();
    let no_map = CreateOptions { features: Some(features::LAYERING), ..CreateOptions::default() };
    ops::create(c, &unmapped, 16 * MIB, &no_map).unwrap();
    for spec in [&mapped, &unmapped] {
        fill(&io.open(&spec.name).unwrap(), 0, MIB, 3);
    }
    let listed = io.list_images().unwrap();
    let entry = |name: &str| listed.iter().find(|e| e.name == name).unwrap().clone();

    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    let _ = names();
    assert_eq!(io.head_usage(&entry(&mapped.name)).unwrap(), Some(4 * MIB));
    let read = names();
    assert!(!read.iter().any(|n| n.starts_with("open")), "read from the header and the map: {read:?}");
    assert_eq!(io.head_usage(&entry(&unmapped.name)).unwrap(), Some(4 * MIB));
    let opened = names();
    assert!(opened.iter().any(|n| n.starts_with("open")), "no map to read: {opened:?}");
    s.finish(c);
}

#[test]
fn a_lone_disk_head_is_removed_without_an_open() {
    use rbdx_core::ops::disk::{Disk, KEY_DISK, RBDX_NAMING, Reclaim};
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("lone");
    let c = s.env.connect();
    let io = c.ioctx(&s.env.pool).unwrap();
    let base = s.spec("base");
    ops::create(c, &base, 8 * MIB, &CreateOptions::default()).unwrap();
    io.open(&base.name).unwrap().snap_create("s").unwrap();
    let (plain, booked, unbooked, cloned, snapped, marked) = (
        s.spec("plain"),
        s.spec("booked"),
        s.spec("unbooked"),
        s.spec("cloned"),
        s.spec("snapped"),
        s.spec("marked"),
    );
    // A clone with no book whose parent is named as its carrier: the general
    // path adopts that parent and removes it with the head.
    let adopting = s.spec("adopting");
    let carrier = s.spec("adopting.rbdx-c1");
    for spec in [&plain, &snapped, &carrier] {
        ops::create(c, spec, 8 * MIB, &CreateOptions::default()).unwrap();
        fill(&io.open(&spec.name).unwrap(), 0, MIB, 5);
    }
    io.open(&snapped.name).unwrap().snap_create("x").unwrap();
    io.open(&carrier.name).unwrap().snap_create("c").unwrap();
    for spec in [&booked, &unbooked, &cloned, &marked] {
        ops::clone(c, &base.at("s").unwrap(), spec, &CloneOptions::default()).unwrap();
    }
    ops::clone(c, &carrier.at("c").unwrap(), &adopting, &CloneOptions::default()).unwrap();
    io.open(&booked.name).unwrap().metadata_set(KEY_DISK, &booked.name).unwrap();
    // Where a datastore clone came from is no part of a disk's book.
    io.open(&cloned.name).unwrap().metadata_set("rbdx.cloned-from", "elsewhere@s").unwrap();
    // Any other key of rbdx's (here a book naming a snapshot that is gone) is
    // the general path's.
    io.open(&marked.name).unwrap().metadata_set(KEY_DISK, &marked.name).unwrap();
    io.open(&marked.name).unwrap().metadata_set("rbdx.snap.gone", &marked.name).unwrap();

    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    let _ = names();
    let exists = |name: &str| io.list_images().unwrap().iter().any(|e| e.name == name);
    // No snapshot, no book or a bare one, a live parent that is no carrier:
    // read from the headers.
    for spec in [&plain, &booked, &unbooked, &cloned] {
        Disk::new(c, spec.clone(), &RBDX_NAMING).remove(None, Reclaim::Trash).unwrap();
        let seen = names();
        assert!(!seen.iter().any(|n| n.starts_with("open")), "{}: {seen:?}", spec.name);
        assert!(seen.iter().any(|n| n == "remove"), "{}: {seen:?}", spec.name);
        assert!(!exists(&spec.name), "{} removed", spec.name);
    }
    // A snapshot to drop, a parent to adopt, a key the fast path does not know:
    // the general path opens the head.
    for spec in [&snapped, &adopting, &marked] {
        Disk::new(c, spec.clone(), &RBDX_NAMING).remove(None, Reclaim::Trash).unwrap();
        let seen = names();
        assert!(seen.iter().any(|n| n.starts_with("open")), "{}: {seen:?}", spec.name);
        assert!(!exists(&spec.name), "{} removed", spec.name);
    }
    assert!(!exists(&carrier.name), "the adopted carrier goes with its head");
    let kept = io.open_read_only(&base.name, None).unwrap().snapshots().unwrap();
    assert_eq!(kept.len(), 1, "the parent keeps its snapshot");
    // Removing what is gone is a no-op.
    Disk::new(c, plain.clone(), &RBDX_NAMING).remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

/// A format-2 image is renamed without librbd (three writes, no open) and
/// left as librbd leaves it: the directory lists the new name for the same
/// id, the old name has no id object and opens nothing, data and data pool
/// are kept. A taken name is refused as librbd refuses it, nothing changed;
/// an image with journaling (whose renames are journaled) goes through
/// librbd, to the same end.
#[test]
fn a_rename_leaves_what_librbd_leaves_without_an_open() {
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("rename");
    let c = s.env.connect();
    let io = c.ioctx(&s.env.pool).unwrap();
    let (plain, journaled, taken) = (s.spec("plain"), s.spec("journaled"), s.spec("taken"));
    let with_journal = CreateOptions {
        data_pool: Some(s.env.ec_pool.clone()),
        features: Some(features::LAYERING | features::EXCLUSIVE_LOCK | features::JOURNALING),
        order: None,
    };
    let ec = CreateOptions::with_data_pool(Some(&s.env.ec_pool));
    for (spec, opts) in [(&plain, &ec), (&journaled, &with_journal), (&taken, &ec)] {
        ops::create(c, spec, 8 * MIB, opts).unwrap();
        fill(&io.open(&spec.name).unwrap(), 0, MIB, 9);
    }
    let sum = |name: &str| rbdx_tests::checksum(&io.open_read_only(name, None).unwrap());
    let listed = || io.list_images().unwrap();
    let id_of = |name: &str| listed().into_iter().find(|e| e.name == name).map(|e| e.id);

    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    for (spec, path) in [(&plain, "rename"), (&journaled, "rename (librbd)")] {
        let (id, want) = (id_of(&spec.name).unwrap(), sum(&spec.name));
        let to = format!("{}-renamed", spec.name);
        let _ = names();
        ops::rename(c, spec, &to).unwrap();
        let seen = names();
        assert!(seen.iter().any(|n| n == path), "{}: {seen:?}", spec.name);
        assert!(!seen.iter().any(|n| n.starts_with("open")), "{}: {seen:?}", spec.name);
        assert_eq!(id_of(&to), Some(id), "the directory lists {to} for the same image");
        assert_eq!(id_of(&spec.name), None);
        assert!(!io.object_exists(&format!("rbd_id.{}", spec.name)).unwrap(), "{}'s id object", spec.name);
        assert!(io.open_read_only(&spec.name, None).unwrap_err().is_not_found());
        assert_eq!(sum(&to), want);
        let st = ops::stat(c, &spec.sibling(&to).unwrap()).unwrap();
        assert_eq!(st.data_pool.as_deref(), Some(s.env.ec_pool.as_str()));
        // Back, for the checks below and the clean-up.
        ops::rename(c, &spec.sibling(&to).unwrap(), &spec.name).unwrap();
    }
    let before = (listed().len(), id_of(&plain.name), id_of(&taken.name));
    let e = ops::rename(c, &plain, &taken.name).unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert!(e.to_string().contains("rbd_rename"), "{e}");
    assert_eq!((listed().len(), id_of(&plain.name), id_of(&taken.name)), before, "nothing changed");
    assert!(io.open_read_only(&plain.name, None).is_ok(), "{} still opens", plain.name);
    s.finish(c);
}

#[test]
fn a_revert_by_clone_swap_opens_no_image_after_its_clone() {
    use rbdx_core::ops::disk::{Disk, DiskConfig};
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("swap");
    let c = s.env.connect();
    let head = s.spec("img-7-0");
    ops::create(c, &head, 16 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &head).unwrap();
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let keys = || io.open_read_only(&head.name, None).unwrap().metadata_list("rbdx.").unwrap();
    fill(&io.open(&head.name).unwrap(), 0, MIB, 1);
    d.snapshot_create("0").unwrap();
    fill(&io.open(&head.name).unwrap(), 0, MIB, 2);
    d.snapshot_create("1").unwrap();
    fill(&io.open(&head.name).unwrap(), 0, MIB, 3);
    let swap = DiskConfig { rollback_max_bytes: 0, ..DiskConfig::default() };

    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    let _ = names();
    // The head holds both snapshots: it becomes the carrier.
    d.revert("0", &swap).unwrap();
    let spans = names();
    let after = spans.iter().position(|n| n == "clone").map(|i| &spans[i + 1..]);
    assert!(after.is_some_and(|a| !a.iter().any(|n| n.starts_with("open"))), "{spans:?}");
    let carrier = d.locate("0").unwrap().expect("a carrier holds 0");
    assert_ne!(carrier, head.name);
    // The carrier's book went, the new head has it, and no revert marker is left.
    let carrier_keys = io.open_read_only(&carrier, None).unwrap().metadata_list("rbdx.").unwrap();
    assert!(!carrier_keys.iter().any(|(k, _)| k.starts_with("rbdx.snap.")), "{carrier_keys:?}");
    let head_keys = keys();
    assert!(head_keys.iter().any(|(k, v)| k == "rbdx.snap.1" && *v == carrier), "{head_keys:?}");
    assert!(!head_keys.iter().any(|(k, _)| k.starts_with("rbdx.revert.")), "{head_keys:?}");
    // The head reads as it was at 0 (what `fill` wrote with seed 1).
    let mut buf = vec![0u8; 8];
    io.open_read_only(&head.name, None).unwrap().read_at(8, &mut buf).unwrap();
    let want: Vec<u8> = (8..16u64).map(|i| (i as u8).wrapping_mul(31).wrapping_add(1)).collect();
    assert_eq!(buf, want);

    // Both snapshots deleted (the carrier stays while the head reads from it).
    d.snapshot_delete("0").unwrap();
    d.snapshot_delete("1").unwrap();
    assert!(d.snapshots().unwrap().is_empty());
    d.remove(None, ops::disk::Reclaim::Trash).unwrap();
    s.finish(c);
}

/// A save of a head unchanged since its newest snapshot, which its book holds,
/// is told from the header and the object maps, opening nothing; a re-run, or
/// a head with a newer snapshot the save may not clone, is read through a
/// read-only open; one that must enter a snapshot in the book opens it
/// read-write, and the next save needs no write again.
#[test]
fn a_save_that_writes_nothing_on_the_head_opens_it_at_most_read_only() {
    use rbdx_core::ops::disk::{self, Disk, DiskConfig, Reclaim, Saved};
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("saveread");
    let c = s.env.connect();
    let head = s.spec("img-9-0");
    ops::create(c, &head, 16 * MIB, &CreateOptions::default()).unwrap();
    let io = ops::ioctx(c, &head).unwrap();
    fill(&io.open(&head.name).unwrap(), 0, MIB, 4);
    let d = Disk::new(c, head.clone(), &rbdx_one::naming::ONE);
    let cfg = DiskConfig { copy_max_bytes: 0, ..DiskConfig::default() };
    let saves = |n: &str| n.starts_with("save.");
    let [a, b, e, f, g] = ["a", "b", "e", "f", "g"].map(|n| s.spec(n));

    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(d.save_now("save.a", &a, saves, &cfg).unwrap(), Saved::Taken("save.a".into()));
    let taken = names();
    assert!(taken.iter().any(|n| n == "open"), "a snapshot to take: {taken:?}");

    assert_eq!(d.save_now("save.b", &b, saves, &cfg).unwrap(), Saved::Unchanged("save.a".into()));
    let unchanged = names();
    assert!(!unchanged.iter().any(|n| n.starts_with("open")), "told from the headers: {unchanged:?}");
    assert!(unchanged.iter().any(|n| n == "diff"), "{unchanged:?}");
    assert_eq!(d.save_now("save.b", &b, saves, &cfg).unwrap(), Saved::Again("save.a".into()));
    let again = names();
    // The one read-write open is the target's, which a re-run finishes.
    assert_eq!(again.iter().filter(|n| *n == "open").count(), 1, "a re-run: {again:?}");

    // A snapshot outside the book (as TM clone takes its base): entered
    // through a read-write open, then read-only again.
    disk::ensure_snapshot(&io, &head.name, "snap").unwrap();
    let base = |n: &str| n == "snap";
    assert_eq!(d.save_now("save.e", &e, base, &cfg).unwrap(), Saved::Unchanged("snap".into()));
    let entered = names();
    assert!(entered.iter().any(|n| n == "open"), "a snapshot to enter: {entered:?}");
    assert_eq!(d.save_now("save.f", &f, base, &cfg).unwrap(), Saved::Unchanged("snap".into()));
    let booked = names();
    assert!(!booked.iter().any(|n| n.starts_with("open")), "{booked:?}");
    // A newer snapshot that the save may not clone: the open decides.
    io.open(&head.name).unwrap().snap_create("other").unwrap();
    assert_eq!(d.save_now("save.g", &g, base, &cfg).unwrap(), Saved::Unchanged("snap".into()));
    let newer = names();
    assert!(newer.iter().any(|n| n == "open read-only"), "{newer:?}");
    for t in [&b, &f] {
        let p = ops::stat(c, t).unwrap().parent.expect("a clone");
        assert_eq!(
            (p.image.name.as_str(), p.snap.as_str()),
            (head.name.as_str(), if *t == b { "save.a" } else { "snap" })
        );
    }
    for t in [&a, &b, &e, &f, &g] {
        ops::remove(c, t, RemoveOptions::default()).unwrap();
    }
    io.open(&head.name).unwrap().snap_remove("other").unwrap();
    d.remove(None, Reclaim::Trash).unwrap();
    s.finish(c);
}

/// The objects of the test pool and the EC pool in namespace `ns` that
/// name one of `tokens` (an image's id or name; other tests' images share
/// the pools), each token written as `<>`.
fn objects(s: &Scratch, ns: &str, tokens: &[&str]) -> std::collections::BTreeSet<String> {
    let mut all = std::collections::BTreeSet::new();
    for pool in [&s.env.pool, &s.env.ec_pool] {
        let listed = String::from_utf8(s.env.admin_rados(&["-p", pool, "-N", ns, "ls"])).unwrap();
        for line in listed.lines().filter(|l| tokens.iter().any(|t| l.contains(t))) {
            all.insert(tokens.iter().fold(format!("{pool}/{line}"), |o, t| o.replace(t, "<>")));
        }
    }
    all
}

/// Makes an image in namespace `ns` with `make` (which returns its name and
/// id), removes it with `remove`, and returns the objects its making added
/// to the pools (name and id as `<>`), and what there is after its removal:
/// its objects, its pool directory entries, the header of `parent` (if any;
/// its timestamps aside).
fn made_and_removed(
    s: &Scratch,
    ns: &str,
    parent: Option<&str>,
    make: &dyn Fn() -> (String, String),
    remove: &dyn Fn(&str),
) -> (Vec<String>, Vec<Vec<String>>) {
    let (name, id) = make();
    let made = objects(s, ns, &[&id, &name]).into_iter().collect();
    remove(&name);
    let parent_header = parent.map_or_else(Vec::new, |pid| {
        let mut h = s.env.omap(&s.env.pool, ns, &format!("rbd_header.{pid}"));
        h.retain(|k, _| !k.ends_with("_timestamp"));
        h.into_iter().map(|(k, v)| format!("{k}={v:?}")).collect()
    });
    let directory = s.env.omap(&s.env.pool, ns, "rbd_directory").into_keys();
    let directory = directory.filter(|k| k.contains(&id) || k.contains(&name)).collect();
    (made, vec![objects(s, ns, &[&id, &name]).into_iter().collect(), directory, parent_header])
}

/// rbdx's removal, written directly (traced `remove`), leaves the pools as
/// librbd's does (`rbd rm`, which goes through the trash): no object of the
/// image in the image pool or the EC data pool, no entry in the pool
/// directory, the parent's header as before the clone (its snapshot's child
/// link gone). A
/// clone and a plain image, with and without a data pool, in a namespace
/// too. An image with a watcher or a snapshot is librbd's to refuse, with
/// nothing of it removed.
#[test]
fn a_removal_written_directly_leaves_what_librbd_leaves() {
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("rmdirect");
    let c = s.env.connect();
    let ns_name = rbdx_tests::unique("rmns");
    c.ioctx(&s.env.pool).unwrap().namespace_create(&ns_name).unwrap();
    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    for ns in ["", ns_name.as_str()] {
        let base = s.spec("base").in_namespace(ns).unwrap();
        ops::create(c, &base, 64 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
        let io = ops::ioctx(c, &base).unwrap();
        fill(&io.open(&base.name).unwrap(), 0, 16 * MIB, 1);
        io.open(&base.name).unwrap().snap_create("s").unwrap();
        let base_id = io.open_read_only(&base.name, None).unwrap().info().unwrap().id;
        let ec = Some(s.env.ec_pool.as_str());
        for (clone, dp) in [(true, ec), (true, None), (false, ec), (false, None)] {
            let what = format!("clone {clone}, data pool {dp:?}, namespace {ns:?}");
            let make = |label: &str| {
                let spec = base.sibling(&format!("{}-{label}", base.name)).unwrap();
                if clone {
                    let o = CloneOptions { data_pool: dp.map(str::to_string), ..CloneOptions::default() };
                    ops::clone(c, &base.at("s").unwrap(), &spec, &o).unwrap();
                } else {
                    ops::create(c, &spec, 40 * MIB, &CreateOptions::with_data_pool(dp)).unwrap();
                }
                let img = io.open(&spec.name).unwrap();
                fill(&img, 4 * MIB, 9 * MIB, 2);
                fill(&img, 36 * MIB, MIB, 3);
                (spec.name.clone(), img.info().unwrap().id)
            };
            let parent = clone.then_some(base_id.as_str());
            let by_librbd = made_and_removed(&s, ns, parent, &|| make("lib"), &|name| {
                s.env.admin_rbd(&["-p", &s.env.pool, "--namespace", ns, "rm", "--no-progress", name]);
            });
            let _ = names();
            let by_rbdx =
                made_and_removed(&s, ns, parent, &|| make("direct"), &|name| io.remove_image(name).unwrap());
            let seen = names();
            assert!(seen.iter().any(|n| n == "remove"), "{what}: written directly: {seen:?}");
            assert!(!seen.iter().any(|n| n == "remove (librbd)"), "{what}: {seen:?}");
            assert!(
                by_rbdx.0.iter().filter(|o| o.contains("rbd_data.")).count() >= 4,
                "{what}: {:?}",
                by_rbdx.0
            );
            assert_eq!(by_rbdx.0, by_librbd.0, "{what}: the same objects made");
            assert_eq!(by_rbdx.1, by_librbd.1, "{what}: the same left after the removal");
            assert!(
                by_rbdx.1[0].is_empty() && by_rbdx.1[1].is_empty(),
                "{what}: nothing left: {:?}",
                by_rbdx.1
            );
        }

        // Refused: an image open elsewhere (a watcher), and one with a snapshot.
        let other = s.env.connect_new();
        for (label, snap) in [("watched", false), ("snapped", true)] {
            let spec = base.sibling(&format!("{}-{label}", base.name)).unwrap();
            ops::clone(c, &base.at("s").unwrap(), &spec, &CloneOptions::default()).unwrap();
            fill(&io.open(&spec.name).unwrap(), 0, 2 * MIB, 4);
            if snap {
                io.open(&spec.name).unwrap().snap_create("x").unwrap();
            }
            let oio = ops::ioctx(&other, &spec).unwrap();
            let held = (!snap).then(|| oio.open_as_client(&spec.name).unwrap());
            let sum = rbdx_tests::checksum(&io.open_read_only(&spec.name, None).unwrap());
            let id = io.open_read_only(&spec.name, None).unwrap().info().unwrap().id;
            let before = objects(&s, ns, &[&id, &spec.name]);
            let _ = names();
            let e = io.remove_image(&spec.name).unwrap_err();
            let kind = if snap { rbdx_core::ErrorKind::NotEmpty } else { rbdx_core::ErrorKind::Busy };
            assert_eq!(e.kind(), Some(kind), "{label}: {e}");
            let seen = names();
            assert!(seen.iter().any(|n| n == "remove (librbd)"), "{label}: left to librbd: {seen:?}");
            assert_eq!(objects(&s, ns, &[&id, &spec.name]), before, "{label}: nothing removed");
            assert_eq!(rbdx_tests::checksum(&io.open_read_only(&spec.name, None).unwrap()), sum);
            drop(held);
            if snap {
                io.open(&spec.name).unwrap().snap_remove("x").unwrap();
            }
            io.remove_image(&spec.name).unwrap();
        }
        io.open(&base.name).unwrap().snap_remove("s").unwrap();
        ops::remove(c, &base, RemoveOptions::default()).unwrap();
    }
    c.ioctx(&s.env.pool).unwrap().namespace_remove(&ns_name).unwrap();
    s.finish(c);
}

/// One image's history for the rollback test: data in objects 0 and 1,
/// snapshot `s1`; object 1 rewritten in part, object 3 written, object 0
/// discarded, snapshot `s2`; object 2 written, object 1 again, object 3
/// discarded. Returns its image id.
fn rollback_history(io: &rbdx_core::IoCtx<'_>, d: &rbdx_core::ops::disk::Disk<'_>, name: &str) -> String {
    let img = || io.open(name).unwrap();
    fill(&img(), 0, 8 * MIB, 1);
    d.snapshot_create("s1").unwrap();
    fill(&img(), 4 * MIB + 512 * 1024, MIB, 2);
    fill(&img(), 12 * MIB, 4 * MIB, 3);
    img().discard(0, 4 * MIB).unwrap();
    d.snapshot_create("s2").unwrap();
    fill(&img(), 8 * MIB, 4 * MIB, 4);
    fill(&img(), 4 * MIB, MIB, 5);
    img().discard(12 * MIB, 4 * MIB).unwrap();
    io.open_read_only(name, None).unwrap().info().unwrap().id
}

/// rbdx's revert in place, written directly (traced `rollback`, no open of
/// the head), leaves an image as librbd's rollback does: the snapshot's
/// data, the same head object map, the same data objects, and the same
/// data after a partial write to an object the rollback removed and to one
/// it brought back. To the older snapshot (fast-diff cannot tell what
/// changed), then the newer, then a new one after one object changed (the
/// objects unchanged since it are not visited); a plain image and a clone
/// with its data in the EC pool. A head another client has open is the open path's to
/// refuse.
#[test]
fn a_rollback_written_directly_leaves_what_librbd_leaves() {
    use rbdx_core::ops::disk::{Disk, DiskConfig};
    let _turn = TRACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = Scratch::new("rbdirect");
    let c = s.env.connect();
    let base = s.spec("base");
    ops::create(c, &base, 24 * MIB, &CreateOptions::with_data_pool(Some(&s.env.ec_pool))).unwrap();
    let io = ops::ioctx(c, &base).unwrap();
    fill(&io.open(&base.name).unwrap(), 0, 24 * MIB, 9);
    io.open(&base.name).unwrap().snap_create("snap").unwrap();
    trace::enable();
    let names = || trace::take().into_iter().map(|s| s.name).collect::<Vec<_>>();
    let cfg = DiskConfig { data_pool: Some(s.env.ec_pool.clone()), ..DiskConfig::default() };
    for clone in [false, true] {
        let make = |label: &str| {
            let spec = s.spec(&format!("{label}-{clone}"));
            if clone {
                let o = CloneOptions { data_pool: Some(s.env.ec_pool.clone()), ..CloneOptions::default() };
                ops::clone(c, &base.at("snap").unwrap(), &spec, &o).unwrap();
            } else {
                ops::create(c, &spec, 24 * MIB, &CreateOptions::default()).unwrap();
            }
            let d = Disk::new(c, spec.clone(), &rbdx_one::naming::ONE);
            let id = rollback_history(&io, &d, &spec.name);
            (spec, d, id)
        };
        let (lib, lib_disk, lib_id) = make("lib");
        let (direct, direct_disk, direct_id) = make("direct");
        let sum = |name: &str, snap: Option<&str>| checksum(&io.open_read_only(name, snap).unwrap());
        let map =
            |id: &str| s.env.admin_rados(&["-p", &s.env.pool, "get", &format!("rbd_object_map.{id}"), "-"]);
        let data = |id: &str| {
            let all = objects(&s, "", &[id]);
            all.into_iter().filter(|o| o.contains("rbd_data.")).collect::<Vec<_>>()
        };
        for snap in ["s1", "s2", "s3"] {
            let what = format!("clone {clone}, back to {snap}");
            if snap == "s3" {
                // A snapshot of the head as it is (its objects now unchanged
                // since the newest snapshot), then one object written again.
                for (name, d) in [(&lib.name, &lib_disk), (&direct.name, &direct_disk)] {
                    d.snapshot_create("s3").unwrap();
                    fill(&io.open(name).unwrap(), 8 * MIB + 4096, 8192, 8);
                }
            }
            io.open(&lib.name).unwrap().snap_rollback(snap).unwrap();
            let _ = names();
            direct_disk.revert(snap, &cfg).unwrap();
            let seen = names();
            assert!(seen.iter().any(|n| n == "rollback"), "{what}: written directly: {seen:?}");
            assert!(!seen.iter().any(|n| n == "rollback (librbd)" || n == "open"), "{what}: {seen:?}");
            assert_eq!(sum(&direct.name, None), sum(&direct.name, Some(snap)), "{what}: the snapshot's data");
            assert_eq!(sum(&direct.name, None), sum(&lib.name, None), "{what}: as librbd's");
            assert_eq!(map(&direct_id), map(&lib_id), "{what}: the head's object map");
            assert_eq!(data(&direct_id), data(&lib_id), "{what}: the data objects");
            for off in [12 * MIB + 4096, 8192] {
                for name in [&lib.name, &direct.name] {
                    fill(&io.open(name).unwrap(), off, 4096, 7);
                }
            }
            assert_eq!(sum(&direct.name, None), sum(&lib.name, None), "{what}: written after");
        }
        // Another client has the head open: refused, nothing rolled back.
        let other = s.env.connect_new();
        let oio = ops::ioctx(&other, &direct).unwrap();
        let vm = oio.open_as_client(&direct.name).unwrap();
        let before = sum(&direct.name, None);
        let err = direct_disk.revert("s1", &cfg).unwrap_err();
        assert!(matches!(err, rbdx_core::Error::InUse { .. }), "{err}");
        drop(vm);
        drop(oio);
        drop(other);
        assert_eq!(sum(&direct.name, None), before);
        for d in [lib_disk, direct_disk] {
            d.remove(None, rbdx_core::ops::disk::Reclaim::Trash).unwrap();
        }
    }
    s.finish(c);
}
