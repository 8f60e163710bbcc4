//! One rbdx action at a time on an image: read-write opens (and remove, rename,
//! trash move) wait for the `rbdx_action` lock of another process or thread,
//! fail after the wait limit with a one-line error naming the holder, nest
//! within one thread, and take over the lock of a holder that died. Removing
//! the last clone of a snapshot in the trash namespace (librbd opens the parent
//! read-write inside to free it) waits for the parent's lock too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rbdx_core::ops::{self, CloneOptions, CreateOptions};
use rbdx_core::rbd::SnapNamespace;
use rbdx_core::{Cluster, Error, ErrorKind, Timeouts};
use rbdx_tests::{MIB, Scratch};

/// A connection of its own whose wait for a busy image is `wait`.
fn connect_waiting(wait: Duration) -> Cluster {
    let env = rbdx_tests::cluster();
    let mut config = env.config();
    config.timeouts = Timeouts { osd_op: wait, ..Timeouts::uniform(Duration::from_secs(20)) };
    Cluster::connect(&config).expect("connect")
}

#[test]
fn a_second_writer_waits_for_the_first_to_close() {
    let s = Scratch::new("lockwait");
    let c = s.env.connect();
    let spec = s.spec("disk");
    ops::create(c, &spec, 4 * MIB, &CreateOptions::default()).unwrap();
    let io = c.ioctx(&spec.pool).unwrap();

    let first = io.open(&spec.name).unwrap();
    let nested = io.open(&spec.name).expect("the holding thread may open it again");
    let (tx, rx) = mpsc::channel();
    let name = spec.name.clone();
    let pool = spec.pool.clone();
    let waiter = std::thread::spawn(move || {
        let io = c.ioctx(&pool).unwrap();
        let img = io.open(&name).unwrap();
        tx.send(Instant::now()).unwrap();
        img.metadata_set("rbdx.test.second", "yes").unwrap();
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(rx.try_recv().is_err(), "a second writer got in while the first had the image open");
    drop(nested);
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "the lock was released while the outer open still held it");
    first.metadata_set("rbdx.test.first", "yes").unwrap();
    let closed = Instant::now();
    drop(first);
    let got_in = rx.recv_timeout(Duration::from_secs(10)).expect("the waiter gets the image");
    assert!(got_in >= closed);
    waiter.join().unwrap();
    let img = io.open_read_only(&spec.name, None).unwrap();
    assert_eq!(img.metadata_get("rbdx.test.second").unwrap().as_deref(), Some("yes"));
    drop(img);
    s.finish(c);
}

#[test]
fn a_live_holder_makes_others_fail_in_one_line_and_a_dead_one_is_taken_over() {
    let s = Scratch::new("lockdead");
    let c = s.env.connect();
    let spec = s.spec("disk");
    ops::create(c, &spec, 4 * MIB, &CreateOptions::default()).unwrap();

    let mut holder = Command::new(env!("CARGO_BIN_EXE_hold-image"))
        .args([&spec.pool, &spec.name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "holding");

    let short = connect_waiting(Duration::from_secs(2));
    let io = short.ioctx(&spec.pool).unwrap();
    for what in ["open", "rename", "trash move"] {
        let start = Instant::now();
        let e = match what {
            "open" => io.open(&spec.name).map(drop),
            "rename" => io.rename_image(&spec.name, &format!("{}-renamed", spec.name)),
            _ => io.trash_move(&spec.name, 0),
        }
        .unwrap_err();
        assert!(matches!(e, Error::Busy { .. }), "{what}: {e}");
        assert_eq!(e.kind(), Some(ErrorKind::Busy));
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", holder.id())) && !msg.contains('\n'), "{msg}");
        assert!(start.elapsed() >= Duration::from_secs(2), "{what} gave up before the wait limit");
    }
    // No image, no lock: librbd's own error (the lock request asserts that the
    // header exists, so it does not create one).
    assert!(io.trash_remove("0000deadbeef", true).unwrap_err().is_not_found());
    assert!(io.open("no-such-image").unwrap_err().is_not_found());
    // Reads are not held up.
    assert!(io.open_read_only(&spec.name, None).is_ok());

    // The holder dies without closing: its lock is taken over, well before the
    // wait limit (its pid is gone from this machine).
    holder.kill().unwrap();
    holder.wait().unwrap();
    let img = io.open(&spec.name).expect("the lock of a dead holder is taken over");
    img.metadata_set("rbdx.test.after", "yes").unwrap();
    drop(img);
    io.rename_image(&spec.name, &format!("{}-renamed", spec.name)).unwrap();
    io.rename_image(&format!("{}-renamed", spec.name), &spec.name).unwrap();
    // The dead holder stays a watcher until its watch times out (5 s on the
    // test cluster): only then can the image be removed.
    let start = Instant::now();
    while !io.open_read_only(&spec.name, None).unwrap().watchers().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "the dead holder's watch did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(io);
    s.finish(c);
}

/// A connection of its own that waits `wait` for a lock and gives a silent
/// holder `grace`.
fn connect_with_grace(wait: Duration, grace: Duration) -> Cluster {
    let env = rbdx_tests::cluster();
    let mut config = env.config();
    config.timeouts =
        Timeouts { osd_op: wait, lock_grace: grace, ..Timeouts::uniform(Duration::from_secs(20)) };
    Cluster::connect(&config).expect("connect")
}

/// `hold-image` in a PID namespace of its own, in a process group of its own:
/// a holder this machine cannot see (as on another host, or in a container).
struct Elsewhere {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Elsewhere {
    fn hold(pool: &str, image: &str, guard: bool) -> Self {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", env!("CARGO_BIN_EXE_hold-image"), pool, image]);
        if guard {
            cmd.arg("guard");
        }
        let mut child =
            cmd.process_group(0).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("unshare");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "holding");
        Self { child, stdin, stdout }
    }

    fn signal(&self, sig: libc::c_int) {
        let pgid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: signals the process group this test started.
        assert_eq!(unsafe { libc::kill(-pgid, sig) }, 0);
    }

    fn ask(&mut self, what: &str) -> String {
        use std::io::Write;
        writeln!(self.stdin, "{what}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Elsewhere {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

#[test]
fn a_silent_holder_elsewhere_is_fenced_before_its_lock_is_taken_and_cannot_write_after() {
    let s = Scratch::new("lockfence");
    let c = s.env.connect();
    let spec = s.spec("disk");
    ops::create(c, &spec, 4 * MIB, &CreateOptions::default()).unwrap();
    let mut holder = Elsewhere::hold(&spec.pool, &spec.name, false);

    // Alive and beating: a waiter gives up after its wait (longer than the grace)
    // without taking the lock.
    let grace = Duration::from_secs(6);
    let patient = connect_with_grace(Duration::from_secs(10), grace);
    let io = patient.ioctx(&spec.pool).unwrap();
    let t = Instant::now();
    let e = io.open(&spec.name).map(drop).unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    assert!(t.elapsed() >= Duration::from_secs(10), "a beating holder keeps its lock past the grace");
    assert_eq!(holder.ask("write"), "wrote", "the live holder still writes");

    // Stopped (a paused process, a host cut off): after the grace without a beat,
    // it is blocklisted and its lock taken.
    holder.signal(libc::SIGSTOP);
    let waiter = connect_with_grace(Duration::from_secs(30), grace);
    let wio = waiter.ioctx(&spec.pool).unwrap();
    let t = Instant::now();
    let img = wio.open(&spec.name).expect("the silent holder's lock is taken over");
    let took = t.elapsed();
    assert!(took >= grace && took < grace + Duration::from_secs(8), "taken over after the grace: {took:?}");
    img.write_at(0, &[0x11; 4096]).unwrap();
    img.close().unwrap();

    // Back: it cannot write any more, and knows it lost the lock.
    holder.signal(libc::SIGCONT);
    let wrote = holder.ask("write");
    assert!(wrote.starts_with("write failed"), "a fenced holder must not write: {wrote}");
    let closed = holder.ask("close");
    assert!(closed.starts_with("close failed: lost the rbdx lock"), "{closed}");
    eprintln!("taken over after {took:?}; the fenced holder: {wrote}; {closed}");
    let mut got = [0u8; 4096];
    c.ioctx(&spec.pool).unwrap().open_read_only(&spec.name, None).unwrap().read_at(0, &mut got).unwrap();
    assert!(got.iter().all(|b| *b == 0x11), "only the new holder's data is there");
    drop(holder);
    drop((wio, io));
    s.finish(c);
}

#[test]
fn a_disk_operation_holds_the_disk_for_its_whole_length() {
    let s = Scratch::new("lockguard");
    let c = s.env.connect();
    let spec = s.spec("disk");
    ops::create(c, &spec, 4 * MIB, &CreateOptions::default()).unwrap();
    // Another operation on the disk, from a process this machine cannot see.
    let mut holder = Elsewhere::hold(&spec.pool, &spec.name, true);
    let short = connect_waiting(Duration::from_secs(2));
    let disk = ops::disk::Disk::new(&short, spec.clone(), &ops::disk::RBDX_NAMING);
    let e = disk.snapshot_create("s1").unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    assert!(e.to_string().contains(&spec.name) && !e.to_string().contains('\n'), "{e}");
    // The images themselves are not locked: only disk operations wait.
    short.ioctx(&spec.pool).unwrap().open(&spec.name).unwrap().close().unwrap();
    assert_eq!(holder.ask("close"), "closed");
    disk.snapshot_create("s1").unwrap();
    let io = c.ioctx(&spec.pool).unwrap();
    assert!(
        !io.object_exists(&format!("rbdx_lock.{}", spec.name)).unwrap(),
        "a released guard leaves no object"
    );
    drop(holder);
    drop(io);
    drop(disk);
    ops::disk::Disk::new(c, spec.clone(), &ops::disk::RBDX_NAMING)
        .remove(None, ops::disk::Reclaim::Trash)
        .unwrap();
    s.finish(c);
}

/// The last clone of a snapshot removed while clones used it (kept in the trash
/// namespace, freed with that clone by librbd, which opens the parent
/// read-write inside the removal) is removed only while no other rbdx action
/// has the parent; a clone of a live snapshot is removed without waiting.
#[test]
fn removing_the_last_clone_of_a_trashed_snapshot_waits_for_the_parent() {
    let s = Scratch::new("lockparent");
    let c = s.env.connect();
    let parent = s.spec("parent");
    ops::create(c, &parent, 4 * MIB, &CreateOptions::default()).unwrap();
    let io = c.ioctx(&parent.pool).unwrap();
    let (live, last) = (s.spec("live"), s.spec("last"));
    for (snap, child) in [("kept", &live), ("freed", &last)] {
        io.open(&parent.name).unwrap().snap_create(snap).unwrap();
        ops::clone(c, &parent.at(snap).unwrap(), child, &CloneOptions::default()).unwrap();
    }
    io.open(&parent.name).unwrap().snap_remove("freed").unwrap();
    let namespaces = || {
        let img = io.open_read_only(&parent.name, None).unwrap();
        img.snapshots().unwrap().iter().map(|s| img.snap_namespace(s.id).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(
        namespaces(),
        vec![SnapNamespace::User, SnapNamespace::Trash],
        "the removed snapshot waits in the trash namespace"
    );

    let remove_in_thread = |name: String| {
        let (tx, rx) = mpsc::channel();
        let pool = parent.pool.clone();
        let t = std::thread::spawn(move || {
            let io = c.ioctx(&pool).unwrap();
            io.remove_image(&name).unwrap();
            tx.send(Instant::now()).unwrap();
        });
        (t, rx)
    };
    let held = io.open(&parent.name).unwrap();
    let (t, rx) = remove_in_thread(live.name.clone());
    rx.recv_timeout(Duration::from_secs(10)).expect("a clone of a live snapshot is removed at once");
    t.join().unwrap();

    let (t, rx) = remove_in_thread(last.name.clone());
    std::thread::sleep(Duration::from_millis(800));
    assert!(rx.try_recv().is_err(), "the last clone was removed while another action had its parent");
    // librbd would wait for the parent too, but inside the removal, with the
    // clone open and the parent about to be: the hand-off rbdx's lock avoids.
    let watchers = io.open_read_only(&last.name, None).and_then(|i| i.watchers()).map(|w| w.len());
    assert_eq!(watchers.ok(), Some(0), "the removal did not start while another action had the parent");
    let released = Instant::now();
    drop(held);
    let removed = rx.recv_timeout(Duration::from_secs(10)).expect("removed once the parent is free");
    assert!(removed >= released);
    t.join().unwrap();
    let img = io.open_read_only(&parent.name, None).unwrap();
    let left: Vec<(String, SnapNamespace)> = img
        .snapshots()
        .unwrap()
        .iter()
        .map(|s| (s.name.clone(), img.snap_namespace(s.id).unwrap()))
        .collect();
    assert_eq!(
        left,
        vec![("kept".to_string(), SnapNamespace::User)],
        "the trashed snapshot went with its last clone"
    );
    drop(img);
    s.finish(c);
}
