//! What every TM action needs: the driver config, oned, and the rules that turn a
//! VM's DISK and its datastores into image names, Ceph access and a data pool.

use std::cell::OnceCell;

use rbdx_one::args::HostPath;
use rbdx_one::config::{Config, Execution};
use rbdx_one::exec::{self, Target};
use rbdx_one::job::{CephAccess, Job};
use rbdx_one::log;
use rbdx_one::oned::{Attrs, Datastore, Oned, Vm};

/// An action's failure: one line for oned.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The action's environment: settings and a lazily made oned client.
#[derive(Debug)]
pub struct Ctx {
    /// Driver settings.
    pub cfg: Config,
    oned: OnceCell<Oned>,
}

impl Ctx {
    /// Loads the driver config.
    ///
    /// # Errors
    /// A bad config file.
    pub fn load() -> Result<Self> {
        Ok(Self { cfg: Config::load()?, oned: OnceCell::new() })
    }

    /// The oned client (made on first use).
    ///
    /// # Errors
    /// Missing credentials or a bad endpoint.
    pub fn oned(&self) -> Result<&Oned> {
        if let Some(o) = self.oned.get() {
            return Ok(o);
        }
        let o = Oned::from_env(self.cfg.oned_timeout)?;
        Ok(self.oned.get_or_init(|| o))
    }

    /// `one.vm.info`.
    ///
    /// # Errors
    /// oned's failure.
    pub fn vm(&self, id: u32) -> Result<Vm> {
        Ok(self.oned()?.vm(id)?)
    }

    /// `one.datastore.info`.
    ///
    /// # Errors
    /// oned's failure.
    pub fn datastore(&self, id: u32) -> Result<Datastore> {
        Ok(self.oned()?.datastore(id)?)
    }

    /// Runs `job` where the datastore's settings say: on `host` over ssh, or here.
    /// Prints the job's log for oned.
    ///
    /// # Errors
    /// The job's failure.
    pub fn run(&self, job: &Job, host: &str, ds: &Datastore) -> Result {
        let cfg = self.cfg.for_datastore(ds.template())?;
        let target = match cfg.execution {
            Execution::Local => Target::Local,
            Execution::Ssh => Target::Ssh(host.to_string()),
        };
        let outcome = exec::run(job, &target, &cfg);
        outcome.log.iter().for_each(|l| log::info(l));
        outcome.error.map_or(Ok(()), Err)
    }

    /// Runs `job` on `host` over ssh whatever the execution setting (its files
    /// live on that host), or here when `host` is this machine.
    ///
    /// # Errors
    /// The job's failure.
    pub fn run_on_host(&self, job: &Job, host: &str, ds: &Datastore) -> Result {
        let cfg = self.cfg.for_datastore(ds.template())?;
        let target = if is_this_host(host) { Target::Local } else { Target::Ssh(host.to_string()) };
        let outcome = exec::run(job, &target, &cfg);
        outcome.log.iter().for_each(|l| log::info(l));
        outcome.error.map_or(Ok(()), Err)
    }

    /// Ceph access from a DISK (CEPH_CONF, CEPH_USER, CEPH_KEY), each falling back
    /// to the datastore's.
    pub fn ceph(&self, disk: Option<Attrs<'_>>, ds: &Datastore) -> CephAccess {
        let t = ds.template();
        let get = |k: &str| disk.and_then(|d| d.get(k)).or_else(|| t.get(k)).map(str::to_string);
        CephAccess {
            conf: get("CEPH_CONF"),
            user: get("CEPH_USER"),
            key_file: get("CEPH_KEY"),
            timeout_secs: self.cfg.ceph_timeout.as_secs(),
        }
    }

