//! A hostile-input corpus for every entry point of the `rbdx` binary — 705 cases:
//! `rbdx tm` 377 (all 24 actions), `rbdx ds` 96 (all 10 actions, oned's base64
//! message), `rbdx pve` 155 (the JSON request, on stdin or in `RBDX_PVE_REQUEST`),
//! `rbdx remote` 24 (the job line sent over ssh) and the operator commands 53
//! (`image`, `snap`, `trash`, `pool`, `import`). Nearly all are valid but for one
//! hostile value (argv, stdin, oned's documents, the JSON request), against a VM,
//! datastores and images that exist, so that they reach the deep checks.
//!
//! Each case must fail cleanly: non-zero exit (no signal, no panic) and exactly one
//! non-log line of error — on stderr for `tm`, `ds` and the operator commands; for
//! `rbdx pve` the JSON answer on stdout (`"ok": false`), or stderr for a failed
//! export (its stdout is the stream); for `rbdx remote` the JSON outcome on stdout
//! (exit 0 by protocol: the front-end reads the outcome). Over the whole corpus
//! nothing in Ceph may change (both pools' images and trash; the fixtures' sizes and
//! snapshots) and no hostile name may be executed. Every case runs; the failures
//! are reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbdx_core::Cluster;
use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::MIB;
use rbdx_tests::one::{OneEnv, assert_ok, vm_doc};
use serde_json::{Value, json};

/// Local execution (no ssh; an ssh that is ever tried fails at once), short Ceph
/// timeouts, a virsh that does nothing.
const CONFIG: &str = "EXECUTION = local\nCEPH_TIMEOUT = 10\nSSH = /bin/false\nVIRSH = /bin/true\n";
const IMAGE_DS: u32 = 100;
const SYSTEM_DS: u32 = 0;
/// An image datastore whose EC_POOL_NAME names no pool.
const DS_NO_DATA_POOL: u32 = 101;
/// An image datastore with `RBDX_EXECUTION = bogus`.
const DS_BAD_EXECUTION: u32 = 102;
/// An image datastore whose BRIDGE_LIST is an ssh option, with `RBDX_EXECUTION = ssh`.
const DS_BAD_BRIDGE: u32 = 103;
/// A datastore document that is not XML.
const DS_GARBAGE: u32 = 104;
/// An image datastore whose POOL_NAME is `a/b/c`.
const DS_BAD_POOL: u32 = 105;
/// The file every hostile name tries to create (relative: commands run in the scratch dir).
const MARKER: &str = "pwned";
/// Longest a case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);
const LOG_PREFIXES: [&str; 4] = ["ERROR:", "INFO:", "WARN:", "DEBUG:"];

/// Ids no other test (or earlier run) uses in the shared cluster.
fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 8_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

/// Where an entry point reports its one line of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    /// Exit 1 or 2, one non-log line on stderr (`tm`, `ds`, operator commands).
    Stderr,
    /// Exit 1, the JSON answer `{"ok":false,"error":…}` on stdout and nothing else;
    /// or, for a failed export (stdout is the stream), nothing on stdout and one
    /// line on stderr.
    Pve,
    /// The JSON outcome on stdout with its `error`, nothing on stderr (exit 0 by
    /// protocol); or exit 1 with one line on stderr (a failed `send_dir`).
    Remote,
}

#[derive(Debug)]
struct Case {
    family: &'static str,
    label: String,
    cmd: Command,
    stdin: Vec<u8>,
    contract: Contract,
    /// Text the error line must contain (that it failed for the intended reason).
    want: Option<String>,
}

#[derive(Debug, Default)]
struct Corpus {
    cases: Vec<Case>,
}

impl Corpus {
    fn add(
        &mut self,
        family: &'static str,
        label: impl Into<String>,
        cmd: Command,
        stdin: Vec<u8>,
        contract: Contract,
        want: Option<&str>,
    ) {
        let label = label.into().replace('\n', "\\n");
        self.cases.push(Case { family, label, cmd, stdin, contract, want: want.map(str::to_string) });
    }
}

/// `args` with argument `i` replaced by `v`.
fn with(args: &[String], i: usize, v: &str) -> Vec<String> {
    let mut a = args.to_vec();
    a[i] = v.to_string();
    a
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

/// The base64 `DS_DRIVER_ACTION_DATA` message with this inner XML.
fn message(inner: &str) -> Vec<u8> {
    b64(&format!("<DS_DRIVER_ACTION_DATA>{inner}</DS_DRIVER_ACTION_DATA>"))
}

fn b64(text: &str) -> Vec<u8> {
    rbdx_one::base64::encode(text.as_bytes()).into_bytes()
}

/// `<IMAGE>` with these elements (CDATA, as oned writes them).
fn image_xml(attrs: &[(&str, &str)]) -> String {
    let body: String = attrs.iter().map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>")).collect();
    format!("<IMAGE>{body}</IMAGE>")
}

/// Everything the corpus runs against: the oned double with good and hostile
/// documents, and fixture images (a deployed VM disk, a persistent image, two
/// Proxmox volumes, one with a snapshot).
#[derive(Debug)]
struct Fx {
    e: OneEnv,
    /// This machine's name (the VM's host: the `.ssh` actions run here).
    host: String,
    pool: String,
    ec: String,
    /// The image datastore's image (EC data), with `@snap` and one clone.
    img: ImageSpec,
    /// A persistent image.
    pimg: ImageSpec,
    /// Disk 0 of `vm`: the CoW clone of `img`.
    disk0: ImageSpec,
    /// A VM with a deployed non-persistent disk 0, a persistent disk 1, and
    /// volatile disks 2 (ext4) and 3 (swap), on `host`.
    vm: u32,
    /// A VM whose DISKs carry hostile attributes (see `Fx::new`).
    bad_vm: u32,
    /// Its document.
    bad_vm_doc: String,
    /// The documents oned's double serves for each datastore id.
    ds_docs: BTreeMap<u32, String>,
    /// A VM whose document is truncated XML.
    garbage_vm: u32,
    /// A VM whose document has a DTD with entities.
    bomb_vm: u32,
    /// A VM whose DISK 0 has two SOURCEs.
    dup_vm: u32,
    /// A VM with two DISKs of DISK_ID 0.
    dup_id_vm: u32,
    /// An id nothing has: oned knows no such VM or datastore; no such image exists.
    unknown: u32,
    /// The Proxmox VM owning `vm-<pve_vm>-disk-0` (with snapshot `s1`) and `-disk-1`.
    pve_vm: u32,
    /// Every id this test uses: any name it could create contains one.
    ids: RangeInclusive<u32>,
    /// The `ceph` block of a Proxmox request for the test pools.
    ceph: Value,
    /// The remotes tree (a `tm/common/context` that fails).
    remotes: PathBuf,
    /// A small raw file to import.
    file: PathBuf,
}

impl Fx {
    fn new() -> Self {
        let e = OneEnv::new(Path::new(env!("CARGO_BIN_EXE_rbdx")), CONFIG);
        let c = e.cluster.connect();
        let (pool, ec) = (e.cluster.pool.clone(), e.cluster.ec_pool.clone());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string();
        let (img_id, pimg_id, vm, bad_vm) = (fresh_id(), fresh_id(), fresh_id(), fresh_id());
        let (garbage_vm, bomb_vm, dup_vm, dup_id_vm) = (fresh_id(), fresh_id(), fresh_id(), fresh_id());
        let (unknown, pve_vm) = (fresh_id(), fresh_id());
        // Not `one-<id>`: other users of a shared cluster may wipe `one-*`.
        let img = ImageSpec::new(&pool, &format!("hostile-{img_id}")).unwrap();
        let pimg = ImageSpec::new(&pool, &format!("hostile-{pimg_id}")).unwrap();
        for s in [&img, &pimg] {
            ops::create(c, s, 8 * MIB, &CreateOptions::with_data_pool(Some(&ec))).unwrap();
        }

        let o = &e.oned;
        let ds_docs = BTreeMap::from([
            (IMAGE_DS, e.image_ds(IMAGE_DS, true, &[])),
            (SYSTEM_DS, e.system_ds(SYSTEM_DS, true)),
            (DS_NO_DATA_POOL, e.image_ds(DS_NO_DATA_POOL, false, &[("EC_POOL_NAME", "no-such-pool".into())])),
            (DS_BAD_EXECUTION, e.image_ds(DS_BAD_EXECUTION, true, &[("RBDX_EXECUTION", "bogus".into())])),
            (
                DS_BAD_BRIDGE,
                e.image_ds(DS_BAD_BRIDGE, true, &[("RBDX_EXECUTION", "ssh".into())]).replace(
                    "<BRIDGE_LIST><![CDATA[localhost]]>",
                    &format!("<BRIDGE_LIST><![CDATA[-oProxyCommand=touch {MARKER}]]>"),
                ),
            ),
            (DS_GARBAGE, format!("<DATASTORE><ID>{DS_GARBAGE}</ID><TEMPLATE>")),
            (
                DS_BAD_POOL,
                e.image_ds(DS_BAD_POOL, true, &[])
                    .replace(&format!("<POOL_NAME><![CDATA[{pool}]]>"), "<POOL_NAME><![CDATA[a/b/c]]>"),
            ),
        ]);
        for (id, doc) in &ds_docs {
            o.set_datastore(*id, doc.clone());
        }

        let disks = [
            e.image_disk(0, &img.to_string(), true, IMAGE_DS, 8),
            e.image_disk(1, &pimg.to_string(), false, IMAGE_DS, 8),
            e.volatile_disk(2, "fs", Some("ext4"), SYSTEM_DS, 16),
            e.volatile_disk(3, "swap", None, SYSTEM_DS, 16),
        ];
        o.set_vm(vm, vm_doc(vm, &host, 3, &disks));
        let bad_disks = [
            e.image_disk(0, &img.to_string(), true, IMAGE_DS, 8).with("SIZE", "-5"),
            e.image_disk(1, "nopool", true, IMAGE_DS, 8),
            e.volatile_disk(2, "fs", Some("ext4"), SYSTEM_DS, 16).with("POOL_NAME", "a/b/c"),
            e.volatile_disk(3, "fs", Some(&format!("ext4;touch {MARKER}")), SYSTEM_DS, 16),
            e.image_disk(4, &format!("{pool}/one-{unknown}`touch {MARKER}`"), true, IMAGE_DS, 8),
            e.image_disk(5, &img.to_string(), true, IMAGE_DS, 8).with("TYPE", "fs"),
            e.image_disk(6, &img.to_string(), true, IMAGE_DS, 8).with("ORIGINAL_SIZE", "abc"),
            e.image_disk(7, &img.to_string(), true, IMAGE_DS, 8).with("TM_MAD", "../../../../bin/sh"),
            e.volatile_disk(8, "fs", Some("ext4"), SYSTEM_DS, 16).with("SOURCE", img.to_string()),
        ];
        let bad_vm_doc = vm_doc(bad_vm, &host, 3, &bad_disks);
        o.set_vm(bad_vm, bad_vm_doc.clone());
        o.set_vm(garbage_vm, format!("<VM><ID>{garbage_vm}</ID><TEMPLATE><DISK>"));
        let one_disk = vm_doc(dup_vm, &host, 3, &[e.image_disk(0, &img.to_string(), true, IMAGE_DS, 8)]);
        let other = format!("<SOURCE><![CDATA[{pool}/one-{unknown}]]></SOURCE>");
        o.set_vm(dup_vm, one_disk.replacen("<DISK>", &format!("<DISK>{other}"), 1));
        let two = vm_doc(
            dup_id_vm,
            &host,
            3,
            &[
                e.image_disk(0, &img.to_string(), true, IMAGE_DS, 8),
                e.image_disk(0, &pimg.to_string(), false, IMAGE_DS, 8),
            ],
        );
        o.set_vm(dup_id_vm, two);
        o.set_vm(
            bomb_vm,
            format!(
                "<!DOCTYPE VM [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
                 <VM><ID>{bomb_vm}</ID><NAME>&b;</NAME></VM>"
            ),
        );

        let remotes = e.dir.path().join("remotes");
        std::fs::create_dir_all(remotes.join("tm/common")).unwrap();
        let script = remotes.join("tm/common/context");
        std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let file = e.dir.path().join("disk.raw");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();

        let cl = &e.cluster;
        let ceph = json!({
            "pool": pool, "data_pool": ec, "id": cl.id, "conf": cl.conf, "keyring": cl.keyring, "timeout": 10
        });
        let disk0 = ImageSpec::new(&pool, &format!("{}-{vm}-0", img.name)).unwrap();
        let fx = Self {
            e,
            host,
            pool,
            ec,
            img,
            pimg,
            disk0,
            vm,
            bad_vm,
            bad_vm_doc,
            ds_docs,
            garbage_vm,
            bomb_vm,
            dup_vm,
            dup_id_vm,
            unknown,
            pve_vm,
            // pve_vm + 1: "another VM" in the Proxmox cases.
            ids: img_id..=pve_vm + 1,
            ceph,
            remotes,
            file,
        };
        let src = format!("frontend:{}", fx.img);
        assert_ok(
            &fx.run_ok(fx.tm("clone", &[src, fx.disk_path(vm, 0), vm.to_string(), IMAGE_DS.to_string()])),
        );
        for i in 0..2 {
            fx.pve_ok("alloc_image", json!({"vmid": pve_vm, "name": fx.vol(i), "size_kib": 4096}));
        }
        fx.pve_ok("volume_snapshot", json!({"volname": fx.vol(0), "snap": "s1"}));
        fx
    }

    /// The images whose size and snapshots must not change.
    fn watched(&self) -> Vec<ImageSpec> {
        let mut v = vec![self.img.clone(), self.pimg.clone(), self.disk0.clone()];
        v.extend((0..2).map(|i| ImageSpec::new(&self.pool, &self.vol(i)).unwrap()));
        v
    }

    fn vol(&self, i: u32) -> String {
        format!("vm-{}-disk-{i}", self.pve_vm)
    }

    fn disk_path(&self, vm: u32, disk: u32) -> String {
        format!("{}:/var/lib/one//datastores/0/{vm}/disk.{disk}", self.host)
    }

    /// `rbdx <first…>` as oned runs a driver, in the scratch directory.
    fn cmd(&self, first: &[&str]) -> Command {
        let mut c = self.e.command(first);
        c.current_dir(self.e.dir.path()).env("RBDX_REMOTES", &self.remotes);
        c
    }

    fn tm(&self, action: &str, args: &[String]) -> Command {
        let mut c = self.cmd(&["tm", action]);
        c.args(args);
        c
    }

    /// An operator command connected to the test cluster as the restricted client.
    fn cli(&self, args: &[&str]) -> Command {
        let cl = &self.e.cluster;
        let mut c = self.cmd(args);
        c.env("RBDX_CONF", &cl.conf).env("RBDX_ID", &cl.id).env("RBDX_KEYRING", &cl.keyring);
        c.env("RBDX_TIMEOUT", "10");
        c
    }

    /// A Proxmox request line for the test pools.
    fn pve_req(&self, method: &str, params: Value) -> Vec<u8> {
        self.pve_req_with(self.ceph.clone(), method, params)
    }

    fn pve_req_with(&self, ceph: Value, method: &str, params: Value) -> Vec<u8> {
        let r = json!({"version": 1, "storeid": "hostile", "ceph": ceph, "method": method, "params": params});
        format!("{r}\n").into_bytes()
    }

    /// The `ceph` block with `key` set to `v`.
    fn ceph_with(&self, key: &str, v: Value) -> Value {
        let mut c = self.ceph.clone();
        c[key] = v;
        c
    }

    fn run_ok(&self, cmd: Command) -> Output {
        run(cmd, Vec::new()).expect("fixture command")
    }

    fn pve_ok(&self, method: &str, params: Value) -> Value {
        let out = run(self.cmd(&["pve"]), self.pve_req(method, params)).expect("rbdx pve");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(v["ok"] == json!(true), "{method}: {}", String::from_utf8_lossy(&out.stdout));
        v
    }

    /// Removes the fixtures.
    fn finish(self) {
        let (vm, ds) = (self.vm.to_string(), IMAGE_DS.to_string());
        assert_ok(&self.run_ok(self.tm("delete", &[self.disk_path(self.vm, 0), vm, ds])));
        for i in 0..2 {
            self.pve_ok("free_image", json!({"volname": self.vol(i)}));
        }
        let c = self.e.cluster.connect();
        for s in [&self.img, &self.pimg] {
            ops::remove(c, s, ops::RemoveOptions::default()).unwrap();
        }
    }
}

/// Runs `cmd` with `stdin`, bounded by [`CASE_TIMEOUT`].
fn run(mut cmd: Command, stdin: Vec<u8>) -> Result<Output, String> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run rbdx: {e}"))?;
    let mut w = child.stdin.take().expect("stdin");
    // The child may stop reading early (a refused request): the write then fails.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&stdin);
    });
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if start.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {}s", CASE_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = from.read_to_end(&mut v);
        v
    })
}

