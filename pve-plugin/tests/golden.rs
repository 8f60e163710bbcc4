//! The golden files in `pve-plugin/golden/`, the contract with the Perl module
//! (whose `t/golden.t` reads the same files): every method has a request, exactly
//! as the module sends it, and an answer, exactly as the helper writes it. Each
//! request must parse into [`Request`] and each result into its method's result
//! type, and both must serialize back to the file's JSON: a renamed key or a
//! changed type fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rbdx_pve::methods as m;
use rbdx_pve::protocol::{Call, Request, Response};
use rbdx_pve::{Error, Kind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every method of the protocol.
const METHODS: [&str; 22] = [
    "status",
    "alloc_image",
    "free_image",
    "list_images",
    "volume_size_info",
    "volume_resize",
    "volume_snapshot",
    "volume_snapshot_rollback",
    "volume_snapshot_delete",
    "volume_snapshot_info",
    "create_base",
    "clone_image",
    "rename_volume",
    "fsid",
    "device_path",
    "map_volume",
    "unmap_volume",
    "snapshot_image",
    "qemu_snapshot_method",
    "cache_writeback",
    "volume_export",
    "volume_import",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn json(file: &str) -> Value {
    let p = dir().join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The method's request parses and serializes back to the file.
fn request(method: &str) -> Request {
    let file = format!("{method}.request.json");
    let want = json(&file);
    let r: Request = serde_json::from_value(want.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(serde_json::to_value(&r).unwrap(), want, "{file}: serializes back to the file");
    r
}

/// The answer's result parses as `T`, and the helper's answer with it is the file.
fn answer<T: Serialize + DeserializeOwned>(method: &str) {
    let file = format!("{method}.response.json");
    let want = json(&file);
    assert_eq!(want["ok"], Value::Bool(true), "{file}: a success");
    let result: T = serde_json::from_value(want["result"].clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(serde_json::to_value(Response::success(result)).unwrap(), want, "{file}: the helper's answer");
}

/// An export answers with its stream: an 8-byte little-endian size, then as
/// many bytes.
fn stream(method: &str) {
    let p = dir().join(format!("{method}.response.raw"));
    let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (size, body) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap());
    assert_eq!(size, body.len() as u64, "{}: raw+size", p.display());
}

/// The result type each method answers with (exhaustive: a new method needs one).
fn check_answer(call: &Call, method: &str) {
    match call {
        Call::Status {} => answer::<m::status::Output>(method),
        Call::AllocImage { .. } => answer::<m::alloc_image::Output>(method),
        Call::FreeImage { .. } => answer::<m::free_image::Output>(method),
        Call::ListImages { .. } => answer::<m::list_images::Output>(method),
        Call::VolumeSizeInfo { .. } => answer::<m::volume_size_info::Output>(method),
        Call::VolumeResize { .. } => answer::<m::volume_resize::Output>(method),
        Call::VolumeSnapshot { .. } => answer::<m::volume_snapshot::Output>(method),
        Call::VolumeSnapshotRollback { .. } => answer::<m::volume_snapshot_rollback::Output>(method),
        Call::VolumeSnapshotDelete { .. } => answer::<m::volume_snapshot_delete::Output>(method),
        Call::VolumeSnapshotInfo { .. } => answer::<m::volume_snapshot_info::Output>(method),
        Call::CreateBase { .. } => answer::<m::create_base::Output>(method),
        Call::CloneImage { .. } => answer::<m::clone_image::Output>(method),
        Call::RenameVolume { .. } => answer::<m::rename_volume::Output>(method),
        Call::Fsid {} => answer::<m::fsid::Output>(method),
        Call::DevicePath { .. } => answer::<m::device_path::Output>(method),
        Call::MapVolume { .. } => answer::<m::map_volume::Output>(method),
        Call::UnmapVolume { .. } => answer::<m::unmap_volume::Output>(method),
        Call::SnapshotImage { .. } => answer::<m::snapshot_image::Output>(method),
        Call::QemuSnapshotMethod { .. } => answer::<m::qemu_snapshot_method::Output>(method),
        Call::CacheWriteback { .. } => answer::<m::cache_writeback::Output>(method),
        Call::VolumeExport { .. } => stream(method),
        Call::VolumeImport { .. } => answer::<m::volume_import::Output>(method),
    }
}

#[test]
fn every_method_has_a_golden_request_and_answer() {
    for method in METHODS {
        let r = request(method);
        let tag = serde_json::to_value(&r.call).unwrap()["method"].clone();
        assert_eq!(tag, Value::from(method), "{method}.request.json names its method");
        check_answer(&r.call, method);
    }
}

#[test]
fn no_golden_file_is_left_over() {
    let known: BTreeSet<String> = METHODS
        .iter()
        .flat_map(|m| {
            [format!("{m}.request.json"), format!("{m}.response.json"), format!("{m}.response.raw")]
        })
        .chain(["error.response.json".into(), "volnames.json".into()])
        .collect();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(known.contains(&name), "{name}: no such method");
    }
}

#[test]
fn a_renamed_key_fails() {
    let mut v = json("volume_size_info.response.json");
    let info = v["result"].as_object_mut().unwrap();
    let used = info.remove("used").unwrap();
    info.insert("allocated".into(), used);
    assert!(serde_json::from_value::<m::SizeInfo>(v["result"].clone()).is_err());
    let mut v = json("volume_snapshot_info.response.json");
    v["result"]["nightly"]["virtual_size"] = v["result"]["nightly"]["virtual-size"].take();
    assert!(serde_json::from_value::<m::volume_snapshot_info::Output>(v["result"].clone()).is_err());
}

#[test]
fn an_error_answer_is_its_line_and_kind() {
    let want = json("error.response.json");
    let e = Error::Ceph(rbdx_core::Error::InUse {
        image: "rbd/vm-100-disk-0".into(),
        watchers: vec!["10.0.0.5:0/123".into()],
    });
    assert_eq!(e.kind(), Kind::InUse);
    assert_eq!(serde_json::to_value(Response::<()>::failure(&e)).unwrap(), want);
    let r: Response = serde_json::from_value(want).unwrap();
    assert!(!r.ok && r.result.is_none() && r.error.is_some() && r.kind == Some(Kind::InUse));
}
