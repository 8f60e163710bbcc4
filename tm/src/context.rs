//! What every TM action needs: the driver config, oned, and the rules that turn a
//! VM's DISK and its datastores into image names, Ceph access and a data pool.

use std::cell::OnceCell;

use rbdx_one::args::HostPath;
pub use rbdx_one::config::remotes_dir;
use rbdx_one::config::{Config, Execution};
use rbdx_one::exec::{self, Target};
use rbdx_one::job::{CephAccess, Job};
use rbdx_one::log;
use rbdx_one::naming;
use rbdx_one::oned::{Attrs, Datastore, Oned, Vm};
use rbdx_one::{Context, Error};

/// An action's failure: one line for oned.
pub type Result<T = (), E = rbdx_one::Error> = std::result::Result<T, E>;

/// The action's environment: settings and a lazily made oned client.
#[derive(Debug)]
pub struct Ctx {
    /// Driver settings.
    pub cfg: Config,
    oned: OnceCell<Oned>,
}

impl Ctx {
    /// Loads the driver config; with `transfer`, for an action that copies
    /// whole images or directories (its deadline is TRANSFER_TIMEOUT).
    ///
    /// # Errors
    /// A bad config file.
    pub fn load(transfer: bool) -> Result<Self> {
        let cfg = Config::load()?;
        Ok(Self { cfg: if transfer { cfg.for_transfer() } else { cfg }, oned: OnceCell::new() })
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
        self.oned()?.vm(id)
    }

    /// `one.datastore.info`.
    ///
    /// # Errors
    /// oned's failure.
    pub fn datastore(&self, id: u32) -> Result<Datastore> {
        self.oned()?.datastore(id)
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
        outcome.into_result().map(drop)
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
        outcome.into_result().map(drop)
    }

    /// Ceph access: the datastore's CEPH_CONF, CEPH_USER and CEPH_KEY, the DISK's
    /// only where the datastore sets none.
    ///
    /// # Errors
    /// A malformed DISK attribute that would be used.
    pub fn ceph(&self, disk: Option<Attrs<'_>>, ds: &Datastore) -> Result<CephAccess> {
        CephAccess::of(ds, disk, ds.ceph_timeout(&self.cfg))
    }

