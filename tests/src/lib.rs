//! Harness for the cluster tests: the test cluster's settings from the environment
//! (written by `tests/cluster/rbdx-test-cluster`), a connection as the restricted
//! `profile rbd` client, unique names, and cleanup that asserts it left nothing.
//!
//! A test that needs the cluster fails (never skips) when the environment is missing.

#![deny(missing_docs)]

pub mod http;
pub mod krbd;
pub mod one;
pub mod pve;
pub mod sshd;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rbdx_core::ops::{self, ImageSpec, RemoveOptions};
use rbdx_core::{Cluster, ConnectConfig, Image, Timeouts};

/// The test cluster, as `rbdx-test-cluster env` describes it.
#[derive(Debug, Clone)]
pub struct TestCluster {
    /// The cluster directory (daemons' data, logs, pid files).
    pub dir: PathBuf,
    /// ceph.conf.
    pub conf: PathBuf,
    /// The restricted client's id (without `client.`).
    pub id: String,
    /// The restricted client's keyring.
    pub keyring: PathBuf,
    /// The replicated pool.
    pub pool: String,
    /// The erasure-coded data pool.
    pub ec_pool: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the local test cluster. Run them with \
             `tests/run`, or start one with `tests/cluster/rbdx-test-cluster start DIR` and \
             `source DIR/env`."
        )
    })
}

/// The test cluster from the environment. Panics (fails the test) when it is missing.
pub fn cluster() -> TestCluster {
    TestCluster::from_vars(var)
}

impl TestCluster {
    fn from_vars(var: impl Fn(&str) -> String) -> Self {
        Self {
            dir: var("RBDX_TEST_CLUSTER_DIR").into(),
            conf: var("RBDX_TEST_CONF").into(),
            id: var("RBDX_TEST_ID"),
            keyring: var("RBDX_TEST_KEYRING").into(),
            pool: var("RBDX_TEST_POOL"),
            ec_pool: var("RBDX_TEST_EC_POOL"),
        }
    }

    /// The cluster an `env` file of `rbdx-test-cluster` describes (`DIR/env`: its
    /// `export RBDX_TEST_…=…` lines), for a test that starts a cluster of its own.
    /// Panics when the file is unreadable or lacks a setting.
    pub fn from_env_file(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let vars: HashMap<&str, &str> =
            text.lines().filter_map(|l| l.trim().strip_prefix("export ")?.split_once('=')).collect();
        Self::from_vars(|name| {
            vars.get(name).unwrap_or_else(|| panic!("{} does not set {name}", path.display())).to_string()
        })
    }

    /// Connection settings for the restricted client, 20 s timeouts.
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig {
            conf_file: Some(self.conf.clone()),
            client_id: Some(self.id.clone()),
            keyring: Some(self.keyring.clone()),
            key_file: None,
            mon_host: None,
            timeouts: Timeouts::uniform(Duration::from_secs(20)),
            auth_none: false,
        }
    }

    /// The process's connection as the restricted client, shared by every test of
    /// the process (librados aborts now and then when many client instances come
    /// and go concurrently in one process; the drivers make one per process).
    pub fn connect(&self) -> &'static Cluster {
        static SHARED: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| self.connect_new())
    }

    /// A connection of its own (another client, as a second VM would be).
    pub fn connect_new(&self) -> Cluster {
        Cluster::connect(&self.config()).expect("connect to the test cluster")
    }

    /// Runs `ceph <args>` as client.admin (test tooling only: fixtures the
    /// restricted client cannot make, such as pools and clients); panics unless
    /// it succeeds. Returns its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.admin_tool("ceph", args)).into_owned()
    }

    /// Runs `rados <args>` as client.admin (test tooling only: reading the
    /// objects librbd writes, to compare); panics unless it succeeds. Returns
    /// its stdout.
    pub fn admin_rados(&self, args: &[&str]) -> Vec<u8> {
        self.admin_tool("rados", args)
    }

    /// Runs `rbd <args>` as client.admin (test tooling only: librbd's own
    /// removal, to compare rbdx's with); panics unless it succeeds.
    pub fn admin_rbd(&self, args: &[&str]) {
        self.admin_tool("rbd", args);
    }

    /// Runs the Ceph CLI `tool` as client.admin within 60 s; panics unless it
    /// succeeds. Returns its stdout.
    fn admin_tool(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new("timeout")
            .args(["60", tool, "--name", "client.admin", "--conf"])
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("the {tool} CLI (ceph-common): {e}"));
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// The omap of object `oid` in `pool` (namespace `ns`), key by key.
    pub fn omap(&self, pool: &str, ns: &str, oid: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        let keys = self.admin_rados(&["-p", pool, "-N", ns, "listomapkeys", oid]);
        let keys = String::from_utf8(keys).expect("keys are text");
        let file = std::env::temp_dir().join(unique("omapval"));
        let f = file.to_str().expect("a UTF-8 temporary path");
        let map = keys
            .lines()
            .map(|k| {
                self.admin_rados(&["-p", pool, "-N", ns, "getomapval", oid, k, f]);
                (k.to_string(), std::fs::read(&file).expect("the value written"))
            })
            .collect();
        let _ = std::fs::remove_file(&file);
        map
    }

    /// The data pool for a pool under test: the EC pool when `ec`, else none.
    pub fn data_pool(&self, ec: bool) -> Option<&str> {
        ec.then_some(self.ec_pool.as_str())
    }
}

/// A name no other test (or earlier run) uses: `t<pid>-<n>-<label>`.
pub fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}-{}-{label}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Images a test creates, all under one unique prefix in the replicated pool.
/// [`Scratch::finish`] removes them (children first) and asserts that no image,
/// trash entry or snapshot of theirs is left; dropping without `finish` (a failed
/// test) cleans up as far as it can.
#[derive(Debug)]
pub struct Scratch {
    /// The cluster settings.
    pub env: TestCluster,
    prefix: String,
}

