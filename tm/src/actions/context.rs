//! `context context.sh [file…] host:<sysdir>/disk.N VMID DSID` — the context ISO,
//! built natively (OpenNebula's `tm/common/context` is a shell script that
//! interpolates file names into shell text): the same argv, including the
//! `path:'name'` rename form and `http(s)://` sources.
//!
//! Every source is checked before anything is written: a regular file (a FIFO or
//! a device is refused without blocking), inside the directories the ISO's files
//! come from (the VM's own `vms/<vmid>/`, a datastore's top level where file
//! datastores keep their images, and the operator's CONTEXT_DIRS), judged on the
//! open file's real path; names in the ISO are plain file names, each once. The
//! ISO is made by `xorriso -as mkisofs -V CONTEXT -J -R` (or genisoimage) from
//! an argument vector, in a private staging directory, under the action's
//! deadline, and written to `disk.N` of the VM's directory on the host through
//! the job protocol (a temporary file renamed into place), which only accepts the
//! directory of the VM and datastore in the arguments.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rbdx_one::args::{HostPath, expect_args, parse_id};
use rbdx_one::exec::{self, Target};
use rbdx_one::hostfs::VmPath;
use rbdx_one::job::Job;

use crate::context::{Ctx, Result, is_this_host, remotes_dir};
use rbdx_one::{Context, Error};

/// Usage as oned writes it.
pub const USAGE: &str = "context <context.sh> [file…] <host:path/disk.N> <vmid> <dsid>";

/// Most sources one ISO takes.
const MAX_SOURCES: usize = 1024;
/// Largest file fetched over http(s) for the ISO.
const MAX_DOWNLOAD: u64 = 1 << 30;

/// One file of the ISO: where it comes from and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// A local path or an http(s) URL.
    pub from: String,
    /// The file name in the ISO.
    pub name: String,
}

/// A file name in the ISO: one path component, printable, not `.` or `..`.
fn iso_name(n: &str) -> Result<String, rbdx_one::Error> {
    let ok = !n.is_empty()
        && n.len() <= 255
        && n != "."
        && n != ".."
        && !n.contains('/')
        && !n.chars().any(char::is_control);
    if ok {
        Ok(n.to_string())
    } else {
        Err(Error::Invalid(format!("invalid file name {n:?} for the context ISO")))
    }
}

/// Parses one source argument: `path`, `path:name`, `path:'name'` or an
/// http(s) URL.
///
/// # Errors
/// One line naming the argument.
pub fn parse_source(arg: &str) -> Result<Source> {
    if arg.chars().any(char::is_control) || arg.len() > rbdx_one::datastore::PATH_MAX {
        return Err(Error::Invalid(format!("invalid context file {arg:?}")));
    }
    if arg.starts_with("http://") || arg.starts_with("https://") {
        let last = arg.rsplit('/').next().unwrap_or("");
        let last = last.split(['?', '#']).next().unwrap_or("");
        return Ok(Source { from: arg.to_string(), name: iso_name(last)? });
    }
    let (path, name) = match arg.split_once(':') {
        Some((p, n)) => {
            let n = n.strip_prefix('\'').and_then(|n| n.strip_suffix('\'')).unwrap_or(n);
            (p, iso_name(n)?)
        }
        None => (arg, iso_name(arg.rsplit('/').next().unwrap_or(""))?),
    };
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(Error::Invalid(format!("invalid context file {path:?}: expected an absolute path")));
    }
    Ok(Source { from: path.to_string(), name })
}

/// The directories context files may come from: the VM's own directory under
/// `<var>/vms`, the top level of a datastore directory (file datastores), and the
/// operator's CONTEXT_DIRS.
struct Allowed {
    vm_dir: PathBuf,
    datastores: PathBuf,
    extra: Vec<PathBuf>,
}