    /// The host that does the work for a VM that may be undeployed: the host in
    /// the arguments while the VM is there, else a usable BRIDGE_LIST host (as the
    /// stock drivers do).
    ///
    /// # Errors
    /// No usable bridge when one is needed.
    pub fn host_for(&self, hp: &HostPath, vm: &Vm, ds: &Datastore) -> Result<String, rbdx_one::Error> {
        let undeployed = vm.last_history("HOSTNAME").is_some_and(|h| h != hp.host);
        if !undeployed || ds.bridges().is_empty() {
            return Ok(hp.host.clone());
        }
        rbdx_one::bridge::pick(ds, vm.id().unwrap_or(0).into(), Some(self.oned()?), &mut |m| log::info(m))
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
    pub fn image(&self) -> Result<String, rbdx_one::Error> {
        disk_image(self.disk()?, self.vm_id, self.disk_id, &self.ds)
    }

    /// Ceph access from the DISK and the datastore.
    ///
    /// # Errors
    /// When the VM has no such disk.
    pub fn ceph(&self, ctx: &Ctx) -> Result<CephAccess> {
        ctx.ceph(Some(self.disk()?), &self.ds)
    }

    /// Refuses a disk whose snapshots are not RBD snapshots (TYPE is not RBD: a
    /// volatile fs or swap disk), as the stock snapshot actions do.
    ///
    /// # Errors
    /// One line naming the disk type.
    pub fn require_rbd(&self) -> Result {
        match self.disk()?.get("TYPE") {
            Some(t) if t.eq_ignore_ascii_case("rbd") => Ok(()),
            t => {
                Err(Error::Invalid(format!("Operation not supported on disk type {}", t.unwrap_or("(none)"))))
            }
        }
    }

    /// The clone-depth bound for this datastore.
    ///
    /// # Errors
    /// A bad datastore override.
    pub fn max_depth(&self, ctx: &Ctx) -> Result<u32> {
        Ok(ctx.cfg.for_datastore(self.ds.template())?.max_clone_depth)
    }

    /// The guest freeze for live actions.
    pub fn freeze(&self) -> rbdx_one::job::Freeze {
        freeze_of(&self.vm, self.vm_id)
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

/// The guest freeze of VM `vm_id` (its DEPLOY_ID, else `one-<vmid>`): an LXC
/// container's for VM_MAD lxc, else a libvirt domain's.
pub fn freeze_of(vm: &Vm, vm_id: u32) -> rbdx_one::job::Freeze {
    rbdx_one::job::Freeze {
        domain: vm.deploy_id().map_or_else(|| format!("one-{vm_id}"), str::to_string),
        lxc: vm.last_history("VM_MAD") == Some("lxc"),
        or_suspend: false,
    }
}

pub use rbdx_one::exec::is_this_host;

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
    vm.disk(disk_id)
        .ok_or_else(|| Error::Invalid(format!("VM {} has no disk {disk_id}", vm.id().unwrap_or(0))))
}

/// The RBD image a DISK lives in (the stock drivers' naming, which oned and
/// libvirt hard-code): SOURCE for a persistent image, `SOURCE-<vmid>-<diskid>`
/// for a non-persistent clone, `<POOL_NAME>/one-sys-<vmid>-<diskid>` for a
/// volatile disk, with the POOL_NAME of datastore `ds` (the DISK's only where the
/// datastore sets none).
///
/// # Errors
/// A DISK whose SOURCE or POOL_NAME is malformed.
pub fn disk_image(
    disk: Attrs<'_>,
    vm_id: u32,
    disk_id: u32,
    ds: &Datastore,
) -> Result<String, rbdx_one::Error> {
    match disk.get("SOURCE") {
        Some(src) => {
            let spec: rbdx_core::ops::ImageSpec =
                src.parse::<rbdx_core::ops::ImageSpec>().context("DISK SOURCE")?;
            let clone = rbdx_one::datastore::yes_no("DISK CLONE", disk.get("CLONE").unwrap_or("NO"))?;
            Ok(if clone { naming::clone_target(&spec.to_string(), vm_id, disk_id) } else { spec.to_string() })
        }
        None => Ok(naming::volatile_image(&volatile_pool(disk, ds)?, vm_id, disk_id)),
    }
}

/// The pool of a volatile disk: the datastore's POOL_NAME, or the DISK's when the
/// datastore sets none.
///
/// # Errors
/// A malformed DISK POOL_NAME.
pub fn volatile_pool(disk: Attrs<'_>, ds: &Datastore) -> Result<String, rbdx_one::Error> {
    if ds.template().get("POOL_NAME").is_some() {
        return Ok(ds.settings().pool.clone());
    }
    match disk.get("POOL_NAME") {
        Some(p) => rbdx_one::datastore::pool("DISK POOL_NAME", p),
        None => Ok(rbdx_one::DEFAULT_POOL.to_string()),
    }
}

/// True if the DISK is a persistent image used in place (nothing of the VM's own).
pub fn is_persistent(disk: Attrs<'_>) -> bool {
    disk.get("SOURCE").is_some() && !disk.is_yes("CLONE")
}

/// The data pool of images made in datastore `ds`.
pub fn data_pool(ds: &Datastore) -> Option<String> {
    ds.settings().data_pool.clone()
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
        let ds = |t: &str| {
            rbdx_one::oned::Datastore::parse(&format!(
                "<DATASTORE><ID>0</ID><TEMPLATE>{t}</TEMPLATE></DATASTORE>"
            ))
            .unwrap()
        };
        let plain = ds("");
        let clone = attrs("<DISK><SOURCE>one/one-5</SOURCE><CLONE>YES</CLONE></DISK>");
        assert_eq!(disk_image(Attrs(&clone), 12, 0, &plain).unwrap(), "one/one-5-12-0");
        let persistent = attrs("<DISK><SOURCE>one/one-5</SOURCE><CLONE>NO</CLONE></DISK>");
        assert_eq!(disk_image(Attrs(&persistent), 12, 0, &plain).unwrap(), "one/one-5");
        assert!(is_persistent(Attrs(&persistent)));
        let volatile = attrs("<DISK><POOL_NAME>rbd</POOL_NAME><TYPE>fs</TYPE></DISK>");
        assert_eq!(disk_image(Attrs(&volatile), 12, 3, &plain).unwrap(), "rbd/one-sys-12-3");
        let sys = ds("<POOL_NAME>sys</POOL_NAME>");
        assert_eq!(
            disk_image(Attrs(&volatile), 12, 3, &sys).unwrap(),
            "sys/one-sys-12-3",
            "the datastore's pool wins"
        );
        let default_pool = attrs("<DISK><TYPE>swap</TYPE></DISK>");
        assert_eq!(disk_image(Attrs(&default_pool), 1, 2, &plain).unwrap(), "one/one-sys-1-2");
        let bad = attrs("<DISK><SOURCE>one/one-5</SOURCE><CLONE>maybe</CLONE></DISK>");
        assert!(disk_image(Attrs(&bad), 1, 2, &plain).is_err());
        let bad_pool = attrs("<DISK><POOL_NAME>a/b</POOL_NAME></DISK>");
        assert!(disk_image(Attrs(&bad_pool), 1, 2, &plain).is_err());
    }
}
