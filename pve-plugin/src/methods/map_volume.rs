//! `map_volume`: maps a volume (or a snapshot, read-only) with the kernel rbd
//! driver and waits for PVE's udev link.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::helper::{Helper, kernel};
use crate::pve_device_path;

/// The device link, `/dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap]`.
pub type Output = String;

/// Maps `volname` (at `snap`) with `options`. Already mapped: the same link;
/// mapped without an option it now needs (rxbounce for a Windows guest):
/// mapped again if `may_remap` (PVE says deactivating is safe), else a
/// warning.
///
/// # Errors
/// [`Error::SnapshotNotFound`], [`Error::NoUdevLink`]; Ceph and kernel errors
/// (the driver is not loaded, an invalid option).
pub fn run(
    h: &Helper,
    volname: &str,
    snap: Option<&str>,
    options: &[String],
    may_remap: bool,
) -> Result<Output> {
    let spec = h.existing_kernel_spec(volname, snap)?;
    let opts: Vec<&str> = options.iter().map(String::as_str).collect();
    let (krbd, dev) = kernel();
    let fsid = h.cluster.fsid()?;
    if let Some(d) = krbd.mapped(&fsid, &spec)?.into_iter().next() {
        let has = krbd.options(&d).unwrap_or_default();
        let missing: Vec<&str> = opts.iter().copied().filter(|o| !has.iter().any(|h| h == o)).collect();
        if !missing.is_empty() {
            if may_remap {
                if let Err(e) = krbd.remove(&d, &spec.to_string(), h.timeout()) {
                    eprintln!("could not unmap {spec} to apply {}: {e}", missing.join(","));
                }
            } else {
                eprintln!("not unmapping {spec} to apply {} since it is not safe", missing.join(","));
            }
        }
    }
    krbd.map(&h.cluster, &spec, &opts, h.timeout())?;
    let path = dev.join(pve_device_path(&fsid, &spec));
    // The link is udev's (pve-storage's 50-rbd-pve.rules).
    let deadline = rbdx_core::deadline(h.timeout());
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(Error::NoUdevLink { spec: spec.to_string(), path });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(path.to_string_lossy().into_owned())
}
