//! A small, bounded XML tree for oned's documents (VM, DATASTORE, HOST pools,
//! XML-RPC responses, `DS_DRIVER_ACTION_DATA`), with path look-ups.
//!
//! Parsing is strict and bounded: no DTDs or custom entities (only the five
//! predefined ones and character references), at most [`MAX_DEPTH`] levels and
//! [`MAX_NODES`] elements, so a hostile document cannot expand or exhaust memory.

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::error::{Error, Result};

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most elements accepted in one document.
pub const MAX_NODES: usize = 200_000;

/// An element: name, text (concatenated text and CDATA) and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Tag name.
    pub name: String,
    /// Text content directly inside this element.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed XML: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

impl Element {
    /// Parses a whole document and returns its root element.
    ///
    /// # Errors
    /// [`XmlError`] for malformed, truncated, oversized or DTD-bearing input.
    pub fn parse(doc: &str) -> Result<Self, XmlError> {
        let mut reader = Reader::from_str(doc);
        reader.config_mut().trim_text(false);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        let mut nodes = 0usize;
        loop {
            let ev = reader.read_event().map_err(|e| XmlError(e.to_string()))?;
            match ev {
                Event::Start(s) => {
                    nodes += 1;
                    if stack.len() >= MAX_DEPTH || nodes > MAX_NODES {
                        return Err(XmlError("document too deep or too large".into()));
                    }
                    if root.is_some() {
                        return Err(XmlError("content after the root element".into()));
                    }
                    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                    stack.push(Element { name, ..Element::default() });
                }
                Event::Empty(s) => {
                    nodes += 1;
                    if nodes > MAX_NODES {
                        return Err(XmlError("document too large".into()));
                    }
                    let el = Element {
                        name: String::from_utf8_lossy(s.name().as_ref()).into_owned(),
                        ..Element::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None if root.is_none() => root = Some(el),
                        None => return Err(XmlError("content after the root element".into())),
                    }
                }
                Event::End(_) => {
                    let el = stack.pop().ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                }
                Event::Text(t) => {
                    if let Some(cur) = stack.last_mut() {
                        let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                        cur.text.push_str(&unescape(&raw)?);
                    } else if !t.as_ref().iter().all(u8::is_ascii_whitespace) {
                        return Err(XmlError("text outside the root element".into()));
                    }
                }
                Event::GeneralRef(r) => {
                    let cur = stack
                        .last_mut()
                        .ok_or_else(|| XmlError("reference outside the root element".into()))?;
                    let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                    cur.text.push_str(&unescape(&format!("&{name};"))?);
                }
                Event::CData(c) => {
                    if let Some(cur) = stack.last_mut() {
                        cur.text.push_str(&String::from_utf8_lossy(c.as_ref()));
                    }
                }
                Event::DocType(_) => return Err(XmlError("DTDs are not accepted".into())),
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
        if !stack.is_empty() {
            return Err(XmlError(format!(
                "truncated document (<{}> not closed)",
                stack[stack.len() - 1].name
            )));
        }
        root.ok_or_else(|| XmlError("empty document".into()))
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at `path` (`A/B/C`, relative to this one).
    pub fn at(&self, path: &str) -> Option<&Element> {
        path.split('/').filter(|p| !p.is_empty()).try_fold(self, |e, p| e.child(p))
    }

    /// The first name that occurs more than once among this element's children,
    /// other than those in `repeatable` (a document that says one thing twice is
    /// ambiguous, and refused rather than read one way).
    pub fn duplicate_child(&self, repeatable: &[&str]) -> Option<&str> {
        let mut seen = std::collections::HashSet::new();
        self.children
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !repeatable.contains(n))
            .find(|n| !seen.insert(*n))
    }

    /// Refuses this element (named `what` in the error) if a child name occurs
    /// twice, other than those in `repeatable`.
    ///
    /// # Errors
    /// One line naming the element and the repeated child.
    pub fn require_unique(&self, what: &str, repeatable: &[&str]) -> Result<()> {
        match self.duplicate_child(repeatable) {
            Some(d) => Err(Error::Invalid(format!("{what} has <{d}> twice: refusing an ambiguous document"))),
            None => Ok(()),
        }
    }

    /// The trimmed text at `path`, if present and not empty.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.at(path).map(|e| e.text.trim()).filter(|t| !t.is_empty())
    }
}

fn unescape(s: &str) -> Result<String, XmlError> {
    quick_xml::escape::unescape(s).map(|c| c.into_owned()).map_err(|e| XmlError(e.to_string()))
}

/// Escapes text for an XML element body.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_cdata_and_paths() {
        let e = Element::parse(
            "<?xml version=\"1.0\"?><VM><ID>7</ID><TEMPLATE><DISK><SOURCE><![CDATA[one/one-5]]></SOURCE>\
             <DISK_ID>0</DISK_ID></DISK><DISK><DISK_ID>1</DISK_ID><EMPTY/></DISK></TEMPLATE></VM>",
        )
        .unwrap();
        assert_eq!(e.name, "VM");
        assert_eq!(e.text_at("ID"), Some("7"));
        assert_eq!(e.text_at("TEMPLATE/DISK/SOURCE"), Some("one/one-5"));
        let disks: Vec<_> = e.at("TEMPLATE").unwrap().children_named("DISK").collect();
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[1].text_at("DISK_ID"), Some("1"));
        assert_eq!(disks[1].text_at("EMPTY"), None);
        assert_eq!(e.text_at("NOPE/X"), None);
    }

    #[test]
    fn predefined_entities_and_char_refs_are_decoded() {
        let e = Element::parse("<A>a &amp; b &lt;c&gt; &#65;&#x42;</A>").unwrap();
        assert_eq!(e.text, "a & b <c> AB");
    }

    #[test]
    fn hostile_or_broken_documents_are_refused() {
        let bomb =
            "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><l>&b;</l>";
        for doc in [
            "",
            "<A>",
            "<A><B></A>",
            "<A></A><B></B>",
            "just text",
            bomb,
            "<A>&undefined;</A>",
            "<A><B>x</B>",
        ] {
            assert!(Element::parse(doc).is_err(), "{doc:?} should be refused");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(Element::parse(&deep).is_err());
    }

    #[test]
    fn escape_round_trips() {
        let s = "a<b>&\"c'";
        let e = Element::parse(&format!("<X>{}</X>", escape(s))).unwrap();
        assert_eq!(e.text, s);
    }
}