impl Scratch {
    /// A fresh scratch area labelled `label`.
    pub fn new(label: &str) -> Self {
        Self { env: cluster(), prefix: unique(label) }
    }

    /// The spec of image `name` of this test in the replicated pool.
    pub fn spec(&self, name: &str) -> ImageSpec {
        ImageSpec::new(&self.env.pool, &format!("{}-{name}", self.prefix)).expect("valid test name")
    }

    /// The unique prefix of this test's image names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This test's images that exist now, and its trash entries.
    pub fn leftovers(&self, cluster: &Cluster) -> (Vec<String>, Vec<String>) {
        let io = cluster.ioctx(&self.env.pool).expect("ioctx");
        let images = io
            .list_images()
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        let trash = io
            .trash_list()
            .expect("trash list")
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        (images, trash)
    }

    fn clean(&self, cluster: &Cluster) {
        let io = cluster.ioctx(&self.env.pool).expect("ioctx");
        // Children before parents: flatten anything with a parent, then remove;
        // repeat while it makes progress.
        for _ in 0..8 {
            let (images, trash) = self.leftovers(cluster);
            if images.is_empty() && trash.is_empty() {
                return;
            }
            for name in &images {
                if let Ok(img) = io.open(name) {
                    if img.parent().ok().flatten().is_some() {
                        let _ = img.flatten();
                    }
                }
            }
            for name in &images {
                let spec = ImageSpec::new(&self.env.pool, name).expect("name");
                let _ = ops::remove(cluster, &spec, RemoveOptions::default());
            }
            for e in io.trash_list().unwrap_or_default() {
                if e.name.starts_with(&self.prefix) {
                    let _ = io.trash_remove(&e.id, true);
                }
            }
        }
    }

    /// Removes everything this test made and asserts nothing is left.
    pub fn finish(self, cluster: &Cluster) {
        self.clean(cluster);
        let (images, trash) = self.leftovers(cluster);
        assert!(images.is_empty(), "images left behind: {images:?}");
        assert!(trash.is_empty(), "trash entries left behind: {trash:?}");
        std::mem::forget(self);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clean(self.env.connect());
    }
}

/// Writes `len` bytes of a pattern derived from `seed` at `offset`, 1 MiB at a time.
pub fn fill(img: &Image<'_>, offset: u64, len: u64, seed: u8) {
    const CHUNK: u64 = 1 << 20;
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        let pos = offset + done;
        let buf: Vec<u8> = (0..n).map(|i| ((pos + i) as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        img.write_at(pos, &buf).expect("write");
        done += n;
    }
    img.flush().expect("flush");
}

/// A 64-bit FNV-1a digest of the whole image (as opened: head or snapshot).
pub fn checksum(img: &Image<'_>) -> u64 {
    let size = img.info().expect("info").size;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        let got = img.read_at(pos, &mut buf[..n]).expect("read");
        assert_eq!(got, n, "short read at {pos}");
        for b in &buf[..n] {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        pos += n as u64;
    }
    h
}

/// Runs `cmd` with exactly `stdin` (the write may fail if it exits without
/// reading), capturing stdout and stderr.
///
/// # Panics
/// If the program cannot be started.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.get_program().to_string_lossy()));
    let mut w = child.stdin.take().expect("stdin");
    let _ = w.write_all(stdin);
    drop(w);
    child.wait_with_output().expect("wait")
}

/// `wrapper` (e.g. `timeout 30`, `strace -f`) running `cmd` with its arguments
/// and environment changes.
pub fn wrapped(mut wrapper: Command, cmd: &Command) -> Command {
    wrapper.arg(cmd.get_program()).args(cmd.get_args());
    copy_env(cmd, &mut wrapper);
    wrapper
}

/// `program` run with `cmd`'s arguments, environment changes and working
/// directory (e.g. `rbdx-run` for what `cmd` runs with `rbdx`).
pub fn run_by(program: impl AsRef<std::ffi::OsStr>, cmd: &Command) -> Command {
    let mut c = Command::new(program);
    c.args(cmd.get_args());
    copy_env(cmd, &mut c);
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}

fn copy_env(from: &Command, to: &mut Command) {
    for (k, v) in from.get_envs() {
        match v {
            Some(v) => to.env(k, v),
            None => to.env_remove(k),
        };
    }
}

/// 1 MiB.
pub const MIB: u64 = 1 << 20;

/// Runs reclaim in `pool` until no trashed image matches `waiting`, or gives up
/// after ten seconds; returns the names still waiting. Reclaim is pool-wide and
/// concurrent tests run it too, so one pass can meet a child another process is
/// in the middle of removing.
pub fn reclaim_until_gone(cluster: &Cluster, pool: &str, waiting: impl Fn(&str) -> bool) -> Vec<String> {
    let spec = ImageSpec::new(pool, "x").expect("spec");
    // In the trash, or restored for a moment by a reclaim (ours or a concurrent
    // one) that drops a snapshot it got while it was removed.
    let left = || -> Vec<String> {
        let io = cluster.ioctx(pool).expect("ioctx");
        let trashed = io.trash_list().expect("trash list").into_iter().map(|e| e.name);
        let restored = io.list_images().expect("list").into_iter().map(|e| e.name);
        trashed
            .chain(restored.filter(|n| ops::disk::reclaim_origin(n) != n))
            .filter(|n| waiting(ops::disk::reclaim_origin(n)))
            .collect()
    };
    for _ in 0..20 {
        if left().is_empty() {
            break;
        }
        ops::disk::reclaim(cluster, &spec).expect("reclaim");
        std::thread::sleep(Duration::from_millis(500));
    }
    left()
}
