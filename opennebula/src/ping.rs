//! `rbdx one ping`: the smallest round trip an action makes (one oned call,
//! the hop to the host that runs it, a Ceph connection), timed. What every
//! action costs before it does anything: an operator's check that a host
//! reaches Ceph with a datastore's credentials, and the benchmarks' floor.

use std::time::{Duration, Instant};

use crate::args::validate_host;
use crate::config::{Config, Execution};
use crate::error::{Error, Result};
use crate::exec::{self, Target};
use crate::job::{CephAccess, Job};
use crate::oned::Oned;

/// Where the ping ran and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// The host (`None`: this host).
    pub host: Option<String>,
    /// The Ceph client it connected as.
    pub user: String,
    /// The pool it opened.
    pub pool: String,
    /// From before the oned call to the answer.
    pub took: Duration,
}

/// Reads datastore `id` from oned and connects to its pool from `host` (over
/// ssh), else from the host an action of the datastore would use.
///
/// # Errors
/// oned, a datastore that is not rbdx's, a bad host name, ssh or Ceph failing.
pub fn run(cfg: &Config, id: u32, host: Option<&str>, note: &mut dyn FnMut(&str)) -> Result<Pong> {
    let started = Instant::now();
    let oned = Oned::from_env(cfg.oned_timeout)?;
    let ds = oned.datastore(id)?;
    if !ds.uses_rbdx() {
        return Err(Error::Invalid(format!("datastore {id} is not an rbdx (ceph) datastore")));
    }
    let dcfg = ds.config(cfg)?;
    let target = match host {
        Some(h) => {
            validate_host(h)?;
            Target::Ssh(h.to_string())
        }
        None if dcfg.execution == Execution::Ssh && !ds.bridges().is_empty() => {
            Target::Ssh(crate::bridge::pick(&ds, u64::from(id), Some(&oned), note)?)
        }
        None => Target::Local,
    };
    let ceph = CephAccess::of(&ds, None, dcfg.ceph_timeout)?;
    let user = ceph.user.clone().unwrap_or_else(|| "admin".into());
    let pool = ds.settings().pool.clone();
    exec::run(&Job::Ping { ceph, pool: pool.clone() }, &target, &dcfg).into_result()?;
    let host = match target {
        Target::Ssh(h) => Some(h),
        Target::Local => None,
    };
    Ok(Pong { host, user, pool, took: started.elapsed() })
}
