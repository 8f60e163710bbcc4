//! One rbdx action at a time on an image: read-write opens (and remove, rename,
//! trash move) wait for the `rbdx_action` lock of another process or thread,
//! fail after the wait limit with a one-line error naming the holder, nest
//! within one thread, and take over the lock of a holder that died.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rbdx_core::ops::{self, CreateOptions};
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
    drop(io);
    s.finish(c);
}
