//! DS cp: an image imported (any format the intake accepts), from the data that
//! follows the request on stdin (or, run here, from the open local file) or from a
//! URL this host downloads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec;
use crate::error::Result;
use crate::job::CephAccess;

/// The import job's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    /// Ceph access.
    pub ceph: CephAccess,
    /// The image to create (`pool/one-<id>`).
    pub target: String,
    /// Its data pool.
    pub data_pool: Option<String>,
    /// Download from here (on this host) instead of reading stdin.
    pub url: Option<String>,
    /// Bytes that follow on stdin.
    pub size: u64,
    /// Make the image at least this many MiB.
    pub min_size_mb: Option<u64>,
    /// Expected MD5.
    pub md5: Option<String>,
    /// Expected SHA1.
    pub sha1: Option<String>,
    /// Bytes per second at most.
    pub limit_bps: Option<u64>,
    /// Where non-raw data is staged for qemu-img.
    pub staging_dir: Option<String>,
    /// Seconds a download may go without data.
    #[serde(default)]
    pub idle_secs: Option<u64>,
    /// Largest virtual size accepted, MiB.
    #[serde(default)]
    pub max_size_mb: Option<u64>,
}

/// Imports, reading the data (when there is no URL) from `input`; returns the
/// log line.
///
/// # Errors
/// Ceph and import errors.
pub fn run(
    job: &ImportJob,
    input: crate::exec::Input,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<String, crate::Error> {
    let t = spec(&job.target)?;
    let c = job.ceph.connect()?;
    let source = match &job.url {
        Some(u) => rbdx_import::Source::Url(u.clone()),
        None => match input {
            crate::exec::Input::File(f) => rbdx_import::Source::Open(f),
            crate::exec::Input::Stream(reader) => rbdx_import::Source::Stream { reader, size: job.size },
        },
    };
    let opts = rbdx_import::Options {
        data_pool: job.data_pool.clone(),
        min_size: job.min_size_mb.map(|m| m << 20),
        md5: job.md5.clone(),
        sha1: job.sha1.clone(),
        limit_bps: job.limit_bps,
        staging_dir: job.staging_dir.as_ref().map(Into::into),
        timeout: Some(Duration::from_secs(job.idle_secs.unwrap_or(60).max(1))),
        convert_timeout: None,
        max_size: job.max_size_mb.map(|m| m.saturating_mul(1 << 20)),
    };
    let r = rbdx_import::import(&c, source, &t, &opts, Some(progress))?;
    Ok(if r.already_done {
        format!("{t} was imported already")
    } else {
        format!("imported {} MiB ({}) into {t}", r.read >> 20, r.format.qemu_name())
    })
}