impl Allowed {
    fn permits(&self, real: &Path) -> bool {
        if real.starts_with(&self.vm_dir) || self.extra.iter().any(|d| real.starts_with(d)) {
            return true;
        }
        // `<datastores>/<id>/<file>`: an image of a file datastore, never a VM
        // directory's content (`<datastores>/<id>/<vmid>/…`).
        real.strip_prefix(&self.datastores).is_ok_and(|rest| {
            let parts: Vec<_> = rest.components().collect();
            parts.len() == 2
                && parts[0].as_os_str().to_str().is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
        })
    }
}

/// Copies local source `s` into the staging directory.
fn stage_local(s: &Source, allowed: &Allowed, dir: &Path) -> Result {
    let (mut f, real) = rbdx_import::open_regular(Path::new(&s.from))?;
    if !allowed.permits(&real) {
        return Err(Error::Invalid(format!(
            "context file {} is outside the directories context files may come from",
            s.from
        )));
    }
    let mut out = File::create(dir.join(&s.name)).context(format!("staging {}", s.name))?;
    std::io::copy(&mut f, &mut out).context(format!("copying {}", s.from))?;
    Ok(())
}

/// Downloads URL source `s` into the staging directory.
fn stage_url(s: &Source, dir: &Path, idle: Duration) -> Result {
    let (body, _) = rbdx_import::open_url(&s.from, Some(idle))?;
    let mut out = File::create(dir.join(&s.name)).context(format!("staging {}", s.name))?;
    let n = std::io::copy(&mut body.take(MAX_DOWNLOAD + 1), &mut out)
        .context(format!("downloading {}", s.from))?;
    if n > MAX_DOWNLOAD {
        return Err(Error::Invalid(format!("{} is larger than {} MiB", s.from, MAX_DOWNLOAD >> 20)));
    }
    out.flush().context(format!("staging {}", s.name))
}

/// The ISO maker: xorriso, else genisoimage, else mkisofs.
fn iso_tool() -> Result<Command> {
    for tool in ["xorriso", "genisoimage", "mkisofs"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if found {
            let mut c = Command::new(tool);
            if tool == "xorriso" {
                c.args(["-as", "mkisofs"]);
            }
            return Ok(c);
        }
    }
    Err(Error::Invalid("no ISO tool: install xorriso (or genisoimage)".into()))
}

/// Makes `iso` from the files in `files`, within `deadline`.
fn make_iso(files: &Path, iso: &Path, deadline: Duration) -> Result {
    let mut cmd = iso_tool()?;
    cmd.arg("-o").arg(iso).args(["-V", "CONTEXT", "-J", "-R", "-quiet"]).arg(files);
    let child =
        rbdx_import::child::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()))
            .map_err(|e| Error::Invalid(format!("running {}: {e}", cmd.get_program().to_string_lossy())))?;
    let out = rbdx_import::child::wait_output(child, deadline).context("making the ISO")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "making the ISO failed: {}",
            rbdx_one::log::one_line(&String::from_utf8_lossy(&out.stderr))
        )))
    }
}

