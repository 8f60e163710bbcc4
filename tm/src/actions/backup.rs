//! `prebackup[_live] host:<sysdir> <disk_id:…> <deploy_id> <bj_id|-> <vmid> <dsid>`
//! and `postbackup[_live]` with the same arguments; stdin is the VM document.
//!
//! Prebackup writes the VM's RBD disks (TYPE RBD, or FS with DISK_TYPE RBD)
//! into `<sysdir>/backup` (or `<BACKUP_BASE_PATH>/<vmid>/backup`) on the host
//! that uploads them (the VM's LAST_BRIDGE, else the host), where the backup
//! datastore's `backup` action collects them; postbackup cleans up, keeping
//! the base of the next increment, and never fails (as the stock action). The
//! mode (full or incremental), the last increment and FS_FREEZE come from the
//! VM's BACKUP_CONFIG; the file format from the chain's backup image (FORMAT
//! rbd: `.rbdiff` increments). See [`rbdx_one::jobs::backup`].

use std::io::Read;

use rbdx_one::args::{HostPath, expect_args, normalize_path, parse_id};
use rbdx_one::hostfs::BackupDir;
use rbdx_one::job::{BackupDisk, BackupKind, Freeze, Job};
use rbdx_one::oned::Vm;
use rbdx_one::{Context, Error};

use crate::context::{Ctx, Result, disk_image, freeze_of};

/// Usage as oned writes it.
pub const USAGE: &str = "prebackup <host:sysdir> <disk_id[:disk_id…]> <deploy_id> <bj_id> <vmid> <dsid>";

/// What both actions read: arguments, the VM, where the files go.
struct Backup {
    host: String,
    dir: BackupDir,
    disks: Vec<BackupDisk>,
    vm: Vm,
    vm_id: u32,
    stdin: String,
    ds: rbdx_one::oned::Datastore,
}

fn load(args: &[String], ctx: &Ctx, resolve_format: bool) -> Result<Backup> {
    let a = expect_args(args, USAGE, 6, 6)?;
    let hp = HostPath::parse(&a[0])?;
    let ids: Vec<u32> =
        a[1].split(':').map(|d| parse_id("disk id", d)).collect::<std::result::Result<_, _>>()?;
    let vm_id = parse_id("VM id", &a[4])?;
    let ds_id = parse_id("datastore id", &a[5])?;
    let base = backup_base_path();
    let dir = BackupDir::new(&normalize_path(&hp.path), base.as_deref(), vm_id)?;
    let mut stdin = String::new();
    std::io::stdin().take(64 << 20).read_to_string(&mut stdin).context("reading the VM document")?;

    let vm = ctx.vm(vm_id)?;
    let ds = ctx.datastore(ds_id)?;
    let config = vm.doc.at("BACKUPS/BACKUP_CONFIG");
    let text = |k: &str| config.and_then(|c| c.text_at(k));
    let host = match text("LAST_BRIDGE") {
        Some(b) => {
            rbdx_one::args::validate_host(b).map_err(|e| Error::Invalid(format!("LAST_BRIDGE: {e}")))?;
            b.to_string()
        }
        None => hp.host.clone(),
    };
    let incremental = text("MODE").is_some_and(|m| m.eq_ignore_ascii_case("INCREMENT"));
    let kind = if incremental {
        let last = match text("LAST_INCREMENT_ID") {
            None | Some("-1") => None,
            Some(n) => Some(parse_id("LAST_INCREMENT_ID", n)?),
        };
        let rbdiff = last.is_some() && resolve_format && chain_format(ctx, &vm)?.as_deref() == Some("rbd");
        BackupKind::Increment { last, rbdiff }
    } else {
        BackupKind::Full
    };

    let mut disks = Vec::new();
    for d in vm.disks() {
        let Some(id) = d.get("DISK_ID").and_then(|i| parse_id("DISK_ID", i).ok()) else { continue };
        if !ids.contains(&id) || !is_rbd(d) {
            continue;
        }
        // The disk's image datastore (its system datastore for a volatile disk).
        let disk_ds = match d.get("DATASTORE_ID").filter(|_| d.get("SOURCE").is_some()) {
            Some(i) => ctx.datastore(parse_id("DISK DATASTORE_ID", i)?)?,
            None => ds.clone(),
        };
        disks.push(BackupDisk {
            id,
            ceph: ctx.ceph(Some(d), &disk_ds)?,
            image: disk_image(d, vm_id, id, &disk_ds)?,
            kind,
        });
    }
    Ok(Backup { host, dir, disks, vm, vm_id, stdin, ds })
}

