//! Moving a VM directory between hosts: `mv` (cold migration, undeploy, resume),
//! `premigrate` and `postmigrate` (live migration, with the VM document as base64
//! on stdin), and `migrate_other`: the same call for every other TM driver the
//! VM's disks use, as the stock drivers do.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use rbdx_one::args::{HostPath, expect_args, parse_id, validate_host};
use rbdx_one::exec;
use rbdx_one::job::Job;
use rbdx_one::oned::Vm;

use crate::context::{Ctx, Result, driver_name, is_this_host, remotes_dir};

/// LCM states where the source host is unknown or failed: nothing to copy from.
const SOURCE_UNREACHABLE: [u32; 3] = [16, 60, 61];

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
    rbdx_one::hostfs::check_path(&src.path)?;
    rbdx_one::hostfs::check_path(&dst.path)?;
    if src.host == dst.host && src.path == dst.path {
        return Ok(());
    }
    let vm = ctx.vm(vm_id)?;
    if vm.lcm_state().is_some_and(|s| SOURCE_UNREACHABLE.contains(&s)) {
        return Ok(());
    }
    let ds = ctx.datastore(ds_id)?;
    move_dir(ctx, &src.host, &dst.host, &src.path, &dst.path, &ds)?;
    ctx.run_on_host(&Job::RemoveDir { path: src.path.clone() }, &src.host, &ds)
}

fn move_dir(ctx: &Ctx, src: &str, dst: &str, from: &str, to: &str, ds: &rbdx_one::oned::Datastore) -> Result {
    let cfg = ctx.cfg.for_datastore(ds.template())?;
    if is_this_host(dst) || is_this_host(src) {
        // One end is the front-end itself: stream through a local tar.
        return local_move(&cfg, src, from, dst, to);
    }
    exec::move_dir(src, from, dst, to, &cfg)
}

fn local_move(cfg: &rbdx_one::config::Config, src: &str, from: &str, dst: &str, to: &str) -> Result {
    let here_is_dst = is_this_host(dst);
    let remote = if here_is_dst { src } else { dst };
    validate_host(remote)?;
    let job =
        if here_is_dst { Job::SendDir { path: from.into() } } else { Job::ReceiveDir { path: to.into() } };
    let req = exec::request_line(job)?;
    let mut child = exec::ssh(cfg, remote)?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(&req).map_err(|e| format!("{remote}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    if here_is_dst {
        drop(stdin);
        rbdx_one::hostfs::receive_dir(to, stdout)?;
    } else {
        let mut tar = Command::new("tar")
            .args(["--sparse", "-C", from, "-cf", "-", "."])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running tar: {e}"))?;
        let mut out = tar.stdout.take().ok_or("no tar output")?;
        // tar's messages become the one-line error, never lines of our stderr.
        let mut tar_err = tar.stderr.take().ok_or("no tar stderr")?;
        let tar_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = tar_err.read_to_string(&mut s);
            s
        });
        match std::io::copy(&mut out, &mut stdin) {
            // The remote tar may stop before the archive's padding: its outcome says.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(format!("{remote}: {e}")),
            _ => {}
        }
        drop(stdin);
        let st = tar.wait().map_err(|e| e.to_string())?;
        let err = tar_err.join().unwrap_or_default();
        if !st.success() {
            let first = err.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output");
            return Err(format!("tar of {from} failed ({st}): {first}"));
        }
        let mut o = Vec::new();
        let mut so = stdout;
        let _ = so.read_to_end(&mut o);
        if let Ok(rbdx_one::job::Outcome { error: Some(e), .. }) = serde_json::from_slice(&o) {
            return Err(format!("{remote}: {e}"));
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{remote}: moving {from} to {to} failed: {}", err.lines().last().unwrap_or("")));
    }
    Ok(())
}

/// `premigrate SRC DST VM_DIR VMID DSID [CALLER]` / `postmigrate …`, stdin the
/// base64 VM document. Copies the VM directory to DST first (pre) or removes it
/// from SRC after (post), and runs the same action of every other TM driver the
/// VM's disks use. Called by another driver (CALLER set), it does nothing.
///
/// # Errors
/// One line for oned.
pub fn premigrate(args: &[String], ctx: &Ctx, post: bool) -> Result {
    let name = if post { "postmigrate" } else { "premigrate" };
    let usage = format!("{name} <src_host> <dst_host> <vm_dir> <vmid> <dsid> [caller]");
    let a = expect_args(args, &usage, 5, 6)?;
    validate_host(&a[0])?;
    validate_host(&a[1])?;
    rbdx_one::hostfs::check_path(&a[2])?;
    parse_id("VM id", &a[3])?;
    let ds_id = parse_id("datastore id", &a[4])?;
    if a.len() == 6 {
        return Ok(());
    }
    let mut b64 = String::new();
    std::io::stdin()
        .take(64 << 20)
        .read_to_string(&mut b64)
        .map_err(|e| format!("reading the VM document: {e}"))?;
    let (src, dst, dir) = (&a[0], &a[1], &a[2]);
    if src != dst {
        let ds = ctx.datastore(ds_id)?;
        if post {
            ctx.run_on_host(&Job::RemoveDir { path: dir.clone() }, src, &ds)?;
        } else {
            move_dir(ctx, src, dst, dir, dir, &ds)?;
        }
    }
    migrate_other(name, a, &b64)
}

/// Runs `<remotes>/tm/<TM>/<action> <args…> <this driver>` for every other
/// TM_MAD of the VM's disks, with the same stdin.
fn migrate_other(action: &str, args: &[String], b64: &str) -> Result {
    let trimmed: String = b64.split_whitespace().collect();
    if trimmed.is_empty() {
        return Ok(());
    }
    let xml = rbdx_one::base64::decode(&trimmed).ok_or("the VM document on stdin is not base64")?;
    let vm = Vm::parse(&String::from_utf8_lossy(&xml)).map_err(|e| e.to_string())?;
    let me = driver_name();
    let mut others: Vec<String> =
        vm.disks().iter().filter_map(|d| d.get("TM_MAD")).map(str::to_string).collect();
    others.sort();
    others.dedup();
    for tm in others.into_iter().filter(|t| *t != me) {
        if !tm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("invalid TM_MAD {tm:?} in the VM document"));
        }
        let script = remotes_dir().join("tm").join(&tm).join(action);
        let mut child = Command::new(&script)
            .args(args)
            .arg(&me)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if let Some(mut w) = child.stdin.take() {
            let _ = w.write_all(b64.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{action} of driver {tm} failed: {}", rbdx_one::log::one_line(&err)));
        }
    }
    Ok(())
}
