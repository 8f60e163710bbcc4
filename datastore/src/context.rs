//! What every DS action starts from: the id from argv, oned's message from stdin,
//! the driver config with the datastore's overrides, and where the Ceph work runs
//! (a BRIDGE_LIST host over ssh, as upstream, or here).

use rbdx_one::Error;
use rbdx_one::action_data::ActionData;
use rbdx_one::args::{expect_args, parse_id};
use rbdx_one::config::{Config, Execution};
use rbdx_one::exec::{self, Target};
use rbdx_one::job::{CephAccess, Job, Outcome};
use rbdx_one::log;
use rbdx_one::oned::{Attrs, Datastore};

/// An action's failure: one line for oned.
pub type Result<T = (), E = rbdx_one::Error> = std::result::Result<T, E>;

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
    pub fn load(args: &[String], transfer: bool) -> Result<Self> {
        let a = expect_args(args, "<action> <id> (with oned's base64 message on stdin)", 1, 1)?;
        let id = parse_id("id", &a[0])?;
        let data = ActionData::read(std::io::stdin().lock())?;
        let ds = data.datastore()?;
        let cfg = ds.config(&Config::load()?)?;
        let cfg = if transfer { cfg.for_transfer() } else { cfg };
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
        self.data.image().ok_or_else(|| Error::Invalid("the driver message has no IMAGE".into()))
    }

    /// A required IMAGE attribute.
    ///
    /// # Errors
    /// When it is missing.
    pub fn image_attr(&self, name: &str) -> Result<&str> {
        self.image()?
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("the driver message has no IMAGE/{name}")))
    }

    /// POOL_NAME (default `one`).
    pub fn pool(&self) -> String {
        self.ds.settings().pool.clone()
    }

    /// The image this datastore gives object `id`: `<POOL_NAME>/one-<id>`.
    pub fn new_source(&self) -> String {
        format!("{}/one-{}", self.pool(), self.id)
    }

    /// The data pool (EC_POOL_NAME).
    pub fn data_pool(&self) -> Option<String> {
        self.ds.settings().data_pool.clone()
    }

    /// Ceph access from the datastore (CEPH_CONF, CEPH_USER, CEPH_KEY).
    pub fn ceph(&self) -> CephAccess {
        // The datastore's own settings were checked when the message was read.
        CephAccess::of(&self.ds, None, self.cfg.ceph_timeout).unwrap_or_default()
    }

    /// Where the Ceph work runs: a BRIDGE_LIST host over ssh, picked as the stock
    /// driver picks (off, disabled and failed hosts dropped, then `id % n`), or
    /// here with `EXECUTION = local` or no BRIDGE_LIST.
    ///
    /// # Errors
    /// Every bridge is off, disabled or in error.
    pub fn target(&self) -> Result<Target> {
        if self.cfg.execution == Execution::Local || self.ds.bridges().is_empty() {
            return Ok(Target::Local);
        }
        let oned = rbdx_one::oned::Oned::from_env(self.cfg.oned_timeout).ok();
        let host = rbdx_one::bridge::pick(&self.ds, self.id.into(), oned.as_ref(), &mut |m| log::info(m))?;
        Ok(Target::Ssh(host))
    }

    /// Runs `job` where [`DsCtx::target`] says and prints its log for oned.
    ///
    /// # Errors
    /// The job's failure.
    pub fn run(&self, job: &Job) -> Result<Outcome> {
        let outcome = exec::run(job, &self.target()?, &self.cfg);
        outcome.log.iter().for_each(|l| log::info(l));
        outcome.into_result()
    }
}
