//! [`ImageSpec`]: `pool[/namespace]/image[@snap]`, parsed and validated before any
//! Ceph call.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where an image (or one of its snapshots) lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// Pool name.
    pub pool: String,
    /// Rados namespace (`""` for the default).
    pub namespace: String,
    /// Image name.
    pub name: String,
    /// Snapshot name, if the spec names a snapshot.
    pub snap: Option<String>,
}

/// Longest pool, namespace, image or snapshot name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// Checks one component of a spec: not empty, at most [`MAX_NAME_LEN`] bytes, no
/// `/`, `@`, NUL or other control character.
///
/// # Errors
/// [`Error::Invalid`] naming the component and the problem.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("invalid {what} name {name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("too long");
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | '@') || c.is_control()) {
        return bad(&format!("contains {c:?}"));
    }
    Ok(())
}

impl ImageSpec {
    /// An image in the default namespace of `pool`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid pool or image name.
    pub fn new(pool: &str, name: &str) -> Result<Self> {
        validate_name("pool", pool)?;
        validate_name("image", name)?;
        Ok(Self { pool: pool.into(), namespace: String::new(), name: name.into(), snap: None })
    }

    /// The same image in rados namespace `ns` (`""` for the default).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid namespace name.
    pub fn in_namespace(mut self, ns: &str) -> Result<Self> {
        if !ns.is_empty() {
            validate_name("namespace", ns)?;
        }
        self.namespace = ns.into();
        Ok(self)
    }

    /// Snapshot `snap` of this image.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid snapshot name.
    pub fn at(&self, snap: &str) -> Result<Self> {
        validate_name("snapshot", snap)?;
        Ok(Self { snap: Some(snap.into()), ..self.clone() })
    }

    /// Another image in the same pool and namespace.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid image name.
    pub fn sibling(&self, name: &str) -> Result<Self> {
        validate_name("image", name)?;
        Ok(Self { name: name.into(), snap: None, ..self.clone() })
    }

    /// This image without the snapshot part.
    pub fn head(&self) -> Self {
        Self { snap: None, ..self.clone() }
    }

    /// The snapshot name, or an error saying one is needed.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the spec names no snapshot.
    pub fn require_snap(&self) -> Result<&str> {
        self.snap
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("{self} names no snapshot (expected image@snap)")))
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pool)?;
        if !self.namespace.is_empty() {
            write!(f, "/{}", self.namespace)?;
        }
        write!(f, "/{}", self.name)?;
        if let Some(s) = &self.snap {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageSpec {
    type Err = Error;

    /// Parses `pool/image`, `pool/namespace/image`, each with an optional `@snap`.
    fn from_str(s: &str) -> Result<Self> {
        let (path, snap) = match s.split_once('@') {
            Some((p, snap)) => (p, Some(snap)),
            None => (s, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let spec = match parts.as_slice() {
            [pool, name] => Self::new(pool, name)?,
            [pool, ns, name] => Self::new(pool, name)?.in_namespace(ns)?,
            _ => {
                return Err(Error::Invalid(format!(
                    "invalid image spec {s:?}: expected pool/image or pool/namespace/image"
                )));
            }
        };
        match snap {
            Some(snap) => spec.at(snap),
            None => Ok(spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for s in ["one/one-7", "one/ns1/one-7", "one/one-7@snap", "one/ns/one-7-3-0@0"] {
            let spec: ImageSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        let s: ImageSpec = "rbd/ns/img@s1".parse().unwrap();
        assert_eq!((s.pool.as_str(), s.namespace.as_str(), s.name.as_str()), ("rbd", "ns", "img"));
        assert_eq!(s.snap.as_deref(), Some("s1"));
    }

    #[test]
    fn rejects_malformed_specs() {
        for s in ["", "img", "/img", "one/", "a/b/c/d", "one/img@", "one/img@a@b", "one/i\nmg", "one/im\0g"] {
            assert!(s.parse::<ImageSpec>().is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn names_with_spaces_and_shell_characters_are_plain_data() {
        // No shell ever sees them, so they need no escaping; only the separators
        // and control characters are refused.
        let s: ImageSpec = "one/a b$(x)`y`'\"".parse().unwrap();
        assert_eq!(s.name, "a b$(x)`y`'\"");
    }

    #[test]
    fn length_is_bounded() {
        assert!(validate_name("image", &"x".repeat(MAX_NAME_LEN)).is_ok());
        let e = validate_name("image", &"x".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert!(e.to_string().contains("too long"));
    }

    #[test]
    fn require_snap_explains_itself() {
        let s: ImageSpec = "one/img".parse().unwrap();
        assert_eq!(
            s.require_snap().unwrap_err().to_string(),
            "one/img names no snapshot (expected image@snap)"
        );
        assert_eq!(s.at("base").unwrap().require_snap().unwrap(), "base");
    }
}
