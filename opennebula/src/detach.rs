//! A safe way back to the stock drivers. They remove a snapshot's children with
//! it (`rbd_rm_r`), and rbdx's save-as images and image clones are CoW children
//! of another disk's snapshot: removing that disk with the stock drivers would
//! delete them. `rbdx one detach` finds them in every rbdx datastore (through
//! the same bridges and execution the actions use) and flattens them.

use crate::config::{Config, Execution};
use crate::error::{Error, Result};
use crate::exec::{self, Target};
use crate::job::{CephAccess, Job};
use crate::oned::Oned;

/// What one datastore holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The datastore id.
    pub datastore: u32,
    /// Its pool.
    pub pool: String,
    /// The images that depend on another disk's snapshot (flattened, unless
    /// only checking).
    pub images: Vec<String>,
}

/// Checks (and unless `check_only`, detaches) every rbdx datastore, or only
/// `only`. A pool two datastores share is done once.
///
/// # Errors
/// oned, a datastore's settings, or a job's failure.
pub fn run(
    cfg: &Config,
    only: Option<u32>,
    check_only: bool,
    note: &mut dyn FnMut(&str),
) -> Result<Vec<Found>> {
    let oned = Oned::from_env(cfg.oned_timeout)?;
    let mut done: Vec<Found> = Vec::new();
    for ds in oned.datastores()? {
        let ds = ds?;
        let id = ds.id().unwrap_or(0);
        if !ds.uses_rbdx() || only.is_some_and(|o| o != id) {
            continue;
        }
        let pool = ds.settings().pool.clone();
        if done.iter().any(|f| f.pool == pool) {
            continue;
        }
        let dcfg = ds.config(cfg)?;
        let target = match (dcfg.execution, ds.bridges().is_empty()) {
            (Execution::Ssh, false) => {
                Target::Ssh(crate::bridge::pick(&ds, u64::from(id), Some(&oned), note)?)
            }
            _ => Target::Local,
        };
        let job = Job::Detach {
            ceph: CephAccess::of(&ds, None, dcfg.ceph_timeout)?,
            pool: pool.clone(),
            flatten: !check_only,
        };
        let outcome = exec::run(&job, &target, &dcfg).into_result()?;
        outcome.log.iter().for_each(|l| note(l));
        let out: serde_json::Value = serde_json::from_str(outcome.output.as_deref().unwrap_or("{}"))
            .map_err(|e| Error::Host(format!("datastore {id}: an unreadable answer: {e}")))?;
        let images = out["images"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        done.push(Found { datastore: id, pool, images });
    }
    if let Some(o) = only
        && done.is_empty()
    {
        return Err(Error::Invalid(format!("datastore {o} is not an rbdx (ceph) datastore")));
    }
    Ok(done)
}
