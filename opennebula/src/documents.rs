//! The oned documents the drivers read: a VM (its disks, state and history),
//! a host, and a DISK's attributes.

use crate::error::{Error, Result};
use crate::xml::Element;

/// The LCM states the drivers act on (oned's `VirtualMachine::LcmState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LcmState {
    /// `UNKNOWN` (16): the host was lost.
    Unknown,
    /// `HOTPLUG_SAVEAS` (26): a disk is being saved as an image while running.
    HotplugSaveas,
    /// `PROLOG_MIGRATE_UNKNOWN` (60).
    PrologMigrateUnknown,
    /// `PROLOG_MIGRATE_UNKNOWN_FAILURE` (61).
    PrologMigrateUnknownFailure,
    /// `DISK_RESIZE` (62): a disk is being resized while running.
    DiskResize,
    /// Any other state, by number.
    Other(u32),
}

impl From<u32> for LcmState {
    fn from(n: u32) -> Self {
        match n {
            16 => Self::Unknown,
            26 => Self::HotplugSaveas,
            60 => Self::PrologMigrateUnknown,
            61 => Self::PrologMigrateUnknownFailure,
            62 => Self::DiskResize,
            n => Self::Other(n),
        }
    }
}

impl LcmState {
    /// True where the VM's source host is unknown or failed (nothing to copy
    /// from in a migration).
    pub fn source_unreachable(self) -> bool {
        matches!(self, Self::Unknown | Self::PrologMigrateUnknown | Self::PrologMigrateUnknownFailure)
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Oned(msg.into())
}

/// A host and its state (`STATE` 0 init … 2 monitored, 3 error, 4 disabled, 8 offline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name.
    pub name: String,
    /// oned's host state.
    pub state: u32,
    /// The hypervisor driver (`kvm`, `lxc`, …).
    pub vm_mad: String,
}

impl Host {
    /// Hosts in these states are skipped as bridges, as the stock drivers skip
    /// what `onehost list` shows as `err`, `dsbl` or `off`: ERROR (3), DISABLED
    /// (4), MONITORING_ERROR (5), MONITORING_DISABLED (7), OFFLINE (8).
    pub fn usable(&self) -> bool {
        !matches!(self.state, 3 | 4 | 5 | 7 | 8)
    }
}

/// A VM document.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The `<VM>` element.
    pub doc: Element,
}

impl Vm {
    /// Parses `<VM>…</VM>`.
    ///
    /// # Errors
    /// [`Error::Oned`] for anything but a VM document.
    pub fn parse(doc: &str) -> Result<Self> {
        let doc = Element::parse(doc).map_err(|e| err(format!("VM document: {e}")))?;
        if doc.name != "VM" {
            return Err(err(format!("expected a VM document, got <{}>", doc.name)));
        }
        Self::check(&doc).map_err(|e| err(e.to_string()))?;
        Ok(Self { doc })
    }

    /// Refuses a document that says what rbdx reads twice: an element of the VM
    /// rbdx reads, an attribute of a DISK, or a DISK_ID.
    fn check(doc: &Element) -> Result<()> {
        for name in ["ID", "LCM_STATE", "DEPLOY_ID", "TEMPLATE", "HISTORY_RECORDS"] {
            if doc.children_named(name).count() > 1 {
                return Err(Error::Oned(format!(
                    "the VM document has <{name}> twice: refusing an ambiguous document"
                )));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for d in doc.at("TEMPLATE").into_iter().flat_map(|t| t.children_named("DISK")) {
            d.require_unique("a DISK", &[])?;
            if let Some(id) = d.text_at("DISK_ID")
                && !ids.insert(id)
            {
                return Err(Error::Oned(format!(
                    "the VM has two DISKs with DISK_ID {id}: refusing an ambiguous document"
                )));
            }
        }
        Ok(())
    }

    /// The VM id.
    pub fn id(&self) -> Option<u32> {
        self.doc.text_at("ID")?.parse().ok()
    }

    /// The LCM state's number.
    pub fn lcm_state(&self) -> Option<u32> {
        self.doc.text_at("LCM_STATE")?.parse().ok()
    }

    /// The LCM state.
    pub fn lcm(&self) -> Option<LcmState> {
        self.lcm_state().map(LcmState::from)
    }

    /// The hypervisor's name for the VM (`one-<id>`).
    pub fn deploy_id(&self) -> Option<&str> {
        self.doc.text_at("DEPLOY_ID")
    }

    /// The last history record's element `name` (`HOSTNAME`, `VM_MAD`, …).
    pub fn last_history(&self, name: &str) -> Option<&str> {
        self.doc.at("HISTORY_RECORDS")?.children_named("HISTORY").last()?.text_at(name)
    }

    /// The DISK with `DISK_ID` = `id`.
    pub fn disk(&self, id: u32) -> Option<Attrs<'_>> {
        let id = id.to_string();
        self.doc
            .at("TEMPLATE")?
            .children_named("DISK")
            .find(|d| d.text_at("DISK_ID") == Some(id.as_str()))
            .map(Attrs)
    }

    /// Every DISK.
    pub fn disks(&self) -> Vec<Attrs<'_>> {
        self.doc.at("TEMPLATE").map(|t| t.children_named("DISK").map(Attrs).collect()).unwrap_or_default()
    }
}

pub use crate::datastore::Datastore;

/// The attributes of a template section (a DISK, a datastore TEMPLATE).
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a>(pub &'a Element);

impl<'a> Attrs<'a> {
    /// The attribute's value, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.text_at(name)
    }

    /// True if the attribute reads as yes (`yes`, `YES`, `true`, `TRUE`), as the
    /// stock drivers' `is_yes`.
    pub fn is_yes(&self, name: &str) -> bool {
        matches!(self.get(name), Some("yes" | "YES" | "true" | "TRUE"))
    }
}