    /// The host that does the work for a VM that may be undeployed: the host in
    /// the arguments while the VM is there, else a usable BRIDGE_LIST host (as the
    /// stock drivers do).
    ///
    /// # Errors
    /// No usable bridge when one is needed.
    pub fn host_for(&self, hp: &HostPath, vm: &Vm, ds: &Datastore) -> Result<String> {
        let undeployed = vm.last_history("HOSTNAME").is_some_and(|h| h != hp.host);
        let bridges = ds.bridges();
        if !undeployed || bridges.is_empty() {
            return Ok(hp.host.clone());
        }
        let states = self.oned()?.hosts()?;
        let usable: Vec<&String> = bridges
            .iter()
            .filter(|b| states.iter().find(|h| &h.name == *b).is_none_or(|h| h.usable()))
            .collect();
        let pick = usable
            .get(vm.id().unwrap_or(0) as usize % usable.len().max(1))
            .ok_or_else(|| format!("no usable host in BRIDGE_LIST of datastore {}", ds.id().unwrap_or(0)))?;
        rbdx_one::args::validate_host(pick)?;
        Ok((*pick).clone())
    }
}

/// What most disk actions start from: `host:<sysdir>/disk.N`, VMID and DSID parsed,
/// then the VM and the datastore from oned.
#[derive(Debug)]
pub struct DiskAction {
    /// The disk path (and the host that runs the work).
    pub hp: HostPath,
    /// The DISK_ID.
    pub disk_id: u32,
    /// The VM id.
    pub vm_id: u32,
    /// The VM document.
    pub vm: Vm,
    /// The datastore (DSID).
    pub ds: Datastore,
}

impl DiskAction {
    /// Parses the three arguments, then asks oned.
    ///
    /// # Errors
    /// A malformed argument (before oned is asked), or oned's failure.
    pub fn load(ctx: &Ctx, path: &str, vm: &str, ds: &str) -> Result<Self> {
        let hp = HostPath::parse(path)?;
        let disk_id = hp.disk_id()?;
        let vm_id = rbdx_one::args::parse_id("VM id", vm)?;
        let ds_id = rbdx_one::args::parse_id("datastore id", ds)?;
        Ok(Self { vm: ctx.vm(vm_id)?, ds: ctx.datastore(ds_id)?, hp, disk_id, vm_id })
    }

    /// The VM's DISK.
    ///
    /// # Errors
    /// When the VM has no such disk.
    pub fn disk(&self) -> Result<Attrs<'_>> {
        disk(&self.vm, self.disk_id)
    }

    /// The RBD image of the disk ([`disk_image`]).
    ///
    /// # Errors
    /// When the VM has no such disk.
    pub fn image(&self) -> Result<String> {
        disk_image(self.disk()?, self.vm_id, self.disk_id)
    }

    /// Ceph access from the DISK and the datastore.
    ///
    /// # Errors
    /// When the VM has no such disk.
    pub fn ceph(&self, ctx: &Ctx) -> Result<CephAccess> {
        Ok(ctx.ceph(Some(self.disk()?), &self.ds))
    }

    /// The clone-depth bound for this datastore.
    ///
    /// # Errors
    /// A bad datastore override.
    pub fn max_depth(&self, ctx: &Ctx) -> Result<u32> {
        Ok(ctx.cfg.for_datastore(self.ds.template())?.max_clone_depth)
    }

    /// The guest freeze for live actions.
    pub fn freeze(&self, ctx: &Ctx) -> rbdx_one::job::Freeze {
        rbdx_one::job::Freeze {
            domain: self.vm.deploy_id().map_or_else(|| format!("one-{}", self.vm_id), str::to_string),
            virsh: ctx.cfg.virsh.clone(),
            uri: ctx.cfg.libvirt_uri.clone(),
            timeout_secs: ctx.cfg.freeze_timeout.as_secs(),
        }
    }
}

/// Parses `fe:SOURCE host:<sysdir>/disk.N VMID DSID` (clone, ln and their .ssh
/// variants): the image, then the disk action.
///
/// # Errors
/// A malformed argument (before oned is asked), or oned's failure.
pub fn source_action(ctx: &Ctx, a: &[String]) -> Result<(rbdx_core::ops::ImageSpec, DiskAction)> {
    let source = HostPath::parse(&a[0])?.path.parse()?;
    Ok((source, DiskAction::load(ctx, &a[1], &a[2], &a[3])?))
}

