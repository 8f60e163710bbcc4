//! OpenNebula test doubles: a faithful stand-in for oned's XML-RPC endpoint (the
//! calls the drivers make, with oned's reply shapes and error texts, and a
//! session check), documents shaped like oned's, and an environment that runs the
//! real `rbdx` binary as oned would run a driver action.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use rbdx_one::xml::{Element, escape};

use crate::TestCluster;

#[derive(Debug, Default)]
struct State {
    dir: Option<PathBuf>,
    vms: HashMap<u32, String>,
    datastores: HashMap<u32, String>,
    images: HashMap<u32, String>,
    hosts: String,
    calls: Vec<String>,
    requests: Vec<String>,
}

/// oned's XML-RPC endpoint, on 127.0.0.1, serving the documents the test gives it.
#[derive(Debug, Clone)]
pub struct OnedDouble {
    /// `http://127.0.0.1:<port>/RPC2`.
    pub endpoint: String,
    /// The session string it accepts (`user:password`).
    pub session: String,
    state: Arc<Mutex<State>>,
}

impl OnedDouble {
    /// Starts one that serves `<dir>/vm-<id>.xml`, `<dir>/datastore-<id>.xml` and
    /// `<dir>/hosts.xml` as they are at each call (for the demo).
    pub fn start_dir(dir: &Path) -> Self {
        let d = Self::start();
        d.state.lock().unwrap().dir = Some(dir.to_path_buf());
        d
    }

    /// Starts it; it serves until the process exits.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}/RPC2", listener.local_addr().unwrap());
        let state =
            Arc::new(Mutex::new(State { hosts: "<HOST_POOL></HOST_POOL>".into(), ..State::default() }));
        let session = "oneadmin:test-password".to_string();
        let (st, sess) = (state.clone(), session.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (st, sess) = (st.clone(), sess.clone());
                std::thread::spawn(move || serve(conn, &st, &sess));
            }
        });
        Self { endpoint, session, state }
    }

    /// Serves `<VM>` document `xml` for VM `id`.
    pub fn set_vm(&self, id: u32, xml: String) {
        self.state.lock().unwrap().vms.insert(id, xml);
    }

    /// Serves `<DATASTORE>` document `xml` for datastore `id`.
    pub fn set_datastore(&self, id: u32, xml: String) {
        self.state.lock().unwrap().datastores.insert(id, xml);
    }

    /// Serves `<IMAGE>` document `xml` for image `id`.
    pub fn set_image(&self, id: u32, xml: String) {
        self.state.lock().unwrap().images.insert(id, xml);
    }

    /// Serves this host pool: `(name, state)` each.
    pub fn set_hosts(&self, hosts: &[(&str, u32)]) {
        let body: String = hosts
            .iter()
            .enumerate()
            .map(|(i, (n, s))| {
                format!("<HOST><ID>{i}</ID><NAME>{n}</NAME><STATE>{s}</STATE><VM_MAD>kvm</VM_MAD></HOST>")
            })
            .collect();
        self.state.lock().unwrap().hosts = format!("<HOST_POOL>{body}</HOST_POOL>");
    }

    /// The methods called so far, as `method(id)`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Every request received so far, verbatim (HTTP headers and body).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn reply(ok: bool, body: &str, code: u32) -> String {
    format!(
        "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data>\
         <value><boolean>{}</boolean></value><value><string>{}</string></value>\
         <value><i4>{code}</i4></value></data></array></value></param></params></methodResponse>",
        u8::from(ok),
        escape(body)
    )
}