/// The one line of `lines`, or why there is not exactly one.
fn one_line(lines: &[&str], what: &str) -> Result<String, String> {
    match lines {
        [l] if !l.trim().is_empty() => Ok((*l).to_string()),
        [_] => Err(format!("an empty {what} line")),
        _ => Err(format!("{} {what} lines instead of one", lines.len())),
    }
}

/// The error of a JSON answer (`rbdx pve`) or outcome (`rbdx remote`) line.
fn json_error(stdout: &str, pve: bool) -> Result<String, String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let line = one_line(&lines, "stdout")?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("stdout is not one JSON answer: {e}"))?;
    if pve && v["ok"] != json!(false) {
        return Err("the answer is not \"ok\": false".into());
    }
    match v["error"].as_str() {
        Some(e) if !e.trim().is_empty() && !e.contains('\n') => Ok(e.to_string()),
        Some(_) => Err("the error is empty or more than one line".into()),
        None => Err("no error in the answer".into()),
    }
}

/// Checks one case's output against its contract; returns its error line.
fn check(contract: Contract, out: &Output) -> Result<String, String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if err.contains("panicked") || err.contains("stack backtrace") {
        return Err("panicked".into());
    }
    let code = out.status.code().ok_or_else(|| format!("killed by a signal ({})", out.status))?;
    let msgs: Vec<&str> = err.lines().filter(|l| !LOG_PREFIXES.iter().any(|p| l.starts_with(p))).collect();
    match contract {
        Contract::Stderr => {
            if code != 1 && code != 2 {
                return Err(format!("exit code {code}"));
            }
            one_line(&msgs, "stderr")
        }
        Contract::Pve | Contract::Remote => {
            let pve = contract == Contract::Pve;
            if stdout.is_empty() {
                if code == 0 {
                    return Err("exit code 0 and no answer".into());
                }
                return one_line(&msgs, "stderr");
            }
            if pve && code == 0 {
                return Err("exit code 0".into());
            }
            if !pve && code > 1 {
                return Err(format!("exit code {code}"));
            }
            if !msgs.is_empty() {
                return Err(format!("stray stderr besides the answer: {:?}", msgs.join(" | ")));
            }
            json_error(&stdout, pve)
        }
    }
}

/// Each pool's images and trash entries, and each watched image's size and snapshots.
fn state(c: &Cluster, pools: &[&str], watched: &[ImageSpec]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m = BTreeMap::new();
    let err = |e: rbdx_core::Error| BTreeSet::from([format!("error: {e}")]);
    for pool in pools {
        let (images, trash) = match c.ioctx(pool) {
            Ok(io) => (
                io.list_images().map(|v| v.into_iter().map(|e| e.name).collect()).unwrap_or_else(err),
                io.trash_list().map(|v| v.into_iter().map(|e| e.name).collect()).unwrap_or_else(err),
            ),
            Err(e) => (err(e), BTreeSet::new()),
        };
        m.insert(format!("images of {pool}"), images);
        m.insert(format!("trash of {pool}"), trash);
    }
    for s in watched {
        let v = match ops::stat(c, s) {
            Ok(st) => std::iter::once(format!("size {}", st.size))
                .chain(st.snapshots.iter().map(|x| format!("snapshot {}", x.name)))
                .collect(),
            Err(e) => err(e),
        };
        m.insert(format!("{s}"), v);
    }
    m
}

/// Whether `name` carries one of `ids` as a run of digits.
fn carries(name: &str, ids: &RangeInclusive<u32>) -> bool {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|d| d.parse().ok()).any(|n| ids.contains(&n))
}

/// The changes between two [`state`]s: those this test can have made (to its
/// fixtures, or to names carrying its ids), and the others (another user of a
/// shared cluster).
fn diff(
    before: &BTreeMap<String, BTreeSet<String>>,
    after: &BTreeMap<String, BTreeSet<String>>,
    ids: &RangeInclusive<u32>,
) -> (Vec<String>, Vec<String>) {
    let empty = BTreeSet::new();
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let (mut ours, mut foreign) = (Vec::new(), Vec::new());
    for k in keys {
        let (b, a) = (before.get(k).unwrap_or(&empty), after.get(k).unwrap_or(&empty));
        let listing = k.starts_with("images of") || k.starts_with("trash of");
        let mine = |n: &&String| !listing || carries(n, ids);
        let (added, added_else): (Vec<&String>, Vec<&String>) = a.difference(b).partition(mine);
        let (removed, removed_else): (Vec<&String>, Vec<&String>) = b.difference(a).partition(mine);
        if !added.is_empty() || !removed.is_empty() {
            ours.push(format!("{k}: added {added:?}, removed {removed:?}"));
        }
        if !added_else.is_empty() || !removed_else.is_empty() {
            foreign.push(format!("{k}: added {added_else:?}, removed {removed_else:?}"));
        }
    }
    (ours, foreign)
}

