//! Which BRIDGE_LIST host does a datastore's work, as the stock drivers pick it
//! (`get_destination_host`): the hosts oned reports off, disabled or in error are
//! dropped, then `usable[id % n]`; none left is an error in one line, never an ssh
//! attempt that waits for a dead host.

use crate::datastore::Datastore;
use crate::oned::{Host, Oned};

use crate::error::{Error, Result};

/// The BRIDGE_LIST hosts that `hosts` (oned's host pool) does not report as off,
/// disabled or in error, in BRIDGE_LIST order. Hosts oned does not know stay.
pub fn usable(bridges: &[String], hosts: &[Host]) -> Vec<String> {
    bridges
        .iter()
        .filter(|b| hosts.iter().find(|h| &h.name == *b).is_none_or(Host::usable))
        .cloned()
        .collect()
}

/// The host that works for object `id` on datastore `ds`: `usable[id % n]`.
/// `oned` is asked for the host states; if it cannot answer, every bridge is
/// a candidate (as the stock driver when `onehost list` fails) and `note` says so.
///
/// # Errors
/// One line when every bridge is off, disabled or in error.
pub fn pick(
    ds: &Datastore,
    id: u64,
    oned: Option<&Oned>,
    note: &mut dyn FnMut(&str),
) -> Result<String, crate::Error> {
    let bridges = ds.bridges();
    let candidates = match oned.map(Oned::hosts) {
        Some(Ok(hosts)) => usable(&bridges, &hosts),
        Some(Err(e)) => {
            note(&format!("host states unknown ({e}): every BRIDGE_LIST host is a candidate"));
            bridges.clone()
        }
        None => bridges.clone(),
    };
    if candidates.is_empty() {
        return Err(Error::Invalid(format!(
            "no usable host in BRIDGE_LIST of datastore {} ({}): every one is off, disabled or in error",
            ds.id().unwrap_or(0),
            bridges.join(" ")
        )));
    }
    let n = candidates.len() as u64;
    Ok(candidates[usize::try_from(id % n).unwrap_or(0)].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, state: u32) -> Host {
        Host { name: name.into(), state, vm_mad: "kvm".into() }
    }

    #[test]
    fn off_disabled_and_failed_hosts_are_dropped() {
        let bridges: Vec<String> =
            ["a", "b", "c", "d", "e", "f", "g"].iter().map(|s| s.to_string()).collect();
        let hosts = [
            host("a", 2),
            host("b", 3),
            host("c", 4),
            host("d", 5),
            host("e", 7),
            host("f", 8),
            host("g", 1),
        ];
        assert_eq!(usable(&bridges, &hosts), ["a", "g"]);
        assert_eq!(usable(&bridges[..1], &[]), ["a"], "a host oned does not know stays");
    }
}