/// A disk the backup covers: TYPE RBD, or a volatile FS disk of DISK_TYPE RBD.
fn is_rbd(d: rbdx_one::oned::Attrs<'_>) -> bool {
    let up = |k: &str| d.get(k).map(str::to_ascii_uppercase);
    up("TYPE").as_deref() == Some("RBD")
        || (up("TYPE").as_deref() == Some("FS") && up("DISK_TYPE").as_deref() == Some("RBD"))
}

/// The FORMAT of the chain's backup image (`BACKUPS/BACKUP_IDS/ID`), if any.
fn chain_format(ctx: &Ctx, vm: &Vm) -> Result<Option<String>> {
    let Some(id) = vm.doc.text_at("BACKUPS/BACKUP_IDS/ID") else { return Ok(None) };
    let image = ctx.oned()?.image(parse_id("backup image id", id.trim())?)?;
    Ok(image.text_at("FORMAT").map(|f| f.trim().to_string()))
}

/// BACKUP_BASE_PATH of the driver's `etc/datastore/datastore.conf`, as the
/// stock actions load it.
fn backup_base_path() -> Option<String> {
    let conf = crate::context::remotes_dir().join("etc/datastore/datastore.conf");
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines().rev().find_map(|l| {
        let l = l.trim();
        let l = l.strip_prefix("export").map_or(l, str::trim_start);
        let v = l.strip_prefix("BACKUP_BASE_PATH=")?;
        let v = v.trim().trim_matches('"');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// The guest freeze BACKUP_CONFIG/FS_FREEZE asks for: AGENT freezes the file
/// systems, SUSPEND and TRY fall back to suspending the VM; NONE (the default)
/// takes a crash-consistent snapshot.
fn fs_freeze(vm: &Vm, vm_id: u32) -> Option<Freeze> {
    let mode = vm.doc.text_at("BACKUPS/BACKUP_CONFIG/FS_FREEZE").unwrap_or("NONE").to_ascii_uppercase();
    let f = freeze_of(vm, vm_id);
    match mode.as_str() {
        "AGENT" => Some(f),
        "SUSPEND" | "TRY" => Some(Freeze { or_suspend: true, ..f }),
        _ => None,
    }
}

/// `prebackup` / `prebackup_live`.
///
/// # Errors
/// One line for oned; the snapshots this run took are gone.
pub fn pre(args: &[String], ctx: &Ctx, live: bool) -> Result {
    let b = load(args, ctx, true)?;
    if b.disks.is_empty() {
        return Err(Error::Invalid(format!("VM {} has no RBD disk among {}", b.vm_id, args[1])));
    }
    // vm.xml is the document oned gave on stdin (what a restore reads back).
    Vm::parse(b.stdin.trim()).map_err(|e| Error::Invalid(format!("the VM document on stdin: {e}")))?;
    let job = Job::Backup {
        dir: b.dir,
        vm_xml: wrap64(&rbdx_one::base64::encode(b.stdin.trim().as_bytes())),
        disks: b.disks,
        live,
        freeze: live.then(|| fs_freeze(&b.vm, b.vm_id)).flatten(),
    };
    ctx.run_on_host(&job, &b.host, &b.ds)
}

/// `postbackup` / `postbackup_live`: always exits 0 once its arguments parse.
///
/// # Errors
/// Only malformed arguments or an unreachable oned.
pub fn post(args: &[String], ctx: &Ctx) -> Result {
    let b = load(args, ctx, false)?;
    let success = rbdx_one::xml::Element::parse(&b.stdin)
        .ok()
        .and_then(|d| d.text_at("BACKUP_RESULT").map(str::to_string))
        .is_none_or(|r| r == "SUCCESS");
    let job = Job::BackupCleanup { dir: b.dir, disks: b.disks, success };
    if let Err(e) = ctx.run_on_host(&job, &b.host, &b.ds) {
        rbdx_one::log::info(&format!("cleaning up the backup: {e}"));
    }
    Ok(())
}

/// Base64 in lines of 60, as Ruby's `Base64.encode64` (what the stock driver writes).
fn wrap64(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + b64.len() / 60 + 1);
    for chunk in b64.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_xml_is_wrapped_like_ruby_base64() {
        let b = "A".repeat(130);
        assert_eq!(wrap64(&b), format!("{}\n{}\n{}\n", "A".repeat(60), "A".repeat(60), "A".repeat(10)));
        assert_eq!(wrap64(""), "");
    }
}