/// Runs the action.
///
/// # Errors
/// One line for oned.
pub fn run(args: &[String], ctx: &Ctx) -> Result {
    let a = expect_args(args, USAGE, 4, MAX_SOURCES + 3)?;
    let n = a.len();
    let dst = HostPath::parse(&a[n - 3])?;
    let vm_id = parse_id("VM id", &a[n - 2])?;
    let ds_id = parse_id("datastore id", &a[n - 1])?;
    let file = VmPath::file(&dst.path, ds_id, vm_id)?;
    let sources: Vec<Source> = a[..n - 3].iter().map(|s| parse_source(s)).collect::<Result<_>>()?;
    let mut names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!("two context files are named {}", w[0])));
    }
    let ds = ctx.datastore(ds_id)?;
    let cfg = ds.config(&ctx.cfg)?;
    // The VM directory must be where the system datastore keeps VMs.
    let base = ds.doc.text_at("BASE_PATH").map(rbdx_one::args::normalize_path);
    if base.is_none_or(|b| file.parent_dir().path != format!("{b}/{vm_id}")) {
        return Err(Error::Invalid(format!(
            "{} is not in the directory of VM {vm_id} of datastore {ds_id}",
            dst.path
        )));
    }
    let var = remotes_dir().parent().map_or_else(|| PathBuf::from("/var/lib/one"), Path::to_path_buf);
    let datastores =
        Path::new(&file.parent_dir().path).parent().and_then(Path::parent).map(Path::to_path_buf);
    let allowed = Allowed {
        vm_dir: var.join("vms").join(vm_id.to_string()),
        datastores: datastores.unwrap_or_else(|| var.join("datastores")),
        extra: cfg.context_dirs.iter().map(PathBuf::from).collect(),
    };

    let staging = tempfile::Builder::new()
        .prefix(&format!("rbdx-context-{vm_id}-"))
        .tempdir()
        .context("staging the context ISO")?;
    let files = staging.path().join("files");
    std::fs::create_dir(&files).context("staging the context ISO")?;
    for s in &sources {
        if s.from.contains("://") {
            stage_url(s, &files, cfg.oned_timeout)?;
        } else {
            stage_local(s, &allowed, &files)?;
        }
    }
    let iso = staging.path().join("context.iso");
    make_iso(&files, &iso, cfg.action_timeout)?;
    let f = File::open(&iso).context("reading the ISO")?;
    let size = f.metadata().context("reading the ISO")?.len();
    let target = if is_this_host(&dst.host) { Target::Local } else { Target::Ssh(dst.host.clone()) };
    let job = Job::PutFile { path: file, size };
    let outcome = exec::run_with_input(&job, &target, &cfg, exec::Input::File(f), &mut |_, _| {});
    outcome.log.iter().for_each(|l| rbdx_one::log::info(l));
    match outcome.into_result() {
        Err(e) => Err(e),
        Ok(_) => {
            rbdx_one::log::info(&format!("wrote the context ISO ({} files) to {}", sources.len(), a[n - 3]));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_their_names_in_the_iso() {
        let s = parse_source("/var/lib/one/vms/5/context.sh").unwrap();
        assert_eq!((s.from.as_str(), s.name.as_str()), ("/var/lib/one/vms/5/context.sh", "context.sh"));
        let s = parse_source("/var/lib/one/datastores/2/ab12:'init.sh'").unwrap();
        assert_eq!((s.from.as_str(), s.name.as_str()), ("/var/lib/one/datastores/2/ab12", "init.sh"));
        let s = parse_source("/d/f:key").unwrap();
        assert_eq!(s.name, "key");
        let s = parse_source("http://h/x/y.sh?a=1").unwrap();
        assert_eq!(s.name, "y.sh");
        assert_eq!(parse_source("/d/f:'$(touch x)'").unwrap().name, "$(touch x)", "plain data, never run");
        for bad in
            ["relative", "/d/f:'../../etc'", "/d/f:a/b", "/a/../etc/passwd", "/d/f:'.'", "/d/f\n", "/d/f:"]
        {
            assert!(parse_source(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn context_files_come_only_from_their_places() {
        let a = Allowed {
            vm_dir: "/var/lib/one/vms/5".into(),
            datastores: "/var/lib/one/datastores".into(),
            extra: vec!["/srv/context".into()],
        };
        assert!(a.permits(Path::new("/var/lib/one/vms/5/context.sh")));
        assert!(a.permits(Path::new("/var/lib/one/datastores/2/ab12")));
        assert!(a.permits(Path::new("/srv/context/x")));
        for p in [
            "/var/lib/one/vms/6/context.sh",
            "/var/lib/one/.one/one_auth",
            "/var/lib/one/datastores/0/42/disk.0",
            "/var/lib/one/datastores/x/f",
            "/etc/passwd",
        ] {
            assert!(!a.permits(Path::new(p)), "{p}");
        }
    }
}
