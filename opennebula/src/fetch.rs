//! Sources rbdx does not read itself (`ssh://`, `s3://`, `lxd://`, `restic://`,
//! `restic+rbd://`, `rsync://`, `rsync+rbd://`, `netapp://`, `purefa://`): fetched
//! with OpenNebula's own `datastore/downloader.sh` from the remotes tree, run as
//! a child with an argument vector (never a shell string) under the action's
//! deadline, into a staging file that is then imported as a local one. Only a
//! download that ended well is imported.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Context, Error, Result};

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

/// The backup files of increment `increment` (`-1`: the newest) of a backup
/// image, by disk id (`"0"`, …, `"tpm"`), as URLs for downloader.sh: the
/// answer of the backup datastore's own `ls -i <increment>` action
/// (`<remotes>/datastore/<ds_mad>/ls`), run with an argument vector and
/// `action` (the `<DS_DRIVER_ACTION_DATA>` document) on stdin, within `limit`.
///
/// # Errors
/// A DS_MAD that is not a plain driver name, the action missing or failing,
/// or an answer that is not a JSON object of strings.
pub fn list_backup(
    remotes: &Path,
    ds_mad: &str,
    increment: i64,
    action: &str,
    limit: Duration,
) -> Result<std::collections::BTreeMap<String, String>> {
    let plain = !ds_mad.is_empty()
        && ds_mad.len() <= 64
        && !ds_mad.starts_with('.')
        && ds_mad.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !plain {
        return Err(Error::Invalid(format!("refusing the backup datastore's DS_MAD {ds_mad:?}")));
    }
    let ls = remotes.join("datastore").join(ds_mad).join("ls");
    if !ls.is_file() {
        return Err(Error::Invalid(format!("the backup datastore's driver has no {}", ls.display())));
    }
    let mut cmd = Command::new(&ls);
    cmd.args(["-i", &increment.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = rbdx_import::child::spawn(&mut cmd).context(format!("running {}", ls.display()))?;
    let mut stdin = child.stdin.take();
    let input = action.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(w) = stdin.as_mut() {
            use std::io::Write;
            let _ = w.write_all(&input);
        }
    });
    let done = rbdx_import::child::wait_output(child, limit).context("listing the backup")?;
    let _ = writer.join();
    if !done.status.success() {
        let err = String::from_utf8_lossy(&done.stderr);
        let last = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no message");
        return Err(Error::Failed(format!("listing the backup failed: {last}")));
    }
    let text = String::from_utf8_lossy(&done.stdout);
    let json = text.lines().map(str::trim).rfind(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(json)
        .map_err(|e| Error::Invalid(format!("the backup datastore's listing is not a map of URLs: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_driver_name_picks_the_listing_action() {
        let remotes = Path::new("/nonexistent-remotes");
        for bad in ["", "../../bin", "a/b", ".hidden", "rsync;id", "x y", &"a".repeat(65)] {
            let e = list_backup(remotes, bad, -1, "", Duration::from_secs(1)).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{bad:?}: {e}");
        }
        let e = list_backup(remotes, "rsync", -1, "", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("has no"), "{e}");
    }

    #[test]
    fn urls_with_shell_characters_are_refused() {
        for bad in
            ["rsync://1/2/0:a//x$(id)", "rsync://1/2/0:a//x y", "rsync://1/2/0:a//x`id`", "restic://a'b"]
        {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(
            check_url("rsync://100/3/0:8a3454,1:f6e63e//var/lib/one/datastores/100/6/8a3454/disk.0.0")
                .is_ok()
        );
    }
}