/// The TM actions: argument counts for every action, then hostile host:paths, ids,
/// sizes, formats, image specs, oned documents and stdin.
fn tm_cases(fx: &Fx, k: &mut Corpus) {
    let h = fx.host.as_str();
    let (vm, bad_vm, unknown) = (fx.vm.to_string(), fx.bad_vm.to_string(), fx.unknown.to_string());
    let (ds, sys) = (IMAGE_DS.to_string(), SYSTEM_DS.to_string());
    let p = |d: u32| fx.disk_path(fx.vm, d);
    let pb = |d: u32| fx.disk_path(fx.bad_vm, d);
    // The `.ssh` actions write files here: under the scratch directory.
    let ps = |d: u32| format!("{h}:{}/datastores/0/{vm}/disk.{d}", fx.e.dir.path().display());
    let vm_dir = format!("/var/lib/one//datastores/0/{vm}");
    let src = format!("frontend:{}", fx.img);
    let psrc = format!("frontend:{}", fx.pimg);
    let new_img = format!("{}/one-{unknown}", fx.pool);
    let mut tm = |action: &str, args: Vec<String>, label: &str, want: Option<&str>| {
        k.add("tm", format!("{action}: {label}"), fx.tm(action, &args), Vec::new(), Contract::Stderr, want);
    };

    let backup_args =
        vec![format!("{h}:{vm_dir}"), "0".into(), format!("one-{vm}"), "-".into(), vm.clone(), sys.clone()];
    // Every action, with oned's valid arguments as the base of the variants.
    let valid: Vec<(&str, Vec<String>, usize)> = vec![
        ("clone", vec![src.clone(), p(0), vm.clone(), ds.clone()], 4),
        ("clone.ssh", vec![src.clone(), ps(0), vm.clone(), ds.clone()], 4),
        ("context", strings(&["/var/lib/one/vms/5/context.sh", "/tmp/f1", &p(5), &vm, &sys]), 0),
        ("cpds", vec![p(0), new_img.clone(), "-1".into(), vm.clone(), ds.clone()], 5),
        ("cpds.ssh", vec![ps(0), new_img.clone(), "-1".into(), vm.clone(), ds.clone()], 5),
        ("delete", vec![p(0), vm.clone(), ds.clone()], 3),
        ("delete.ssh", vec![ps(0), vm.clone(), ds.clone()], 3),
        ("failmigrate", vec![h.into(), "otherhost".into(), vm_dir.clone(), vm.clone(), sys.clone()], 5),
        ("ln", vec![psrc.clone(), p(1), vm.clone(), ds.clone()], 4),
        ("ln.ssh", vec![psrc.clone(), ps(1), vm.clone(), ds.clone()], 4),
        ("mkimage", vec!["16".into(), "raw".into(), p(2), vm.clone(), sys.clone()], 5),
        ("mkswap", vec!["16".into(), p(3), vm.clone(), sys.clone()], 4),
        ("monitor", vec![sys.clone()], 1),
        ("mv", vec![format!("{h}:{vm_dir}"), format!("otherhost:{vm_dir}"), vm.clone(), sys.clone()], 4),
        ("mvds", vec![p(1), fx.pimg.to_string(), vm.clone(), ds.clone()], 4),
        ("mvds.ssh", vec![ps(1), fx.pimg.to_string(), vm.clone(), ds.clone()], 4),
        ("postbackup", backup_args.clone(), 6),
        ("postbackup_live", backup_args.clone(), 6),
        ("postmigrate", vec![h.into(), h.into(), vm_dir.clone(), vm.clone(), sys.clone()], 5),
        ("prebackup", backup_args.clone(), 6),
        ("prebackup_live", backup_args.clone(), 6),
        ("premigrate", vec![h.into(), h.into(), vm_dir.clone(), vm.clone(), sys.clone()], 5),
        ("resize", vec![p(0), "64".into(), vm.clone(), ds.clone()], 3),
        ("resize.ssh", vec![ps(0), "64".into(), vm.clone(), ds.clone()], 3),
        ("restore", strings(&[&format!("{h}:{vm_dir}"), &vm, "7", "-1", "-1"]), 5),
        ("snap_create", vec![p(0), "0".into(), vm.clone(), ds.clone()], 4),
        ("snap_create_live", vec![p(0), "0".into(), vm.clone(), ds.clone()], 4),
        ("snap_delete", vec![p(0), "0".into(), vm.clone(), ds.clone()], 4),
        ("snap_revert", vec![p(0), "0".into(), vm.clone(), ds.clone()], 4),
    ];
    assert_eq!(valid.len(), rbdx_tm::ACTIONS.len(), "every TM action has a base");
    let base = |action: &str| valid.iter().find(|v| v.0 == action).map(|v| v.1.clone()).expect("an action");
    let wrong = Some("wrong number of arguments");
    for (action, args, min) in &valid {
        if *min == 0 {
            // context passes oned's arguments to OpenNebula's common action untouched.
            tm(action, vec![], "no arguments", Some("wrong number of arguments"));
            continue;
        }
        tm(action, vec![], "no arguments", wrong);
        let mut more = args.clone();
        more.extend(strings(&["extra", "extra"]));
        tm(action, more, "too many arguments", wrong);
        tm(action, args[..min - 1].to_vec(), "one argument too few", wrong);
    }
    tm("../../../bin/sh", vec![], "an action name that is a path", Some("unknown TM action"));
    for (at, v, label, want) in [
        (1, "0:x", "a disk id list with a word", "invalid disk id"),
        (1, "0;id", "a disk id list with `;`", "invalid disk id"),
        (1, "", "an empty disk id list", "invalid disk id"),
        (4, "-1", "a negative VM id", "invalid VM id"),
        (5, "x", "a bad datastore id", "invalid datastore id"),
        (0, "h$(id):/var/lib/one/datastores/0/1", "a host with $()", "invalid host"),
        (0, "localhost:/var/lib/one/datastores/0/../../../etc", "a system dir with `..`", ".."),
        (0, "localhost:/", "the root as the system dir", "refusing"),
    ] {
        tm("prebackup", with(&backup_args, at, v), label, Some(want));
        tm("postbackup", with(&backup_args, at, v), label, Some(want));
    }
    for (at, v, label, want) in [
        (1, "-1", "a negative VM id", "invalid VM id"),
        (2, "x", "a bad backup image id", "invalid backup image id"),
        (3, "-2", "an increment id below -1", "invalid increment id"),
        (3, "1;id", "an increment id with `;`", "invalid increment id"),
        (4, "0 1", "a disk id with a space", "invalid disk id"),
        (2, "7", "a backup image oned does not know", "Error getting image"),
    ] {
        tm("restore", with(&base("restore"), at, v), label, Some(want));
    }
    tm("", vec![], "an empty action name", Some("unknown TM action"));

    // Malformed host:path where a disk path is needed.
    let bad_paths: Vec<(String, &str, &str)> = vec![
        (format!("{h}/var/lib/one/datastores/0/{vm}/disk.0"), "no colon", "expected host:path"),
        (format!(":/var/lib/one/datastores/0/{vm}/disk.0"), "empty host", "invalid host"),
        (format!("a host:/var/lib/one/datastores/0/{vm}/disk.0"), "host with a space", "invalid host"),
        (
            format!("-oProxyCommand=touch {MARKER}:/d/0/{vm}/disk.0"),
            "host that is an ssh option",
            "invalid host",
        ),
        (format!("h$(touch {MARKER}):/d/0/{vm}/disk.0"), "host with $()", "invalid host"),
        (format!("{h}:"), "empty path", "invalid path"),
        (format!("{h}:/var/lib/one/datastores/0/{vm}"), "no disk.N", "not a disk path"),
        (format!("{h}:/var/lib/one/datastores/0/{vm}/disk.x"), "disk.x", "not a disk path"),
        (format!("{h}:/var/lib/one/datastores/0/{vm}/disk.-1"), "disk.-1", "not a disk path"),
        (
            format!("{h}:/var/lib/one/datastores/0/{vm}/disk.99999999999999999999"),
            "huge disk id",
            "not a disk",
        ),
        (format!("{h}:/var/lib/one/datastores/0/{vm}/disk.0\n"), "newline", "invalid path"),
        (format!("{h}:/var/lib/one/datastores/0/{vm}/disk.0;touch {MARKER}"), "`;`", "not a disk path"),
        (format!("{h}:/var/lib/one/datastores/0/{vm}/../../../../../etc/disk.0"), "`..`", ".."),
        (format!("{h}:/var/lib/one/datastores/0/{vm}/disk.7"), "a disk the VM lacks", "has no disk 7"),
    ];
    for (v, label, want) in &bad_paths {
        tm("clone", with(&base("clone"), 1, v), &format!("disk path with {label}"), Some(want));
        tm("snap_create", with(&base("snap_create"), 0, v), &format!("disk path with {label}"), Some(want));
    }
    for (v, label, want) in bad_paths.iter().step_by(3) {
        tm("mkimage", with(&base("mkimage"), 2, v), &format!("disk path with {label}"), Some(want));
        tm("resize", with(&base("resize"), 0, v), &format!("disk path with {label}"), Some(want));
        tm("cpds", with(&base("cpds"), 0, v), &format!("disk path with {label}"), Some(want));
    }
    for action in ["delete", "snap_delete", "snap_revert", "mvds", "ln"] {
        let idx = usize::from(action == "ln");
        let (v, label, want) = &bad_paths[1];
        tm(action, with(&base(action), idx, v), &format!("disk path with {label}"), Some(want));
        let (v, label, want) = &bad_paths[12];
        tm(action, with(&base(action), idx, v), &format!("disk path with {label}"), Some(want));
    }
    for action in ["clone.ssh", "ln.ssh"] {
        let dots = format!("{h}:{}/datastores/0/{vm}/../../../../x/disk.0", fx.e.dir.path().display());
        tm(action, with(&base(action), 1, &dots), "disk path with `..`", Some(".."));
        tm(action, with(&base(action), 1, &format!("{h}:relative/disk.0")), "relative disk path", None);
    }
    for action in ["cpds.ssh", "mvds.ssh", "resize.ssh", "delete.ssh"] {
        let dots = format!("{h}:{}/datastores/0/{vm}/../../../../x/disk.0", fx.e.dir.path().display());
        tm(action, with(&base(action), 0, &dots), "disk path with `..`", Some(".."));
        tm(
            action,
            with(&base(action), 0, &bad_paths[0].0),
            "disk path without a colon",
            Some("expected host:path"),
        );
    }
    tm("resize.ssh", strings(&[&format!("{h}:relative/disk.0"), "64", &vm]), "relative path, no dsid", None);

    // Malformed image sources (fe:SOURCE).
    let bad_sources: Vec<(String, &str, Option<&str>)> = vec![
        (fx.img.to_string(), "no host", Some("expected host:path")),
        (format!(":{}", fx.img), "empty host", Some("invalid host")),
        (format!("front end:{}", fx.img), "host with a space", Some("invalid host")),
        (
            format!("-oProxyCommand=touch {MARKER}:{}", fx.img),
            "host that is an ssh option",
            Some("invalid host"),
        ),
        ("frontend:".into(), "empty source", Some("invalid path")),
        (format!("frontend:{}", fx.img.name), "no pool", Some("invalid image spec")),
        (format!("frontend:{}/a/b/c", fx.pool), "four components", Some("invalid image spec")),
        (format!("frontend:{}\n", fx.img), "newline", Some("invalid path")),
        (format!("frontend:{}/{}", fx.pool, "x".repeat(300)), "a 300-byte name", Some("too long")),
        (format!("frontend:{}/..", fx.pool), "`..` as the name", None),
        (format!("frontend:{}@", fx.img), "an empty snapshot", Some("invalid snapshot name")),
        (format!("frontend:{} $(touch {MARKER})", fx.img), "$()", None),
        (format!("frontend:{}`touch {MARKER}`", fx.img), "backticks", None),
        (format!("frontend:{};touch {MARKER}", fx.img), "`;`", None),
        (format!("frontend:{}'\"", fx.img), "quotes", None),
        (format!("frontend:no-such-pool/{}", fx.img.name), "a pool that does not exist", None),
    ];
    for (v, label, want) in &bad_sources {
        tm("clone", with(&base("clone"), 0, v), &format!("source with {label}"), *want);
    }
    for (v, label, want) in bad_sources.iter().take(9).step_by(2) {
        tm("ln", with(&base("ln"), 0, v), &format!("source with {label}"), *want);
        tm("clone.ssh", with(&base("clone.ssh"), 0, v), &format!("source with {label}"), *want);
    }
    tm("ln.ssh", with(&base("ln.ssh"), 0, &bad_sources[5].0), "source without a pool", bad_sources[5].2);

    // Ids: VM, datastore, snapshot.
    let bad_ids: Vec<(&str, &str)> = vec![
        ("", "empty"),
        ("abc", "non-numeric"),
        ("-1", "negative"),
        ("99999999999999999999", "huge"),
        ("2147483648", "past 2^31-1"),
        (" 1", "with a space"),
        ("1.5", "fractional"),
        ("0x10", "hex"),
        ("+5", "with a plus"),
        ("$(touch pwned)", "$()"),
        ("`touch pwned`", "backticks"),
        ("1\n", "newline"),
    ];
    for (v, label) in &bad_ids {
        tm("clone", with(&base("clone"), 2, v), &format!("{label} VM id"), Some("invalid VM id"));
        tm(
            "clone",
            with(&base("clone"), 3, v),
            &format!("{label} datastore id"),
            Some("invalid datastore id"),
        );
        tm(
            "snap_create",
            with(&base("snap_create"), 1, v),
            &format!("{label} snapshot id"),
            Some("invalid snapshot id"),
        );
    }
    let vm_ix = [
        ("clone.ssh", 2),
        ("cpds", 3),
        ("cpds.ssh", 3),
        ("delete", 1),
        ("delete.ssh", 1),
        ("failmigrate", 3),
        ("ln", 2),
        ("ln.ssh", 2),
        ("mkimage", 3),
        ("mkswap", 2),
        ("mv", 2),
        ("mvds", 2),
        ("mvds.ssh", 2),
        ("postmigrate", 3),
        ("premigrate", 3),
        ("resize", 2),
        ("resize.ssh", 2),
        ("snap_create_live", 2),
        ("snap_delete", 2),
        ("snap_revert", 2),
    ];
    for (action, at) in vm_ix {
        tm(action, with(&base(action), at, "-1"), "negative VM id", Some("invalid VM id"));
    }
    for (action, at) in [
        ("cpds", 4),
        ("delete", 2),
        ("mkimage", 4),
        ("mkswap", 3),
        ("mv", 3),
        ("mvds", 3),
        ("premigrate", 4),
        ("resize", 3),
        ("snap_revert", 3),
    ] {
        tm(
            action,
            with(&base(action), at, "99999999999999999999"),
            "huge datastore id",
            Some("invalid datastore"),
        );
    }
    for (action, at) in [
        ("clone", 2),
        ("cpds", 3),
        ("delete", 1),
        ("ln", 2),
        ("mkimage", 3),
        ("resize", 2),
        ("snap_create", 2),
        ("snap_revert", 2),
    ] {
        let v = unknown.as_str();
        tm(
            action,
            with(&base(action), at, v),
            "a VM oned does not know",
            Some("Error getting virtual machine"),
        );
    }
    for (action, at) in [("clone", 3), ("cpds", 4), ("delete", 2), ("mkimage", 4), ("snap_create", 3)] {
        let v = unknown.as_str();
        tm(
            action,
            with(&base(action), at, v),
            "a datastore oned does not know",
            Some("Error getting datastore"),
        );
    }
    for v in ["abc", "-2", "1.5", "99999999999999999999", "1;id"] {
        tm("cpds", with(&base("cpds"), 2, v), &format!("snapshot id {v:?}"), Some("invalid snapshot id"));
    }
    for (action, v) in [
        ("snap_create_live", "abc"),
        ("snap_delete", "-1"),
        ("snap_revert", "x"),
        ("snap_delete", "../0"),
        ("snap_revert", "99999999999999999999"),
    ] {
        tm(action, with(&base(action), 1, v), &format!("snapshot id {v:?}"), Some("invalid snapshot id"));
    }
    tm("snap_revert", with(&base("snap_revert"), 1, "77"), "a snapshot the disk lacks", None);
    tm("cpds", with(&base("cpds"), 2, "77"), "save-as of a snapshot the disk lacks", None);
    tm(
        "cpds.ssh",
        with(&base("cpds.ssh"), 2, "3"),
        "save-as of a snapshot (unsupported)",
        Some("not supported"),
    );

    // Sizes and formats.
    let bad_sizes: Vec<(&str, &str)> = vec![
        ("-1", "negative"),
        ("abc", "non-numeric"),
        ("1G", "with a unit"),
        ("1.5", "fractional"),
        ("+16", "with a plus"),
        ("", "empty"),
        ("99999999999999999999", "huge"),
        ("1099511627777", "past 2^40 MiB"),
        ("16 ", "with a space"),
        ("$(touch pwned)", "$()"),
    ];
    for (v, label) in &bad_sizes {
        tm("mkimage", with(&base("mkimage"), 0, v), &format!("{label} size"), Some("invalid size"));
        tm("resize", with(&base("resize"), 1, v), &format!("{label} size"), Some("invalid size"));
    }
    for (v, label) in bad_sizes.iter().step_by(2) {
        tm("mkswap", with(&base("mkswap"), 0, v), &format!("{label} size"), Some("invalid size"));
        tm("resize.ssh", with(&base("resize.ssh"), 1, v), &format!("{label} size"), Some("invalid size"));
    }
    tm("mkimage", with(&base("mkimage"), 0, "0"), "size 0", Some("invalid size 0"));
    tm("mkswap", with(&base("mkswap"), 0, "0"), "size 0", Some("invalid size 0"));
    for (v, label) in [
        (format!("raw;touch {MARKER}"), "`;`"),
        (String::new(), "empty"),
        ("../raw".into(), "`..`"),
        ("qcow2 x".into(), "a space"),
        (format!("$(touch {MARKER})"), "$()"),
    ] {
        tm("mkimage", with(&base("mkimage"), 1, &v), &format!("format with {label}"), Some("invalid format"));
    }

    // Image specs of new images (save-as) and persistent targets.
    for (v, label, want) in [
        (format!("one-{unknown}"), "no pool", Some("invalid image spec")),
        (format!("{}/a/b/c", fx.pool), "four components", Some("invalid image spec")),
        (format!("{}/", fx.pool), "an empty name", Some("invalid image name")),
        (format!("{}/x\ny", fx.pool), "a newline", Some("invalid image name")),
        (format!("{}/{}", fx.pool, "y".repeat(256)), "a 256-byte name", Some("too long")),
        (fx.pimg.to_string(), "an image that exists", None),
    ] {
        tm("cpds", with(&base("cpds"), 1, &v), &format!("new image with {label}"), want);
        if want.is_some() {
            tm("cpds.ssh", with(&base("cpds.ssh"), 1, &v), &format!("new image with {label}"), want);
            tm("mvds.ssh", with(&base("mvds.ssh"), 1, &v), &format!("target with {label}"), want);
        }
    }
    tm("mvds", with(&base("mvds"), 1, "nopool"), "source without a pool", Some("invalid image spec"));

    // Hostile documents from oned: DISK attributes, datastores, VMs.
    let bad_disk = |d: u32| (pb(d), bad_vm.clone());
    let (p0, v0) = bad_disk(0);
    tm("clone", vec![src.clone(), p0, v0, ds.clone()], "DISK SIZE -5", Some("invalid size"));
    let (p6, v6) = bad_disk(6);
    tm("clone", vec![src.clone(), p6, v6, ds.clone()], "DISK ORIGINAL_SIZE abc", Some("invalid size"));
    let (p5, v5) = bad_disk(5);
    tm(
        "snap_create",
        vec![p5.clone(), "0".into(), v5.clone(), ds.clone()],
        "a DISK of TYPE fs",
        Some("not supported on disk type"),
    );
    tm(
        "snap_revert",
        vec![p5.clone(), "0".into(), v5.clone(), ds.clone()],
        "a DISK of TYPE fs",
        Some("not supported on disk type"),
    );
    tm(
        "snap_delete",
        vec![p5, "0".into(), v5, ds.clone()],
        "a DISK of TYPE fs",
        Some("not supported on disk type"),
    );
    let (p8, v8) = bad_disk(8);
    tm(
        "mkimage",
        vec!["16".into(), "raw".into(), p8.clone(), v8.clone(), sys.clone()],
        "a volatile DISK with a SOURCE",
        Some("has a SOURCE"),
    );
    tm(
        "mkswap",
        vec!["16".into(), p8, v8, sys.clone()],
        "a volatile DISK with a SOURCE",
        Some("has a SOURCE"),
    );
    tm("resize", vec![p(0), "0".into(), vm.clone(), ds.clone()], "size 0", Some("invalid size 0"));
    let long = format!("{h}:/var/lib/one/datastores/0/{vm}/{}disk.0", "a/".repeat(2100));
    tm(
        "snap_create",
        vec![long, "0".into(), vm.clone(), ds.clone()],
        "a path longer than PATH_MAX",
        Some("PATH_MAX"),
    );
    for (id, label) in [(fx.dup_vm, "a DISK with two SOURCEs"), (fx.dup_id_vm, "two DISKs with DISK_ID 0")] {
        let (pd, vd) = (fx.disk_path(id, 0), id.to_string());
        tm(
            "clone",
            vec![src.clone(), pd.clone(), vd.clone(), ds.clone()],
            label,
            Some("refusing an ambiguous document"),
        );
        tm("delete", vec![pd, vd, ds.clone()], label, Some("refusing an ambiguous document"));
    }
    let (p1, v1) = bad_disk(1);
    tm("snap_create", vec![p1.clone(), "0".into(), v1.clone(), ds.clone()], "DISK SOURCE nopool", None);
    tm("delete", vec![p1, v1, ds.clone()], "DISK SOURCE nopool", Some("invalid image spec"));
    let (p4, v4) = bad_disk(4);
    tm(
        "snap_create",
        vec![p4.clone(), "0".into(), v4.clone(), ds.clone()],
        "DISK SOURCE with backticks",
        None,
    );
    tm(
        "snap_create_live",
        vec![p4.clone(), "1".into(), v4.clone(), ds.clone()],
        "DISK SOURCE with backticks",
        None,
    );
    tm("resize", vec![p4, "64".into(), v4, ds.clone()], "DISK SOURCE with backticks", None);
    let (p2, v2) = bad_disk(2);
    let bad_pool_ds = DS_BAD_POOL.to_string();
    tm(
        "mkimage",
        vec!["16".into(), "raw".into(), p2, v2, bad_pool_ds],
        "datastore POOL_NAME a/b/c",
        Some("POOL_NAME"),
    );
    let (p3, v3) = bad_disk(3);
    tm(
        "mkimage",
        vec!["16".into(), "raw".into(), p3, v3, sys.clone()],
        "DISK FS with `;`",
        Some("unsupported"),
    );
    let nd = DS_NO_DATA_POOL.to_string();
    tm("mkimage", with(&base("mkimage"), 4, &nd), "EC_POOL_NAME that does not exist", None);
    tm("mkswap", with(&base("mkswap"), 3, &nd), "EC_POOL_NAME that does not exist", None);
    tm("cpds", with(&base("cpds"), 4, &nd), "EC_POOL_NAME that does not exist", None);
    let be = DS_BAD_EXECUTION.to_string();
    for action in ["clone", "delete", "mkimage", "snap_create"] {
        let args = base(action);
        tm(action, with(&args, args.len() - 1, &be), "RBDX_EXECUTION bogus", Some("EXECUTION"));
    }
    let gd = DS_GARBAGE.to_string();
    tm("clone", with(&base("clone"), 3, &gd), "a datastore document that is not XML", Some("malformed XML"));
    tm(
        "delete",
        with(&base("delete"), 2, &gd),
        "a datastore document that is not XML",
        Some("malformed XML"),
    );
    let bp = DS_BAD_POOL.to_string();
    let dir_path = format!("{h}:{vm_dir}");
    tm("delete", vec![dir_path, vm.clone(), bp], "VM directory on a datastore with POOL_NAME a/b/c", None);
    let bb = DS_BAD_BRIDGE.to_string();
    let elsewhere = format!("otherhost:/var/lib/one//datastores/0/{vm}/disk.0");
    tm(
        "cpds",
        vec![elsewhere, new_img.clone(), "-1".into(), vm.clone(), bb],
        "undeployed VM, BRIDGE_LIST that is an ssh option",
        Some("invalid host"),
    );
    for (id, label, want) in [
        (fx.garbage_vm, "a VM document that is truncated XML", "truncated"),
        (fx.bomb_vm, "a VM document with entity definitions", "DTD"),
    ] {
        let (pg, vg) = (fx.disk_path(id, 0), id.to_string());
        tm("clone", vec![src.clone(), pg.clone(), vg.clone(), ds.clone()], label, Some(want));
        tm("snap_create", vec![pg, "0".into(), vg, ds.clone()], label, Some(want));
    }

    // VM directories (mv, pre/postmigrate, failmigrate).
    // (directory, label, what mv says: its host:path parsing catches some first)
    let unsafe_dirs: Vec<(String, &str, &str)> = vec![
        ("/".into(), "/", "unsafe path"),
        ("/var".into(), "a shallow directory", "unsafe path"),
        ("relative/datastores/0/1".into(), "a relative path", "unsafe path"),
        (format!("/var/lib/one/datastores/0/{vm}/../../../../../etc"), "`..`", "`..` component"),
        (format!("/var/lib/one/datastores/0/{vm}\n"), "a newline", "invalid path"),
    ];
    for (d, label, mv_says) in &unsafe_dirs {
        tm(
            "premigrate",
            with(&base("premigrate"), 2, d),
            &format!("VM directory {label}"),
            Some("unsafe path"),
        );
        tm("mv", with(&base("mv"), 1, &format!("otherhost:{d}")), &format!("target {label}"), Some(mv_says));
    }
    tm("postmigrate", with(&base("postmigrate"), 2, "/"), "VM directory /", Some("unsafe path"));
    for (v, label) in [
        (format!("-oProxyCommand=touch {MARKER}"), "an ssh option"),
        ("a b".into(), "a space"),
        (String::new(), "empty"),
        (format!("h;touch {MARKER}"), "`;`"),
    ] {
        tm(
            "premigrate",
            with(&base("premigrate"), 0, &v),
            &format!("source host {label}"),
            Some("invalid host"),
        );
        tm(
            "postmigrate",
            with(&base("postmigrate"), 1, &v),
            &format!("destination host {label}"),
            Some("invalid host"),
        );
    }
    tm("mv", with(&base("mv"), 0, "otherhost"), "source without a path", Some("expected host:path"));
    tm("mv", with(&base("mv"), 2, "abc"), "non-numeric VM id", Some("invalid VM id"));
    let ssh_opt = format!("-oProxyCommand=touch {MARKER}");
    tm(
        "failmigrate",
        with(&base("failmigrate"), 0, &ssh_opt),
        "source host an ssh option",
        Some("invalid host"),
    );
    tm("failmigrate", with(&base("failmigrate"), 2, "/"), "VM directory /", Some("unsafe path"));
    tm("failmigrate", with(&base("failmigrate"), 3, "abc"), "non-numeric VM id", Some("invalid VM id"));
    tm("delete.ssh", with(&base("delete.ssh"), 1, "abc"), "non-numeric VM id", Some("invalid VM id"));
    tm("mvds", with(&base("mvds"), 3, "abc"), "non-numeric datastore id", Some("invalid datastore id"));
    tm(
        "context",
        strings(&[&format!("$(touch {MARKER})"), &format!("`touch {MARKER}`"), "a\nb", &vm, &sys]),
        "$(), backticks and newlines",
        None,
    );

    // stdin: the VM document of pre/postmigrate, the driver message of monitor.
    let bad_vm_doc = &fx.bad_vm_doc;
    let mut stdin_tm = |action: &str, args: &[String], stdin: Vec<u8>, label: &str, want: Option<&str>| {
        k.add("tm", format!("{action}: {label}"), fx.tm(action, args), stdin, Contract::Stderr, want);
    };
    let pre = &base("premigrate");
    stdin_tm("premigrate", pre, b"%%% not base64".to_vec(), "stdin not base64", Some("not base64"));
    stdin_tm("premigrate", pre, b64("<VM><ID>1</ID><TEMPLATE>"), "stdin truncated XML", Some("truncated"));
    stdin_tm("premigrate", pre, b64("<DATASTORE/>"), "stdin not a VM document", Some("expected a VM"));
    stdin_tm(
        "premigrate",
        pre,
        b64("<!DOCTYPE VM [<!ENTITY a \"a\">]><VM>&a;</VM>"),
        "stdin with entity definitions",
        Some("DTD"),
    );
    stdin_tm("premigrate", pre, b64(bad_vm_doc), "TM_MAD that is a path", Some("invalid TM_MAD"));
    let shell_tm = bad_vm_doc.replace("../../../../bin/sh", &format!("sh;touch {MARKER}"));
    stdin_tm("postmigrate", &base("postmigrate"), b64(&shell_tm), "TM_MAD with `;`", Some("invalid TM_MAD"));
    let mon = &base("monitor");
    stdin_tm("monitor", mon, Vec::new(), "empty stdin", None);
    stdin_tm("monitor", mon, b"%%%".to_vec(), "stdin not base64", Some("not base64"));
    stdin_tm("monitor", mon, message(""), "no DATASTORE", Some("no DATASTORE"));
    stdin_tm(
        "monitor",
        &strings(&["abc"]),
        message(&fx.e.system_ds(0, true)),
        "datastore id abc",
        Some("invalid"),
    );
    let doc = fx.e.system_ds(0, true);
    let pool_cdata = format!("<POOL_NAME><![CDATA[{}]]>", fx.pool);
    for (v, label) in [("a/b", "a/b"), ("no-such-pool", "a pool that does not exist"), ("x\ny", "a newline")]
    {
        let d = doc.replace(&pool_cdata, &format!("<POOL_NAME><![CDATA[{v}]]>"));
        stdin_tm("monitor", mon, message(&d), &format!("POOL_NAME {label}"), None);
    }
    let ec_cdata = format!("<EC_POOL_NAME><![CDATA[{}]]>", fx.ec);
    let d = doc.replace(&ec_cdata, "<EC_POOL_NAME><![CDATA[no-such-pool]]>");
    stdin_tm("monitor", mon, message(&d), "EC_POOL_NAME that does not exist", None);
    let big = vec![b'A'; 20 << 20];
    stdin_tm("monitor", mon, big, "20 MiB on stdin", Some("too large"));
}

