//! `rbdx`: one binary for every entry point. `main` parses the command line and is
//! the one place that turns errors into exit codes (0 ok, 1 failed, 2 bad usage).

mod commands;
mod connection;
mod size;

use std::process::ExitCode;

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
    /// Pool capacity and usage (EC-aware).
    #[command(subcommand)]
    Pool(commands::pool::PoolCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image(c) => commands::image::run(c),
        Command::Snap(c) => commands::snap::run(c),
        Command::Trash(c) => commands::trash::run(c),
        Command::Pool(c) => commands::pool::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rbdx: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Errors are one line: whatever a lower layer put on several lines is joined.
fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}
