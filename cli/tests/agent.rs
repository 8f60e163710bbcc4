//! The warm agent (`rbdx agent`) and its client (`rbdx-run`): a run through the
//! agent is the run the client would have started (arguments, environment,
//! working directory, standard streams, exit status, signals); it dies with its
//! client; everything the agent does not accept, the client runs itself; and
//! nothing a peer sends takes the agent down.
//!
//! The agent runs from a copy of `rbdx` in a scratch directory whose execute
//! bits are then removed: the client cannot run that copy itself, so a run that
//! works went through the agent.

#[path = "../src/agent_proto.rs"]
#[allow(dead_code)]
mod agent_proto;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rbdx_core::ops::{self, CreateOptions, ImageSpec};
use rbdx_tests::one::{OneEnv, vm_doc};
use rbdx_tests::{MIB, Scratch, TestCluster};

/// An agent serving a copy of `rbdx` (with `rbdx-run` beside it).
struct Agent {
    dir: tempfile::TempDir,
    child: Child,
}

impl Agent {
    fn start() -> Self {
        Self::start_with(false, &[], &[])
    }

    /// With `closed_std`, the agent starts with descriptors 0-2 closed (a
    /// connection or a received descriptor must not take their numbers);
    /// `args` follow `agent --socket <path>`; `env` is added to the agent's.
    fn start_with(closed_std: bool, args: &[&str], env: &[(&str, &Path)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for bin in [env!("CARGO_BIN_EXE_rbdx"), env!("CARGO_BIN_EXE_rbdx-run")] {
            let to = dir.path().join(Path::new(bin).file_name().unwrap());
            std::fs::copy(bin, &to).unwrap();
        }
        let mut cmd = Command::new(dir.path().join("rbdx"));
        cmd.args(["agent", "--socket"]).arg(dir.path().join("s")).args(args).stdin(Stdio::null());
        cmd.envs(env.iter().copied());
        if closed_std {
            // SAFETY: only close(2) between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    for fd in 0..=2 {
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
        }
        let child = spawn(&mut cmd);
        let agent = Self { dir, child };
        let t = Instant::now();
        while !agent.socket().exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "the agent did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::metadata(agent.socket()).unwrap().permissions().mode() & 0o777, 0o600);
        agent
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("rbdx").canonicalize().unwrap()
    }

    /// Takes the execute bits off the served copy: from now on only the agent
    /// can run it.
    fn only_through_the_agent(&self) {
        std::fs::set_permissions(self.dir.path().join("rbdx"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }

    /// `cmd`, a run of the served copy, as a run of `rbdx-run` through this agent.
    fn through(&self, cmd: &Command) -> Command {
        let mut c = rbdx_tests::run_by(self.dir.path().join("rbdx-run"), cmd);
        c.env("RBDX_AGENT_SOCKET", self.socket());
        c
    }

    /// `rbdx-run` beside the served copy, pointed at this agent.
    fn client(&self) -> Command {
        let mut c = Command::new(self.dir.path().join("rbdx-run"));
        c.env("RBDX_AGENT_SOCKET", self.socket());
        c
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_cluster<'a>(c: &'a mut Command, env: &TestCluster) -> &'a mut Command {
    c.env("RBDX_CONF", &env.conf).env("RBDX_ID", &env.id).env("RBDX_KEYRING", &env.keyring)
}

/// Spawns `cmd`. The copies of the binaries are fresh: while another test
/// thread's fork still holds a copy open for writing, exec fails with ETXTBSY,
/// so that is retried.
fn spawn(cmd: &mut Command) -> Child {
    let t = Instant::now();
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.unwrap(),
        }
    }
}

fn run(c: &mut Command, stdin: &[u8]) -> Output {
    let mut child = spawn(c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// pid → parent pid, of every process.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if let Some(ppid) = rest.split(' ').nth(1).and_then(|p| p.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

fn descendants(of: u32) -> Vec<u32> {
    let map = parents();
    let mut out = Vec::new();
    let mut todo = vec![of];
    while let Some(p) = todo.pop() {
        for (&c, &pp) in &map {
            if pp == p {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_through_the_agent_is_the_run_the_client_would_have_started() {
    let s = Scratch::new("agent");
    let env = s.env.clone();
    let agent = Agent::start();
    agent.only_through_the_agent();
    let direct = || Command::new(env!("CARGO_BIN_EXE_rbdx"));

    // Exit codes, standard output and error, standard input: as run directly.
    for (args, stdin) in
        [(&["--version"][..], &b""[..]), (&["bogus"], b""), (&["remote"], b"{not a job"), (&["remote"], b"")]
    {
        let (a, d) = (run(agent.client().args(args), stdin), run(direct().args(args), stdin));
        assert_eq!(
            (a.status.code(), &a.stdout, &a.stderr),
            (d.status.code(), &d.stdout, &d.stderr),
            "{args:?}"
        );
    }
    let a = run(agent.client().arg("--version"), b"");
    assert!(a.status.success() && a.stdout.starts_with(b"rbdx "), "{a:?}");

    // The environment (the cluster settings) and the working directory (a
    // relative file name) are the client's.
    let work = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(work.path().join("disk.raw"), &data).unwrap();
    let spec = s.spec("imported").to_string();
    let out = run(
        on_cluster(agent.client().args(["import", "disk.raw", &spec]), &env).current_dir(work.path()),
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = run(on_cluster(agent.client().args(["image", "info", &spec]), &env), b"");
    assert!(String::from_utf8_lossy(&info.stdout).contains("1 MiB"), "{info:?}");
    let missing = s.spec("missing").to_string();
    let (a, d) = (
        run(on_cluster(agent.client().args(["image", "info", &missing]), &env), b""),
        run(on_cluster(direct().args(["image", "info", &missing]), &env), b""),
    );
    assert_eq!((a.status.code(), &a.stderr), (d.status.code(), &d.stderr));
    assert_eq!(a.status.code(), Some(1));
    // Without the cluster settings in its environment the run has none.
    let a =
        run(agent.client().args(["image", "info", &spec]).env("RBDX_CONF", "/nonexistent/ceph.conf"), b"");
    assert!(!a.status.success());
    run(on_cluster(agent.client().args(["image", "rm", &spec]), &env), b"");
    s.finish(env.connect());
}

#[test]
fn a_run_ends_its_client_as_it_ended_and_dies_with_it() {
    let mut agent = Agent::start();
    agent.only_through_the_agent();
    let agent_pid = agent.child.id();
    // `rbdx remote` waits for its job on stdin: a run that lasts until told.
    for kill in ["run", "client", "helper"] {
        let mut client = spawn(
            agent.client().arg("remote").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()),
        );
        // Held open to the end: the run never sees its input end.
        let _input = client.stdin.take();
        // The helper, and the run it forks.
        wait_until("the run started", || descendants(agent_pid).len() >= 2);
        assert!(descendants(client.id()).is_empty(), "the client runs nothing itself");
        let runs = descendants(agent_pid);
        if kill == "client" {
            // oned's timeout kills the driver: its run goes with it.
            client.kill().unwrap();
            client.wait().unwrap();
            wait_until("the run is gone", || descendants(agent_pid).is_empty());
        } else if kill == "helper" {
            // The helper dies: the client says so and fails, the run goes too.
            let map = parents();
            let helper = *runs.iter().find(|p| map.get(p) == Some(&agent_pid)).unwrap();
            // SAFETY: signalling a process of this test's own.
            unsafe { libc::kill(helper as i32, libc::SIGKILL) };
            let out = client.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("the agent ended"), "{out:?}");
            wait_until("the run is gone", || !runs.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()));
        } else {
            // The run killed by a signal: the client ends by that signal.
            let map = parents();
            let run = *runs.iter().find(|p| map.get(p) != Some(&agent_pid)).unwrap();
            // SAFETY: signalling a process of this test's own.
            unsafe { libc::kill(run as i32, libc::SIGTERM) };
            let status = client.wait().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
            wait_until("the helper is gone", || descendants(agent_pid).is_empty());
        }
    }
    assert!(agent.alive());
}

#[test]
fn what_the_agent_does_not_accept_the_client_runs_itself() {
    let mut agent = Agent::start();
    // No agent at that path, and an agent serving another program: the client
    // runs `rbdx` itself (these clients' own `rbdx` is executable).
    for socket in [agent.dir.path().join("none"), agent.socket()] {
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_rbdx-run")).arg("--version").env("RBDX_AGENT_SOCKET", socket),
            b"",
        );
        assert!(out.status.success() && out.stdout.starts_with(b"rbdx "), "{out:?}");
    }
    assert!(agent.alive());
    // The served program changed (an upgrade): the agent refuses, exits, and
    // the client runs the new program itself.
    let served = agent.dir.path().join("rbdx");
    let bytes = std::fs::read(&served).unwrap();
    std::fs::remove_file(&served).unwrap();
    std::fs::write(&served, &bytes).unwrap();
    std::fs::set_permissions(&served, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The client runs the new file itself: while another test thread's fork
    // still holds it open for writing, that exec fails with ETXTBSY.
    let mut out = run(agent.client().arg("--version"), b"");
    for _ in 0..100 {
        if !String::from_utf8_lossy(&out.stderr).contains("Text file busy") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        out = run(agent.client().arg("--version"), b"");
    }
    assert!(out.status.success() && out.stdout.starts_with(b"rbdx "), "{out:?}");
    wait_until("the agent exited", || !agent.alive());
    assert_eq!(agent.child.wait().unwrap().code(), Some(0));
}

/// Sends `frame` with `fds` attached and returns the agent's whole answer.
/// Unless the request is to run (the run would take it for its client
/// leaving), the sending side is closed after the frame.
fn ask(socket: &Path, frame: &[u8], fds: &[i32], to_run: bool) -> Vec<u8> {
    let mut conn = UnixStream::connect(socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if fds.is_empty() {
        let _ = conn.write_all(frame);
    } else {
        agent_proto::send_with_fds(conn.as_raw_fd(), frame, fds).unwrap();
    }
    if !to_run {
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    answer
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn hostile_peers_are_refused_and_the_agent_serves_on() {
    let mut agent = Agent::start();
    agent.only_through_the_agent();
    let null = std::fs::File::open("/dev/null").unwrap();
    let n = null.as_raw_fd();
    let good = agent_proto::Request {
        program: agent.program().into(),
        cwd: "/".into(),
        umask: 0o022,
        argv: vec![agent.program().into(), "--version".into()],
        env: vec![],
    };
    let mut other_program = good.clone();
    other_program.program = "/bin/sh".into();
    other_program.argv[0] = "/bin/sh".into();
    let mut relative = good.encode();
    relative.splice(13..13, b"x".iter().copied());
    let cases: Vec<(&str, Vec<u8>, Vec<i32>, &str)> = vec![
        ("no descriptors", framed(&good.encode()), vec![], "descriptors"),
        ("two descriptors", framed(&good.encode()), vec![n, n], "not 3"),
        ("four descriptors", framed(&good.encode()), vec![n, n, n, n], "descriptors"),
        ("an oversized request", u32::MAX.to_le_bytes().to_vec(), vec![n, n, n], "more than"),
        ("a short request", framed(&good.encode())[..20].to_vec(), vec![n, n, n], "reading the request"),
        ("garbage", framed(b"\xff\xfe garbage \0"), vec![n, n, n], "not an rbdx agent request"),
        ("another program", framed(&other_program.encode()), vec![n, n, n], "this agent runs"),
        ("a relative program", framed(&relative), vec![n, n, n], "absolute"),
    ];
    for (what, frame, fds, why) in cases {
        let answer = ask(&agent.socket(), &frame, &fds, false);
        assert_eq!(answer.first(), Some(&agent_proto::REFUSED), "{what}: {answer:?}");
        let text = String::from_utf8_lossy(&answer[1..]);
        assert!(text.contains(why), "{what}: {text}");
        assert!(agent.alive(), "{what}");
    }
    // Another user, even with the socket opened to all.
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(agent.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let peer = Command::new("python3")
        .args(["-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.recv(200).decode())"])
        .arg(agent.socket())
        .uid(65534)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&peer.stdout);
    assert!(said.starts_with('R') && said.contains("uid 65534 may not use"), "{peer:?}");
    // And a good request still runs.
    let answer = ask(&agent.socket(), &framed(&good.encode()), &[n, n, n], true);
    assert_eq!(answer.first(), Some(&agent_proto::ACCEPTED), "{answer:?}");
    assert_eq!(answer.len(), 5);
    assert_eq!(i32::from_le_bytes(answer[1..5].try_into().unwrap()), 0);
    assert!(agent.alive());
}

#[test]
fn opennebula_actions_run_through_the_agent() {
    let agent = Agent::start();
    agent.only_through_the_agent();
    let e = OneEnv::new(&agent.program(), "EXECUTION = local\nCEPH_TIMEOUT = 20\n");
    let c = e.cluster.connect();
    let pool = e.cluster.pool.clone();
    let id = 1_900_000 + std::process::id() % 50_000;
    let (img, vm) = (ImageSpec::new(&pool, &format!("one-{id}")).unwrap(), id + 1);
    ops::create(c, &img, 16 * MIB, &CreateOptions::with_data_pool(None)).unwrap();
    e.oned.set_datastore(100, e.image_ds(100, false, &[]));
    e.oned.set_datastore(0, e.system_ds(0, false));
    e.oned.set_vm(vm, vm_doc(vm, "localhost", 3, &[e.image_disk(0, &img.to_string(), true, 100, 16)]));
    let path = format!("localhost:/var/lib/one//datastores/0/{vm}/disk.0");
    let tm = |action: &str, args: &[&str]| {
        let mut cmd = e.command(&["tm", action]);
        cmd.args(args);
        let out = run(&mut agent.through(&cmd), b"");
        assert!(out.status.success(), "tm {action}: {}", String::from_utf8_lossy(&out.stderr));
    };
    tm("clone", &[&format!("frontend:{img}"), &path, &vm.to_string(), "100"]);
    let disk = ImageSpec::new(&pool, &format!("one-{id}-{vm}-0")).unwrap();
    let parent = ops::stat(c, &disk).unwrap().parent.expect("a CoW clone");
    assert_eq!((parent.image.name.as_str(), parent.snap.as_str()), (img.name.as_str(), "snap"));
    tm("delete", &[&path, &vm.to_string(), "100"]);
    assert!(ops::stat(c, &disk).is_err(), "the disk is gone");
    assert!(e.oned.calls().iter().any(|c| c.contains("one.vm.info")), "{:?}", e.oned.calls());
    // A bad argument: one line, exit 1, as run directly.
    let mut bad = e.command(&["tm", "clone"]);
    bad.args(["frontend:../etc/passwd", &path, &vm.to_string(), "100"]);
    let mut direct = rbdx_tests::run_by(env!("CARGO_BIN_EXE_rbdx"), &bad);
    let (a, d) = (run(&mut agent.through(&bad), b""), run(&mut direct, b""));
    assert!(!a.status.success());
    assert_eq!((a.status.code(), &a.stdout), (d.status.code(), &d.stdout));
    ops::remove(c, &img, ops::RemoveOptions::default()).unwrap();
}

#[test]
fn an_agent_started_without_standard_descriptors_still_passes_the_clients() {
    let agent = Agent::start_with(true, &[], &[]);
    agent.only_through_the_agent();
    for args in [&["--version"][..], &["bogus"]] {
        let (a, d) = (
            run(agent.client().args(args), b""),
            run(Command::new(env!("CARGO_BIN_EXE_rbdx")).args(args), b""),
        );
        assert_eq!(
            (a.status.code(), &a.stdout, &a.stderr),
            (d.status.code(), &d.stdout, &d.stderr),
            "{args:?}"
        );
    }
}

#[test]
fn an_agent_started_by_systemd_serves_the_socket_it_was_passed() {
    let dir = tempfile::tempdir().unwrap();
    for bin in [env!("CARGO_BIN_EXE_rbdx"), env!("CARGO_BIN_EXE_rbdx-run")] {
        std::fs::copy(bin, dir.path().join(Path::new(bin).file_name().unwrap())).unwrap();
    }
    let socket = dir.path().join("systemd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    // As systemd starts it: the socket as descriptor 3, LISTEN_PID its pid.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" agent"]).arg(dir.path().join("rbdx"));
    // SAFETY: only dup2(2) and fcntl(2) between fork and exec. A listener that
    // is descriptor 3 already only loses its close-on-exec flag (dup2 onto
    // itself would keep it).
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        });
    }
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    // sh's exec of the fresh copy fails (ETXTBSY) while another test thread's
    // fork holds it open for writing: start again until sh became the agent.
    let t = Instant::now();
    let mut child = loop {
        let mut child = spawn(&mut cmd);
        let exe = format!("/proc/{}/exe", child.id());
        let became = loop {
            if std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("rbdx")) {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if became {
            break child;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "sh did not become the agent");
    };
    drop(listener);
    std::fs::set_permissions(dir.path().join("rbdx"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(
        Command::new(dir.path().join("rbdx-run")).arg("--version").env("RBDX_AGENT_SOCKET", &socket),
        b"",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success() && out.stdout.starts_with(b"rbdx "), "{out:?}");
}

/// The names of the connect spans of a run traced into `trace` (emptied first).
fn connects(trace: &Path, c: &mut Command) -> Vec<String> {
    let _ = std::fs::remove_file(trace);
    let out = run(c.env("RBDX_TRACE", trace), b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = std::fs::read_to_string(trace).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    v["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with("connect"))
        .map(str::to_string)
        .collect()
}

const AHEAD: &str = "connect (made ahead)";

/// Repeats `attempt` (a change, then a traced run) until its run found a
/// connection made ahead and did not take it. A spare whose run was still
/// connecting is not used (the run connects alone), and one that connected
/// after the change may be taken: those attempts prove nothing either way, so
/// there are several; a run that takes a connection made before the change
/// never gets through.
fn refused(what: &str, mut attempt: impl FnMut() -> Vec<String>) {
    for _ in 0..20 {
        // Time for the spare's run to connect.
        std::thread::sleep(Duration::from_millis(300));
        if attempt() == [AHEAD, "connect"] {
            return;
        }
    }
    panic!("{what}: no run refused the connection made ahead");
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaps).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')))
}

#[test]
fn a_run_takes_the_connection_made_ahead_only_with_its_settings_and_files_unchanged() {
    let s = Scratch::new("agent-ahead");
    let env = s.env.clone();
    // The settings' files are copies this test changes.
    let files = tempfile::tempdir().unwrap();
    let (conf, keyring) = (files.path().join("ceph.conf"), files.path().join("keyring"));
    std::fs::copy(&env.conf, &conf).unwrap();
    std::fs::copy(&env.keyring, &keyring).unwrap();
    let trace = files.path().join("trace");
    // An agent traced itself keeps spans from its start: a run's trace holds
    // only its own (never the spare's connect).
    let agent = Agent::start_with(false, &[], &[("RBDX_TRACE", &files.path().join("agent-trace"))]);
    agent.only_through_the_agent();
    let ls = |extra: &[(&str, &str)]| {
        let mut c = agent.client();
        c.args(["image", "ls", &env.pool]).env("RBDX_CONF", &conf).env("RBDX_ID", &env.id);
        c.env("RBDX_KEYRING", &keyring);
        for (k, v) in extra {
            c.env(k, v);
        }
        connects(&trace, &mut c)
    };
    // The first run connects; the spare made after it connects with its
    // settings, and a later run takes that connection.
    assert_eq!(ls(&[]), ["connect"]);
    wait_until("a run takes the connection made ahead", || ls(&[]) == [AHEAD]);
    // Other settings (another timeout): the spare's connection is not taken;
    // the next spare is made with the new ones.
    let mut timeout = 16;
    refused("another timeout", || {
        timeout += 1;
        ls(&[("RBDX_TIMEOUT", &timeout.to_string())])
    });
    let t = timeout.to_string();
    wait_until("the new settings are made ahead", || ls(&[("RBDX_TIMEOUT", &t)]) == [AHEAD]);
    wait_until("the first settings are made ahead again", || ls(&[]) == [AHEAD]);
    // ceph.conf rewritten, the keyring replaced by another file with the same
    // key, HOME elsewhere (librados' search list): a new connection.
    refused("ceph.conf rewritten", || {
        let mut f = std::fs::OpenOptions::new().append(true).open(&conf).unwrap();
        writeln!(f, "# changed").unwrap();
        ls(&[])
    });
    refused("the keyring replaced", || {
        std::fs::copy(&env.keyring, files.path().join("new")).unwrap();
        std::fs::rename(files.path().join("new"), &keyring).unwrap();
        ls(&[])
    });
    refused("another HOME", || ls(&[("HOME", "/nonexistent")]));
    // A run that takes it is its client's run: the working directory (a
    // relative file name) and the environment (the settings, the trace) are
    // the client's.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("disk.raw"), vec![7u8; 1 << 20]).unwrap();
    let c = env.connect();
    let mut n = 0;
    wait_until("an import takes the connection made ahead", || {
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
        let spec = s.spec(&format!("made-ahead-{n}"));
        let mut import = agent.client();
        import.args(["import", "disk.raw", &spec.to_string()]).current_dir(work.path());
        import.env("RBDX_CONF", &conf).env("RBDX_ID", &env.id).env("RBDX_KEYRING", &keyring);
        let taken = connects(&trace, &mut import) == [AHEAD];
        assert_eq!(ops::stat(c, &spec).unwrap().size, 1 << 20);
        ops::remove(c, &spec, ops::RemoveOptions::default()).unwrap();
        taken
    });
    s.finish(c);
}

#[test]
fn a_spare_is_replaced_in_its_time_and_dies_with_its_agent() {
    let env = &rbdx_tests::cluster();
    let mut agent = Agent::start_with(false, &["--connect-ahead-secs", "1"], &[]);
    agent.only_through_the_agent();
    let agent_pid = agent.child.id();
    let ls = || {
        let out = run(on_cluster(agent.client().args(["image", "ls", &env.pool]), env), b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    ls();
    // A spare helper and its run.
    wait_until("a spare", || descendants(agent_pid).len() == 2);
    let first = descendants(agent_pid);
    wait_until("the spare replaced", || {
        let now = descendants(agent_pid);
        now.len() == 2 && now.iter().all(|p| !first.contains(p))
    });
    // Its helper and its run end in their own time (the run, left without
    // its helper, may still be closing its session).
    wait_until("the old spare gone", || first.iter().all(|p| ended(*p)));
    // Five lifetimes without a request: no spare (no Ceph session) until the
    // next one. A look at /proc may fall between a spare's end and the next
    // one's start: none is seen for longer than a lifetime.
    wait_until("no spare once idle", || {
        descendants(agent_pid).is_empty() && {
            std::thread::sleep(Duration::from_millis(1200));
            descendants(agent_pid).is_empty()
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(descendants(agent_pid).is_empty(), "an idle agent makes no spare");
    ls();
    wait_until("a spare again", || descendants(agent_pid).len() == 2);
    let spare = descendants(agent_pid);
    // SAFETY: signalling a process of this test's own.
    unsafe { libc::kill(agent_pid as i32, libc::SIGKILL) };
    agent.child.wait().unwrap();
    wait_until("the spare died with its agent", || spare.iter().all(|p| ended(*p)));

    // No spare with 0 seconds.
    let agent = Agent::start_with(false, &["--connect-ahead-secs", "0"], &[]);
    agent.only_through_the_agent();
    let trace = agent.dir.path().join("trace");
    for _ in 0..3 {
        let mut c = agent.client();
        on_cluster(c.args(["image", "ls", &env.pool]), env);
        assert_eq!(connects(&trace, &mut c), ["connect"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(descendants(agent.child.id()).is_empty());
}