/// The datastore actions: stdin (base64, XML), argv, missing and hostile fields.
fn ds_cases(fx: &Fx, k: &mut Corpus) {
    let new_id = fx.unknown.to_string();
    let ds_doc = fx.e.image_ds(IMAGE_DS, true, &[]);
    let msg = |image: &[(&str, &str)]| message(&format!("{}{ds_doc}", image_xml(image)));
    let msg_ds = |image: &[(&str, &str)], ds: &str| message(&format!("{}{ds}", image_xml(image)));
    let mut ds = |action: &str, args: &[&str], stdin: Vec<u8>, label: &str, want: Option<&str>| {
        let mut cmd = fx.cmd(&["ds", action]);
        cmd.args(args);
        k.add("ds", format!("{action}: {label}"), cmd, stdin, Contract::Stderr, want);
    };
    let id = [new_id.as_str()];
    let img = fx.img.to_string();

    // stdin that is not a driver message.
    ds("rm", &id, Vec::new(), "empty stdin", None);
    ds("rm", &id, b" \n\t\n".to_vec(), "whitespace on stdin", None);
    ds("cp", &id, b"%%% not base64".to_vec(), "stdin not base64", Some("not base64"));
    ds("cp", &id, b"YWJjZ".to_vec(), "base64 of a bad length", Some("not base64"));
    ds("cp", &id, b"Y=Q=".to_vec(), "base64 with inner padding", Some("not base64"));
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let garbage = rbdx_one::base64::encode(&garbage).into_bytes();
    ds("mkfs", &id, garbage, "base64 of binary garbage", Some("not UTF-8"));
    ds("mkfs", &id, b64("hello, world"), "base64 of plain text", None);
    ds("rm", &id, b64("<DS_DRIVER_ACTION_DATA><IMAGE>"), "truncated XML", Some("truncated"));
    let half = format!("<DS_DRIVER_ACTION_DATA>{}", image_xml(&[("SOURCE", &img)]));
    let half = format!("{half}{}", &ds_doc[..ds_doc.len() / 2]);
    ds("rm", &id, b64(&half), "XML cut in the middle of the datastore", None);
    ds("rm", &id, b64("<VM/>"), "another document", Some("expected DS_DRIVER_ACTION_DATA"));
    ds("rm", &id, b64("<DS_DRIVER_ACTION_DATA/><X/>"), "two root elements", None);
    ds("mkfs", &id, message(""), "no DATASTORE", Some("no DATASTORE"));
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">\
         <!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\"><!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">]>\
         <DS_DRIVER_ACTION_DATA>{}{ds_doc}</DS_DRIVER_ACTION_DATA>",
        image_xml(&[("SOURCE", "&d;")]).replace("<![CDATA[&d;]]>", "&d;")
    );
    ds("rm", &id, b64(&bomb), "billion laughs", Some("DTD"));
    let xxe = format!(
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><DS_DRIVER_ACTION_DATA>\
         <IMAGE><SOURCE>&e;</SOURCE></IMAGE>{ds_doc}</DS_DRIVER_ACTION_DATA>"
    );
    ds("rm", &id, b64(&xxe), "external entity", Some("DTD"));
    let undefined =
        format!("<DS_DRIVER_ACTION_DATA><IMAGE><SOURCE>&e;</SOURCE></IMAGE>{ds_doc}</DS_DRIVER_ACTION_DATA>");
    ds("rm", &id, b64(&undefined), "undefined entity", None);
    let nest = |n: usize| format!("{}{}", "<A>".repeat(n), "</A>".repeat(n));
    ds("rm", &id, message(&format!("{}{ds_doc}", nest(70))), "70 levels deep", Some("too deep"));
    ds("rm", &id, message(&format!("{}{ds_doc}", nest(200_000))), "200000 levels deep", Some("too deep"));
    ds(
        "rm",
        &id,
        message(&format!("{}{ds_doc}", "<A/>".repeat(250_000))),
        "250000 elements",
        Some("too large"),
    );
    let huge_source = format!("{}/{}", fx.pool, "n".repeat(11 << 20));
    ds("rm", &id, msg(&[("SOURCE", &huge_source)]), "an 11 MiB SOURCE", Some("too long"));
    let huge = b64(&format!("<DS_DRIVER_ACTION_DATA>{}", nest((48 << 20) / 7)));
    ds("rm", &id, huge, "64 MiB of base64 (nested elements)", Some("too large"));
    let nul_ref = format!(
        "<DS_DRIVER_ACTION_DATA><IMAGE><SOURCE>{img}&#0;</SOURCE></IMAGE>{ds_doc}</DS_DRIVER_ACTION_DATA>"
    );
    ds("rm", &id, b64(&nul_ref), "NUL as &#0;", None);
    ds(
        "rm",
        &id,
        msg(&[("SOURCE", &format!("{img}\0x"))]),
        "a raw NUL byte in SOURCE",
        Some("invalid image name"),
    );

    // argv.
    let m = msg(&[("SOURCE", &img), ("TARGET_SNAPSHOT", "77")]);
    ds("rm", &[], m.clone(), "no id", Some("wrong number of arguments"));
    ds("rm", &["1", "2", "3"], m.clone(), "three arguments", Some("wrong number of arguments"));
    for v in ["x", "-1", "99999999999999999999", "1 2", "$(touch pwned)", ""] {
        ds("snap_revert", &[v], m.clone(), &format!("id {v:?}"), Some("invalid id"));
    }
    ds("../../../bin/sh", &id, m.clone(), "an action name that is a path", Some("unknown datastore action"));
    ds("rm", &["1", "2"], m.clone(), "an extra argument", Some("wrong number of arguments"));

    // Ambiguous documents: one thing said twice is refused, not read one way.
    let two_sources = format!(
        "<IMAGE><SOURCE><![CDATA[{img}]]></SOURCE><SOURCE><![CDATA[{}/one-{new_id}]]></SOURCE></IMAGE>{ds_doc}",
        fx.pool
    );
    ds("rm", &id, message(&two_sources), "an IMAGE with two SOURCEs", Some("twice"));
    let two_pools = ds_doc.replacen("<TEMPLATE>", "<TEMPLATE><POOL_NAME>a</POOL_NAME>", 1);
    ds("rm", &id, msg_ds(&[("SOURCE", &img)], &two_pools), "a datastore with two POOL_NAMEs", Some("twice"));
    let two_images = format!("{}{}{ds_doc}", image_xml(&[("SOURCE", &img)]), image_xml(&[("SOURCE", &img)]));
    ds("rm", &id, message(&two_images), "two IMAGEs", Some("twice"));
    // Every datastore attribute rbdx reads is checked, whether the action uses it or not.
    for (attr, v) in [
        ("EC_POOL_NAME", "ec/x"),
        ("STAGING_DIR", "relative"),
        ("CEPH_USER", "a b"),
        ("CEPH_KEY", "key"),
        ("CEPH_TRASH", "perhaps"),
        ("LIMIT_TRANSFER_BW", "fast"),
        ("SAFE_DIRS", "x"),
        ("RBDX_NOPE", "1"),
    ] {
        let bad = ds_doc.replacen("<TEMPLATE>", &format!("<TEMPLATE><{attr}><![CDATA[{v}]]></{attr}>"), 1);
        let bad = if ds_doc.contains(&format!("<{attr}>")) {
            // Replace the one the fixture sets instead of adding a second.
            let start = ds_doc.find(&format!("<{attr}>")).unwrap();
            let end = ds_doc.find(&format!("</{attr}>")).unwrap() + attr.len() + 3;
            format!("{}<{attr}><![CDATA[{v}]]></{attr}>{}", &ds_doc[..start], &ds_doc[end..])
        } else {
            bad
        };
        ds(
            "snap_delete",
            &id,
            msg_ds(&[("SOURCE", &img), ("TARGET_SNAPSHOT", "77")], &bad),
            &format!("datastore {attr} {v:?}"),
            Some(attr),
        );
    }
    // What export puts into IMPORT_INFO is checked.
    let exp = |md5: &str, fmt: &str| {
        message(&format!(
            "<IMAGE><SOURCE><![CDATA[{img}]]></SOURCE><SIZE>8</SIZE><TEMPLATE><MD5><![CDATA[{md5}]]></MD5>\
             <FORMAT><![CDATA[{fmt}]]></FORMAT></TEMPLATE></IMAGE>{ds_doc}"
        ))
    };
    ds("export", &id, exp("</MD5><X>", "raw"), "MD5 that is markup", Some("invalid image MD5"));
    ds(
        "export",
        &id,
        exp("d41d8cd98f00b204e9800998ecf8427e", "raw</FORMAT>"),
        "FORMAT that is markup",
        Some("invalid image FORMAT"),
    );

    // Missing fields.
    ds("rm", &id, message(&ds_doc), "no IMAGE", Some("no IMAGE"));
    ds("rm", &id, msg(&[("SIZE", "1")]), "no IMAGE/SOURCE", Some("no IMAGE/SOURCE"));
    ds("rm", &id, msg(&[("SOURCE", "")]), "an empty SOURCE", Some("no IMAGE/SOURCE"));
    ds("mkfs", &id, msg(&[("FS", "ext4")]), "no IMAGE/SIZE", Some("no IMAGE/SIZE"));
    ds("export", &id, msg(&[("SOURCE", &img)]), "no IMAGE/SIZE", Some("no IMAGE/SIZE"));
    ds("snap_delete", &id, msg(&[("SOURCE", &img)]), "no TARGET_SNAPSHOT", Some("no IMAGE/TARGET_SNAPSHOT"));
    for action in ["cp", "clone", "stat"] {
        ds(action, &id, msg(&[("SIZE", "1")]), "no IMAGE/PATH", Some("no IMAGE/PATH"));
    }
    let no_pool = ds_doc.replace(&format!("<POOL_NAME><![CDATA[{}]]></POOL_NAME>", fx.pool), "");
    ds("mkfs", &id, msg_ds(&[("SIZE", "1")], &no_pool), "no POOL_NAME (pool `one` does not exist)", None);
    let bare = format!("<DATASTORE><ID>{IMAGE_DS}</ID></DATASTORE>");
    ds("snap_revert", &id, msg_ds(&[("SOURCE", &img), ("TARGET_SNAPSHOT", "0")], &bare), "no TEMPLATE", None);

    // Hostile values.
    for (v, label, want) in [
        (format!("one-{new_id}"), "no pool", "invalid image spec"),
        (format!("{}/a/b/c", fx.pool), "four components", "invalid image spec"),
        (format!("{}/x\ny", fx.pool), "a newline", "invalid image name"),
        (format!("{}/{}", fx.pool, "z".repeat(300)), "a 300-byte name", "too long"),
        (format!("{img}@"), "an empty snapshot", "invalid snapshot name"),
        (format!("/{}", fx.img.name), "an empty pool", "invalid pool name"),
        (format!("{}/", fx.pool), "an empty name", "invalid image name"),
    ] {
        ds("rm", &id, msg(&[("SOURCE", &v)]), &format!("SOURCE with {label}"), Some(want));
    }
    let sv = |snap: &str| msg(&[("SOURCE", &img), ("TARGET_SNAPSHOT", snap)]);
    for v in ["abc", "-1", "1;touch pwned", "99999999999999999999", "../0"] {
        ds("snap_delete", &id, sv(v), &format!("TARGET_SNAPSHOT {v:?}"), Some("invalid snapshot id"));
    }
    // An image with disk snapshots: flattening to one it lacks is refused (an image
    // without any is taken for a finished flatten being re-run, and succeeds).
    let vol0 = format!("{}/{}", fx.pool, fx.vol(0));
    let sv0 = msg(&[("SOURCE", &vol0), ("TARGET_SNAPSHOT", "77")]);
    ds("snap_revert", &id, sv0.clone(), "a snapshot the image lacks", None);
    ds("snap_flatten", &id, sv0, "a snapshot the image lacks", Some("has no snapshot 77"));
    let shell_src = format!("{}/one-{new_id} $(touch {MARKER})", fx.pool);
    ds("snap_revert", &id, msg(&[("SOURCE", &shell_src), ("TARGET_SNAPSHOT", "0")]), "SOURCE with $()", None);
    ds(
        "snap_flatten",
        &id,
        msg(&[("SOURCE", "nopool"), ("TARGET_SNAPSHOT", "0")]),
        "SOURCE without a pool",
        None,
    );
    for (v, label) in [
        ("-1", "negative"),
        ("abc", "non-numeric"),
        ("0", "zero"),
        ("99999999999999999999", "huge"),
        ("1e3", "exponent"),
        ("$(touch pwned)", "$()"),
    ] {
        ds("mkfs", &id, msg(&[("SIZE", v)]), &format!("{label} SIZE"), Some("invalid size"));
    }
    for v in ["ext4;touch pwned", "../../bin/sh", "ext4 -O x"] {
        ds("mkfs", &id, msg(&[("SIZE", "16"), ("FS", v)]), &format!("FS {v:?}"), Some("unsupported"));
    }
    let with_ds = |id: u32| fx.ds_docs[&id].clone();
    let size16 = [("SIZE", "16")];
    ds("mkfs", &id, msg_ds(&size16, &with_ds(DS_NO_DATA_POOL)), "EC_POOL_NAME that does not exist", None);
    ds("mkfs", &id, msg_ds(&size16, &with_ds(DS_BAD_POOL)), "POOL_NAME a/b/c", None);
    ds("mkfs", &id, msg_ds(&size16, &with_ds(DS_BAD_EXECUTION)), "RBDX_EXECUTION bogus", Some("EXECUTION"));
    ds(
        "mkfs",
        &id,
        msg_ds(&size16, &with_ds(DS_BAD_BRIDGE)),
        "BRIDGE_LIST an ssh option",
        Some("invalid host"),
    );
    let pool_cdata = format!("<POOL_NAME><![CDATA[{}]]>", fx.pool);
    let tick = ds_doc.replace(&pool_cdata, &format!("<POOL_NAME><![CDATA[`touch {MARKER}`]]>"));
    ds("mkfs", &id, msg_ds(&size16, &tick), "POOL_NAME with backticks", None);
    for (k2, v) in [
        ("RBDX_MAX_CLONE_DEPTH", "-1"),
        ("RBDX_CEPH_TIMEOUT", "abc"),
        ("RBDX_RECLAIM", "$(id)"),
        ("RBDX_ROLLBACK_MAX_MB", "-1"),
        ("RBDX_ROLLBACK_MAX_MB", "1e3"),
        ("RBDX_SAVEAS_COPY_MAX_MB", "-1"),
        ("RBDX_SAVEAS_COPY_MAX_MB", "$(id)"),
    ] {
        let d = fx.e.image_ds(IMAGE_DS, true, &[(k2, v.to_string())]);
        ds("mkfs", &id, msg_ds(&size16, &d), &format!("{k2} {v:?}"), None);
    }
    let conf = fx.e.image_ds(IMAGE_DS, true, &[]).replace(
        &format!("<CEPH_CONF><![CDATA[{}]]>", fx.e.cluster.conf.display()),
        "<CEPH_CONF><![CDATA[/nonexistent/ceph.conf]]>",
    );
    ds("mkfs", &id, msg_ds(&size16, &conf), "CEPH_CONF that does not exist", None);
    ds(
        "clone",
        &id,
        msg(&[("PATH", &format!("{}/one-{new_id}", fx.pool))]),
        "a source that does not exist",
        None,
    );
    ds("clone", &id, msg(&[("PATH", "nopool")]), "a source without a pool", Some("invalid image spec"));
    ds(
        "clone",
        &id,
        msg_ds(&[("PATH", &img)], &with_ds(DS_NO_DATA_POOL)),
        "EC_POOL_NAME that does not exist",
        None,
    );
    let file = fx.file.display().to_string();
    for (v, label, want) in [
        ("disk.raw".to_string(), "a relative path", Some("invalid image path")),
        (format!("/nonexistent $(touch {MARKER})"), "$()", Some("cannot read")),
        ("file:///etc/passwd".into(), "a file: URL", Some("invalid image path")),
        ("http://127.0.0.1:9/x".into(), "a URL nothing serves", Some("cannot download")),
        (fx.e.dir.path().display().to_string(), "a directory", None),
        (
            format!("s3://b/x';touch {MARKER}'"),
            "a delegated URL with quotes",
            Some("characters a download cannot take"),
        ),
        (
            format!("rsync://h/x$(touch {MARKER})"),
            "a delegated URL with $()",
            Some("characters a download cannot take"),
        ),
        ("ssh://h:/x y".into(), "a delegated URL with a space", Some("characters a download cannot take")),
        ("lxd://c/x".into(), "a delegated scheme without downloader.sh", Some("downloader.sh (not found)")),
    ] {
        ds("cp", &id, msg(&[("PATH", &v)]), &format!("PATH {label}"), want);
        if label.contains("delegated") {
            ds("stat", &id, msg(&[("PATH", &v)]), &format!("stat PATH {label}"), want);
        }
    }
    for v in ["fast", "99999999999G", "-5M", "1.5G"] {
        let d = fx.e.image_ds(IMAGE_DS, true, &[("LIMIT_TRANSFER_BW", v.to_string())]);
        ds(
            "cp",
            &id,
            msg_ds(&[("PATH", &file)], &d),
            &format!("LIMIT_TRANSFER_BW {v:?}"),
            Some("LIMIT_TRANSFER_BW"),
        );
    }
    let restricted =
        fx.e.image_ds(IMAGE_DS, true, &[("RESTRICTED_DIRS", fx.e.dir.path().display().to_string())]);
    ds("cp", &id, msg_ds(&[("PATH", &file)], &restricted), "PATH in RESTRICTED_DIRS", Some("Not allowed"));
    ds("stat", &id, msg(&[("PATH", "/nonexistent/disk.raw")]), "PATH that does not exist", None);
    ds("stat", &id, msg(&[("PATH", "http://127.0.0.1:9/")]), "a URL nothing serves", None);
    ds("export", &id, msg(&[("SOURCE", "nopool"), ("SIZE", "8")]), "SOURCE without a pool", None);
    ds("export", &id, msg(&[("SOURCE", &img), ("SIZE", "-1")]), "SIZE -1", Some("invalid size"));
    let gone = format!("{}/one-{new_id}", fx.pool);
    ds("export", &id, msg(&[("SOURCE", &gone), ("SIZE", "8")]), "an image that does not exist", None);
    let mon_pool = |v: &str| ds_doc.replace(&pool_cdata, &format!("<POOL_NAME><![CDATA[{v}]]>"));
    ds("monitor", &id, message(&mon_pool("a/b")), "POOL_NAME a/b", Some("invalid pool name"));
    ds("monitor", &id, message(&mon_pool("no-such-pool")), "POOL_NAME that does not exist", None);
}

