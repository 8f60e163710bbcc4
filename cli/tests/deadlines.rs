//! Deadlines: an action past its deadline stops, with everything it started (its
//! child processes and theirs), in-process and on a host over ssh, and says so in
//! one line naming the step it was waiting for; a download is cut only when it
//! stalls (no data for IDLE_TIMEOUT), never for being long: a 2 GiB import at
//! 10 MiB/s (3.5 minutes) succeeds.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::MIB;
use rbdx_tests::http::{FileServer, slow_body};
use rbdx_tests::one::{OneEnv, assert_fails, assert_ok, vm_doc};
use rbdx_tests::sshd::Sshd;

const BIN: &str = env!("CARGO_BIN_EXE_rbdx");
const DS: u32 = 100;

fn fresh_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 20_000) * 100 + 7_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

/// A virsh stand-in that never answers: it starts a grandchild and sleeps, both
/// with `token` on their command lines.
fn hanging_virsh(dir: &Path, token: &str) -> String {
    let p = dir.join("virsh");
    std::fs::write(
        &p,
        format!("#!/bin/sh\nsh -c 'sleep 1000; :' {token} &\nexec sh -c 'sleep 1001; :' {token}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// The processes whose command line holds `token`.
fn processes_with(token: &str) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid,args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(token) && !l.contains("ps -eo"))
        .map(str::to_string)
        .collect()
}

fn live_snapshot(e: &OneEnv, host: &str) -> (std::process::Output, Duration) {
    let c = e.cluster.connect();
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{}", fresh_id())).unwrap();
    ops::create(c, &img, 8 * MIB, &CreateOptions::default()).unwrap();
    let vm = fresh_id();
    e.oned.set_datastore(DS, e.image_ds(DS, false, &[]));
    e.oned.set_vm(vm, vm_doc(vm, host, 3, &[e.image_disk(0, &img.to_string(), false, DS, 8)]));
    let t = Instant::now();
    let out = e.tm(
        "snap_create_live",
        &[&format!("{host}:/var/lib/one//datastores/0/{vm}/disk.0"), "3", &vm.to_string(), &DS.to_string()],
    );
    let took = t.elapsed();
    let _ =
        ops::disk::Disk::new(c, img.clone(), &rbdx_one::naming::ONE).remove(None, ops::disk::Reclaim::Trash);
    (out, took)
}

#[test]
fn an_action_past_its_deadline_stops_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("rbdx-deadline-local-{}", std::process::id());
    let virsh = hanging_virsh(dir.path(), &token);
    let config = format!("EXECUTION = local\nACTION_TIMEOUT = 3\nFREEZE_TIMEOUT = 600\nVIRSH = {virsh}\n");
    let e = OneEnv::new(Path::new(BIN), &config);
    let (out, took) = live_snapshot(&e, "localhost");
    let line =
        assert_fails(&out, "did not finish within 3s (its deadline) and was stopped during: guest freeze");
    assert!(took < Duration::from_secs(8), "stopped at its deadline ({took:?}): {line}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processes_with(&token), Vec::<String>::new(), "nothing it started runs on");
}

#[test]
fn a_job_on_a_host_stops_at_its_deadline_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let token = format!("rbdx-deadline-remote-{}", std::process::id());
    let remotes = dir.path().join("remotes");
    std::fs::create_dir_all(remotes.join("rbdx")).unwrap();
    std::fs::create_dir_all(remotes.join("etc/rbdx")).unwrap();
    std::fs::write(remotes.join("rbdx/rbdx"), format!("#!/bin/bash\nexec -a \"$0\" {BIN} \"$@\"\n")).unwrap();
    std::fs::set_permissions(remotes.join("rbdx/rbdx"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The host's own settings name the virsh that hangs.
    let virsh = hanging_virsh(dir.path(), &token);
    std::fs::write(remotes.join("etc/rbdx/rbdx.conf"), format!("VIRSH = {virsh}\nFREEZE_TIMEOUT = 600\n"))
        .unwrap();
    let config = format!(
        "EXECUTION = ssh\nSSH = {}\nREMOTE_DIR = {}\nACTION_TIMEOUT = 5\n",
        sshd.ssh_setting(),
        remotes.display()
    );
    let e = OneEnv::new(Path::new(BIN), &config);
    let (out, took) = live_snapshot(&e, "127.0.0.1");
    let line = assert_fails(&out, "deadline");
    assert!(took < Duration::from_secs(10), "stopped at its deadline ({took:?}): {line}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processes_with(&token), Vec::<String>::new(), "the host's job and its children are gone");
    let remote_jobs: Vec<String> = processes_with(&remotes.display().to_string());
    assert!(remote_jobs.is_empty(), "no rbdx remote runs on: {remote_jobs:?}");
}

#[test]
fn a_job_blocked_writing_to_a_reader_that_stopped_reading_stops_at_its_deadline() {
    // A host's job streaming an image on stdout holds the stream's lock while
    // it writes; with a reader that stopped reading, the write never returns.
    // The watchdog must neither wait for that lock nor for its own report.
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\n");
    let c = e.cluster.connect();
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{}", fresh_id())).unwrap();
    ops::create(c, &img, 16 * MIB, &CreateOptions::default()).unwrap();
    rbdx_tests::fill(&ops::ioctx(c, &img).unwrap().open(&img.name).unwrap(), 0, 8 * MIB, 3);
    let ceph = rbdx_one::access::CephAccess {
        conf: Some(e.cluster.conf.display().to_string()),
        user: Some(e.cluster.id.clone()),
        key_file: Some(e.key_file.display().to_string()),
        timeout_secs: 10,
    };
    let request = serde_json::to_string(&rbdx_one::exec::Request {
        protocol: rbdx_one::job::PROTOCOL,
        job: rbdx_one::job::Job::SendImage { ceph, image: img.to_string(), size_only: false },
        deadline_ms: Some(1500),
        trace: false,
    })
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("remote")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{request}").unwrap();
    }
    // stdout is kept open and never read.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t.elapsed();
    ops::remove(c, &img, ops::RemoveOptions::default()).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("still running {took:?} after the job started (deadline 1.5 s)"));
    assert!(!status.success(), "stopped, not finished");
    assert!(took < Duration::from_secs(8), "stopped at its deadline: took {took:?}");
}

fn cp(e: &OneEnv, id: u32, url: &str) -> std::process::Output {
    let msg =
        format!("<IMAGE><PATH><![CDATA[{url}]]></PATH><SIZE>1</SIZE></IMAGE>{}", e.image_ds(DS, false, &[]));
    e.ds("cp", id, &msg)
}

#[test]
fn a_stalled_download_fails_after_the_idle_timeout() {
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nIDLE_TIMEOUT = 3\n");
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start(dir.path());
    let id = fresh_id();
    let t = Instant::now();
    let line = assert_fails(&cp(&e, id, &format!("{}/stall/{}", server.base, 64 * MIB)), "no data for 3s");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}: {line}", t.elapsed());
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{id}")).unwrap();
    assert!(ops::stat(e.cluster.connect(), &img).unwrap_err().is_not_found(), "nothing is left");
}

