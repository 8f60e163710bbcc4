//! `DS_DRIVER_ACTION_DATA`: what oned's datastore MAD passes on stdin (base64 of
//! `<DS_DRIVER_ACTION_DATA><IMAGE/><DATASTORE/>…</DS_DRIVER_ACTION_DATA>`).

use std::io::Read;

use crate::oned::{Attrs, Datastore};
use crate::xml::Element;

use crate::error::{Context, Error, Result};

/// Largest message read from stdin.
pub const MAX_MESSAGE: u64 = 16 << 20;

/// A decoded `DS_DRIVER_ACTION_DATA` document.
#[derive(Debug, Clone)]
pub struct ActionData {
    /// The root element.
    pub root: Element,
}

impl ActionData {
    /// Reads base64 text from `input` and parses it.
    ///
    /// # Errors
    /// One line: unreadable, not base64, not XML, or not a driver action document.
    pub fn read(input: impl Read) -> Result<Self> {
        let mut text = String::new();
        input.take(MAX_MESSAGE + 1).read_to_string(&mut text).context("reading the driver message")?;
        if text.len() as u64 > MAX_MESSAGE {
            return Err(Error::Invalid("the driver message is too large".into()));
        }
        Self::decode(&text)
    }

    /// Parses base64 `text`.
    ///
    /// # Errors
    /// As [`ActionData::read`].
    pub fn decode(text: &str) -> Result<Self> {
        let xml = crate::base64::decode(text)
            .ok_or_else(|| Error::Invalid("the driver message on stdin is not base64".into()))?;
        let xml =
            String::from_utf8(xml).map_err(|_| Error::Invalid("the driver message is not UTF-8".into()))?;
        let root = Element::parse(&xml).map_err(|e| Error::Invalid(format!("the driver message: {e}")))?;
        if root.name != "DS_DRIVER_ACTION_DATA" {
            return Err(Error::Invalid(format!("expected DS_DRIVER_ACTION_DATA, got <{}>", root.name)));
        }
        root.require_unique("the driver message", &[])?;
        if let Some(image) = root.child("IMAGE") {
            image.require_unique("the IMAGE", &[])?;
            if let Some(t) = image.child("TEMPLATE") {
                t.require_unique("the IMAGE template", &[])?;
            }
        }
        Ok(Self { root })
    }

    /// The DATASTORE part.
    ///
    /// # Errors
    /// When it is missing.
    pub fn datastore(&self) -> Result<Datastore> {
        let doc = self
            .root
            .child("DATASTORE")
            .ok_or_else(|| Error::Invalid("the driver message has no DATASTORE".into()))?;
        Datastore::from_element(doc.clone())
    }

    /// The IMAGE part, if any.
    pub fn image(&self) -> Option<Attrs<'_>> {
        self.root.child("IMAGE").map(Attrs)
    }

    /// Text at `path` below the root.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.root.text_at(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_oned_messages_and_refuses_garbage() {
        let xml = "<DS_DRIVER_ACTION_DATA><DATASTORE><ID>100</ID><TEMPLATE><POOL_NAME>one</POOL_NAME></TEMPLATE></DATASTORE><MONITOR_VM_DISKS>1</MONITOR_VM_DISKS></DS_DRIVER_ACTION_DATA>";
        let d = ActionData::decode(&crate::base64::encode(xml.as_bytes())).unwrap();
        assert_eq!(d.datastore().unwrap().template().get("POOL_NAME"), Some("one"));
        assert_eq!(d.text("MONITOR_VM_DISKS"), Some("1"));
        assert!(d.image().is_none());
        for bad in [
            "%%%",
            &crate::base64::encode(b"<A></A>"),
            &crate::base64::encode(b"<DS_DRIVER_ACTION_DATA>"),
            "",
        ] {
            assert!(ActionData::decode(bad).is_err(), "{bad}");
        }
        assert!(
            ActionData::decode(&crate::base64::encode(b"<DS_DRIVER_ACTION_DATA/>"))
                .unwrap()
                .datastore()
                .is_err()
        );
    }
}
