//! Moving a VM directory between hosts: `mv` (cold migration, undeploy, resume),
//! `premigrate` and `postmigrate` (live migration, with the VM document as base64
//! on stdin), and `migrate_other`: the same call for every other TM driver the
//! VM's disks use, as the stock drivers do.
//!
//! A move never loses the directory ([`rbdx_one::moves::move_dir`]): when the two
//! ends are one directory (a shared file system, two names for one machine) a
//! marker left on one side is found on the other and nothing is done; otherwise
//! the tree arrives in a temporary sibling, is synced and swapped into place, and
//! the source is removed only after that. `postmigrate` removes the source only
//! when it is not the destination's directory too.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rbdx_one::args::{HostPath, expect_args, normalize_path, parse_id, validate_host};
use rbdx_one::exec::Target;
use rbdx_one::hostfs::VmPath;
use rbdx_one::job::Job;
use rbdx_one::moves::Moved;
use rbdx_one::oned::{Datastore, Vm};

use crate::context::{Ctx, Result, driver_name, is_this_host, remotes_dir};
use rbdx_one::{Context, Error};

/// How long another driver's pre/postmigrate may take (the action's deadline
/// bounds it too).
const OTHER_DRIVER_LIMIT: Duration = Duration::from_secs(3600);

/// Where the files of `host` are reached: here, or over ssh.
fn target(host: &str) -> Target {
    if is_this_host(host) { Target::Local } else { Target::Ssh(host.to_string()) }
}

/// `mv src_host:path dst_host:path VMID DSID`.
///
/// # Errors
/// One line for oned.
pub fn mv(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, "mv <host:path> <host:path> <vmid> <dsid>", 4, 4)?;
    let src = HostPath::parse(&a[0])?;
    let dst = HostPath::parse(&a[1])?;
    let vm_id = parse_id("VM id", &a[2])?;
    let ds_id = parse_id("datastore id", &a[3])?;
    if src.is_disk() {
        return Ok(()); // the disk stays in RBD
    }
    let from = VmPath::dir(&src.path, ds_id, vm_id)?;
    let to = VmPath::dir(&dst.path, ds_id, vm_id)?;
    if src.host == dst.host && src.path == dst.path {
        return Ok(());
    }
    let vm = ctx.vm(vm_id)?;
    if vm.lcm().is_some_and(rbdx_one::oned::LcmState::source_unreachable) {
        return Ok(());
    }
    let ds = ctx.datastore(ds_id)?;
    move_and_remove(ctx, &src.host, &from, &dst.host, &to, &ds)
}

/// Moves the directory, then removes the source if the move copied it.
fn move_and_remove(ctx: &Ctx, src: &str, from: &VmPath, dst: &str, to: &VmPath, ds: &Datastore) -> Result {
    let cfg = ds.config(&ctx.cfg)?;
    let (ts, td) = (target(src), target(dst));
    match rbdx_one::moves::move_dir(&ts, from, &td, to, &cfg)? {
        Moved::Copied => {
            rbdx_one::log::info(&format!("moved {} from {src} to {dst}", from.path));
            ctx.run_on_host(&Job::RemoveDir { path: from.clone() }, src, ds)
        }
        Moved::SameDirectory => {
            rbdx_one::log::info(&format!("{src} and {dst} share {}: nothing to move", from.path));
            Ok(())
        }
        Moved::AlreadyMoved => Ok(()),
    }
}

/// `premigrate SRC DST VM_DIR VMID DSID [CALLER]` / `postmigrate …`, stdin the
/// base64 VM document. Copies the VM directory to DST first (pre) or removes it
/// from SRC after (post, unless SRC and DST share it), and runs the same action
/// of every other TM driver the VM's disks use. Called by another driver
/// (CALLER set), it does nothing.
///
/// # Errors
/// One line for oned.
pub fn premigrate(args: &[String], ctx: &Ctx, post: bool) -> Result {
    let name = if post { "postmigrate" } else { "premigrate" };
    let usage = format!("{name} <src_host> <dst_host> <vm_dir> <vmid> <dsid> [caller]");
    let a = expect_args(args, &usage, 5, 6)?;
    validate_host(&a[0])?;
    validate_host(&a[1])?;
    let vm_id = parse_id("VM id", &a[3])?;
    let ds_id = parse_id("datastore id", &a[4])?;
    let dir = VmPath::dir(&normalize_path(&a[2]), ds_id, vm_id)?;
    if a.len() == 6 {
        return Ok(());
    }
    let mut b64 = String::new();
    std::io::stdin().take(64 << 20).read_to_string(&mut b64).context("reading the VM document")?;
    let (src, dst) = (&a[0], &a[1]);
    if src != dst {
        let ds = ctx.datastore(ds_id)?;
        if post {
            let cfg = ds.config(&ctx.cfg)?;
            if rbdx_one::moves::same_directory(&target(src), &dir, &target(dst), &dir, &cfg)? {
                rbdx_one::log::info(&format!("{src} and {dst} share {}: it stays", dir.path));
            } else {
                ctx.run_on_host(&Job::RemoveDir { path: dir }, src, &ds)?;
            }
        } else {
            let cfg = ds.config(&ctx.cfg)?;
            rbdx_one::moves::move_dir(&target(src), &dir, &target(dst), &dir, &cfg)?;
        }
    }
    migrate_other(name, a, &b64)
}

/// Runs `<remotes>/tm/<TM>/<action> <args…> <this driver>` for every other
/// TM_MAD of the VM's disks, with the same stdin, each under the deadline.
fn migrate_other(action: &str, args: &[String], b64: &str) -> Result {
    let trimmed: String = b64.split_whitespace().collect();
    if trimmed.is_empty() {
        return Ok(());
    }
    let xml = rbdx_one::base64::decode(&trimmed)
        .ok_or_else(|| Error::Invalid("the VM document on stdin is not base64".into()))?;
    let vm = Vm::parse(&String::from_utf8_lossy(&xml))?;
    let me = driver_name();
    let mut others: Vec<String> =
        vm.disks().iter().filter_map(|d| d.get("TM_MAD")).map(str::to_string).collect();
    others.sort();
    others.dedup();
    for tm in others.into_iter().filter(|t| *t != me) {
        if !tm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(Error::Invalid(format!("invalid TM_MAD {tm:?} in the VM document")));
        }
        let script = remotes_dir().join("tm").join(&tm).join(action);
        let mut cmd = Command::new(&script);
        cmd.args(args).arg(&me).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child =
            rbdx_import::child::spawn(&mut cmd).context(format!("running {}", script.display()))?;
        if let Some(mut w) = child.stdin.take() {
            let _ = w.write_all(b64.as_bytes());
        }
        let limit = rbdx_one::deadline::bound(OTHER_DRIVER_LIMIT);
        let out = rbdx_import::child::wait_output(child, limit)
            .map_err(|e| Error::Invalid(format!("{action} of driver {tm} {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Invalid(format!(
                "{action} of driver {tm} failed: {}",
                rbdx_one::log::one_line(&err)
            )));
        }
    }
    Ok(())
}
