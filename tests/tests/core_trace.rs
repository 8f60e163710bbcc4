//! Traced removals name the OSD map update librbd waits for inside them. A test
//! binary of its own: tracing is switched on for the whole process.

use rbdx_core::ops::{self, CloneFormat, CloneOptions, CreateOptions, RemoveOptions};
use rbdx_core::trace;
use rbdx_tests::{MIB, Scratch};

const FREED: &str = "snapshot remove (freed with its last clone)";

#[test]
fn a_removal_that_frees_a_trashed_snapshot_counts_as_a_snapshot_remove() {
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
    assert!(first.iter().any(|n| n == "remove"), "{first:?}");
    assert!(!first.iter().any(|n| n.starts_with("snapshot remove")), "one clone is left: {first:?}");
    assert_eq!(snapshots(), 1);

    ops::remove(c, &b, RemoveOptions::default()).unwrap();
    let second = names();
    assert_eq!(second.iter().filter(|n| *n == FREED).count(), 1, "the last clone: {second:?}");
    assert!(!second.iter().any(|n| n == "remove"), "{second:?}");
    assert_eq!(snapshots(), 0, "librbd freed it");
    s.finish(c);
}
