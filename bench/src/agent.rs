//! The warm agent (`rbdx agent`) for the bench: the same commands, started
//! through `rbdx-run` instead of `rbdx`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An agent serving the rbdx under test, on a socket of its own.
#[derive(Debug)]
pub struct Agent {
    dir: tempfile::TempDir,
    child: Child,
    client: PathBuf,
}

impl Agent {
    /// Starts the agent of `rbdx`; `None` when no `rbdx-run` is beside it (an
    /// older build).
    pub fn start(rbdx: &Path) -> Option<Self> {
        let client = rbdx.with_file_name("rbdx-run");
        if !client.exists() {
            return None;
        }
        let dir = tempfile::tempdir().expect("a scratch directory");
        let child = Command::new(rbdx)
            .args(["agent", "--socket"])
            .arg(dir.path().join("s"))
            .stdin(Stdio::null())
            .spawn()
            .expect("rbdx agent");
        let agent = Self { dir, child, client };
        let t = Instant::now();
        while !agent.dir.path().join("s").exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "rbdx agent did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(agent)
    }

    /// `cmd` (a run of `rbdx`) as a run of `rbdx-run` through this agent.
    pub fn through(&self, cmd: &Command) -> Command {
        let mut c = rbdx_tests::run_by(&self.client, cmd);
        c.env("RBDX_AGENT_SOCKET", self.dir.path().join("s"));
        c
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
