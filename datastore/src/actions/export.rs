//! `export <app id>` (marketplace) — the `IMPORT_INFO` document for an image:
//! where to read it (`rbd://<bridge>/<SOURCE>`, credential *paths* as query
//! parameters, as upstream), its MD5 (computed when the template has none), size
//! and format. Unlike upstream, no stray quote after the document.

use rbdx_one::exec::Target;
use rbdx_one::job::Job;
use rbdx_one::xml::escape;

use crate::context::{DsCtx, Result};
use rbdx_one::Error;

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(ctx: &DsCtx) -> Result<String, rbdx_one::Error> {
    let img = ctx.image()?;
    let source: rbdx_core::ops::ImageSpec = ctx.image_attr("SOURCE")?.parse()?;
    let size = ctx.image_attr("SIZE")?;
    rbdx_one::args::parse_size_mb(size)?;
    let format = img.get("TEMPLATE/FORMAT").or_else(|| img.get("FORMAT")).unwrap_or("raw");
    // What goes into IMPORT_INFO is checked, not copied: a format rbdx knows, an
    // MD5 that is one.
    if !rbdx_import::QEMU_FORMATS.contains(&format) {
        return Err(Error::Invalid(format!("invalid image FORMAT {format:?}")));
    }
    let md5 = match img.get("TEMPLATE/MD5") {
        Some(m) if m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit()) => m.to_ascii_lowercase(),
        Some(m) => return Err(Error::Invalid(format!("invalid image MD5 {m:?}"))),
        None => {
            let out = ctx.run(&Job::Checksum { ceph: ctx.ceph(), image: source.to_string() })?;
            out.output.unwrap_or_default()
        }
    };
    let host = match ctx.target()? {
        Target::Ssh(h) => h,
        Target::Local => ctx.ds.bridges().into_iter().next().unwrap_or_else(|| "localhost".into()),
    };
    let t = ctx.template();
    let query: Vec<String> = ["CEPH_USER", "CEPH_KEY", "CEPH_CONF"]
        .iter()
        .filter_map(|k| t.get(k).map(|v| format!("{k}={v}")))
        .collect();
    let mut url = format!("rbd://{host}/{source}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    Ok(format!(
        "<IMPORT_INFO><IMPORT_SOURCE>{}</IMPORT_SOURCE><MD5>{}</MD5><SIZE>{}</SIZE><FORMAT>{}</FORMAT><DISPOSE>NO</DISPOSE></IMPORT_INFO>\n",
        escape(&url),
        escape(&md5),
        escape(size),
        escape(format)
    ))
}