/// The Proxmox helper: the request line, every method's parameters, the Ceph block,
/// the import request in the environment.
fn pve_cases(fx: &Fx, k: &mut Corpus) {
    let pv = fx.pve_vm;
    let (vol0, vol1) = (fx.vol(0), fx.vol(1));
    let new_vol = format!("vm-{pv}-disk-7");
    let mut pve = |label: &str, stdin: Vec<u8>, want: Option<&str>| {
        k.add("pve", label.to_string(), fx.cmd(&["pve"]), stdin, Contract::Pve, want);
    };
    let req = |method: &str, params: Value| fx.pve_req(method, params);
    let line = |v: Value| format!("{v}\n").into_bytes();
    let malformed = Some("malformed request");

    // The request line itself.
    pve("empty stdin", Vec::new(), malformed);
    pve("an empty line", b"\n".to_vec(), malformed);
    pve("not JSON", b"hello\n".to_vec(), malformed);
    let full = req("volume_size_info", json!({"volname": vol0}));
    pve("truncated JSON", full[..full.len() / 2].to_vec(), malformed);
    pve("a JSON array", b"[]\n".to_vec(), malformed);
    pve("JSON null", b"null\n".to_vec(), malformed);
    pve("a JSON string", b"\"status\"\n".to_vec(), malformed);
    pve("invalid UTF-8", b"{\"version\":1,\"storeid\":\"\xff\xfe\"}\n".to_vec(), malformed);
    pve("100000 nested arrays", format!("{}\n", "[".repeat(100_000)).into_bytes(), malformed);
    let deep_obj = format!("{}1{}\n", "{\"a\":".repeat(5000), "}".repeat(5000));
    pve("5000 nested objects", deep_obj.into_bytes(), malformed);
    let big = json!({"version": 1, "storeid": "x".repeat(4 << 20), "ceph": fx.ceph, "method": "status", "params": {}});
    pve("a 4 MiB request", line(big), Some("too large"));
    pve("8 MiB without a newline", vec![b' '; 8 << 20], Some("too large"));
    let base =
        |m: &str, p: Value| json!({"version": 1, "storeid": "s", "ceph": fx.ceph, "method": m, "params": p});
    let mut v = base("status", json!({}));
    v["version"] = json!("1");
    pve("version as a string", line(v), malformed);
    for (n, want) in [(json!(2), "update the plugin"), (json!(0), "update the plugin")] {
        let mut v = base("status", json!({}));
        v["version"] = n.clone();
        pve(&format!("version {n}"), line(v), Some(want));
    }
    for n in [json!(-1), json!(99_999_999_999_999_999_999.0), json!(1.5)] {
        let mut v = base("status", json!({}));
        v["version"] = n.clone();
        pve(&format!("version {n}"), line(v), malformed);
    }
    let mut v = base("status", json!({}));
    v.as_object_mut().unwrap().remove("version");
    pve("no version", line(v), malformed);
    let mut v = base("status", json!({}));
    v.as_object_mut().unwrap().remove("ceph");
    pve("no ceph block", line(v), malformed);
    let mut v = base("status", json!({}));
    v.as_object_mut().unwrap().remove("method");
    pve("no method", line(v), malformed);
    let mut v = base("status", json!({}));
    v["extra"] = json!(1);
    pve("an unknown top-level field", line(v), malformed);
    let dup = format!(
        "{{\"version\":1,\"version\":1,\"storeid\":\"s\",\"ceph\":{},\"method\":\"status\",\"params\":{{}}}}\n",
        fx.ceph
    );
    pve("a duplicate field", dup.into_bytes(), malformed);
    for m in ["format_disk", "", "Status", "../status", "status\n"] {
        pve(&format!("method {m:?}"), line(base(m, json!({}))), malformed);
    }
    pve("params of the wrong type", line(base("status", json!(5))), malformed);
    pve("an unknown field in the params of fsid", req("fsid", json!({"x": 1})), malformed);
    pve(
        "an unknown field in the params of alloc_image",
        req("alloc_image", json!({"vmid": pv, "name": new_vol, "size_kib": 1024, "format": "qcow2"})),
        malformed,
    );

    // The ceph block.
    let ceph_req = |c: Value, m: &str, p: Value| fx.pve_req_with(c, m, p);
    let status = |c: Value| ceph_req(c, "status", json!({}));
    pve("ceph without a pool", status(json!({"conf": fx.e.cluster.conf})), malformed);
    pve("ceph with an unknown field", status(fx.ceph_with("secret", json!("x"))), malformed);
    for (p, want) in [
        ("a/b", Some("invalid pool name")),
        ("", Some("invalid pool name")),
        ("x\ny", Some("invalid pool name")),
        ("rbdx@s", Some("invalid pool name")),
        ("no-such-pool", None),
    ] {
        pve(&format!("pool {p:?}"), status(fx.ceph_with("pool", json!(p))), want);
    }
    pve("pool as a number", status(fx.ceph_with("pool", json!(1))), malformed);
    pve("a data pool that does not exist", status(fx.ceph_with("data_pool", json!("no-such-pool"))), None);
    pve(
        "alloc_image with a data pool that does not exist",
        ceph_req(
            fx.ceph_with("data_pool", json!("no-such-pool")),
            "alloc_image",
            json!({"vmid": pv, "name": new_vol, "size_kib": 1024}),
        ),
        None,
    );
    let on_vol0 = |c: Value| ceph_req(c, "volume_size_info", json!({"volname": vol0}));
    pve("namespace a/b", on_vol0(fx.ceph_with("namespace", json!("a/b"))), Some("invalid namespace name"));
    pve("conf that does not exist", on_vol0(fx.ceph_with("conf", json!("/nonexistent/ceph.conf"))), None);
    pve("conf with $()", on_vol0(fx.ceph_with("conf", json!(format!("$(touch {MARKER})")))), None);
    pve("keyring that does not exist", on_vol0(fx.ceph_with("keyring", json!("/nonexistent/k"))), None);
    pve("id with a newline", on_vol0(fx.ceph_with("id", json!("rbdx\nadmin"))), None);
    pve("a negative timeout", on_vol0(fx.ceph_with("timeout", json!(-1))), malformed);
    let rollback = |c: Value| ceph_req(c, "volume_snapshot_rollback", json!({"volname": vol0, "snap": "s1"}));
    pve("a negative rollback bound", rollback(fx.ceph_with("rollback_max_mb", json!(-1))), malformed);
    pve("a rollback bound as text", rollback(fx.ceph_with("rollback_max_mb", json!("1024"))), malformed);
    let huge_t = ceph_req(
        fx.ceph_with("timeout", json!(u64::MAX)),
        "volume_size_info",
        json!({"volname": format!("vm-{pv}-disk-9")}),
    );
    pve("a timeout of 2^64-1 s, a volume that does not exist", huge_t, None);
    let unreachable = fx.ceph_with("mon_host", json!("127.0.0.1:9"));
    let mut unreachable = unreachable;
    unreachable["timeout"] = json!(1);
    unreachable.as_object_mut().unwrap().remove("conf");
    pve("monitors that do not answer", on_vol0(unreachable), None);

    // alloc_image.
    let alloc = |p: Value| req("alloc_image", p);
    pve("alloc_image: vmid -1", alloc(json!({"vmid": -1, "size_kib": 1024})), malformed);
    pve("alloc_image: vmid 2^32", alloc(json!({"vmid": 4_294_967_296u64, "size_kib": 1024})), malformed);
    pve("alloc_image: vmid as a string", alloc(json!({"vmid": pv.to_string(), "size_kib": 1024})), malformed);
    pve("alloc_image: size -1024", alloc(json!({"vmid": pv, "name": new_vol, "size_kib": -1024})), malformed);
    pve("alloc_image: size 1.5", alloc(json!({"vmid": pv, "name": new_vol, "size_kib": 1.5})), malformed);
    pve("alloc_image: size 1e30", alloc(json!({"vmid": pv, "name": new_vol, "size_kib": 1e30})), malformed);
    pve(
        "alloc_image: size 2^64-1 KiB",
        alloc(json!({"vmid": pv, "name": new_vol, "size_kib": u64::MAX})),
        Some("too large"),
    );
    pve("alloc_image: no size", alloc(json!({"vmid": pv, "name": new_vol})), malformed);
    let other = format!("vm-{}-disk-0", pv + 1);
    for (name, label) in [
        (other.as_str(), "another VM's disk"),
        (&format!("base-{pv}-disk-7"), "a base- name"),
        (&format!("vm-{pv}-disk-7/x"), "a /"),
        (&format!("../vm-{pv}-disk-7"), "`..`"),
        (&format!("vm-{pv}-disk-7@s"), "an @"),
        (&format!("vm-{pv}-disk-7.rbdx-new"), "an internal suffix"),
        (&format!("vm-{pv}-"), "nothing after the vmid"),
        (&format!("vm-{pv}x-disk-7"), "a non-numeric vmid"),
        ("", "an empty name"),
    ] {
        pve(
            &format!("alloc_image: name with {label}"),
            alloc(json!({"vmid": pv, "name": name, "size_kib": 1024})),
            Some("illegal name"),
        );
    }
    for (name, label) in [
        (format!("vm-{pv}-disk-7\n"), "a newline"),
        (format!("vm-{pv}-disk-\u{0}7"), "NUL"),
        (format!("vm-{pv}-{}", "d".repeat(300)), "300 bytes"),
        (format!("vm-{pv}-disk 7"), "a space"),
        (format!("vm-{pv}-disk-7\t"), "a tab"),
    ] {
        pve(
            &format!("alloc_image: name with {label}"),
            alloc(json!({"vmid": pv, "name": name, "size_kib": 1024})),
            None,
        );
    }
    pve("alloc_image: a name that exists", alloc(json!({"vmid": pv, "name": vol0, "size_kib": 1024})), None);

    // Volume names on every method that takes one.
    let bad_volnames: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("disk-0".into(), "no owner"),
        ("vm-x-disk-0".into(), "a non-numeric owner"),
        (format!("vm-{pv}-disk-0@s1"), "an @"),
        (format!("vm-{pv}-disk-0.rbdx-new"), "an internal suffix"),
        (format!("vm-{pv}-disk-0/.."), "`..`"),
        (format!("vm-{pv}-disk-0\u{0}"), "NUL"),
        (format!("vm-{pv}-disk-0\n"), "a newline"),
        (format!("vm-{pv}-disk-$(touch {MARKER})"), "$() (no such volume)"),
        (format!("vm-{pv}-disk-`id`"), "backticks (no such volume)"),
        (format!("vm-{pv}-disk-0 ;id"), "a space and ; (no such volume)"),
        (format!("vm-{pv}-disk-'\"q"), "quotes (no such volume)"),
    ];
    for (name, label) in &bad_volnames {
        pve(
            &format!("volume_size_info: volname {label}"),
            req("volume_size_info", json!({"volname": name})),
            None,
        );
    }
    for (name, label) in bad_volnames.iter().step_by(3) {
        pve(
            &format!("volume_resize: volname {label}"),
            req("volume_resize", json!({"volname": name, "size": 8 << 20})),
            None,
        );
        pve(
            &format!("volume_snapshot: volname {label}"),
            req("volume_snapshot", json!({"volname": name, "snap": "s2"})),
            None,
        );
        pve(&format!("create_base: volname {label}"), req("create_base", json!({"volname": name})), None);
        pve(
            &format!("volume_export: volname {label}"),
            req("volume_export", json!({"volname": name, "snap": null})),
            None,
        );
    }
    // Names that PVE would check against one VM but that end in another VM's
    // disk (vol0 belongs to VM pv): refused by the grammar on every method.
    let other_vm = pv + 1;
    for name in [
        format!("vm-{other_vm}-x/{vol0}"),
        format!("vm-{other_vm}-disk-9/{vol0}"),
        format!("vm-{other_vm}-a/b/{vol0}"),
        format!("base-{other_vm}-disk-0/x/{vol0}"),
    ] {
        let v = |extra: Value| {
            let mut p = json!({"volname": name});
            for (k, val) in extra.as_object().unwrap() {
                p[k] = val.clone();
            }
            p
        };
        for (method, params) in [
            ("free_image", v(json!({}))),
            ("volume_size_info", v(json!({}))),
            ("volume_resize", v(json!({"size": 64 << 20}))),
            ("volume_snapshot", v(json!({"snap": "x1"}))),
            ("volume_snapshot_rollback", v(json!({"snap": "s1"}))),
            ("volume_snapshot_delete", v(json!({"snap": "s1"}))),
            ("volume_snapshot_info", v(json!({}))),
            ("create_base", v(json!({}))),
            ("clone_image", v(json!({"vmid": other_vm, "snap": "s1"}))),
            ("rename_volume", v(json!({"target_vmid": other_vm}))),
            ("device_path", v(json!({"snap": null}))),
            ("map_volume", v(json!({"snap": null, "options": []}))),
            ("unmap_volume", v(json!({"snap": null}))),
            ("volume_export", v(json!({"snap": null}))),
        ] {
            pve(
                &format!("{method}: another VM's disk as {name}"),
                req(method, params),
                Some("invalid volume name"),
            );
        }
        let target =
            json!({"volname": format!("vm-{other_vm}-disk-5"), "target_vmid": pv, "target_volname": name});
        pve(
            &format!("rename_volume: target {name}"),
            req("rename_volume", target),
            Some("invalid volume name"),
        );
    }
    pve("free_image: volname with no owner", req("free_image", json!({"volname": "disk-0"})), None);
    pve("free_image: volname with /..", req("free_image", json!({"volname": format!("{vol0}/..")})), None);
    pve("free_image: volname as a number", req("free_image", json!({"volname": 5})), malformed);
    pve(
        "volume_snapshot_info: volname with an @",
        req("volume_snapshot_info", json!({"volname": "vm-1-a@b"})),
        None,
    );
    // volume_snapshot_info of a volume that does not exist answers {} (PVE's API
    // expects an empty hash there): pve-plugin/t/storages.t checks it.

    // Sizes.
    let resize = |size: Value| req("volume_resize", json!({"volname": vol0, "size": size}));
    pve("volume_resize: size -1", resize(json!(-1)), malformed);
    pve("volume_resize: size 1.5", resize(json!(1.5)), malformed);
    pve("volume_resize: size 2^64", resize(json!(18_446_744_073_709_551_616.0)), malformed);
    pve("volume_resize: size as a string", resize(json!("8G")), malformed);
    pve("volume_resize: shrink to 0", resize(json!(0)), Some("refusing to shrink"));
    pve("volume_resize: shrink to 1 MiB", resize(json!(1 << 20)), Some("refusing to shrink"));
    pve("volume_resize: grow to 2^64-1 bytes", resize(json!(u64::MAX)), None);

    // Snapshot names.
    let snap = |m: &str, s: Value| req(m, json!({"volname": vol0, "snap": s}));
    for (s, label) in
        [("", "empty"), ("a/b", "a /"), ("a@b", "an @"), ("a\nb", "a newline"), ("a\u{0}b", "NUL")]
    {
        pve(&format!("volume_snapshot: snap {label}"), snap("volume_snapshot", json!(s)), None);
        pve(&format!("volume_snapshot_delete: snap {label}"), snap("volume_snapshot_delete", json!(s)), None);
    }
    pve(
        "volume_snapshot: a 300-byte snap",
        snap("volume_snapshot", json!("s".repeat(300))),
        Some("too long"),
    );
    pve("volume_snapshot: snap as a number", snap("volume_snapshot", json!(1)), malformed);
    for s in ["nope", "../s1", "s1 $(touch pwned)", "`id`", "__base__"] {
        pve(
            &format!("volume_snapshot_rollback: snap {s:?}"),
            snap("volume_snapshot_rollback", json!(s)),
            None,
        );
    }
    pve("volume_export: a snapshot that does not exist", snap("volume_export", json!("nope")), None);

    // Templates, clones, renames.
    pve(
        "create_base: a volume with snapshots",
        req("create_base", json!({"volname": vol0})),
        Some("remove the"),
    );
    let clone = |p: Value| req("clone_image", p);
    pve(
        "clone_image: not a template, no snap",
        clone(json!({"volname": vol0, "vmid": pv})),
        Some("not a template"),
    );
    pve(
        "clone_image: a snap that does not exist",
        clone(json!({"volname": vol0, "vmid": pv, "snap": "nope"})),
        None,
    );
    pve("clone_image: snap with a /", clone(json!({"volname": vol0, "vmid": pv, "snap": "s/1"})), None);
    pve("clone_image: vmid -1", clone(json!({"volname": vol0, "vmid": -1, "snap": "s1"})), malformed);
    pve(
        "clone_image: a base that does not exist",
        clone(json!({"volname": format!("base-{pv}-disk-9"), "vmid": pv})),
        None,
    );
    let rename = |p: Value| req("rename_volume", p);
    pve(
        "rename_volume: to another VM's name",
        rename(json!({"volname": vol0, "target_vmid": pv, "target_volname": other})),
        Some("does not belong"),
    );
    pve(
        "rename_volume: to a name that exists",
        rename(json!({"volname": vol0, "target_vmid": pv, "target_volname": vol1})),
        Some("already exists"),
    );
    pve(
        "rename_volume: to a name with a /",
        rename(json!({"volname": vol0, "target_vmid": pv, "target_volname": format!("{vol1}/x")})),
        Some("invalid volume name"),
    );
    pve(
        "rename_volume: target_vmid 2^32",
        rename(json!({"volname": vol0, "target_vmid": 4_294_967_296u64})),
        malformed,
    );
    pve(
        "rename_volume: a volume that does not exist",
        rename(json!({"volname": format!("vm-{pv}-disk-9"), "target_vmid": pv})),
        None,
    );
    pve("list_images: vmid -1", req("list_images", json!({"vmid": -1})), malformed);
    pve("list_images: vmid as a string", req("list_images", json!({"vmid": "all"})), malformed);

    // Import: the request in the environment, the stream on stdin.
    let mut import = |label: &str, request: Option<&[u8]>, stdin: Vec<u8>, want: Option<&str>| {
        let mut cmd = fx.cmd(&["pve"]);
        if let Some(r) = request {
            cmd.env("RBDX_PVE_REQUEST", <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(r));
        }
        k.add("pve", format!("volume_import: {label}"), cmd, stdin, Contract::Pve, want);
    };
    let imp = |volname: &str, allow: bool| {
        let r = req("volume_import", json!({"volname": volname, "allow_rename": allow}));
        r[..r.len() - 1].to_vec()
    };
    // A volume name per case (disk-8, -9, …): one wrongly made cannot mask the next.
    let next = std::cell::Cell::new(8);
    let fresh_vol = || {
        next.set(next.get() + 1);
        format!("vm-{pv}-disk-{}", next.get() - 1)
    };
    let stream = |size: u64, data: usize| {
        let mut v = size.to_le_bytes().to_vec();
        v.resize(8 + data, 1u8);
        v
    };
    import("a volume that exists", Some(&imp(&vol0, false)), stream(4096, 4096), Some("already exists"));
    import("volname with /..", Some(&imp(&format!("{}/..", fresh_vol()), false)), stream(4096, 4096), None);
    import("volname of no owner", Some(&imp("disk-7", true)), stream(4096, 4096), None);
    import("a 3-byte stream", Some(&imp(&fresh_vol(), false)), vec![1, 2, 3], Some("size header"));
    import("an empty stream", Some(&imp(&fresh_vol(), false)), Vec::new(), Some("size header"));
    let short = stream(1 << 20, 10);
    import(
        "a stream shorter than its header says",
        Some(&imp(&fresh_vol(), false)),
        short,
        Some("stream ended"),
    );
    import("a size header of 2^64-1", Some(&imp(&fresh_vol(), false)), stream(u64::MAX, 0), None);
    import("an empty request", Some(b""), Vec::new(), malformed);
    import("a request that is not JSON", Some(b"hello"), Vec::new(), malformed);
    let v2 = String::from_utf8_lossy(&imp(&fresh_vol(), false)).replacen("\"version\":1", "\"version\":2", 1);
    import("a request with version 2", Some(v2.as_bytes()), Vec::new(), Some("update"));
    import("a request nested 50000 deep", Some("[".repeat(50_000).as_bytes()), Vec::new(), malformed);
    let no_env = req("volume_import", json!({"volname": fresh_vol(), "allow_rename": false}));
    import("the request on stdin with no stream", None, no_env, Some("size header"));
}

