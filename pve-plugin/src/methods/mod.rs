//! One module per Proxmox VE method, each a `run` taking the [`Helper`] and
//! the method's parameters and returning its result type (`Output`), which
//! `dispatch` serializes into the answer's `result`.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::helper::Helper;
use crate::protocol::Call;
use crate::serve::answer;

pub mod alloc_image;
pub mod cache_writeback;
pub mod clone_image;
pub mod create_base;
pub mod device_path;
pub mod free_image;
pub mod fsid;
pub mod list_images;
pub mod map_volume;
pub mod qemu_snapshot_method;
pub mod rename_volume;
pub mod snapshot_image;
pub mod status;
pub mod unmap_volume;
pub mod volume_export;
pub mod volume_import;
pub mod volume_resize;
pub mod volume_size_info;
pub mod volume_snapshot;
pub mod volume_snapshot_delete;
pub mod volume_snapshot_info;
pub mod volume_snapshot_rollback;

pub use list_images::ListedImage;
pub use qemu_snapshot_method::SnapshotMethod;
pub use status::Status;
pub use volume_size_info::SizeInfo;
pub use volume_snapshot_info::SnapshotInfo;

/// A volume's format: rbdx stores raw images only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `raw`.
    Raw,
}

/// Runs `call` and answers on `output`: its result, or its error (an export
/// writes its stream there, and its error, one line, to `errors`; an import
/// reads its stream from `input`). Returns the exit code.
pub(crate) fn dispatch(
    h: &Helper,
    call: &Call,
    input: &mut impl Read,
    output: &mut impl Write,
    errors: &mut impl Write,
) -> i32 {
    let out = output;
    match call {
        Call::Status {} => answer(out, status::run(h)),
        Call::AllocImage { vmid, name, size_kib } => {
            answer(out, alloc_image::run(h, *vmid, name.as_deref(), *size_kib))
        }
        Call::FreeImage { volname } => answer(out, free_image::run(h, volname)),
        Call::ListImages { vmid } => answer(out, list_images::run(h, *vmid)),
        Call::VolumeSizeInfo { volname } => answer(out, volume_size_info::run(h, volname)),
        Call::VolumeResize { volname, size } => answer(out, volume_resize::run(h, volname, *size)),
        Call::VolumeSnapshot { volname, snap } => answer(out, volume_snapshot::run(h, volname, snap)),
        Call::VolumeSnapshotRollback { volname, snap } => {
            answer(out, volume_snapshot_rollback::run(h, volname, snap))
        }
        Call::VolumeSnapshotDelete { volname, snap } => {
            answer(out, volume_snapshot_delete::run(h, volname, snap))
        }
        Call::VolumeSnapshotInfo { volname } => answer(out, volume_snapshot_info::run(h, volname)),
        Call::CreateBase { volname } => answer(out, create_base::run(h, volname)),
        Call::CloneImage { volname, vmid, snap } => {
            answer(out, clone_image::run(h, volname, *vmid, snap.as_deref()))
        }
        Call::RenameVolume { volname, target_vmid, target_volname } => {
            answer(out, rename_volume::run(h, volname, *target_vmid, target_volname.as_deref()))
        }
        Call::Fsid {} => answer(out, fsid::run(h)),
        Call::DevicePath { volname, snap } => answer(out, device_path::run(h, volname, snap.as_deref())),
        Call::MapVolume { volname, snap, options, may_remap } => {
            answer(out, map_volume::run(h, volname, snap.as_deref(), options, *may_remap))
        }
        Call::UnmapVolume { volname, snap } => answer(out, unmap_volume::run(h, volname, snap.as_deref())),
        Call::SnapshotImage { volname, snap } => answer(out, snapshot_image::run(h, volname, snap)),
        Call::QemuSnapshotMethod { volname } => answer(out, qemu_snapshot_method::run(h, volname)),
        Call::CacheWriteback { volname } => answer(out, cache_writeback::run(h, volname)),
        Call::VolumeExport { volname, snap } => match volume_export::run(h, volname, snap.as_deref(), out) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(errors, "{}", e.line());
                1
            }
        },
        Call::VolumeImport { volname, allow_rename } => {
            answer(out, volume_import::run(h, volname, *allow_rename, input))
        }
    }
}
