//! Sources rbdx does not read itself (`ssh://`, `s3://`, `lxd://`, `restic://`,
//! `restic+rbd://`, `rsync://`, `rsync+rbd://`, `netapp://`, `purefa://`): fetched
//! with OpenNebula's own `datastore/downloader.sh` from the remotes tree, run as
//! a child with an argument vector (never a shell string) under the action's
//! deadline, into a staging file that is then imported as a local one. Only a
//! download that ended well is imported.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rbdx_one::{Context, Error, Result};

/// The schemes handed to downloader.sh.
pub const DELEGATED: [&str; 9] =
    ["ssh", "s3", "lxd", "restic", "restic+rbd", "rsync", "rsync+rbd", "netapp", "purefa"];

/// The scheme of `url` if it is one of [`DELEGATED`].
pub fn delegated_scheme(url: &str) -> Option<&'static str> {
    let (scheme, _) = url.split_once("://")?;
    DELEGATED.iter().copied().find(|s| *s == scheme)
}

/// A URL downloader.sh may be given: printable ASCII without quotes, spaces,
/// backslashes, `$` or backticks (its commands are shell text).
fn check_url(url: &str) -> Result<()> {
    let ok =
        url.len() <= 4096 && url.bytes().all(|b| b.is_ascii_graphic() && !b"'\"\\`$;|<>(){}*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("refusing the image URL {url:?}: characters a download cannot take")))
    }
}

/// Downloads `url` with `<remotes>/datastore/downloader.sh` into a file in
/// `staging` (removed when the handle drops), without decompressing (rbdx does),
/// within `limit`.
///
/// # Errors
/// An unusable URL; the downloader missing or failing (its last stderr line).
pub fn fetch(url: &str, remotes: &Path, staging: &Path, limit: Duration) -> Result<tempfile::NamedTempFile> {
    check_url(url)?;
    let downloader: PathBuf = remotes.join("datastore/downloader.sh");
    if !downloader.is_file() {
        return Err(Error::Invalid(format!(
            "{url}: this source needs OpenNebula's {} (not found)",
            downloader.display()
        )));
    }
    let out = tempfile::Builder::new()
        .prefix("rbdx-fetch-")
        .tempfile_in(staging)
        .context(format!("staging in {}", staging.display()))?;
    let file = out.reopen().context("staging")?;
    let mut cmd = Command::new(&downloader);
    cmd.args(["--nodecomp", url, "-"]).stdin(Stdio::null()).stdout(file).stderr(Stdio::piped());
    let child = rbdx_import::child::spawn(&mut cmd).context(format!("running {}", downloader.display()))?;
    let done = rbdx_import::child::wait_output(child, limit).context(format!("downloading {url}"))?;
    if !done.status.success() {
        let err = String::from_utf8_lossy(&done.stderr);
        let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no message");
        return Err(Error::Failed(format!("downloading {url} failed: {last}")));
    }
    Ok(out)
}
