//! `stat <image id>` — the virtual size in MiB (rounded up) of IMAGE/PATH, a local
//! file or an http(s) URL, as the stock driver reports it. Runs on the front-end.
//! A local file passes the same checks as `cp`: RESTRICTED_DIRS/SAFE_DIRS on the
//! file it is, a regular file (a FIFO is refused, not waited on), and the image
//! intake rules (nothing that names another file reaches qemu-img).

use std::io::Read;
use std::time::Duration;

use rbdx_import::{Format, OpenFile, intake, sniff};

use crate::context::{DsCtx, Result};
use rbdx_one::{Context, Error};

const MIB: u64 = 1 << 20;

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let path = ctx.image_attr("PATH")?;
    let bytes = if path.starts_with("http://") || path.starts_with("https://") {
        remote_size(path, ctx.cfg.oned_timeout)
    } else if rbdx_one::rbd_source::is_rbd_url(path) {
        let src = rbdx_one::rbd_source::source(path, &ctx.cfg, ctx.ceph().timeout_secs)?;
        let local = rbdx_one::exec::is_this_host(&src.host);
        let s = rbdx_one::rbd_source::Stream::open(&src, &ctx.cfg, local, true)?;
        let size = s.size;
        s.finish(&ctx.cfg)?;
        Ok(size)
    } else if rbdx_one::fetch::delegated_scheme(path).is_some() {
        // As upstream: the size of what downloader.sh brings, read here.
        let staging = ctx.ds.settings().staging_dir.clone().map_or_else(std::env::temp_dir, Into::into);
        let staged = rbdx_one::fetch::fetch(
            path,
            &rbdx_one::config::remotes_dir(),
            &staging,
            ctx.cfg.transfer_timeout,
        )?;
        let f = staged.reopen().context("reading the download")?;
        file_size(f, path, ctx.cfg.action_timeout)
    } else {
        local_size(ctx, path, ctx.cfg.action_timeout)
    }
    .context(format!("Cannot determine size for {path}"))?;
    Ok(format!("{}\n", bytes.div_ceil(MIB)))
}

fn local_size(ctx: &DsCtx, path: &str, deadline: Duration) -> Result<u64> {
    file_size(crate::restricted::open(ctx, path)?, path, deadline)
}

/// The image size of open file `f` (raw, compressed, or a qemu-img format).
fn file_size(mut f: std::fs::File, path: &str, deadline: Duration) -> Result<u64> {
    let mut head = vec![0u8; 64 << 10];
    let got = read_head(&mut f, &mut head)?;
    match sniff(&head[..got]) {
        Format::Raw => Ok(f.metadata().context(format!("reading {path}"))?.len()),
        format if format.is_compressed() => {
            let shared = OpenFile::new(&f)?;
            Ok(rbdx_import::compressed_image_size(shared.path(), format, deadline)?)
        }
        format => {
            let shared = OpenFile::new(&f)?;
            Ok(rbdx_import::virtual_size(shared.path(), format, &std::env::temp_dir(), deadline)?)
        }
    }
}

fn read_head(r: &mut impl Read, head: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]).context("reading the image")? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn remote_size(url: &str, timeout: Duration) -> Result<u64> {
    let (mut body, len) = rbdx_import::open_url(url, Some(timeout))?;
    let mut head = vec![0u8; 64 << 10];
    let got = read_head(&mut body, &mut head)?;
    let head = &head[..got];
    match sniff(head) {
        Format::Raw => len.ok_or_else(|| Error::Invalid("the server does not say the size".into())),
        // qcow2 header: virtual size, big endian, at byte 24 (after the intake's
        // header checks: no backing or data file).
        Format::Qcow2 if got >= 32 => {
            intake::check_head(head, Format::Qcow2, &mut |_, _| {
                Err(rbdx_import::Error::Refused("beyond the header".into()))
            })?;
            Ok(u64::from_be_bytes(head[24..32].try_into().unwrap_or_default()))
        }
        f => Err(Error::Invalid(format!("cannot read the size of a remote {} image", f.qemu_name()))),
    }
}
