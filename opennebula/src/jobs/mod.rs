//! What each [`crate::job::Job`] does, one file per job. The enum stays in
//! `job.rs` for the wire format; `dispatch` sends each to its file.
//! Ceph jobs take the connected cluster; file jobs only touch the host's files.

pub mod backup;
pub mod checksum;
pub mod clone_disk;
pub mod delete_disk;
pub mod detach;
pub mod doctor;
pub mod export_to_file;
pub mod flatten;
pub mod import;
pub mod import_file;
pub mod link_disk;
pub mod make_image;
pub mod monitor;
pub mod ping;
pub mod probe_dir;
pub mod remove_dir;
pub mod remove_image;
pub mod replace_disk;
pub mod resize;
pub mod resize_file;
pub mod save_as;
pub mod send_image;
pub mod snap_create;
pub mod snap_delete;
pub mod snap_revert;

use rbdx_core::ops::disk::DiskConfig;
use rbdx_core::ops::{CloneFormat, ImageSpec};

use crate::error::{Error, Result};
use crate::job::Job;

/// What a job hands back besides its log: its output (what the action prints
/// for oned) and the VM disk sizes a monitor measured.
#[derive(Debug, Default)]
pub struct Done {
    /// The output.
    pub output: Option<String>,
    /// `(vm, disk, MiB)` of each VM disk measured.
    pub vm_disks: Vec<(u32, u32, u64)>,
}

impl Done {
    /// A job with nothing to hand back.
    pub fn nothing() -> Result<Self> {
        Ok(Self::default())
    }

    /// A job whose output is `output`.
    pub fn output(output: String) -> Result<Self> {
        Ok(Self { output: Some(output), ..Self::default() })
    }
}

/// An image spec from a job (`pool[/namespace]/image[@snap]`).
///
/// # Errors
/// [`Error::Invalid`] for a malformed spec.
pub fn spec(s: &str) -> Result<ImageSpec> {
    s.parse().map_err(|e: rbdx_core::Error| Error::Invalid(e.to_string()))
}

/// The scheme's settings for images a job creates.
pub fn disk_config(data_pool: &Option<String>, max_depth: u32) -> DiskConfig {
    DiskConfig {
        data_pool: data_pool.clone(),
        clone_format: CloneFormat::Auto,
        max_depth,
        ..DiskConfig::default()
    }
}

/// Runs a job that does not stream: each to its file.
///
/// # Errors
/// The job's; [`Error::Invalid`] for a streaming job, which runs through
/// `rbdx remote`.
pub(crate) fn dispatch(job: &Job, log: &mut Vec<String>) -> Result<Done> {
    match job {
        Job::CloneDisk { ceph, source, target, data_pool, size_mb, max_depth } => {
            clone_disk::run(&ceph.connect()?, source, target, data_pool.as_deref(), *size_mb, *max_depth, log)
        }
        Job::LinkDisk { ceph, source } => link_disk::run(&ceph.connect()?, source, log),
        Job::MakeImage { ceph, target, size_mb, data_pool, fs } => {
            make_image::run(&ceph.connect()?, target, *size_mb, data_pool.as_deref(), fs.as_deref(), log)
        }
        Job::DeleteDisk { ceph, head, base, trash_delay, reclaim } => {
            delete_disk::run(&ceph.connect()?, head, base.as_deref(), *trash_delay, *reclaim, log)
        }
        Job::RemoveImage { ceph, image, trash_delay } => {
            remove_image::run(&ceph.connect()?, image, *trash_delay, log)
        }
        Job::SnapCreate { ceph, head, snap, freeze } => {
            snap_create::run(&ceph.connect()?, head, snap, freeze.as_ref(), log)
        }
        Job::SnapDelete { ceph, head, snap } => snap_delete::run(&ceph.connect()?, head, snap),
        Job::SnapRevert { ceph, head, snap, data_pool, max_depth, rollback_max_mb } => {
            snap_revert::run(&ceph.connect()?, head, snap, data_pool, *max_depth, *rollback_max_mb)
        }
        Job::SaveAs { ceph, head, snap, target, data_pool, max_depth, copy_max_mb } => {
            let cfg = DiskConfig {
                copy_max_bytes: copy_max_mb.saturating_mul(1 << 20),
                ..disk_config(data_pool, *max_depth)
            };
            save_as::run(&ceph.connect()?, head, snap.as_deref(), target, &cfg, log)
        }
        Job::ExportToFile { ceph, source, snap, drop_base_snap, path, size_mb } => export_to_file::run(
            &ceph.connect()?,
            source,
            snap.as_deref(),
            *drop_base_snap,
            path,
            *size_mb,
            log,
        ),
        Job::ImportFile { ceph, path, target, create, data_pool, size_mb, remove_file, freeze } => {
            import_file::run(
                &ceph.connect()?,
                path,
                target,
                *create,
                data_pool.as_deref(),
                *size_mb,
                *remove_file,
                freeze.as_ref(),
                log,
            )
        }
        Job::Flatten { ceph, head, snap, data_pool, max_depth } => {
            flatten::run(&ceph.connect()?, head, snap, data_pool, *max_depth)
        }
        Job::Resize { ceph, image, size_mb } => resize::run(&ceph.connect()?, image, *size_mb),
        Job::Ping { ceph, pool } => ping::run(&ceph.connect()?, pool),
        Job::Checksum { ceph, image } => checksum::run(&ceph.connect()?, image),
        Job::Detach { ceph, pool, flatten } => detach::run(&ceph.connect()?, pool, *flatten, log),
        Job::Monitor { ceph, pool, ec_pool, vm_disks } => {
            monitor::run(&ceph.connect()?, pool, ec_pool.as_deref(), *vm_disks, log)
        }
        Job::Backup { dir, vm_xml, disks, live, freeze } => {
            backup::run(dir, vm_xml, disks, *live, freeze.as_ref(), log)
        }
        Job::BackupCleanup { dir, disks, success } => backup::cleanup(dir, disks, *success, log),
        Job::ReplaceDisk { ceph, head, new, old, trash_delay } => {
            replace_disk::run(&ceph.connect()?, head, new, old, *trash_delay, log)
        }
        Job::ResizeFile { path, size_mb } => resize_file::run(path, *size_mb),
        Job::RemoveDir { path } => remove_dir::run(path, log),
        Job::ProbeDir { path, mark, find } => probe_dir::run(path, mark.as_deref(), find.as_deref()),
        Job::Doctor { checks } => doctor::run(checks),
        Job::Import(_)
        | Job::SendDir { .. }
        | Job::SendImage { .. }
        | Job::ReceiveDir { .. }
        | Job::PutFile { .. } => {
            Err(Error::Invalid("this job streams data: it runs through `rbdx remote`".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::job::*;

    #[test]
    fn jobs_are_tagged_json() {
        let j =
            Job::SnapDelete { ceph: CephAccess::default(), head: "one/one-5-3-0".into(), snap: "2".into() };
        let s = serde_json::to_string(&j).unwrap();
        assert!(s.starts_with("{\"job\":\"snap_delete\""), "{s}");
        assert_eq!(serde_json::from_str::<Job>(&s).unwrap(), j);
        assert!(serde_json::from_str::<Job>("{\"job\":\"format_everything\"}").is_err());
    }

    #[test]
    fn saveas_snapshots_are_named_after_the_new_image() {
        assert_eq!(crate::naming::saveas_snapshot("one-42"), "rbdx.saveas.one-42");
    }
}
