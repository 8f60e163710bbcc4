//! `rbdx doctor` on an OpenNebula front-end: the driver config, oned with the
//! configured credentials, every datastore that uses rbdx (`ceph` or `rbdx` as
//! TM_MAD or DS_MAD) checked where its Ceph work runs, and every host: the
//! remotes synced with the same rbdx version, Ceph reachable with each
//! datastore's settings, and on KVM hosts the libvirt secret of CEPH_SECRET
//! holding CEPH_USER's key (compared on the host, never sent or printed).
//!
//! The host side is a [`crate::job::Job::Doctor`] job, run over the same ssh
//! round trip as every action.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rbdx_core::doctor::{self, Finding, PoolUse};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Execution};
use crate::exec::{self, Target};
use crate::job::{CephAccess, Job};
use crate::oned::{Datastore, Host, Oned};

use crate::error::{Context, Error, Result};

/// How long connecting to Ceph may take in a check.
const CONNECT: Duration = Duration::from_secs(10);

/// A pool (and EC data pool) of a datastore, as a job carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CephProbe {
    /// What the findings are about (`datastore 100`); empty: nothing is added.
    pub label: String,
    /// How to reach Ceph on that host.
    pub ceph: CephAccess,
    /// POOL_NAME.
    pub pool: String,
    /// EC_POOL_NAME.
    pub data_pool: Option<String>,
    /// Also make, write and remove a small image (the client's write caps).
    pub write: bool,
}

/// A libvirt secret to compare with a Ceph user's key, on a KVM host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretProbe {
    /// What the finding is about (`datastore 100`).
    pub label: String,
    /// CEPH_SECRET: the libvirt secret's UUID.
    pub uuid: String,
    /// CEPH_USER.
    pub user: String,
    /// CEPH_KEY: the key file, if the datastore names one.
    pub key_file: Option<String>,
}

/// The host side of the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChecks {
    /// The front-end's rbdx version.
    pub version: String,
    /// Ceph checks.
    pub ceph: Vec<CephProbe>,
    /// libvirt secrets.
    pub secrets: Vec<SecretProbe>,
}

/// The checks a host runs (in [`Job::Doctor`]).
pub fn run_host(checks: &HostChecks) -> Vec<Finding> {
    let mut out = Vec::new();
    let mine = env!("CARGO_PKG_VERSION");
    let check = "rbdx is the front-end's version";
    out.push(if mine == checks.version {
        Finding::pass(check, mine)
    } else {
        Finding::fail(
            check,
            format!("{mine} here, {} on the front-end", checks.version),
            "as oneadmin on the front-end: onehost sync --force",
        )
    });
    out.push(qemu_img());
    for p in &checks.ceph {
        let pool = PoolUse { pool: p.pool.clone(), namespace: None, data_pool: p.data_pool.clone() };
        let findings = doctor::cluster(&p.ceph.config(), &[pool], CONNECT, p.write);
        out.extend(findings.into_iter().map(|f| if p.label.is_empty() { f } else { f.under(&p.label) }));
    }
    if !checks.secrets.is_empty() {
        // virsh and the libvirt URI are this host's settings, never the job's.
        match Config::load() {
            Ok(host) => {
                for s in &checks.secrets {
                    out.push(libvirt_secret(s, &host.virsh, &host.libvirt_uri).under(&s.label));
                }
            }
            Err(e) => out.push(Finding::fail("this host's rbdx config is valid", e, "fix it")),
        }
    }
    out
}

/// `qemu-img` is there, with the formats rbdx converts.
pub fn qemu_img() -> Finding {
    let check = "qemu-img is installed with the formats rbdx imports";
    match rbdx_import::qemu_img_formats() {
        Ok(missing) if missing.is_empty() => Finding::pass(check, ""),
        Ok(missing) => Finding::fail(
            check,
            format!("this qemu-img lacks {}", missing.join(", ")),
            "install the distribution's qemu-img (qemu-utils on Debian, qemu-img on EL)",
        ),
        Err(e) => Finding::fail(check, e, "install qemu-utils (Debian) or qemu-img (EL)"),
    }
}

