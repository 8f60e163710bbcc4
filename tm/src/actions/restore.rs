//! `restore host:<sysdir> <vmid> <backup image id> <increment id> <disk id>`:
//! a powered-off VM's RBD disks replaced by a backup (all of them, or disk
//! `<disk id>`; increment `-1` is the newest).
//!
//! The backup datastore's own `ls -i` lists the backup's files as URLs; each is
//! downloaded with OpenNebula's `downloader.sh` (argument vector, transfer
//! deadline) and imported, as DS `cp` imports (qcow2 chains already merged by
//! the downloader, or RBD backup tarballs), into `<disk>.rbdx-restore` with the
//! disk datastore's EC_POOL_NAME. Only once every disk is imported does each
//! take its disk's place ([`rbdx_core::ops::disk::Disk::replace_with`]): the
//! old disk (head, carriers, snapshots) is removed the way `delete` removes it
//! — images that save-as clones read from wait in the trash, so a restore
//! never deletes an image another image depends on (the stock action's
//! `rbd_rm_image` removes those clones). A failed import removes what this run
//! imported and leaves the disks as they were; a re-run converges.

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::config::Execution;
use rbdx_one::exec::{self, Target};
use rbdx_one::job::{ImportJob, Job};
use rbdx_one::naming::{restore_replaced, restore_target};
use rbdx_one::oned::{Datastore, Vm};
use rbdx_one::xml::Element;
use rbdx_one::{Context, Error};

use crate::context::{Ctx, Result, disk_image};

/// Usage as oned writes it.
pub const USAGE: &str = "restore <host:sysdir> <vmid> <backup_image_id> <increment_id> <disk_id>";

/// `-1` or a non-negative id.
fn id_or_all(what: &str, s: &str) -> Result<Option<u32>> {
    if s == "-1" { Ok(None) } else { Ok(Some(parse_id(what, s)?)) }
}

/// One disk to restore.
struct Restore {
    id: u32,
    url: String,
    head: String,
    ds: Datastore,
    ceph: rbdx_one::job::CephAccess,
}

/// Runs the action.
///
/// # Errors
/// One line for oned; the disks are as they were unless every import succeeded.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 5, 5)?;
    let hp = HostPath::parse(&a[0])?;
    let vm_id = parse_id("VM id", &a[1])?;
    let image_id = parse_id("backup image id", &a[2])?;
    let increment = id_or_all("increment id", &a[3])?;
    let only = id_or_all("disk id", &a[4])?;

    let oned = ctx.oned()?;
    let vm_doc = oned.document("vm", vm_id)?;
    let vm = Vm::parse(&vm_doc)?;
    let image_doc = oned.document("image", image_id)?;
    let image = Element::parse(&image_doc).map_err(|e| Error::Oned(format!("image document: {e}")))?;
    let bk_ds_id = parse_id("backup datastore id", image.text_at("DATASTORE_ID").unwrap_or(""))?;
    let bk_ds_doc = oned.document("datastore", bk_ds_id)?;
    let bk_ds = Element::parse(&bk_ds_doc).map_err(|e| Error::Oned(format!("datastore document: {e}")))?;
    let ds_mad = bk_ds.text_at("DS_MAD").unwrap_or("").to_string();

    let action = format!("<DS_DRIVER_ACTION_DATA>{bk_ds_doc}{vm_doc}{image_doc}</DS_DRIVER_ACTION_DATA>");
    let remotes = rbdx_one::config::remotes_dir();
    let inc = increment.map_or(-1, i64::from);
    let listing = rbdx_one::fetch::list_backup(&remotes, &ds_mad, inc, &action, ctx.cfg.action_timeout)?;

    let mut disks = Vec::new();
    for (id, url) in listing {
        if id == "tpm" {
            rbdx_one::log::info("the backup holds a vTPM state: rbdx does not restore it");
            continue;
        }
        let id = parse_id("disk id in the backup", &id)?;
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let d =
            vm.disk(id).ok_or_else(|| Error::Invalid(format!("VM {vm_id} has no disk {id} to restore")))?;
        let ds = match d.get("DATASTORE_ID").filter(|_| d.get("SOURCE").is_some()) {
            Some(i) => ctx.datastore(parse_id("DISK DATASTORE_ID", i)?)?,
            None => {
                ctx.datastore(parse_id("system datastore id", vm.last_history("DS_ID").unwrap_or(""))?)?
            }
        };
        let head = disk_image(d, vm_id, id, &ds)?;
        disks.push(Restore { id, url, head, ceph: ctx.ceph(Some(d), &ds)?, ds });
    }
    if disks.is_empty() {
        return Err(Error::Invalid(format!(
            "backup image {image_id} holds no disk of VM {vm_id} to restore"
        )));
    }

    // Every disk imported beside its head, or none.
    let mut imported: Vec<&Restore> = Vec::new();
    for d in &disks {
        if let Err(e) = import(ctx, &hp, vm_id, d) {
            for done in imported.iter().copied().chain(std::iter::once(d)) {
                let undo = Job::RemoveImage {
                    ceph: done.ceph.clone(),
                    image: restore_target(&done.head),
                    trash_delay: None,
                };
                let _ = run_job(ctx, &hp, vm_id, &done.ds, &undo);
            }
            return Err(e.within(format!("restoring disk {}", d.id)));
        }
        imported.push(d);
    }
    for d in &disks {
        let trash = d.ds.settings().trash;
        let job = Job::ReplaceDisk {
            ceph: d.ceph.clone(),
            head: d.head.clone(),
            new: restore_target(&d.head),
            old: restore_replaced(&d.head),
            trash_delay: trash.then_some(ctx.cfg.trash_delay),
        };
        run_job(ctx, &hp, vm_id, &d.ds, &job)?;
    }
    Ok(())
}

