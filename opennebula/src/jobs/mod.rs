//! What each [`crate::job::Job`] does, one file per job. The enum stays in
//! `job.rs` for the wire format; [`crate::job::Job::run`] dispatches here.
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
    DiskConfig { data_pool: data_pool.clone(), clone_format: CloneFormat::Auto, max_depth }
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
