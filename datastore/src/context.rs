//! What every DS action starts from: the id from argv, oned's message from stdin,
//! the driver config with the datastore's overrides, and where the Ceph work runs
//! (a BRIDGE_LIST host over ssh, as upstream, or here).

use rbdx_one::action_data::ActionData;
use rbdx_one::args::{expect_args, parse_id};
use rbdx_one::config::{Config, Execution};
use rbdx_one::exec::{self, Target};
use rbdx_one::job::{CephAccess, Job, Outcome};
use rbdx_one::log;
use rbdx_one::oned::{Attrs, Datastore};

/// An action's failure: one line for oned.
pub type Result<T = ()> = std::result::Result<T, String>;

/// A DS action's inputs.
#[derive(Debug)]
pub struct DsCtx {
    /// The first argument: the image id (app id for export, datastore id for monitor).
    pub id: u32,
    /// The decoded message.
    pub data: ActionData,
    /// Its DATASTORE.
    pub ds: Datastore,
    /// Driver settings with the datastore's overrides.
    pub cfg: Config,
}

impl DsCtx {
    /// Parses argv and stdin, loads the config.
    ///
    /// # Errors
    /// Malformed input (nothing is changed in Ceph).
    pub fn load(args: &[String]) -> Result<Self> {
        let a = expect_args(args, "<action> <id> (with oned's base64 message on stdin)", 1, 2)?;
        let id = parse_id("id", &a[0])?;
        let data = ActionData::read(std::io::stdin().lock())?;
        let ds = data.datastore()?;
        let cfg = Config::load()?.for_datastore(ds.template())?;
        Ok(Self { id, data, ds, cfg })
    }

    /// The datastore's template.
    pub fn template(&self) -> Attrs<'_> {
        self.ds.template()
    }

    /// The IMAGE part, required.
    ///
    /// # Errors
    /// When the message has none.
    pub fn image(&self) -> Result<Attrs<'_>> {
        self.data.image().ok_or_else(|| "the driver message has no IMAGE".into())
    }

    /// A required IMAGE attribute.
    ///
    /// # Errors
    /// When it is missing.
    pub fn image_attr(&self, name: &str) -> Result<&str> {
        self.image()?.get(name).ok_or_else(|| format!("the driver message has no IMAGE/{name}"))
    }

    /// POOL_NAME (default `one`).
    pub fn pool(&self) -> String {
        self.template().get("POOL_NAME").unwrap_or("one").to_string()
    }

    /// The image this datastore gives object `id`: `<POOL_NAME>/one-<id>`.
    pub fn new_source(&self) -> String {
        format!("{}/one-{}", self.pool(), self.id)
    }

    /// The data pool (EC_POOL_NAME).
    pub fn data_pool(&self) -> Option<String> {
        self.template().get("EC_POOL_NAME").map(str::to_string)
    }

    /// Ceph access from the datastore (CEPH_CONF, CEPH_USER, CEPH_KEY).
    pub fn ceph(&self) -> CephAccess {
        let t = self.template();
        CephAccess {
            conf: t.get("CEPH_CONF").map(str::to_string),
            user: t.get("CEPH_USER").map(str::to_string),
            key_file: t.get("CEPH_KEY").map(str::to_string),
            timeout_secs: self.cfg.ceph_timeout.as_secs(),
        }
    }

    /// Where the Ceph work runs: `BRIDGE_LIST[id % n]` over ssh (as the stock
    /// driver picks), or here with `EXECUTION = local` or no BRIDGE_LIST.
    ///
    /// # Errors
    /// A bridge name that is not a host name.
    pub fn target(&self) -> Result<Target> {
        let bridges = self.ds.bridges();
        if self.cfg.execution == Execution::Local || bridges.is_empty() {
            return Ok(Target::Local);
        }
        let host = &bridges[self.id as usize % bridges.len()];
        rbdx_one::args::validate_host(host)?;
        Ok(Target::Ssh(host.clone()))
    }

    /// Runs `job` where [`DsCtx::target`] says and prints its log for oned.
    ///
    /// # Errors
    /// The job's failure.
    pub fn run(&self, job: &Job) -> Result<Outcome> {
        let outcome = exec::run(job, &self.target()?, &self.cfg);
        outcome.log.iter().for_each(|l| log::info(l));
        match outcome.error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }
}