/// The host side (`rbdx remote`): job lines with hostile fields.
fn remote_cases(fx: &Fx, k: &mut Corpus) {
    let cl = &fx.e.cluster;
    let ceph = json!({"conf": cl.conf, "user": cl.id, "key_file": fx.e.key_file, "timeout_secs": 10});
    let tmp = fx.e.dir.path().display().to_string();
    let mut remote = |label: &str, stdin: Vec<u8>, want: Option<&str>| {
        k.add("remote", label.to_string(), fx.cmd(&["remote"]), stdin, Contract::Remote, want);
    };
    let job = |j: Value| format!("{}\n", json!({"protocol": rbdx_one::job::PROTOCOL, "job": j})).into_bytes();
    let malformed = Some("malformed job");
    remote("empty stdin", Vec::new(), malformed);
    remote("not JSON", b"hello\n".to_vec(), malformed);
    remote(
        "protocol 1",
        b"{\"protocol\":1,\"job\":{\"job\":\"remove_dir\",\"path\":{\"path\":\"/x\",\"ds\":0,\"vm\":1}}}\n"
            .to_vec(),
        Some("onehost sync"),
    );
    remote("an unknown job", job(json!({"job": "rm_rf", "path": "/"})), malformed);
    remote(
        "a path without its ids",
        job(json!({"job": "remove_dir", "path": "/var/lib/one/datastores/0/1"})),
        malformed,
    );
    remote("2 MiB without a newline", vec![b' '; 2 << 20], Some("too large"));
    remote("100000 nested arrays", format!("{}\n", "[".repeat(100_000)).into_bytes(), malformed);
    let vm = fx.unknown;
    let vmp = |path: &str, vm: u32| json!({"path": path, "ds": 0, "vm": vm});
    for (path, label, want) in [
        ("/nonexistent-rbdx-hostile".to_string(), "a shallow path", "unsafe path"),
        ("relative/a/b/c".into(), "a relative path", "unsafe path"),
        (format!("{tmp}/a/b/../../../nonexistent"), "`..`", "unsafe path"),
        (format!("{tmp}/a/b\nc"), "a newline", "unsafe path"),
        (format!("{tmp}/0/{}", vm + 1), "another VM's directory", "not the directory of VM"),
        (format!("{tmp}/1/{vm}"), "another datastore's directory", "not the directory of VM"),
        (format!("{tmp}//0/{vm}"), "an unnormalised path", "unnormalised"),
        (format!("{tmp}/0"), "the datastore's directory itself", "not the directory of VM"),
        ("/var/lib/one".into(), "oneadmin's home", "not the directory of VM"),
    ] {
        remote(
            &format!("remove_dir: {label}"),
            job(json!({"job": "remove_dir", "path": vmp(&path, vm)})),
            Some(want),
        );
        remote(
            &format!("send_dir: {label}"),
            job(json!({"job": "send_dir", "path": vmp(&path, vm)})),
            Some(want),
        );
    }
    for (path, label, want) in [
        (format!("{tmp}/0/{vm}"), "the VM directory", "not a disk of VM"),
        (format!("{tmp}/0/{vm}/deployment.0"), "not a disk", "not a disk of VM"),
        (format!("{tmp}/0/{}/disk.0", vm + 1), "another VM's disk", "not a disk of VM"),
        (format!("{tmp}/0/{vm}/disk.0/../../../x/disk.0"), "`..`", "unsafe path"),
    ] {
        remote(
            &format!("resize_file: {label}"),
            job(json!({"job": "resize_file", "path": vmp(&path, vm), "size_mb": 1})),
            Some(want),
        );
        remote(
            &format!("put_file: {label}"),
            job(json!({"job": "put_file", "path": vmp(&path, vm), "size": 0})),
            Some(want),
        );
    }
    remote(
        "receive_dir: a relative path",
        job(json!({"job": "receive_dir", "path": vmp("relative/a/b/c", vm)})),
        Some("unsafe path"),
    );
    remote(
        "resize_file: size -1",
        job(json!({"job": "resize_file", "path": vmp("/a/b/0/1/disk.0", 1), "size_mb": -1})),
        malformed,
    );
    remote(
        "snap_create: a freeze naming a program",
        job(json!({"job": "snap_create", "ceph": ceph, "head": fx.img.to_string(), "snap": "0",
                   "freeze": {"domain": "one-1", "virsh": format!("/bin/sh -c 'touch {MARKER}'")}})),
        malformed,
    );
    remote(
        "snap_create: a timeout of centuries",
        job(
            json!({"job": "snap_create", "ceph": {"conf": "/nonexistent", "timeout_secs": u64::MAX}, "head": fx.img.to_string(), "snap": "0", "freeze": null}),
        ),
        None,
    );
    let img = fx.img.to_string();
    for (head, label, want) in [
        ("nopool", "a head without a pool", Some("invalid image spec")),
        ("rbdx/x\u{0}y", "NUL", Some("invalid image name")),
        ("rbdx/a/b/c", "four components", Some("invalid image spec")),
    ] {
        let j = json!({"job": "snap_create", "ceph": ceph, "head": head, "snap": "0", "freeze": null});
        remote(&format!("snap_create: {label}"), job(j), want);
    }
    let j = json!({"job": "snap_create", "ceph": ceph, "head": img, "snap": "a/b", "freeze": null});
    remote("snap_create: snapshot name with a /", job(j), Some("invalid snapshot name"));
    let target = format!("{}/one-sys-{}-0", fx.pool, fx.unknown);
    let j = json!({"job": "make_image", "ceph": ceph, "target": target, "size_mb": 8, "data_pool": null,
                   "fs": format!("ext4;touch {MARKER}")});
    remote("make_image: fs with `;`", job(j), None);
    let j = json!({"job": "monitor", "ceph": ceph, "pool": "a/b", "ec_pool": null});
    remote("monitor: pool a/b", job(j), None);
    let bad_conf = json!({"conf": "/nonexistent/ceph.conf", "user": cl.id, "key_file": fx.e.key_file, "timeout_secs": 10});
    let j = json!({"job": "remove_image", "ceph": bad_conf, "image": img, "trash_delay": null});
    remote("remove_image: a conf that does not exist", job(j), None);
}

