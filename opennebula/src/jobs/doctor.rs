//! `rbdx doctor`: the checks a host (or the front-end) runs; the findings go
//! back as JSON in the output.

use super::Done;
use crate::error::Result;

/// Runs `checks` here.
///
/// # Errors
/// None: a failed check is a finding.
pub fn run(checks: &crate::doctor::HostChecks) -> Result<Done> {
    Done::output(crate::doctor::to_output(&crate::doctor::run_host(checks)))
}
