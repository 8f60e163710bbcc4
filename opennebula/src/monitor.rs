//! Datastore monitoring (`monitor` of the DS driver, and of the TM driver for a
//! Ceph system datastore): capacity and usage in the lines oned parses, EC-aware
//! and quota-aware, from two mon commands; and reclaim of trashed images whose
//! clones are gone, since oned calls this periodically.

use rbdx_core::Cluster;
use rbdx_core::ops::{self, ImageSpec, PoolUsage};
use rbdx_core::rbd::ImageEntry;

use crate::error::{Context, Error, Result};

const MIB: u64 = 1 << 20;

/// `USED_MB`, `TOTAL_MB`, `FREE_MB` for a datastore on `pool` with an optional EC
/// data pool: with one, capacity comes from the data pool (its `max_avail` and
/// quota) and usage counts both pools; without, from `pool` alone. Integer MiB,
/// rounded down as the stock driver does.
pub fn report(pool: &PoolUsage, ec: Option<&PoolUsage>) -> String {
    let (used, free) = match ec {
        Some(ec) => (pool.stored + ec.stored, ec.available()),
        None => (pool.stored, pool.available()),
    };
    format!("USED_MB={}\nTOTAL_MB={}\nFREE_MB={}\n", used / MIB, (used + free) / MIB, free / MIB)
}

/// Measures the pools and reclaims what can be; returns the report.
///
/// # Errors
/// One line.
pub fn measure(
    c: &Cluster,
    pool: &str,
    ec_pool: Option<&str>,
    log: &mut Vec<String>,
) -> Result<String, crate::Error> {
    let mut names = vec![pool];
    names.extend(ec_pool);
    let usage = ops::pool_usage(c, &names).context("reading pool usage")?;
    // Reclaim is housekeeping: a failure is logged, never fatal to monitoring.
    let spec = ImageSpec::new(pool, "-").map_err(Error::from)?;
    match ops::disk::reclaim(c, &spec) {
        Ok((0, _)) => {}
        Ok((freed, _)) => log.push(format!("reclaimed {freed} trashed image(s) whose clones are gone")),
        Err(e) => log.push(format!("reclaiming trashed images failed: {e}")),
    }
    Ok(report(&usage[0], usage.get(1)))
}

/// The VM and disk ids of an image named as a VM disk: `one-<img>-<vm>-<disk>`
/// (a non-persistent clone) or `one-sys-<vm>-<disk>` (volatile), as the stock
/// monitor matches them.
pub fn vm_disk_of(name: &str) -> Option<(u32, u32)> {
    let num =
        |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten();
    let parts: Vec<&str> = name.strip_prefix("one-")?.split('-').collect();
    match parts.as_slice() {
        ["sys", vm, disk] => Some((num(vm)?, num(disk)?)),
        [img, vm, disk] => {
            num(img)?;
            Some((num(vm)?, num(disk)?))
        }
        _ => None,
    }
}

/// Space allocated to every VM disk image in `pool`, from the object maps
/// (fast-diff), read without opening the images where they can tell
/// ([`rbdx_core::IoCtx::head_usage`]): (VM id, disk id, MiB rounded up).
/// Measured by 16 threads: each image waits on the cluster more than on the
/// CPU.
///
/// # Errors
/// One line.
pub fn vm_disks(c: &Cluster, pool: &str) -> Result<Vec<(u32, u32, u64)>> {
    let io = c.ioctx(pool).map_err(Error::from)?;
    let names: Vec<(ImageEntry, u32, u32)> = io
        .list_images()
        .map_err(Error::from)?
        .into_iter()
        .filter_map(|e| vm_disk_of(&e.name).map(|(vm, d)| (e, vm, d)))
        .collect();
    let threads = 16.min(names.len().max(1));
    let chunks: Vec<Vec<(ImageEntry, u32, u32)>> =
        (0..threads).map(|t| names.iter().skip(t).step_by(threads).cloned().collect()).collect();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let io = c.ioctx(pool).map_err(Error::from)?;
                    let mut out = Vec::new();
                    for (entry, vm, d) in chunk {
                        // An image removed while we look is simply not reported.
                        if let Ok(Some(used)) = io.head_usage(&entry) {
                            out.push((vm, d, used.div_ceil(MIB)));
                        }
                    }
                    Ok::<_, Error>(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Failed("a worker panicked".into()))))
            .collect::<Vec<_>>()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort_unstable();
    Ok(all)
}

