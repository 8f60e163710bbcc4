//! A stand-in for the kernel rbd driver and PVE's udev rule, for machines
//! without the rbd module (containers, CI). It serves the sysfs control files
//! `<root>/sys/bus/rbd/{add,remove}_single_major` (FIFOs) and does what the
//! kernel and udev do with a request:
//!
//! - `add`: parses `<mons> <options> <pool> <image> [<snap>]` as the driver
//!   does, refuses unknown options, then **connects to the cluster with exactly
//!   what the request carries** (monitor addresses, `name=`, `secret=`) and opens
//!   the image, so a wrong address, key, pool, namespace or name fails as it
//!   would in the kernel. Then it lists the device under
//!   `<root>/sys/bus/rbd/devices/<id>/` (`pool`, `pool_ns`, `name`,
//!   `current_snap`, `cluster_fsid`, `size`), makes `<root>/dev/rbd<id>` and the
//!   udev link `<root>/dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`.
//! - `remove`: `<id>` undoes that.
//!
//! A FIFO cannot return an errno to the writer: refused requests are appended
//! to `<root>/refused` (and the writer, finding no device, times out). Accepted
//! ones are appended to `<root>/requests` with the secret replaced by `***`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rbdx_core::{Cluster, ConnectConfig, Timeouts};

/// A running stand-in; stops when dropped.
#[derive(Debug)]
pub struct KernelDouble {
    root: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    held: Held,
}

impl KernelDouble {
    /// Sets up `root` (sys and dev trees) and serves it until dropped.
    pub fn start(root: &Path) -> Self {
        let bus = root.join("sys/bus/rbd");
        fs::create_dir_all(bus.join("devices")).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let held = Held::default();
        let mut threads = Vec::new();
        for what in ["add", "remove"] {
            let fifo = bus.join(format!("{what}_single_major"));
            mkfifo(&fifo);
            let (root, stop, held) = (root.to_path_buf(), stop.clone(), held.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut request = String::new();
                    // Blocks until a writer comes; EOF when it closes.
                    if fs::File::open(&fifo).and_then(|mut f| f.read_to_string(&mut request)).is_err() {
                        continue;
                    }
                    if stop.load(Ordering::SeqCst) || request.is_empty() {
                        continue;
                    }
                    let done = if what == "add" {
                        add(&root, &request, &held)
                    } else {
                        remove(&root, &request, &held)
                    };
                    if let Err(why) = done {
                        append(&root.join("refused"), &format!("{what}: {why}"));
                    }
                }
            }));
        }
        Self { root: root.to_path_buf(), stop, threads, held }
    }

    /// The requests refused so far.
    pub fn refused(&self) -> String {
        fs::read_to_string(self.root.join("refused")).unwrap_or_default()
    }

    /// The add requests accepted so far, secrets masked.
    pub fn requests(&self) -> String {
        fs::read_to_string(self.root.join("requests")).unwrap_or_default()
    }
}