/// True if `host` names the machine this runs on.
pub fn is_this_host(host: &str) -> bool {
    let me = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    host == me || host.split('.').next() == Some(me.as_str()) || me.split('.').next() == Some(host)
}

/// The remotes tree (`/var/lib/one/remotes` on the front-end): `RBDX_REMOTES`, or
/// two levels above the running binary (`<remotes>/rbdx/rbdx`).
pub fn remotes_dir() -> std::path::PathBuf {
    if let Some(r) = std::env::var_os("RBDX_REMOTES") {
        return r.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(std::path::Path::parent).map_or_else(|| "/var/lib/one/remotes".into(), Into::into)
}

/// The name this TM driver is installed under (`RBDX_TM_DRIVER`, set by the
/// action shims; `ceph` by default).
pub fn driver_name() -> String {
    std::env::var("RBDX_TM_DRIVER").ok().filter(|d| !d.is_empty()).unwrap_or_else(|| "ceph".into())
}

/// The DISK `disk_id` of `vm`.
///
/// # Errors
/// A message when the VM has no such disk.
pub fn disk<'a>(vm: &'a Vm, disk_id: u32) -> Result<Attrs<'a>> {
    vm.disk(disk_id).ok_or_else(|| format!("VM {} has no disk {disk_id}", vm.id().unwrap_or(0)))
}

/// The RBD image a DISK lives in (the stock drivers' naming, which oned and
/// libvirt hard-code): SOURCE for a persistent image, `SOURCE-<vmid>-<diskid>`
/// for a non-persistent clone, `<POOL_NAME>/one-sys-<vmid>-<diskid>` for a
/// volatile disk.
///
/// # Errors
/// A DISK without the attributes that decide it.
pub fn disk_image(disk: Attrs<'_>, vm_id: u32, disk_id: u32) -> Result<String> {
    match disk.get("SOURCE") {
        Some(src) if disk.is_yes("CLONE") => Ok(format!("{src}-{vm_id}-{disk_id}")),
        Some(src) => Ok(src.to_string()),
        None => {
            let pool = disk.get("POOL_NAME").unwrap_or("one");
            Ok(format!("{pool}/one-sys-{vm_id}-{disk_id}"))
        }
    }
}

/// True if the DISK is a persistent image used in place (nothing of the VM's own).
pub fn is_persistent(disk: Attrs<'_>) -> bool {
    disk.get("SOURCE").is_some() && !disk.is_yes("CLONE")
}

/// The data pool of images made in datastore `ds`.
pub fn data_pool(ds: &Datastore) -> Option<String> {
    ds.template().get("EC_POOL_NAME").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbdx_one::xml::Element;

    fn attrs(xml: &str) -> Element {
        Element::parse(xml).unwrap()
    }

    #[test]
    fn disk_image_names_follow_the_stock_scheme() {
        let clone = attrs("<DISK><SOURCE>one/one-5</SOURCE><CLONE>YES</CLONE></DISK>");
        assert_eq!(disk_image(Attrs(&clone), 12, 0).unwrap(), "one/one-5-12-0");
        let persistent = attrs("<DISK><SOURCE>one/one-5</SOURCE><CLONE>NO</CLONE></DISK>");
        assert_eq!(disk_image(Attrs(&persistent), 12, 0).unwrap(), "one/one-5");
        assert!(is_persistent(Attrs(&persistent)));
        let volatile = attrs("<DISK><POOL_NAME>rbd</POOL_NAME><TYPE>fs</TYPE></DISK>");
        assert_eq!(disk_image(Attrs(&volatile), 12, 3).unwrap(), "rbd/one-sys-12-3");
        let default_pool = attrs("<DISK><TYPE>swap</TYPE></DISK>");
        assert_eq!(disk_image(Attrs(&default_pool), 1, 2).unwrap(), "one/one-sys-1-2");
    }
}
