//! Black-box tests of the `rbdx` binary: help and usage errors without a cluster,
//! then operator commands against the real test cluster as the restricted client.

use assert_cmd::Command;
use rbdx_tests::{Scratch, TestCluster};

fn rbdx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rbdx"))
}

/// `rbdx` connected to the test cluster as the restricted client (through the
/// environment, as an operator would set it; the key stays in its keyring file).
fn rbdx_on(env: &TestCluster) -> Command {
    let mut c = rbdx();
    c.env("RBDX_CONF", &env.conf).env("RBDX_ID", &env.id).env("RBDX_KEYRING", &env.keyring);
    c
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{:?} failed: {}", c, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_and_version() {
    let out = stdout(rbdx().arg("--help"));
    for group in ["image", "snap", "trash", "pool"] {
        assert!(out.contains(group), "{out}");
    }
    assert_eq!(stdout(rbdx().arg("--version")).trim(), format!("rbdx {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_2_before_touching_ceph() {
    // No cluster settings at all: these must fail in argument parsing.
    for args in [
        &["image", "create", "no-pool-part", "--size", "1G"][..],
        &["image", "create", "p/img", "--size", "-1G"],
        &["image", "create", "p/img", "--size", "12Q"],
        &["image", "clone", "p/a@s", "p/b/c/d"],
        &["bogus"],
    ] {
        let out = rbdx().args(args).env_remove("RBDX_CONF").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn clone_with_the_data_pool_through_the_cli() {
    let s = Scratch::new("cli");
    let env = s.env.clone();
    let c = env.connect();
    let (base, child) = (s.spec("base"), s.spec("child"));
    stdout(rbdx_on(&env).args([
        "image",
        "create",
        &base.to_string(),
        "--size",
        "64M",
        "--data-pool",
        &env.ec_pool,
    ]));
    stdout(rbdx_on(&env).args(["snap", "create", &format!("{base}@base")]));
    let out = stdout(rbdx_on(&env).args([
        "image",
        "clone",
        &format!("{base}@base"),
        &child.to_string(),
        "--data-pool",
        &env.ec_pool,
    ]));
    assert!(out.contains("clone format 2"), "{out}");

    let info: serde_json::Value =
        serde_json::from_str(&stdout(rbdx_on(&env).args(["image", "info", "--json", &child.to_string()])))
            .unwrap();
    assert_eq!(info["data_pool"], env.ec_pool.as_str());
    assert_eq!(info["parent"], format!("{base}@base").as_str());
    assert_eq!(info["size"], 64 << 20);

    // A refused removal: exit 1, one line naming the child, nothing changed.
    let before = s.leftovers(c);
    let out = rbdx_on(&env).args(["image", "rm", &base.to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&child.name), "{err}");
    assert_eq!(s.leftovers(c), before);

    stdout(rbdx_on(&env).args(["image", "rm", &child.to_string()]));
    stdout(rbdx_on(&env).args(["image", "rm", &base.to_string()]));
    let out = stdout(rbdx_on(&env).args(["image", "rm", &base.to_string()]));
    assert!(out.contains("nothing to remove"), "{out}");
    s.finish(c);
}

#[test]
fn pool_df_reports_both_pools_as_json() {
    let env = rbdx_tests::cluster();
    let out = stdout(rbdx_on(&env).args(["pool", "df", "--json", &env.pool, &env.ec_pool]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["kind"], "replicated");
    assert_eq!(v[1]["kind"], "erasure");
    assert!(v[1]["available"].as_u64().unwrap() > 0);
}

#[test]
fn a_missing_image_is_one_clear_line() {
    let env = rbdx_tests::cluster();
    let out = rbdx_on(&env).args(["image", "info", &format!("{}/no-such-image", env.pool)]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.trim(),
        format!("rbdx: rbd_open_read_only {}/no-such-image: no such file or directory", env.pool)
    );
}

/// An `rbdx` process leaves its Ceph sessions to its end, but not what
/// ceph.conf gives the client besides: an admin socket per process (`$pid` in
/// its path) must not stay behind, nor the log file lose its last lines
/// (librados' "shutdown" is the last), whether the command succeeds or fails.
#[test]
fn a_configured_admin_socket_and_log_file_do_not_outlive_the_process() {
    let env = rbdx_tests::cluster();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = dir.path().join("ceph.conf");
    let mut text = std::fs::read_to_string(&env.conf).unwrap();
    text.push_str(&format!(
        "\n[client.{}]\nadmin socket = {d}/$cluster-$name.$pid.$cctid.asok\nlog file = {d}/$name.log\ndebug rados = 1\n",
        env.id
    ));
    std::fs::write(&conf, text).unwrap();
    let log = dir.path().join(format!("client.{}.log", env.id));
    let missing = format!("{}/no-such-image", env.pool);
    for (args, ok) in [(&["pool", "df", &env.pool][..], true), (&["image", "info", &missing], false)] {
        let _ = std::fs::remove_file(&log);
        let out = rbdx_on(&env).env("RBDX_CONF", &conf).args(args).output().unwrap();
        assert_eq!(out.status.success(), ok, "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".asok"))
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
        let last = std::fs::read_to_string(&log).unwrap().lines().last().unwrap_or_default().to_string();
        assert!(last.ends_with("librados: shutdown"), "{args:?}: the log ends with {last:?}");
    }
}

#[test]
fn the_packaged_action_list_is_every_action() {
    let listed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/one/actions")).unwrap();
    let mut want: Vec<String> = rbdx_tm::ACTIONS.iter().map(|a| format!("tm {a}")).collect();
    want.extend(rbdx_ds::ACTIONS.iter().map(|a| format!("datastore {a}")));
    want.sort();
    let mut got: Vec<String> = listed.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, want);
}
