//! Connecting: a cluster that does not answer, bad settings, and what a
//! connection sets up. Each test makes and shuts down handles of its own
//! (failed connects among them), so they run here, in a process of their own
//! and one at a time, not beside the other binaries' tests, which share one
//! client busy with I/O: a test process where they did abort once in librados
//! (`pthread_mutex_lock` assertion), and rbdx itself never shuts a handle down
//! beside another one's I/O (its connections are left to the process's exit).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbdx_core::{Cluster, ConnectConfig, ErrorKind, Timeouts};

/// One test at a time (see the module's documentation).
fn alone() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn a_cluster_that_is_down_fails_within_the_timeout() {
    let _alone = alone();
    // A monitor address where nothing listens is what a stopped cluster looks like
    // to a client.
    let env = rbdx_tests::cluster();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let limit = Duration::from_secs(3);
    let cfg = ConnectConfig {
        conf_file: None,
        mon_host: Some(format!("v2:127.0.0.1:{port}")),
        client_id: Some(env.id.clone()),
        keyring: Some(env.keyring.clone()),
        key_file: None,
        timeouts: Timeouts::uniform(limit),
        auth_none: false,
    };
    let t = Instant::now();
    let e = Cluster::connect(&cfg).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), Some(ErrorKind::TimedOut), "{e}");
    assert!(took >= limit - Duration::from_millis(500), "failed early: {took:?} ({e})");
    assert!(took < limit * 2, "took {took:?} for a {limit:?} timeout");
    assert_eq!(
        e.to_string(),
        "rados_connect client.rbdx-test: the cluster did not answer in time".replace("rbdx-test", &env.id)
    );
}

#[test]
fn bad_connection_settings_fail_clearly() {
    let _alone = alone();
    let env = rbdx_tests::cluster();
    let mut cfg = env.config();
    cfg.conf_file = Some("/nonexistent/ceph.conf".into());
    let e = Cluster::connect(&cfg).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ceph.conf"), "{e}");

    let mut cfg = env.config();
    cfg.keyring = Some("/nonexistent/keyring".into());
    cfg.timeouts = Timeouts::uniform(Duration::from_secs(5));
    let e = Cluster::connect(&cfg).unwrap_err();
    assert!(e.to_string().starts_with("rados_connect"), "{e}");
}

#[test]
fn management_operations_go_wide_unless_ceph_conf_says_otherwise() {
    let _alone = alone();
    const OPT: &str = "rbd_concurrent_management_ops";
    let env = rbdx_tests::cluster();
    assert_eq!(env.connect_new().conf_get(OPT).unwrap(), "64", "librbd's 10 raised");

    // An operator's own value stands.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    let mut text = std::fs::read_to_string(&env.conf).unwrap();
    text.push_str(&format!("\n[client.{}]\n{OPT} = 12\n", env.id));
    std::fs::write(&conf, text).unwrap();
    let tuned = Cluster::connect(&ConnectConfig { conf_file: Some(conf), ..env.config() }).unwrap();
    assert_eq!(tuned.conf_get(OPT).unwrap(), "12");
}