/// The key of `user` as this host has it: the key file, else the keyrings Ceph
/// reads by default.
fn key_of(user: &str, key_file: Option<&str>) -> Result<String, crate::Error> {
    if let Some(k) = key_file {
        let text = std::fs::read_to_string(k).context(format!("cannot read {k}"))?;
        return Ok(text.trim().to_string());
    }
    let section = format!("[client.{user}]");
    for path in [format!("/etc/ceph/ceph.client.{user}.keyring"), "/etc/ceph/ceph.keyring".into()] {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let mut inside = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                inside = line == section;
            } else if let Some(v) = line.strip_prefix("key").map(str::trim_start)
                && inside
                && let Some(v) = v.strip_prefix('=')
            {
                return Ok(v.trim().to_string());
            }
        }
    }
    Err(Error::Failed(format!("no key for client.{user} (no CEPH_KEY, and no /etc/ceph keyring has it)")))
}

fn libvirt_secret(s: &SecretProbe, virsh: &str, uri: &str) -> Finding {
    let check = format!("libvirt secret {} holds the key of client.{}", s.uuid, s.user);
    let key = match key_of(&s.user, s.key_file.as_deref()) {
        Ok(k) => k,
        Err(e) => return Finding::fail(check, e, "set CEPH_KEY on the datastore, or install the keyring"),
    };
    let define = format!(
        "virsh secret-define a <secret ephemeral='no' private='no'> with <uuid>{}</uuid> and usage type ceph, then virsh secret-set-value {} --file <key file>",
        s.uuid, s.uuid
    );
    let out = match run_bounded(
        Command::new(virsh).args(["-c", uri, "secret-get-value", &s.uuid]),
        Duration::from_secs(30),
    ) {
        Ok(o) => o,
        Err(e) => return Finding::fail(check, e, define),
    };
    if !out.status.success() {
        let err = crate::log::one_line(&String::from_utf8_lossy(&out.stderr));
        return Finding::fail(check, format!("virsh secret-get-value failed: {err}"), define);
    }
    if String::from_utf8_lossy(&out.stdout).trim() == key {
        Finding::pass(check, "")
    } else {
        Finding::fail(
            check,
            "the secret holds another key",
            format!("virsh secret-set-value {} --file <client.{}'s key file>", s.uuid, s.user),
        )
    }
}

/// Runs `cmd` with its output captured, killed after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<std::process::Output> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let child =
        rbdx_import::child::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))
            .context(format!("cannot run {name}"))?;
    crate::exec::wait_output(child, limit).context(name)
}

fn label(ds: &Datastore) -> String {
    format!("datastore {} ({})", ds.id().unwrap_or(0), ds.doc.text_at("NAME").unwrap_or(""))
}

fn probe(ds: &Datastore, cfg: &Config, label: String, write: bool) -> CephProbe {
    let s = ds.settings();
    CephProbe {
        label,
        ceph: CephAccess::of(ds, None, ds.ceph_timeout(cfg)).unwrap_or_default(),
        pool: s.pool.clone(),
        data_pool: s.data_pool.clone(),
        write,
    }
}

fn secret(ds: &Datastore) -> Option<SecretProbe> {
    let s = ds.settings();
    Some(SecretProbe {
        label: label(ds),
        uuid: s.ceph_secret.clone()?,
        user: s.ceph_user.clone().unwrap_or_else(|| "admin".into()),
        key_file: s.ceph_key.clone(),
    })
}

/// Every check of an OpenNebula front-end (see the module docs).
pub fn front_end() -> Vec<Finding> {
    let mut out = Vec::new();
    let cfg = match Config::load() {
        Ok(c) => {
            out.push(Finding::pass("the rbdx driver config is valid", ""));
            c
        }
        Err(e) => {
            out.push(Finding::fail("the rbdx driver config is valid", e, "fix /etc/one/rbdx.conf"));
            return out;
        }
    };
    out.push(qemu_img().under("front-end"));
    let oned = match Oned::from_env(cfg.oned_timeout) {
        Ok(o) => o,
        Err(e) => {
            out.push(Finding::fail("reach oned", e.to_string(), "run as oneadmin (~/.one/one_auth)"));
            return out;
        }
    };
    let (datastores, hosts) = match (oned.datastores(), oned.hosts()) {
        (Ok(d), Ok(h)) => (d, h),
        (Err(e), _) | (_, Err(e)) => {
            out.push(Finding::fail(
                "reach oned with the configured credentials",
                e.to_string(),
                "check ONE_XMLRPC or ~/.one/one_endpoint and ~/.one/one_auth",
            ));
            return out;
        }
    };
    out.push(Finding::pass(
        "reach oned with the configured credentials",
        format!("{} datastore(s), {} host(s)", datastores.len(), hosts.len()),
    ));
    let mut ours: Vec<&Datastore> = Vec::new();
    for d in &datastores {
        match d {
            Ok(d) if d.uses_rbdx() => ours.push(d),
            Ok(_) => {}
            Err(e) => {
                out.push(Finding::fail("datastore attributes are valid", e, "fix the datastore template"))
            }
        }
    }
    // A datastore whose attributes are refused was reported above, rbdx's or not.
    let refused = datastores.iter().any(Result::is_err);
    if ours.is_empty() && !refused {
        out.push(Finding::fail(
            "some datastore uses rbdx",
            "no datastore has TM_MAD or DS_MAD ceph or rbdx",
            "create a Ceph datastore (docs/install.md)",
        ));
    }
    for ds in &ours {
        out.extend(datastore(ds, &cfg, &hosts).into_iter().map(|f| f.under(&label(ds))));
    }
    for h in &hosts {
        out.extend(host(h, &ours, &cfg).into_iter().map(|f| f.under(&format!("host {}", h.name))));
    }
    out
}

