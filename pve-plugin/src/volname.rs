//! Proxmox volume names: one grammar, shared with the Perl plugin's
//! `parse_volname` (`RBDXPlugin.pm`) and pinned by `golden/volnames.json`, which
//! both test suites read. PVE checks a user's permissions on the owner the
//! plugin reports; the helper derives the same owner from the same name and acts
//! on exactly that image, so a name can never mean another VM's disk.
//!
//! ```text
//! volname = [ base "/" ] image
//! base    = "base-" vmid "-" rest          (the template a linked clone came from)
//! image   = ("vm" | "base") "-" vmid "-" rest
//! vmid    = "0" | [1-9][0-9]{0,8}
//! rest    = one or more bytes, none of them whitespace, "/" or "@";
//!           never containing ".rbdx-" (rbdx's internal images)
//! ```

use crate::error::{Error, Result};

/// A parsed volume name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolName {
    /// The RBD image.
    pub image: String,
    /// Its owner, from the image name.
    pub vmid: u32,
    /// The template it was cloned from, and that template's owner.
    pub base: Option<(String, u32)>,
}

impl VolName {
    /// True for a template (`base-…`).
    pub fn is_base(&self) -> bool {
        self.image.starts_with("base-")
    }
}

/// The owner of an image name `(vm|base)-<vmid>-<rest>`, or `None` if the name
/// is not one (also for rbdx's internal images).
pub fn owner(image: &str) -> Option<u32> {
    let rest = image.strip_prefix("vm-").or_else(|| image.strip_prefix("base-"))?;
    let (id, tail) = rest.split_once('-')?;
    let plain = |b: u8| !b.is_ascii_whitespace() && b != b'/' && b != b'@';
    let digits = !id.is_empty() && id.len() <= 9 && id.bytes().all(|b| b.is_ascii_digit());
    let canonical = id == "0" || !id.starts_with('0');
    if !digits || !canonical || tail.is_empty() || !tail.bytes().all(plain) || image.contains(".rbdx-") {
        return None;
    }
    id.parse().ok()
}

/// Parses a volume name.
///
/// # Errors
/// [`Error::VolumeName`] naming the volume.
pub fn parse(volname: &str) -> Result<VolName> {
    let bad = || Error::VolumeName(volname.to_string());
    let (base, image) = match volname.split_once('/') {
        Some((b, i)) => (Some(b), i),
        None => (None, volname),
    };
    let vmid = owner(image).ok_or_else(bad)?;
    let base = match base {
        Some(b) if b.starts_with("base-") => Some((b.to_string(), owner(b).ok_or_else(bad)?)),
        Some(_) => return Err(bad()),
        None => None,
    };
    Ok(VolName { image: image.to_string(), vmid, base })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `golden/volnames.json`: the cases the Perl plugin's tests read too.
    #[test]
    fn the_grammar_is_the_golden_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/volnames.json");
        let cases: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(cases.len() >= 20);
        for c in cases {
            let name = c["volname"].as_str().unwrap();
            match parse(name) {
                Ok(v) => {
                    assert_eq!(c["ok"], true, "{name} parses");
                    assert_eq!(v.image, c["image"].as_str().unwrap(), "{name}");
                    assert_eq!(u64::from(v.vmid), c["vmid"].as_u64().unwrap(), "{name}");
                    assert_eq!(v.base.as_ref().map(|b| b.0.as_str()), c["base"].as_str(), "{name}");
                    assert_eq!(v.base.map(|b| u64::from(b.1)), c["basevmid"].as_u64(), "{name}");
                }
                Err(e) => assert_eq!(c["ok"], false, "{name}: {e}"),
            }
        }
    }
}