/// The MONITOR_VM payload the stock driver sends: one `VM=[ID=<vm>, MONITOR="<b64>"]`
/// line per VM, the base64 holding ` DISK_SIZE = [ ID=<disk>, SIZE=<MiB> ]` per disk.
pub fn vm_disks_payload(disks: &[(u32, u32, u64)]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < disks.len() {
        let vm = disks[i].0;
        let mut mon = String::new();
        while i < disks.len() && disks[i].0 == vm {
            mon.push_str(&format!(" DISK_SIZE = [ ID={}, SIZE={} ]", disks[i].1, disks[i].2));
            i += 1;
        }
        out.push_str(&format!("VM=[ID={vm}, MONITOR=\"{}\"]\n", crate::base64::encode(mon.as_bytes())));
    }
    out
}

/// Where monitord listens, from `monitord.conf` (`/etc/one/monitord.conf`, or
/// `$ONE_LOCATION/etc/monitord.conf`): its NETWORK `MONITOR_ADDRESS` (`auto` is
/// 127.0.0.1) and `PORT`, and whether it wants encrypted messages (`PUBKEY`).
fn monitord_address() -> Result<(String, u16, bool)> {
    let conf = match std::env::var_os("ONE_LOCATION") {
        Some(l) => std::path::PathBuf::from(l).join("etc/monitord.conf"),
        None => "/etc/one/monitord.conf".into(),
    };
    let text = std::fs::read_to_string(&conf).context(format!("reading {}", conf.display()))?;
    let value = |key: &str| conf_value(&text, key);
    let mut addr = value("MONITOR_ADDRESS").unwrap_or_else(|| "auto".into());
    if addr.contains("auto") {
        addr = "127.0.0.1".into();
    }
    let port = value("PORT")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Failed(format!("no PORT in {}", conf.display())))?;
    let encrypted = value("PUBKEY").is_some_and(|k| !k.is_empty());
    Ok((addr, port, encrypted))
}

/// The value of `key` in monitord.conf's text (`KEY = value` or `KEY = "value"`,
/// before a `,` or `]`; comment lines skipped).
fn conf_value(text: &str, key: &str) -> Option<String> {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|l| {
        let (_, rest) = l.split_once(key)?;
        let v = rest.trim_start().strip_prefix('=')?;
        Some(v.split([',', ']']).next()?.trim().trim_matches('"').to_string())
    })
}

/// Sends a message to monitord over UDP as `send_to_monitor` does:
/// `<type> SUCCESS -1 0 <base64(zlib(payload))>`.
///
/// # Errors
/// One line (monitord.conf unreadable, encryption configured, socket error).
pub fn send_to_monitord(kind: &str, payload: &str) -> Result<()> {
    use std::io::Write;
    let (addr, port, encrypted) = monitord_address()?;
    if encrypted {
        return Err(Error::Failed(
            "monitord expects encrypted messages (PUBKEY), which rbdx does not send yet".into(),
        ));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(payload.as_bytes()).context("compressing the monitor message")?;
    let packed = z.finish().context("compressing the monitor message")?;
    let msg = format!("{kind} SUCCESS -1 0 {}\n", crate::base64::encode(&packed));
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).context("opening a UDP socket")?;
    sock.send_to(msg.as_bytes(), (addr.as_str(), port))
        .context(format!("sending to monitord at {addr}:{port}"))?;
    Ok(())
}

/// The `monitor` action (`<ds_id>` as argv, the base64 driver message on stdin):
/// measures on a BRIDGE_LIST host over ssh, or here, as configured. Returns the
/// lines to print.
///
/// # Errors
/// One line for oned.
pub fn action(
    args: &[String],
    input: impl std::io::Read,
    cfg: &crate::config::Config,
) -> Result<String, crate::Error> {
    let a = crate::args::expect_args(args, "monitor <ds_id>", 1, 1)?;
    let id = crate::args::parse_id("datastore id", &a[0])?;
    let data = crate::action_data::ActionData::read(input)?;
    measure_action(id, &data, cfg)
}