fn serve(conn: TcpStream, state: &Mutex<State>, session: &str) {
    let mut r = BufReader::new(conn.try_clone().expect("clone"));
    let mut len = 0usize;
    let mut raw = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        raw.push_str(&line);
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    raw.push_str(&String::from_utf8_lossy(&body));
    state.lock().unwrap().requests.push(raw);
    let call = Element::parse(&String::from_utf8_lossy(&body)).expect("a methodCall");
    let method = call.text_at("methodName").unwrap_or("").to_string();
    let params: Vec<&Element> =
        call.at("params").map(|p| p.children_named("param").collect()).unwrap_or_default();
    let arg = |i: usize| {
        params
            .get(i)
            .and_then(|p| p.at("value"))
            .map(|v| v.children.first().map_or(v.text.clone(), |c| c.text.clone()))
    };
    let id: Option<u32> = arg(1).and_then(|s| s.trim().parse().ok());
    let mut st = state.lock().unwrap();
    st.calls.push(format!("{method}({})", id.map_or(String::new(), |i| i.to_string())));
    let text = if arg(0).as_deref() != Some(session) {
        reply(false, &format!("[{method}] User couldn't be authenticated, aborting call."), 256)
    } else {
        match method.as_str() {
            "one.vm.info" => match id
                .and_then(|i| st.vms.get(&i).cloned().or_else(|| from_dir(&st, &format!("vm-{i}.xml"))))
                .as_deref()
            {
                Some(doc) => reply(true, doc, 0),
                None => reply(
                    false,
                    &format!("[one.vm.info] Error getting virtual machine [{}].", id.unwrap_or(0)),
                    1024,
                ),
            },
            "one.datastore.info" => match id
                .and_then(|i| {
                    st.datastores.get(&i).cloned().or_else(|| from_dir(&st, &format!("datastore-{i}.xml")))
                })
                .as_deref()
            {
                Some(doc) => reply(true, doc, 0),
                None => reply(
                    false,
                    &format!("[one.datastore.info] Error getting datastore [{}].", id.unwrap_or(0)),
                    1024,
                ),
            },
            "one.image.info" => match id.and_then(|i| st.images.get(&i).cloned()).as_deref() {
                Some(doc) => reply(true, doc, 0),
                None => reply(
                    false,
                    &format!("[one.image.info] Error getting image [{}].", id.unwrap_or(0)),
                    1024,
                ),
            },
            "one.datastorepool.info" => {
                let mut ids: Vec<&u32> = st.datastores.keys().collect();
                ids.sort();
                let body: String = ids.into_iter().map(|i| st.datastores[i].clone()).collect();
                reply(true, &format!("<DATASTORE_POOL>{body}</DATASTORE_POOL>"), 0)
            }
            "one.hostpool.info" => {
                reply(true, &from_dir(&st, "hosts.xml").unwrap_or_else(|| st.hosts.clone()), 0)
            }
            other => reply(false, &format!("[{other}] method not served by the test double"), 1024),
        }
    };
    drop(st);
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn from_dir(st: &State, file: &str) -> Option<String> {
    std::fs::read_to_string(st.dir.as_ref()?.join(file)).ok()
}

/// `<NAME>value</NAME>` for each pair, values escaped (as oned wraps them in CDATA).
fn attrs(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>")).collect()
}

/// A DISK of a VM, as attribute pairs (oned's names).
#[derive(Debug, Clone, Default)]
pub struct DiskDoc(pub Vec<(&'static str, String)>);

impl DiskDoc {
    /// Adds or replaces an attribute.
    pub fn with(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.0.retain(|(key, _)| *key != k);
        self.0.push((k, v.into()));
        self
    }
}

/// A VM document: `<VM>` with ID, LCM_STATE, DEPLOY_ID, TEMPLATE/DISK…, and one
/// history record on `host`.
pub fn vm_doc(id: u32, host: &str, lcm_state: u32, disks: &[DiskDoc]) -> String {
    let disks: String = disks.iter().map(|d| format!("<DISK>{}</DISK>", attrs(&d.0))).collect();
    format!(
        "<VM><ID>{id}</ID><UID>0</UID><GID>0</GID><NAME>vm-{id}</NAME><STATE>3</STATE><LCM_STATE>{lcm_state}</LCM_STATE>\
         <DEPLOY_ID>one-{id}</DEPLOY_ID><TEMPLATE>{disks}<VMID><![CDATA[{id}]]></VMID></TEMPLATE>\
         <HISTORY_RECORDS><HISTORY><OID>{id}</OID><SEQ>0</SEQ><HOSTNAME>{host}</HOSTNAME><HID>0</HID>\
         <VM_MAD><![CDATA[kvm]]></VM_MAD><TM_MAD><![CDATA[ceph]]></TM_MAD></HISTORY></HISTORY_RECORDS></VM>"
    )
}

/// A datastore document with these TEMPLATE attributes.
pub fn ds_doc(id: u32, name: &str, kind: u32, template: &[(&str, String)]) -> String {
    // oned repeats the template's drivers at the top (ceph unless it says
    // otherwise); BASE_PATH is oned's (a test may give its own, at the top).
    let get = |k: &str| template.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let base = get("BASE_PATH").unwrap_or_else(|| format!("/var/lib/one//datastores/{id}"));
    let rest: Vec<(&str, String)> = template.iter().filter(|(k, _)| *k != "BASE_PATH").cloned().collect();
    format!(
        "<DATASTORE><ID>{id}</ID><UID>0</UID><NAME>{name}</NAME><DS_MAD><![CDATA[{}]]></DS_MAD>\
         <TM_MAD><![CDATA[{}]]></TM_MAD><BASE_PATH><![CDATA[{base}]]></BASE_PATH>\
         <TYPE>{kind}</TYPE><TEMPLATE>{}</TEMPLATE></DATASTORE>",
        get("DS_MAD").unwrap_or_else(|| "ceph".into()),
        get("TM_MAD").unwrap_or_else(|| "ceph".into()),
        attrs(&rest)
    )
}

/// Everything a driver action needs to run against the test cluster and the
/// oned double: credentials, endpoint, driver config, and a Ceph key file.
#[derive(Debug)]
pub struct OneEnv {
    /// The test cluster.
    pub cluster: TestCluster,
    /// oned's double.
    pub oned: OnedDouble,
    /// A scratch directory (one_auth, config, key file).
    pub dir: tempfile::TempDir,
    /// The rbdx binary.
    pub bin: PathBuf,
    /// The driver config file.
    pub config: PathBuf,
    /// A file with just the restricted client's key (what CEPH_KEY points to).
    pub key_file: PathBuf,
}

impl OneEnv {
    /// An environment with driver config `config` (`KEY = value` lines), on the
    /// test cluster of the environment ([`crate::cluster`]).
    pub fn new(bin: &Path, config: &str) -> Self {
        Self::with_cluster(bin, config, crate::cluster())
    }

    /// [`OneEnv::new`] on `cluster` (a cluster the test started itself).
    pub fn with_cluster(bin: &Path, config: &str, cluster: TestCluster) -> Self {
        let oned = OnedDouble::start();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("one_auth"), format!("{}\n", oned.session)).unwrap();
        let cfg = dir.path().join("rbdx.conf");
        std::fs::write(&cfg, config).unwrap();
        let keyring = std::fs::read_to_string(&cluster.keyring).expect("keyring");
        let key = keyring
            .lines()
            .find_map(|l| l.trim().strip_prefix("key = "))
            .expect("a key in the keyring")
            .to_string();
        let key_file = dir.path().join("client.key");
        std::fs::write(&key_file, key).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        Self { cluster, oned, config: cfg, key_file, bin: bin.to_path_buf(), dir }
    }

    /// The restricted client's key (what must never appear in an output).
    pub fn key(&self) -> String {
        std::fs::read_to_string(&self.key_file).expect("key file").trim().to_string()
    }

    /// Runs Ceph's `rbd` CLI as the admin: test fixtures only (a backup made
    /// the way OpenNebula's backup scripts make one).
    pub fn rbd_admin(&self, args: &[&str]) {
        let ok = Command::new("rbd")
            .args(["--name", "client.admin", "--conf"])
            .arg(&self.cluster.conf)
            .args(args)
            .status()
            .expect("the rbd CLI (ceph-common) for the fixture");
        assert!(ok.success(), "rbd {args:?}");
    }

    /// CEPH_CONF, CEPH_USER and CEPH_KEY as a DISK or datastore carries them.
    pub fn ceph_attrs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CEPH_CONF", self.cluster.conf.display().to_string()),
            ("CEPH_USER", self.cluster.id.clone()),
            ("CEPH_KEY", self.key_file.display().to_string()),
        ]
    }

    /// An image datastore (`ceph`) on the test pool, EC data pool when `ec`.
    pub fn image_ds(&self, id: u32, ec: bool, extra: &[(&str, String)]) -> String {
        let mut t = vec![
            ("DS_MAD", "ceph".to_string()),
            ("TM_MAD", "ceph".to_string()),
            ("DISK_TYPE", "RBD".to_string()),
            ("POOL_NAME", self.cluster.pool.clone()),
            ("BRIDGE_LIST", "localhost".to_string()),
        ];
        if ec {
            t.push(("EC_POOL_NAME", self.cluster.ec_pool.clone()));
        }
        t.extend(self.ceph_attrs());
        // An attribute in `extra` replaces the default of the same name.
        t.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        t.extend(extra.iter().cloned());
        ds_doc(id, &format!("ceph-img-{id}"), 0, &t)
    }

    /// A system datastore (`ceph`) on the test pool, EC data pool when `ec`.
    pub fn system_ds(&self, id: u32, ec: bool) -> String {
        let mut t = vec![
            ("TM_MAD", "ceph".to_string()),
            ("POOL_NAME", self.cluster.pool.clone()),
            ("BRIDGE_LIST", "localhost".to_string()),
        ];
        if ec {
            t.push(("EC_POOL_NAME", self.cluster.ec_pool.clone()));
        }
        t.extend(self.ceph_attrs());
        ds_doc(id, &format!("ceph-sys-{id}"), 1, &t)
    }

    /// A non-persistent (CLONE=YES) or persistent image DISK.
    pub fn image_disk(&self, disk_id: u32, source: &str, clone: bool, ds_id: u32, size_mb: u64) -> DiskDoc {
        let mut d = DiskDoc(self.ceph_attrs());
        for (k, v) in [
            ("DISK_ID", disk_id.to_string()),
            ("SOURCE", source.to_string()),
            ("CLONE", if clone { "YES" } else { "NO" }.to_string()),
            ("PERSISTENT", if clone { "NO" } else { "YES" }.to_string()),
            ("DATASTORE_ID", ds_id.to_string()),
            ("POOL_NAME", self.cluster.pool.clone()),
            ("TYPE", "RBD".to_string()),
            ("DISK_TYPE", "RBD".to_string()),
            ("SIZE", size_mb.to_string()),
            ("ORIGINAL_SIZE", size_mb.to_string()),
            ("TM_MAD", "ceph".to_string()),
            ("DRIVER", "raw".to_string()),
        ] {
            d = d.with(k, v);
        }
        d
    }

    /// A volatile DISK (`fs` with FS, or `swap`).
    pub fn volatile_disk(
        &self,
        disk_id: u32,
        kind: &str,
        fs: Option<&str>,
        ds_id: u32,
        size_mb: u64,
    ) -> DiskDoc {
        let mut d = DiskDoc(self.ceph_attrs())
            .with("DISK_ID", disk_id.to_string())
            .with("TYPE", kind)
            .with("DISK_TYPE", "RBD")
            .with("DATASTORE_ID", ds_id.to_string())
            .with("POOL_NAME", self.cluster.pool.clone())
            .with("SIZE", size_mb.to_string())
            .with("FORMAT", "raw")
            .with("TM_MAD", "ceph");
        if let Some(f) = fs {
            d = d.with("FS", f);
        }
        d
    }

    /// Runs `rbdx ds <action> <id>` as oned's datastore MAD would: `message` (the
    /// inner XML of `DS_DRIVER_ACTION_DATA`) base64 on stdin.
    pub fn ds(&self, action: &str, id: u32, message: &str) -> Output {
        let b64 = rbdx_one::base64::encode(
            format!("<DS_DRIVER_ACTION_DATA>{message}</DS_DRIVER_ACTION_DATA>").as_bytes(),
        );
        self.ds_raw(action, &[&id.to_string()], b64.as_bytes())
    }

    /// Runs `rbdx ds <action> <args…>` with exactly `stdin`.
    pub fn ds_raw(&self, action: &str, args: &[&str], stdin: &[u8]) -> Output {
        crate::run_with_stdin(self.command(&["ds", action]).args(args), stdin)
    }

    /// Runs `rbdx tm <action> <args…>` as oned would, with nothing on stdin.
    pub fn tm(&self, action: &str, args: &[&str]) -> Output {
        self.command(&["tm", action]).args(args).stdin(Stdio::null()).output().expect("run rbdx")
    }

    /// The binary with the OpenNebula environment set (one_auth, endpoint, config).
    pub fn command(&self, first: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(first)
            .env("ONE_AUTH", self.dir.path().join("one_auth"))
            .env("ONE_XMLRPC", &self.oned.endpoint)
            .env("RBDX_ONE_CONFIG", &self.config)
            .env_remove("RBDX_CONF");
        c
    }
}

/// Asserts an action succeeded, showing its stderr if not.
pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "action failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Asserts an action failed with exactly one non-log line on stderr containing
/// `want`, and returns that line.
pub fn assert_fails(out: &Output, want: &str) -> String {
    assert!(
        !out.status.success(),
        "action should have failed; stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let msgs: Vec<&str> = err
        .lines()
        .filter(|l| !["ERROR:", "INFO:", "WARN:", "DEBUG:"].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(msgs.len(), 1, "one failure line expected, got: {err}");
    assert!(msgs[0].contains(want), "{:?} should contain {want:?}", msgs[0]);
    msgs[0].to_string()
}
