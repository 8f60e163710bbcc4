//! Calling the Proxmox helper (`rbdx pve`) as the Perl plugin does: one JSON
//! request on stdin, one JSON answer on stdout.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::TestCluster;

/// The `ceph` part of a request for the test cluster's restricted client, with
/// the EC data pool if `ec`.
pub fn storage(cluster: &TestCluster, ec: bool) -> Value {
    let mut ceph = json!({"pool": cluster.pool, "id": cluster.id, "conf": cluster.conf,
                          "keyring": cluster.keyring, "timeout": 20});
    if ec {
        ceph["data_pool"] = json!(cluster.ec_pool);
    }
    ceph
}

/// Runs `bin pve` with `method(params)` for storage `ceph`, with extra
/// environment `env`.
pub fn call(bin: &Path, ceph: &Value, method: &str, params: Value, env: &[(&str, &OsStr)]) -> Output {
    let req = json!({"version": 1, "storeid": "test", "ceph": ceph, "method": method, "params": params});
    let mut cmd = Command::new(bin);
    cmd.arg("pve").envs(env.iter().copied());
    crate::run_with_stdin(&mut cmd, format!("{req}\n").as_bytes())
}

/// The helper's answer: its result, or its one-line error.
///
/// # Panics
/// If the answer is not the protocol's JSON.
pub fn answer(out: &Output) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!("no JSON answer ({err}); stderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    if v["ok"] == json!(true) {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].as_str().unwrap_or_default().to_string())
    }
}

/// The error and its kind (`not_found`, `invalid`, …) of an answer that is a
/// failure.
///
/// # Panics
/// If the answer is not the protocol's JSON, or a success.
pub fn failure(out: &Output) -> (String, String) {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!("no JSON answer ({err}); stderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(v["ok"], json!(false), "a failure: {v}");
    let text = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}")).to_string();
    (text("error"), text("kind"))
}
