//! A datastore document and its settings, validated when the document is read:
//! every attribute rbdx reads from a datastore template (POOL_NAME,
//! EC_POOL_NAME, BRIDGE_LIST, STAGING_DIR, CEPH_CONF, CEPH_USER, CEPH_KEY,
//! CEPH_SECRET, CEPH_TRASH, LIMIT_TRANSFER_BW, RESTRICTED_DIRS, SAFE_DIRS and
//! every `RBDX_*` override), whether or not the action at hand uses it. A
//! malformed value is a configuration error reported at once, in one line; a
//! present value is never trimmed or defaulted into something else; a template
//! that names an attribute twice is refused.

use std::time::Duration;

use crate::config::Config;
use crate::oned::Attrs;
use crate::xml::Element;

use crate::error::{Context, Error, Result};

/// Longest path accepted (Linux PATH_MAX, counting the final NUL).
pub const PATH_MAX: usize = 4095;

/// What the datastore's template says, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// POOL_NAME (default `one`).
    pub pool: String,
    /// EC_POOL_NAME.
    pub data_pool: Option<String>,
    /// BRIDGE_LIST.
    pub bridges: Vec<String>,
    /// STAGING_DIR.
    pub staging_dir: Option<String>,
    /// CEPH_CONF.
    pub ceph_conf: Option<String>,
    /// CEPH_USER.
    pub ceph_user: Option<String>,
    /// CEPH_KEY.
    pub ceph_key: Option<String>,
    /// CEPH_SECRET (the libvirt secret's UUID).
    pub ceph_secret: Option<String>,
    /// CEPH_TRASH.
    pub trash: bool,
    /// LIMIT_TRANSFER_BW, bytes per second.
    pub limit_bps: Option<u64>,
    /// RESTRICTED_DIRS.
    pub restricted_dirs: Vec<String>,
    /// SAFE_DIRS.
    pub safe_dirs: Vec<String>,
}

use crate::config::DATASTORE_KEYS as RBDX_KEYS;

/// An absolute path without control characters or `..`, at most [`PATH_MAX`].
///
/// # Errors
/// One line naming the attribute.
pub fn path(what: &str, v: &str) -> Result<String, crate::Error> {
    let ok = v.starts_with('/')
        && v.len() <= PATH_MAX
        && !v.chars().any(char::is_control)
        && !v.split('/').any(|c| c == "..");
    if ok { Ok(v.to_string()) } else { Err(Error::Invalid(format!("{what}: {v:?} is not an absolute path"))) }
}

/// A pool name as RBD accepts it.
///
/// # Errors
/// One line naming the attribute.
pub fn pool(what: &str, v: &str) -> Result<String, crate::Error> {
    rbdx_core::ops::validate_name("pool", v).context(what)?;
    Ok(v.to_string())
}

/// A cephx client id (without `client.`).
///
/// # Errors
/// One line naming the attribute.
pub fn ceph_user(what: &str, v: &str) -> Result<String, crate::Error> {
    let ok =
        !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(Error::Invalid(format!("{what}: {v:?} is not a cephx client id")))
    }
}

/// `yes`/`no` as OpenNebula writes them (`YES`, `true`, `FALSE`…).
///
/// # Errors
/// One line naming the attribute.
pub fn yes_no(what: &str, v: &str) -> Result<bool> {
    match v {
        "yes" | "YES" | "Yes" | "true" | "TRUE" | "True" => Ok(true),
        "no" | "NO" | "No" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(Error::Invalid(format!("{what}: expected yes or no, got {v:?}"))),
    }
}

fn uuid(what: &str, v: &str) -> Result<String, crate::Error> {
    let groups: Vec<&str> = v.split('-').collect();
    let lens = groups.iter().map(|g| g.len()).collect::<Vec<_>>();
    let ok = lens == [8, 4, 4, 4, 12] && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok { Ok(v.to_string()) } else { Err(Error::Invalid(format!("{what}: {v:?} is not a UUID"))) }
}

/// LIMIT_TRANSFER_BW: bytes per second, with an optional K, M or G suffix.
///
/// # Errors
/// One line.
pub fn bandwidth(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && !num.starts_with('+'))
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| Error::Invalid(format!("LIMIT_TRANSFER_BW: invalid bandwidth {s:?}")))
}