/// Where the disk datastore's Ceph work runs: here with EXECUTION=local, else
/// a usable BRIDGE_LIST host, else the VM's host.
fn target(
    ctx: &Ctx,
    hp: &HostPath,
    vm_id: u32,
    ds: &Datastore,
) -> Result<(Target, rbdx_one::config::Config)> {
    let cfg = ctx.cfg.for_datastore(ds.template())?;
    if cfg.execution == Execution::Local {
        return Ok((Target::Local, cfg));
    }
    let host = if ds.bridges().is_empty() {
        hp.host.clone()
    } else {
        rbdx_one::bridge::pick(ds, vm_id.into(), Some(ctx.oned()?), &mut |m| rbdx_one::log::info(m))?
    };
    Ok((Target::Ssh(host), cfg))
}

fn run_job(ctx: &Ctx, hp: &HostPath, vm_id: u32, ds: &Datastore, job: &Job) -> Result {
    let (target, cfg) = target(ctx, hp, vm_id, ds)?;
    let outcome = exec::run(job, &target, &cfg);
    outcome.log.iter().for_each(|l| rbdx_one::log::info(l));
    outcome.into_result().map(drop)
}

/// Downloads one disk's backup and imports it into `<head>.rbdx-restore` (a
/// leftover of an interrupted run is removed first: it may be another backup's).
fn import(ctx: &Ctx, hp: &HostPath, vm_id: u32, d: &Restore) -> Result {
    let new = restore_target(&d.head);
    let leftover = Job::RemoveImage { ceph: d.ceph.clone(), image: new.clone(), trash_delay: None };
    run_job(ctx, hp, vm_id, &d.ds, &leftover)?;
    let settings = d.ds.settings();
    let staging = settings.staging_dir.clone().map_or_else(std::env::temp_dir, Into::into);
    let remotes = rbdx_one::config::remotes_dir();
    let staged = rbdx_one::fetch::fetch(&d.url, &remotes, &staging, ctx.cfg.transfer_timeout)?;
    let file = staged.reopen().context("reading the download")?;
    let size = file.metadata().context("reading the download")?.len();
    let job = Job::Import(ImportJob {
        ceph: d.ceph.clone(),
        target: new,
        data_pool: settings.data_pool.clone(),
        url: None,
        size,
        min_size_mb: None,
        md5: None,
        sha1: None,
        limit_bps: settings.limit_bps,
        staging_dir: settings.staging_dir.clone(),
        idle_secs: Some(ctx.cfg.idle_timeout.as_secs()),
        max_size_mb: Some(ctx.cfg.max_image_size_mb),
    });
    let (target, cfg) = target(ctx, hp, vm_id, &d.ds)?;
    let outcome = exec::run_with_input(&job, &target, &cfg, exec::Input::File(file), &mut |_, _| {});
    outcome.log.iter().for_each(|l| rbdx_one::log::info(l));
    outcome.into_result().map(drop)?;
    drop(staged);
    Ok(())
}