/// The operator commands: bad image specs (usage errors, exit 2) and refused
/// operations on the fixtures (exit 1).
fn cli_cases(fx: &Fx, k: &mut Corpus) {
    let (pool, img, pimg) = (fx.pool.as_str(), fx.img.to_string(), fx.pimg.to_string());
    let new = format!("{pool}/one-{}", fx.unknown);
    let file = fx.file.display().to_string();
    let mut cli = |args: &[&str], label: &str, want: Option<&str>| {
        let first: Vec<&str> = args.iter().take(2).copied().collect();
        k.add(
            "cli",
            format!("{}: {label}", first.join(" ")),
            fx.cli(args),
            Vec::new(),
            Contract::Stderr,
            want,
        );
    };
    let shell = format!("{pool}/$(touch {MARKER})/x/y");
    for (spec, label) in [
        ("no-pool-part", "no pool"),
        ("rbdx/a/b/c", "four components"),
        ("rbdx/x\ny", "a newline"),
        ("rbdx/", "an empty name"),
        ("/x", "an empty pool"),
        ("rbdx/x@", "an empty snapshot"),
        (&shell, "$() and four components"),
    ] {
        cli(&["image", "create", spec, "--size", "1M"], &format!("spec with {label}"), None);
    }
    for s in ["-1G", "12Q", "99999999999999999999", "20000000P", "1.5G", ""] {
        cli(&["image", "create", &new, "--size", s], &format!("size {s:?}"), None);
    }
    cli(&["image", "create", &img, "--size", "1M"], "an image that exists", None);
    cli(
        &["image", "create", &new, "--size", "1M", "--data-pool", "no-such-pool"],
        "a data pool that does not exist",
        None,
    );
    cli(&["image", "create", &new, "--size", "1M", "--timeout", "-1"], "a negative timeout", None);
    cli(&["image", "info", &format!("{pool}/one-{}", fx.unknown)], "an image that does not exist", None);
    cli(&["image", "info", "rbdx/x@a@b"], "two @", None);
    cli(&["image", "clone", &img, &new], "a parent without a snapshot", Some("names no snapshot"));
    cli(&["image", "clone", &format!("{img}@nope"), &new], "a snapshot that does not exist", None);
    cli(&["image", "clone", &format!("{img}@snap"), &pimg], "a child that exists", None);
    cli(&["image", "clone", &format!("{img}@snap"), "rbdx/a/b/c"], "a child with four components", None);
    cli(
        &["image", "copy", &format!("{pool}/one-{}", fx.unknown), &new],
        "a source that does not exist",
        None,
    );
    cli(&["image", "flatten", &format!("{pool}/one-{}", fx.unknown)], "an image that does not exist", None);
    cli(&["image", "resize", &img, "--size", "1M"], "a shrink", Some("refusing to shrink"));
    cli(&["image", "resize", &img, "--size", "16000P"], "16000 PiB", None);
    for (name, label) in [("a/b", "a /"), ("", "an empty name"), ("x\ny", "a newline")] {
        cli(&["image", "rename", &img, name], &format!("to a name with {label}"), Some("invalid image name"));
    }
    cli(&["image", "rename", &img, &fx.pimg.name], "to a name that exists", None);
    cli(&["image", "rm", &img], "an image with clones", None);
    cli(&["image", "ls", "no-such-pool"], "a pool that does not exist", None);
    cli(&["image", "du", &format!("{pool}/one-{}", fx.unknown)], "an image that does not exist", None);
    cli(&["snap", "create", &img], "no snapshot name", Some("names no snapshot"));
    cli(&["snap", "create", &format!("{img}@snap")], "a snapshot that exists", None);
    cli(&["snap", "create", &format!("{img}@a@b")], "two @", None);
    cli(&["snap", "rollback", &format!("{img}@nope")], "a snapshot that does not exist", None);
    cli(&["snap", "rm", &format!("{img}@")], "an empty snapshot name", None);
    cli(&["snap", "ls", &format!("{pool}/one-{}", fx.unknown)], "an image that does not exist", None);
    cli(&["trash", "restore", pool, "no-such-id", "x"], "an id that does not exist", None);
    cli(&["trash", "restore", pool, "no-such-id", "a/b"], "a name with a /", Some("invalid image name"));
    cli(&["trash", "ls", "no-such-pool"], "a pool that does not exist", None);
    cli(&["trash", "purge", "a/b/c"], "a pool with a namespace that does not exist", None);
    cli(&["import", "/nonexistent/disk.raw", &new], "a file that does not exist", None);
    cli(&["import", "http://127.0.0.1:9/x", &new], "a URL nothing serves", None);
    cli(&["import", &file, "rbdx/a/b/c"], "a target with four components", None);
    cli(&["import", &file, &new, "--data-pool", "no-such-pool"], "a data pool that does not exist", None);
    cli(&["import", &file, &new, "--limit", "-5"], "a negative limit", None);
    cli(
        &["import", &file, &new, "--md5", "0123456789abcdef0123456789abcdef"],
        "an MD5 mismatch",
        Some("MD5"),
    );
    cli(&["pool", "df", "no-such-pool"], "a pool that does not exist", None);
    cli(&["bogus", "x"], "an unknown command", None);
    cli(&["tm"], "no TM action", None);
    cli(&["ds"], "no datastore action", None);
}