#[test]
fn a_2_gib_download_at_10_mib_per_second_is_imported() {
    let e = OneEnv::new(Path::new(BIN), "EXECUTION = local\nIDLE_TIMEOUT = 5\n");
    let dir = tempfile::tempdir().unwrap();
    let server = FileServer::start(dir.path());
    let size: u64 = 2 << 30;
    let id = fresh_id();
    let t = Instant::now();
    let out = cp(&e, id, &format!("{}/slow/{}/{size}", server.base, 10 * MIB));
    let took = t.elapsed();
    assert_ok(&out);
    assert!(took > Duration::from_secs(200), "throttled as asked ({took:?})");
    eprintln!("2 GiB at 10 MiB/s imported in {took:?}");
    let c = e.cluster.connect();
    let img = ImageSpec::new(&e.cluster.pool, &format!("one-{id}")).unwrap();
    let io = ops::ioctx(c, &img).unwrap();
    let handle = io.open_read_only(&img.name, None).unwrap();
    assert_eq!(handle.info().unwrap().size, size);
    for block in [0u64, 1, 1000, 2047] {
        let mut got = [0u8; 16];
        handle.read_at(block << 20, &mut got).unwrap();
        let want: Vec<u8> = (0..16).map(|i| slow_body((block << 20) + i)).collect();
        assert_eq!(got.to_vec(), want, "MiB {block}");
    }
    drop(handle);
    ops::remove(c, &img, ops::RemoveOptions::default()).unwrap();
}
