//! Datastore monitoring (`monitor` of the DS driver, and of the TM driver for a
//! Ceph system datastore): capacity and usage in the lines oned parses, EC-aware
//! and quota-aware, from two mon commands; and reclaim of trashed images whose
//! clones are gone, since oned calls this periodically.

use rbdx_core::Cluster;
use rbdx_core::ops::{self, ImageSpec, PoolUsage};

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
) -> Result<String, String> {
    let mut names = vec![pool];
    names.extend(ec_pool);
    let usage = ops::pool_usage(c, &names).map_err(|e| format!("reading pool usage: {e}"))?;
    // Reclaim is housekeeping: a failure is logged, never fatal to monitoring.
    let spec = ImageSpec::new(pool, "-").map_err(|e| e.to_string())?;
    match ops::disk::reclaim(c, &spec) {
        Ok((0, _)) => {}
        Ok((freed, _)) => log.push(format!("reclaimed {freed} trashed image(s) whose clones are gone")),
        Err(e) => log.push(format!("reclaiming trashed images failed: {e}")),
    }
    Ok(report(&usage[0], usage.get(1)))
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
) -> Result<String, String> {
    let a = crate::args::expect_args(args, "monitor <ds_id>", 1, 1).map_err(|e| e.to_string())?;
    let id = crate::args::parse_id("datastore id", &a[0]).map_err(|e| e.to_string())?;
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
) -> Result<String, String> {
    let ds = data.datastore()?;
    let t = ds.template();
    let cfg = cfg.for_datastore(t)?;
    let pool = t.get("POOL_NAME").unwrap_or("one").to_string();
    rbdx_core::ops::validate_name("pool", &pool).map_err(|e| e.to_string())?;
    let job = crate::job::Job::Monitor {
        ceph: crate::job::CephAccess {
            conf: t.get("CEPH_CONF").map(str::to_string),
            user: t.get("CEPH_USER").map(str::to_string),
            key_file: t.get("CEPH_KEY").map(str::to_string),
            timeout_secs: cfg.ceph_timeout.as_secs(),
        },
        pool,
        ec_pool: t.get("EC_POOL_NAME").map(str::to_string),
    };
    let bridges = ds.bridges();
    let target = match (cfg.execution, bridges.is_empty()) {
        (crate::config::Execution::Ssh, false) => {
            let tick =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            crate::exec::Target::Ssh(bridges[(tick as usize + id as usize) % bridges.len()].clone())
        }
        _ => crate::exec::Target::Local,
    };
    let outcome = crate::exec::run(&job, &target, &cfg);
    outcome.log.iter().for_each(|l| crate::log::info(l));
    match (outcome.error, outcome.output) {
        (Some(e), _) => Err(e),
        (None, Some(out)) => Ok(out),
        (None, None) => Err("the monitor job returned nothing".into()),
    }
}

#[cfg(test)]
mod tests {
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