/// A datastore's settings, and its Ceph checked where its DS actions run.
fn datastore(ds: &Datastore, cfg: &Config, hosts: &[Host]) -> Vec<Finding> {
    let mut out = Vec::new();
    let dcfg = match ds.config(cfg) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail("its RBDX_* attributes are valid", e, "fix the datastore template"));
            return out;
        }
    };
    let bridges: Vec<String> = ds
        .bridges()
        .into_iter()
        .filter(|b| hosts.iter().find(|h| &h.name == b).is_none_or(Host::usable))
        .collect();
    let target = match (dcfg.execution, bridges.first()) {
        (Execution::Local, _) => Target::Local,
        (Execution::Ssh, None) if ds.bridges().is_empty() => Target::Local,
        (Execution::Ssh, None) => {
            out.push(Finding::fail(
                "a BRIDGE_LIST host is usable",
                "every BRIDGE_LIST host is off, disabled or in error",
                "enable a bridge host, or fix BRIDGE_LIST",
            ));
            return out;
        }
        (Execution::Ssh, Some(b)) => Target::Ssh(b.clone()),
    };
    let where_ = match &target {
        Target::Local => "front-end".to_string(),
        Target::Ssh(h) => format!("bridge {h}"),
    };
    let checks = HostChecks {
        version: env!("CARGO_PKG_VERSION").into(),
        ceph: vec![probe(ds, cfg, String::new(), true)],
        secrets: Vec::new(),
    };
    out.extend(remote(&checks, &target, &dcfg).into_iter().map(|f| f.under(&format!("on the {where_}"))));
    out
}

/// A host: its rbdx, its Ceph access for every datastore, its libvirt secrets.
fn host(h: &Host, datastores: &[&Datastore], cfg: &Config) -> Vec<Finding> {
    if !h.usable() {
        return vec![Finding::pass(
            "skipped",
            format!("host state {} (error, disabled or offline)", h.state),
        )];
    }
    let checks = HostChecks {
        version: env!("CARGO_PKG_VERSION").into(),
        ceph: datastores.iter().map(|d| probe(d, cfg, label(d), false)).collect(),
        secrets: if h.vm_mad == "kvm" {
            datastores.iter().filter_map(|d| secret(d)).collect()
        } else {
            Vec::new()
        },
    };
    remote(&checks, &Target::Ssh(h.name.clone()), cfg)
}

fn remote(checks: &HostChecks, target: &Target, cfg: &Config) -> Vec<Finding> {
    let outcome = exec::run(&Job::Doctor { checks: checks.clone() }, target, cfg);
    if let Some(e) = outcome.error {
        let fix = format!(
            "as oneadmin: onehost sync --force (the binary must be {} on the host)",
            cfg.remote_binary()
        );
        return vec![Finding::fail("rbdx runs there", e, fix)];
    }
    let findings: Option<Vec<Finding>> = outcome.output.as_deref().and_then(|o| serde_json::from_str(o).ok());
    findings.unwrap_or_else(|| {
        vec![Finding::fail("rbdx runs there", "it answered no findings", "onehost sync --force")]
    })
}

/// The findings as JSON, for the job's output.
pub fn to_output(findings: &[Finding]) -> String {
    serde_json::to_string(findings).unwrap_or_default()
}

/// True if a path exists and is readable (for the front-end's auto-detection).
pub fn has_credentials() -> bool {
    let auth = std::env::var_os("ONE_AUTH").map_or_else(
        || std::env::var_os("HOME").map(|h| Path::new(&h).join(".one/one_auth")),
        |p| Some(p.into()),
    );
    auth.is_some_and(|p| std::fs::File::open(p).is_ok())
}
