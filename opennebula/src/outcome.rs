//! What a job reports: log lines for oned, its output, and its failure (one
//! line, as it travels back from a host).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a job reports: log lines for oned, its output, and its failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// INFO lines for oned's log.
    pub log: Vec<String>,
    /// What the action prints on stdout for oned (monitor data, …).
    #[serde(default)]
    pub output: Option<String>,
    /// Per VM disk: (VM id, disk id, MiB allocated), for MONITOR_VM_DISKS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_disks: Vec<(u32, u32, u64)>,
    /// The failure, if it failed: one line.
    pub error: Option<String>,
    /// Where the job's time went, when the request asked ([`rbdx_core::trace`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<rbdx_core::trace::Span>,
}

impl Outcome {
    /// The outcome, or its failure (a job's one-line message, as
    /// [`Error::Host`]).
    ///
    /// # Errors
    /// The job's failure.
    pub fn into_result(self) -> Result<Self> {
        match self.error {
            Some(e) => Err(Error::Host(e)),
            None => Ok(self),
        }
    }
}
