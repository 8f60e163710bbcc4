//! `stat <image id>` — the virtual size in MiB (rounded up) of IMAGE/PATH, a local
//! file or an http(s) URL, as the stock driver reports it. Runs on the front-end.

use rbdx_import::{Format, sniff};

use crate::context::{DsCtx, Result};

const MIB: u64 = 1 << 20;

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String> {
    let path = ctx.image_attr("PATH")?;
    let bytes =
        size_of(path, ctx.cfg.oned_timeout).map_err(|e| format!("Cannot determine size for {path}: {e}"))?;
    Ok(format!("{}\n", bytes.div_ceil(MIB)))
}

fn size_of(path: &str, timeout: std::time::Duration) -> Result<u64> {
    use std::io::Read;
    if path.starts_with("http://") || path.starts_with("https://") {
        let (mut body, len) = rbdx_import::open_url(path, Some(timeout))?;
        let mut head = vec![0u8; 512];
        let mut got = 0;
        while got < head.len() {
            match body.read(&mut head[got..]).map_err(|e| e.to_string())? {
                0 => break,
                n => got += n,
            }
        }
        return match sniff(&head[..got]) {
            Format::Raw => len.ok_or_else(|| "the server does not say the size".to_string()),
            // qcow2 header: virtual size, big endian, at byte 24.
            Format::Qcow2 if got >= 32 => Ok(u64::from_be_bytes(head[24..32].try_into().unwrap_or_default())),
            f => Err(format!("cannot read the size of a remote {} image", f.qemu_name())),
        };
    }
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64 << 10];
    let got = f.read(&mut head).map_err(|e| e.to_string())?;
    match sniff(&head[..got]) {
        Format::Raw => Ok(f.metadata().map_err(|e| e.to_string())?.len()),
        format => rbdx_import::virtual_size(std::path::Path::new(path), format),
    }
}