#[test]
fn hostile_input_fails_in_one_line_and_changes_nothing() {
    let start = Instant::now();
    let fx = Fx::new();
    let c = fx.e.cluster.connect();
    let pools = [fx.pool.as_str(), fx.ec.as_str()];
    let mut k = Corpus::default();
    tm_cases(&fx, &mut k);
    ds_cases(&fx, &mut k);
    pve_cases(&fx, &mut k);
    remote_cases(&fx, &mut k);
    cli_cases(&fx, &mut k);
    let mut per_family: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &k.cases {
        *per_family.entry(case.family).or_default() += 1;
    }
    let total = k.cases.len();

    let before = state(c, &pools, &fx.watched());
    let mut failures = Vec::new();
    for (n, case) in k.cases.into_iter().enumerate() {
        let Case { family, label, cmd, stdin, contract, want } = case;
        let verdict = run(cmd, stdin).and_then(|out| {
            let line = check(contract, &out).map_err(|why| {
                let cut = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(600)]).into_owned();
                format!(
                    "{why}; exit {}; stderr {:?}; stdout {:?}",
                    out.status,
                    cut(&out.stderr),
                    cut(&out.stdout)
                )
            })?;
            match &want {
                Some(w) if !line.contains(w.as_str()) => Err(format!("{line:?} does not say {w:?}")),
                _ => Ok(line),
            }
        });
        match verdict {
            Ok(line) => println!("{n:>4} {family:<6} {label}: {line}"),
            Err(why) => {
                println!("{n:>4} {family:<6} {label}: FAILED: {why}");
                failures.push(format!("[{family}] {label}: {why}"));
            }
        }
    }
    let after = state(c, &pools, &fx.watched());
    let (changed, foreign) = diff(&before, &after, &fx.ids);
    let marker = fx.e.dir.path().join(MARKER);
    println!(
        "{total} cases ({}) in {:.0?}",
        per_family.iter().map(|(f, n)| format!("{f} {n}")).collect::<Vec<_>>().join(", "),
        start.elapsed()
    );

    for f in &foreign {
        let cut: String = f.chars().take(300).collect();
        println!("not this test's (another user of the cluster): {cut}…");
    }
    // Best effort: whatever a case wrongly created goes before the verdict.
    for pool in pools {
        let (b, a) = (&before[&format!("images of {pool}")], &after[&format!("images of {pool}")]);
        for name in a.difference(b).filter(|n| carries(n, &fx.ids)) {
            if let Ok(s) = ImageSpec::new(pool, name) {
                let _ = ops::remove(c, &s, ops::RemoveOptions::default());
            }
        }
    }
    let executed = marker.exists();
    fx.finish();

    assert!(total >= 170, "the corpus has {total} cases");
    assert!(!executed, "a hostile name was executed: {} exists", marker.display());
    assert!(changed.is_empty(), "the corpus changed Ceph:\n{}", changed.join("\n"));
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
}