impl Settings {
    /// Reads and checks a datastore template.
    ///
    /// # Errors
    /// One line naming the first attribute that is malformed.
    pub fn parse(t: Attrs<'_>) -> Result<Self> {
        t.0.require_unique("the datastore template", &[])?;
        let get = |k: &str| t.get(k);
        let list =
            |k: &str| get(k).map(|v| v.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
        let bridges: Vec<String> = list("BRIDGE_LIST");
        for b in &bridges {
            crate::args::validate_host(b).context("BRIDGE_LIST")?;
        }
        let dirs = |k: &str| -> Result<Vec<String>, Error> { list(k).iter().map(|d| path(k, d)).collect() };
        let s = Self {
            pool: get("POOL_NAME").map_or(Ok(crate::DEFAULT_POOL.to_string()), |v| pool("POOL_NAME", v))?,
            data_pool: get("EC_POOL_NAME").map(|v| pool("EC_POOL_NAME", v)).transpose()?,
            bridges,
            staging_dir: get("STAGING_DIR").map(|v| path("STAGING_DIR", v)).transpose()?,
            ceph_conf: get("CEPH_CONF").map(|v| path("CEPH_CONF", v)).transpose()?,
            ceph_user: get("CEPH_USER").map(|v| ceph_user("CEPH_USER", v)).transpose()?,
            ceph_key: get("CEPH_KEY").map(|v| path("CEPH_KEY", v)).transpose()?,
            ceph_secret: get("CEPH_SECRET").map(|v| uuid("CEPH_SECRET", v)).transpose()?,
            trash: get("CEPH_TRASH").map(|v| yes_no("CEPH_TRASH", v)).transpose()?.unwrap_or(false),
            limit_bps: get("LIMIT_TRANSFER_BW").map(bandwidth).transpose()?,
            restricted_dirs: dirs("RESTRICTED_DIRS")?,
            safe_dirs: dirs("SAFE_DIRS")?,
        };
        for c in &t.0.children {
            if let Some(key) = c.name.strip_prefix("RBDX_")
                && !RBDX_KEYS.contains(&key)
            {
                return Err(Error::Invalid(format!("unknown datastore attribute {}", c.name)));
            }
        }
        Config::default().for_datastore(t)?;
        Ok(s)
    }
}

/// A datastore document, its settings checked.
#[derive(Debug, Clone)]
pub struct Datastore {
    /// The `<DATASTORE>` element.
    pub doc: Element,
    settings: Settings,
}

impl Datastore {
    /// True if rbdx drives the datastore (`ceph` or `rbdx` as TM_MAD or DS_MAD).
    pub fn uses_rbdx(&self) -> bool {
        ["TM_MAD", "DS_MAD"].iter().any(|k| matches!(self.doc.text_at(k), Some("ceph" | "rbdx")))
    }

    /// Parses `<DATASTORE>…</DATASTORE>`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything but a datastore document with valid
    /// settings.
    pub fn parse(doc: &str) -> Result<Self> {
        let doc = Element::parse(doc).map_err(|e| Error::Invalid(format!("datastore document: {e}")))?;
        Self::from_element(doc)
    }

    /// A datastore from its element (of oned's pool, or of a driver message).
    ///
    /// # Errors
    /// One line: not a datastore, ambiguous, or a malformed setting.
    pub fn from_element(doc: Element) -> Result<Self> {
        if doc.name != "DATASTORE" {
            return Err(Error::Invalid(format!("expected a DATASTORE document, got <{}>", doc.name)));
        }
        doc.require_unique("the datastore document", &[])?;
        let id = doc.text_at("ID").unwrap_or("?").to_string();
        let settings = Settings::parse(template_of(&doc)).context(format!("datastore {id}"))?;
        Ok(Self { doc, settings })
    }

    /// The datastore id.
    pub fn id(&self) -> Option<u32> {
        self.doc.text_at("ID")?.parse().ok()
    }

    /// The datastore's template attributes.
    pub fn template(&self) -> Attrs<'_> {
        template_of(&self.doc)
    }

    /// Its checked settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// BRIDGE_LIST.
    pub fn bridges(&self) -> Vec<String> {
        self.settings.bridges.clone()
    }

    /// The driver config with this datastore's `RBDX_*` overrides.
    ///
    /// # Errors
    /// Never for a parsed datastore (its overrides were checked).
    pub fn config(&self, base: &Config) -> Result<Config> {
        base.for_datastore(self.template())
    }

    /// The directory of VM `vm` in this (system) datastore: `<BASE_PATH>/<vm>`,
    /// normalised as oned's paths are.
    pub fn vm_dir(&self, vm: u32) -> Option<String> {
        self.doc.text_at("BASE_PATH").map(|b| format!("{}/{vm}", crate::args::normalize_path(b)))
    }

    /// `path`, the directory of VM `vm` in this system datastore, confined.
    ///
    /// # Errors
    /// One line when the path is not `<BASE_PATH>/<vm>`.
    pub fn confine_vm_dir(&self, path: &str, vm: u32) -> Result<crate::hostfs::VmPath> {
        let id = self.id().unwrap_or(0);
        if self.vm_dir(vm).as_deref() != Some(path) {
            return Err(Error::Invalid(format!("{path} is not the directory of VM {vm} in datastore {id}")));
        }
        crate::hostfs::VmPath::dir(path, id, vm)
    }