/// [`action`] for an already read message.
///
/// # Errors
/// One line for oned.
pub fn measure_action(
    id: u32,
    data: &crate::action_data::ActionData,
    cfg: &crate::config::Config,
) -> Result<String, crate::Error> {
    let ds = data.datastore()?;
    let cfg = ds.config(cfg)?;
    let s = ds.settings();
    let job = crate::job::Job::Monitor {
        ceph: crate::job::CephAccess::of(&ds, None, cfg.ceph_timeout)?,
        pool: s.pool.clone(),
        ec_pool: s.data_pool.clone(),
        vm_disks: data.text("MONITOR_VM_DISKS") == Some("1"),
    };
    let target = match (cfg.execution, ds.bridges().is_empty()) {
        (crate::config::Execution::Ssh, false) => {
            // A different live bridge each time, as the stock monitor picks at random.
            let tick =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let oned = crate::oned::Oned::from_env(cfg.oned_timeout).ok();
            let host =
                crate::bridge::pick(&ds, tick + u64::from(id), oned.as_ref(), &mut |m| crate::log::info(m))?;
            crate::exec::Target::Ssh(host)
        }
        _ => crate::exec::Target::Local,
    };
    let outcome = crate::exec::run(&job, &target, &cfg);
    outcome.log.iter().for_each(|l| crate::log::info(l));
    if !outcome.vm_disks.is_empty() {
        // Like the stock driver: VM disk sizes go to monitord, not to stdout; a
        // failure there must not fail the datastore's monitoring.
        if let Err(e) = send_to_monitord("MONITOR_VM", &vm_disks_payload(&outcome.vm_disks)) {
            crate::log::info(&format!("could not report VM disk sizes: {e}"));
        }
    }
    match (outcome.error, outcome.output) {
        (Some(e), _) => Err(Error::Host(e)),
        (None, Some(out)) => Ok(out),
        (None, None) => Err(Error::Failed("the monitor job returned nothing".into())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn monitord_conf_values_in_any_layout() {
        let multi = "NETWORK = [\n  MONITOR_ADDRESS = \"auto\",\n  PORT = 4124,\n  PUBKEY = \"\"\n]\n";
        let one_line = "NETWORK = [ MONITOR_ADDRESS = \"10.0.0.1\", PORT = 4125 ]\n# PORT = 1\n";
        assert_eq!(super::conf_value(multi, "PORT").as_deref(), Some("4124"));
        assert_eq!(super::conf_value(multi, "PUBKEY").as_deref(), Some(""));
        assert_eq!(super::conf_value(one_line, "PORT").as_deref(), Some("4125"));
        assert_eq!(super::conf_value(one_line, "MONITOR_ADDRESS").as_deref(), Some("10.0.0.1"));
        assert_eq!(super::conf_value(one_line, "PRIKEY"), None);
    }

    use super::*;
    use rbdx_core::ops::PoolKind;

    fn pool(stored: u64, max_avail: u64, quota: Option<u64>) -> PoolUsage {
        PoolUsage {
            name: "p".into(),
            id: 1,
            kind: PoolKind::Replicated { size: 3 },
            stored,
            used_raw: 3 * stored,
            objects: 0,
            max_avail,
            quota_bytes: quota,
            quota_objects: None,
        }
    }

    #[test]
    fn vm_disk_names_are_matched_exactly() {
        assert_eq!(vm_disk_of("one-5-12-0"), Some((12, 0)));
        assert_eq!(vm_disk_of("one-sys-12-3"), Some((12, 3)));
        for n in [
            "one-5",
            "one-5-12",
            "one-5-12-0-1:2",
            "one-5-12-0.rbdx-new",
            "one-x-1-2",
            "one-sys-1",
            "vm-1-disk-0",
        ] {
            assert_eq!(vm_disk_of(n), None, "{n}");
        }
    }

    #[test]
    fn the_payload_groups_disks_by_vm() {
        let p = vm_disks_payload(&[(7, 0, 10), (7, 2, 1), (9, 1, 5)]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.len(), 2);
        let b64 = lines[0].strip_prefix("VM=[ID=7, MONITOR=\"").and_then(|l| l.strip_suffix("\"]")).unwrap();
        assert_eq!(
            String::from_utf8(crate::base64::decode(b64).unwrap()).unwrap(),
            " DISK_SIZE = [ ID=0, SIZE=10 ] DISK_SIZE = [ ID=2, SIZE=1 ]"
        );
    }

    #[test]
    fn replicated_only() {
        assert_eq!(report(&pool(10 * MIB, 90 * MIB, None), None), "USED_MB=10\nTOTAL_MB=100\nFREE_MB=90\n");
    }

    #[test]
    fn quota_caps_free_space() {
        assert_eq!(
            report(&pool(10 * MIB, 90 * MIB, Some(50 * MIB)), None),
            "USED_MB=10\nTOTAL_MB=50\nFREE_MB=40\n"
        );
    }

    #[test]
    fn ec_capacity_comes_from_the_data_pool_and_usage_counts_both() {
        let rep = pool(MIB, 900 * MIB, None);
        let ec = pool(30 * MIB, 600 * MIB, None);
        assert_eq!(report(&rep, Some(&ec)), "USED_MB=31\nTOTAL_MB=631\nFREE_MB=600\n");
        let ec_quota = pool(30 * MIB, 600 * MIB, Some(100 * MIB));
        assert_eq!(report(&rep, Some(&ec_quota)), "USED_MB=31\nTOTAL_MB=101\nFREE_MB=70\n");
    }
}
