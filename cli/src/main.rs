//! `rbdx`: one binary for every entry point. `main` parses the command line and
//! turns the operator commands' errors into one line and an exit code (0 ok, 1
//! failed, 2 bad usage); the driver entry points (`tm`, `ds`, `pve`, `remote`)
//! answer in their callers' protocols and return their own codes.

mod agent;
mod agent_hint;
// Shared with `rbdx-run`: each side uses its half.
#[allow(dead_code)]
mod agent_proto;
mod commands;
mod connection;
mod error;
mod size;

use clap::{Parser, Subcommand};

/// Ceph RBD storage drivers for OpenNebula and Proxmox VE.
#[derive(Debug, Parser)]
#[command(name = "rbdx", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, inspect, clone, resize and remove RBD images.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Create, list, roll back and remove snapshots.
    #[command(subcommand)]
    Snap(commands::snap::SnapCommand),
    /// List, restore and purge the RBD trash.
    #[command(subcommand)]
    Trash(commands::trash::TrashCommand),
    /// Import a local file or http(s) URL (any qemu-img format) into a new RBD image.
    Import(commands::import::ImportArgs),
    /// Pool capacity and usage (EC-aware).
    #[command(subcommand)]
    Pool(commands::pool::PoolCommand),
    /// OpenNebula front-end commands (`detach`: before putting the stock drivers back).
    #[command(subcommand)]
    One(commands::one::OneCommand),
    /// An OpenNebula TM action, with oned's arguments (what the action shims run).
    Tm {
        /// The action (clone, ln, mkimage, delete, snap_create, …).
        action: String,
        /// oned's arguments, passed through untouched.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// An OpenNebula datastore action (cp, mkfs, rm, clone, …): the id as argument,
    /// oned's base64 message on stdin.
    Ds {
        /// The action.
        action: String,
        /// oned's arguments, passed through untouched.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The Proxmox VE plugin's helper: one JSON request on stdin, the answer on stdout.
    Pve,
    /// Checks what the drivers need here (Ceph access and caps, pools, EC
    /// overwrites, qemu-img; oned, datastores and hosts on an OpenNebula
    /// front-end; every rbdx storage on a Proxmox VE node), one line each.
    Doctor(commands::doctor::DoctorArgs),
    /// Runs one driver job read as JSON from stdin and prints its outcome as JSON
    /// (what the front-end runs on a host over ssh).
    Remote,
    /// The warm start: serves `rbdx-run` clients on a Unix socket (systemd's
    /// socket unit, or `--socket`), each run a fork of this already-loaded
    /// program. See the README.
    Agent {
        /// Listen here when systemd passed no socket (mode 0600).
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
        /// Keep a spare run connected to Ceph ahead of the next request, with
        /// the settings the last run used, replaced after this many seconds
        /// (0: no spare).
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        connect_ahead_secs: u64,
    },
}

fn main() {
    entry(std::env::args_os().collect())
}

/// One run with arguments `argv` (the program name first): `main`, and each
/// run the agent forks.
fn entry(argv: Vec<std::ffi::OsString>) -> ! {
    // `RBDX_TRACE=<file>`: append where this run's time went (see `write_trace`).
    let trace = std::env::var_os("RBDX_TRACE").filter(|p| !p.is_empty());
    if trace.is_some() {
        rbdx_core::trace::enable();
    }
    let started = std::time::Instant::now();
    // Every command is one action: the process's end closes its Ceph sessions.
    rbdx_core::Cluster::close_at_exit();
    // A panic has printed its message; it exits 101, as an uncaught one would.
    let code = std::panic::catch_unwind(|| run(&argv)).unwrap_or(101);
    if let Some(path) = trace {
        write_trace(std::path::Path::new(&path), &argv, started.elapsed());
    }
    rbdx_core::rados::exit_process(code)
}

/// Appends one JSON line to `path`: the arguments, the microseconds from `main`
/// to its end, and the spans (Ceph calls, oned calls, ssh, a host's spans
/// prefixed `host: `). Names and times only; never a value from a message.
fn write_trace(path: &std::path::Path, argv: &[std::ffi::OsString], took: std::time::Duration) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let line = serde_json::json!({
        "args": argv.iter().skip(1).take(2).map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "us": u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        "spans": rbdx_core::trace::take(),
    });
    let file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path);
    if let Err(e) = file.and_then(|mut f| writeln!(f, "{line}")) {
        eprintln!("rbdx: RBDX_TRACE {}: {e}", path.display());
    }
}

fn run(argv: &[std::ffi::OsString]) -> u8 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Tm { action, args } => return exit(rbdx_tm::main(&action, &args)),
        Command::Ds { action, args } => return exit(rbdx_ds::main(&action, &args)),
        Command::Pve => {
            // An import's request comes in the environment: its stdin is the stream.
            let request = std::env::var("RBDX_PVE_REQUEST").ok();
            let code = rbdx_pve::serve(
                request.as_deref(),
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            );
            return exit(code);
        }
        Command::Remote => {
            let (outcome, code) = rbdx_one::exec::serve(std::io::stdin().lock());
            if let Some(o) = outcome {
                println!("{}", serde_json::to_string(&o).unwrap_or_default());
            }
            return exit(code);
        }
        Command::One(c) => {
            return match commands::one::run(c) {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("rbdx: {}", one_line(&e.to_string()));
                    2
                }
            };
        }
        Command::Agent { socket, connect_ahead_secs } => {
            let ahead = std::time::Duration::from_secs(connect_ahead_secs.min(86_400));
            return match agent::serve(socket.as_deref(), ahead) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("rbdx agent: {}", one_line(&e));
                    1
                }
            };
        }
        Command::Doctor(a) => {
            return match commands::doctor::run(&a) {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("rbdx: {e}");
                    2
                }
            };
        }
        Command::Image(c) => commands::image::run(c).map_err(error::Error::from),
        Command::Snap(c) => commands::snap::run(c).map_err(error::Error::from),
        Command::Trash(c) => commands::trash::run(c).map_err(error::Error::from),
        Command::Pool(c) => commands::pool::run(c).map_err(error::Error::from),
        Command::Import(a) => commands::import::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rbdx: {}", one_line(&e.to_string()));
            1
        }
    }
}

/// Help and version as clap prints them; a usage error as one line (clap's first
/// paragraph, without the usage and hints after it), exit 2.
fn usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    eprintln!("rbdx: {}", one_line(first.trim_start_matches("error:")));
    2
}

fn exit(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Errors are one line: whatever a lower layer put on several lines is joined.
fn one_line(msg: &str) -> String {
    rbdx_one::log::one_line(msg)
}