    /// How long one Ceph call may take here.
    pub fn ceph_timeout(&self, base: &Config) -> Duration {
        self.config(base).map_or(base.ceph_timeout, |c| c.ceph_timeout)
    }
}

fn template_of(doc: &Element) -> Attrs<'_> {
    static EMPTY: std::sync::OnceLock<Element> = std::sync::OnceLock::new();
    Attrs(doc.at("TEMPLATE").unwrap_or_else(|| EMPTY.get_or_init(Element::default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(template: &str) -> Result<Datastore> {
        Datastore::from_element(
            Element::parse(&format!("<DATASTORE><ID>5</ID><TEMPLATE>{template}</TEMPLATE></DATASTORE>"))
                .unwrap(),
        )
    }

    #[test]
    fn valid_settings_are_read() {
        let d = ds("<POOL_NAME>one</POOL_NAME><EC_POOL_NAME>one-ec</EC_POOL_NAME><BRIDGE_LIST>h1 h2</BRIDGE_LIST>\
                    <CEPH_TRASH>YES</CEPH_TRASH><LIMIT_TRANSFER_BW>10M</LIMIT_TRANSFER_BW><CEPH_USER>libvirt</CEPH_USER>\
                    <CEPH_SECRET>0f4e4b1a-7d3c-4a57-9e1b-5b2d3c4e5f60</CEPH_SECRET><DISK_TYPE>RBD</DISK_TYPE>")
        .unwrap();
        let s = d.settings();
        assert_eq!((s.pool.as_str(), s.data_pool.as_deref()), ("one", Some("one-ec")));
        assert_eq!(s.bridges, ["h1", "h2"]);
        assert!(s.trash);
        assert_eq!(s.limit_bps, Some(10 << 20));
        assert_eq!(ds("").unwrap().settings().pool, "one", "the stock default");
    }

    #[test]
    fn every_malformed_attribute_is_named() {
        for (t, want) in [
            ("<POOL_NAME>a/b</POOL_NAME>", "POOL_NAME"),
            ("<EC_POOL_NAME>ec@x</EC_POOL_NAME>", "EC_POOL_NAME"),
            ("<BRIDGE_LIST>h1 -oProxyCommand=x</BRIDGE_LIST>", "BRIDGE_LIST"),
            ("<STAGING_DIR>tmp</STAGING_DIR>", "STAGING_DIR"),
            ("<STAGING_DIR>/var/../etc</STAGING_DIR>", "STAGING_DIR"),
            ("<CEPH_CONF>ceph.conf</CEPH_CONF>", "CEPH_CONF"),
            ("<CEPH_KEY>/a\nb</CEPH_KEY>", "CEPH_KEY"),
            ("<CEPH_USER>client admin</CEPH_USER>", "CEPH_USER"),
            ("<CEPH_SECRET>not-a-uuid</CEPH_SECRET>", "CEPH_SECRET"),
            ("<CEPH_TRASH>maybe</CEPH_TRASH>", "CEPH_TRASH"),
            ("<LIMIT_TRANSFER_BW>fast</LIMIT_TRANSFER_BW>", "LIMIT_TRANSFER_BW"),
            ("<LIMIT_TRANSFER_BW>0</LIMIT_TRANSFER_BW>", "LIMIT_TRANSFER_BW"),
            ("<LIMIT_TRANSFER_BW>99999999999G</LIMIT_TRANSFER_BW>", "LIMIT_TRANSFER_BW"),
            ("<RESTRICTED_DIRS>/ok relative</RESTRICTED_DIRS>", "RESTRICTED_DIRS"),
            ("<SAFE_DIRS>x</SAFE_DIRS>", "SAFE_DIRS"),
            ("<RBDX_EXECUTION>remote</RBDX_EXECUTION>", "EXECUTION"),
            ("<RBDX_FOO>1</RBDX_FOO>", "RBDX_FOO"),
            ("<POOL_NAME>a</POOL_NAME><POOL_NAME>b</POOL_NAME>", "twice"),
            (&format!("<STAGING_DIR>/{}</STAGING_DIR>", "a".repeat(PATH_MAX)), "STAGING_DIR"),
        ] {
            let e = ds(t).unwrap_err();
            let m = e.to_string();
            assert!(
                matches!(e, Error::Invalid(_)) && m.contains(want) && m.starts_with("datastore 5: "),
                "{t}: {e}"
            );
        }
    }
}
