//! `cp <image id>` — register an image from IMAGE/PATH (a local path, an
//! http(s) URL, an `rbd://` image read by its host's rbdx, or what OpenNebula's
//! downloader.sh fetches; any format qemu-img understands) as the raw RBD image
//! `<POOL_NAME>/one-<id>` with the datastore's EC_POOL_NAME. The data is read
//! once on the front-end and streamed to the bridge over the ssh connection; with
//! EXECUTION=local it is imported in-process from the open file itself. Raw data
//! is written sparse with no staging file, and so is the data of a local qcow2
//! (or other format) that `qemu-img map` finds stored raw in it. MD5/SHA1 from
//! the image template are verified, RESTRICTED_DIRS / SAFE_DIRS honoured,
//! LIMIT_TRANSFER_BW applied, progress logged. Prints `SOURCE raw`.

use std::time::{Duration, Instant};

use rbdx_one::exec::{self, Input};
use rbdx_one::job::Job;

use crate::context::{DsCtx, Result};
use rbdx_one::{Context, Error};

/// An expected digest from the image template: `len` hex digits.
fn hex_digest(what: &str, v: &str, len: usize) -> Result<String, rbdx_one::Error> {
    if v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(Error::Invalid(format!("invalid {what} {v:?} in the image template")))
    }
}

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let img = ctx.image()?;
    let path = ctx.image_attr("PATH")?.to_string();
    let target = ctx.new_source();
    let is_url = path.starts_with("http://") || path.starts_with("https://");
    let limit = ctx.ds.settings().limit_bps;
    // A source downloader.sh fetches: staged here, then sent as a local file.
    let mut fetched = None;
    // An rbd:// source: streamed from its host's rbdx.
    let mut streamed = None;
    let (input, size): (Input, Option<u64>) = if is_url {
        let (r, len) = rbdx_import::open_url(&path, Some(ctx.cfg.idle_timeout))?;
        (Input::Stream(r), len)
    } else if rbdx_one::rbd_source::is_rbd_url(&path) {
        let src = rbdx_one::rbd_source::source(&path, &ctx.cfg, ctx.ceph().timeout_secs)?;
        let local = rbdx_one::exec::is_this_host(&src.host);
        let mut s = rbdx_one::rbd_source::Stream::open(&src, &ctx.cfg, local, false)?;
        let size = s.size;
        let data = s.data()?;
        streamed = Some(s);
        (Input::Stream(Box::new(data)), Some(size))
    } else if rbdx_one::fetch::delegated_scheme(&path).is_some() {
        let staging = ctx.ds.settings().staging_dir.clone().map_or_else(std::env::temp_dir, Into::into);
        let remotes = rbdx_one::config::remotes_dir();
        let staged = rbdx_one::fetch::fetch(&path, &remotes, &staging, ctx.cfg.transfer_timeout)?;
        let f = staged.reopen().context("reading the download")?;
        let len = f.metadata().context("reading the download")?.len();
        fetched = Some(staged);
        (Input::File(f), Some(len))
    } else {
        // Opened once; the check is on the file that is read.
        let f = crate::restricted::open(ctx, &path)?;
        let len = f.metadata().context(format!("reading {path}"))?.len();
        (Input::File(f), Some(len))
    };
    let job = Job::Import(rbdx_one::job::ImportJob {
        ceph: ctx.ceph(),
        target: target.clone(),
        data_pool: ctx.data_pool(),
        // A server that does not say the size: the bridge downloads it itself.
        url: if size.is_none() { Some(path.clone()) } else { None },
        size: size.unwrap_or(0),
        min_size_mb: None,
        md5: img.get("TEMPLATE/MD5").map(|v| hex_digest("MD5", v, 32)).transpose()?,
        sha1: img.get("TEMPLATE/SHA1").map(|v| hex_digest("SHA1", v, 40)).transpose()?,
        limit_bps: limit,
        staging_dir: ctx.ds.settings().staging_dir.clone(),
        idle_secs: Some(ctx.cfg.idle_timeout.as_secs()),
        max_size_mb: Some(ctx.cfg.max_image_size_mb),
    });
    let input = if size.is_none() { Input::Stream(Box::new(std::io::empty())) } else { input };
    let total = size;
    let start = Instant::now();
    let mut last = Instant::now();
    let mut next_pct = 10u64;
    let mut progress = move |done: u64, _: Option<u64>| {
        let pct = total.filter(|t| *t > 0).map(|t| done * 100 / t);
        let due = pct.is_some_and(|p| p >= next_pct) || last.elapsed() >= Duration::from_secs(30);
        if due {
            last = Instant::now();
            if let Some(p) = pct {
                next_pct = (p / 10 + 1) * 10;
            }
            let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001) / 1048576.0;
            match (pct, total) {
                (Some(p), Some(t)) => {
                    rbdx_one::log::info(&format!(
                        "copied {} of {} MiB ({p}%, {rate:.0} MiB/s)",
                        done >> 20,
                        t >> 20
                    ));
                }
                _ => rbdx_one::log::info(&format!("copied {} MiB ({rate:.0} MiB/s)", done >> 20)),
            }
        }
    };
    let outcome = exec::run_with_input(&job, &ctx.target()?, &ctx.cfg, input, &mut progress);
    outcome.log.iter().for_each(|l| rbdx_one::log::info(l));
    outcome.into_result()?;
    if let Some(s) = streamed {
        s.finish(&ctx.cfg)?;
    }
    drop(fetched);
    Ok(format!("{target} raw\n"))
}

#[cfg(test)]
mod tests {
    use super::hex_digest;

    #[test]
    fn digests_are_hex_of_their_length() {
        assert_eq!(
            hex_digest("MD5", "D41D8CD98F00B204E9800998ECF8427E", 32).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert!(hex_digest("MD5", "d41d8cd98f00b204e9800998ecf8427", 32).is_err());
        assert!(hex_digest("SHA1", "x".repeat(40).as_str(), 40).is_err());
    }
}
