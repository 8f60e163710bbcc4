//! `rbdx import SOURCE POOL/IMAGE`: a local file or http(s) URL, any format
//! qemu-img understands, streamed sparse into a new raw RBD image.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use rbdx_core::ops::ImageSpec;

use super::spec_arg;
use crate::connection::ConnectArgs;
use crate::error::Result;
use crate::size::{human, parse_size};

/// `rbdx import` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A local path or an http(s) URL.
    source: String,
    /// The image to create: `pool[/namespace]/image`.
    #[arg(value_parser = spec_arg)]
    image: ImageSpec,
    /// Pool for the image's data objects (an EC pool).
    #[arg(long)]
    data_pool: Option<String>,
    /// Make the image at least this large (e.g. 20G).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Expected MD5 of the source.
    #[arg(long)]
    md5: Option<String>,
    /// Expected SHA1 of the source.
    #[arg(long)]
    sha1: Option<String>,
    /// Read at most this many bytes per second (e.g. 100M).
    #[arg(long, value_parser = parse_size)]
    limit: Option<u64>,
    /// Where a non-raw download is staged for qemu-img.
    #[arg(long)]
    staging_dir: Option<PathBuf>,
    /// Refuse an image whose virtual size is larger than this many MiB
    /// (default 64 TiB).
    #[arg(long, value_name = "MIB")]
    max_size: Option<u64>,
    #[command(flatten)]
    conn: ConnectArgs,
}

/// Runs the import.
pub fn run(a: ImportArgs) -> Result<()> {
    let cluster = a.conn.connect()?;
    let opts = rbdx_import::Options {
        data_pool: a.data_pool,
        min_size: a.size,
        md5: a.md5,
        sha1: a.sha1,
        limit_bps: a.limit,
        staging_dir: a.staging_dir,
        timeout: None,
        convert_timeout: None,
        max_size: a.max_size.map(|m| m.saturating_mul(1 << 20)),
    };
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut bar = |done: u64, total: Option<u64>| {
        if tty && last.elapsed().as_millis() >= 200 {
            last = Instant::now();
            match total {
                Some(t) if t > 0 => {
                    eprint!("\r{:>5.1}%  {} of {}   ", done as f64 * 100.0 / t as f64, human(done), human(t))
                }
                _ => eprint!("\r{}   ", human(done)),
            }
        }
    };
    let r =
        rbdx_import::import(&cluster, rbdx_import::Source::parse(&a.source), &a.image, &opts, Some(&mut bar));
    if tty {
        eprint!("\r{:40}\r", "");
    }
    let r = r?;
    if r.already_done {
        println!("{} was imported already", a.image);
    } else {
        let secs = start.elapsed().as_secs_f64().max(0.001);
        println!(
            "imported {} ({}, {} read, {:.0} MiB/s) into {} ({})",
            a.source,
            r.format.qemu_name(),
            human(r.read),
            r.read as f64 / secs / 1048576.0,
            a.image,
            human(r.size)
        );
    }
    Ok(())
}