impl Drop for KernelDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for what in ["add", "remove"] {
            // Wake the reader blocked in open() (never block here: no reader, no wait).
            let _ = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(self.root.join(format!("sys/bus/rbd/{what}_single_major")));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for (_, (stop, holder)) in self.held.lock().unwrap().drain() {
            let _ = stop.send(());
            let _ = holder.join();
        }
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert!(r == 0 || path.exists(), "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

fn append(path: &Path, line: &str) {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Options the rbd driver and libceph accept (a subset: what a map may carry).
const KNOWN: &[&str] = &[
    "name",
    "secret",
    "key",
    "_pool_ns",
    "ms_mode",
    "rxbounce",
    "ro",
    "read_only",
    "rw",
    "read_write",
    "queue_depth",
    "alloc_size",
    "lock_timeout",
    "exclusive",
    "notrim",
    "lock_on_read",
    "noshare",
];

/// The threads holding mapped images open, by device id, with their stop signal.
type Held = Arc<Mutex<HashMap<u32, (mpsc::Sender<()>, JoinHandle<()>)>>>;

fn add(root: &Path, request: &str, held: &Held) -> Result<(), String> {
    let words: Vec<&str> = request.trim_end_matches('\n').split(' ').collect();
    let [mons, options, pool, image, rest @ ..] = words.as_slice() else {
        return Err(format!("{} words", words.len()));
    };
    let snap = match rest {
        [] => "-",
        [s] => s,
        _ => return Err("too many words".into()),
    };
    let (mut name, mut secret, mut ns, mut ms_mode) = (None, None, String::new(), None);
    let mut masked = Vec::new();
    for o in options.split(',') {
        let (k, v) = o.split_once('=').map_or((o, None), |(k, v)| (k, Some(v)));
        if !KNOWN.contains(&k) {
            return Err(format!("unknown option {k:?}"));
        }
        match (k, v) {
            ("name", Some(v)) => name = Some(v.to_string()),
            ("secret", Some(v)) => secret = Some(v.to_string()),
            ("key", Some(_)) => {
                return Err("key= needs the kernel keyring, which this stand-in has not".into());
            }
            ("_pool_ns", Some(v)) => ns = v.to_string(),
            ("ms_mode", Some(v)) => ms_mode = Some(v.to_string()),
            _ => {}
        }
        masked.push(if k == "secret" { "secret=***".to_string() } else { o.to_string() });
    }
    let name = name.ok_or("no name=")?;
    let secret = secret.ok_or("no secret=")?;
    let msgr = if ms_mode.as_deref().is_some_and(|m| m != "legacy") { "v2" } else { "v1" };
    let mon_host = mons.split(',').map(|a| format!("{msgr}:{a}")).collect::<Vec<_>>().join(",");

    // Reach the cluster with what the request carries, nothing else, and hold
    // the image open while mapped: the head read-write (the kernel watches its
    // header, so librbd sees a client), a snapshot read-only (no watch).
    let config = ConnectConfig {
        conf_file: None,
        client_id: Some(name),
        keyring: None,
        key_file: None,
        mon_host: Some(mon_host),
        timeouts: Timeouts::uniform(Duration::from_secs(10)),
        auth_none: false,
    };
    let (pool_, image_, snap_, ns_) = (pool.to_string(), image.to_string(), snap.to_string(), ns.clone());
    let (opened, result) = mpsc::channel();
    let (stop, stopped) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let open = || -> Result<(Cluster, String), String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let keyfile = dir.path().join("key");
            fs::write(&keyfile, &secret).map_err(|e| e.to_string())?;
            let cluster = Cluster::connect(&ConnectConfig { key_file: Some(keyfile), ..config })
                .map_err(|e| format!("connect: {e}"))?;
            let fsid = cluster.fsid().map_err(|e| e.to_string())?;
            Ok((cluster, fsid))
        };
        let (cluster, fsid) = match open() {
            Ok(c) => c,
            Err(e) => return drop(opened.send(Err(e))),
        };
        let held = (|| {
            let mut io = cluster.ioctx(&pool_).map_err(|e| format!("pool: {e}"))?;
            if !ns_.is_empty() {
                io.set_namespace(&ns_).map_err(|e| e.to_string())?;
            }
            let img = if snap_ == "-" {
                io.open_as_client(&image_)
            } else {
                io.open_read_only(&image_, Some(&snap_))
            }
            .map_err(|e| format!("open: {e}"))?;
            let size = img.info().map_err(|e| e.to_string())?.size;
            opened.send(Ok((fsid, size))).map_err(|e| e.to_string())?;
            let _ = stopped.recv();
            drop(img);
            Ok::<(), String>(())
        })();
        if let Err(e) = held {
            let _ = opened.send(Err(e));
        }
    });
    let (fsid, size) = match result.recv().map_err(|e| e.to_string()) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) | Err(e) => {
            let _ = holder.join();
            return Err(e);
        }
    };

    let devices = root.join("sys/bus/rbd/devices");
    let id = (0u32..).find(|i| !devices.join(i.to_string()).exists()).unwrap();
    held.lock().unwrap().insert(id, (stop, holder));
    let d = devices.join(id.to_string());
    fs::create_dir(&d).map_err(|e| e.to_string())?;
    for (attr, value) in [
        ("pool", pool.to_string()),
        ("pool_ns", ns.clone()),
        ("name", image.to_string()),
        ("current_snap", snap.to_string()),
        ("cluster_fsid", fsid.clone()),
        ("size", size.to_string()),
        // The kernel keeps the whole request (key included, root-only); the
        // stand-in keeps it with the secret masked.
        ("config_info", format!("{mons} {} {pool} {image} {snap}", masked.join(","))),
    ] {
        fs::write(d.join(attr), format!("{value}\n")).map_err(|e| e.to_string())?;
    }
    let node = root.join(format!("dev/rbd{id}"));
    fs::File::create(&node).and_then(|f| f.set_len(size)).map_err(|e| e.to_string())?;
    let link = udev_link(root, &fsid, pool, &ns, image, snap);
    fs::create_dir_all(link.parent().unwrap()).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&node, &link).map_err(|e| e.to_string())?;
    append(&root.join("requests"), &format!("{mons} {} {pool} {image} {snap}", masked.join(",")));
    Ok(())
}

fn remove(root: &Path, request: &str, held: &Held) -> Result<(), String> {
    let id: u32 = request.split_whitespace().next().and_then(|w| w.parse().ok()).ok_or("not an id")?;
    if let Some((stop, holder)) = held.lock().unwrap().remove(&id) {
        let _ = stop.send(());
        let _ = holder.join();
    }
    let d = root.join("sys/bus/rbd/devices").join(id.to_string());
    let attr = |a: &str| fs::read_to_string(d.join(a)).map(|s| s.trim_end().to_string());
    let (pool, ns, image, snap, fsid) =
        (attr("pool"), attr("pool_ns"), attr("name"), attr("current_snap"), attr("cluster_fsid"));
    let (Ok(pool), Ok(ns), Ok(image), Ok(snap), Ok(fsid)) = (pool, ns, image, snap, fsid) else {
        return Err(format!("no device {id}"));
    };
    let _ = fs::remove_file(udev_link(root, &fsid, &pool, &ns, &image, &snap));
    let _ = fs::remove_file(root.join(format!("dev/rbd{id}")));
    fs::remove_dir_all(&d).map_err(|e| e.to_string())
}

/// What pve-storage's udev rule (ceph-rbdnamer-pve) links the device as.
fn udev_link(root: &Path, fsid: &str, pool: &str, ns: &str, image: &str, snap: &str) -> PathBuf {
    let mut p = root.join("dev/rbd-pve").join(fsid).join(pool);
    if !ns.is_empty() {
        p.push(ns);
    }
    p.push(if snap == "-" { image.to_string() } else { format!("{image}@{snap}") });
    p
}
