//! Hand-written declarations for the parts of librbd that rbdx uses.
//!
//! Source: `/usr/include/rbd/librbd.h` from librbd-dev 16.2.15 (Ceph Pacific,
//! `LIBRBD_VER` 1.16.0). Every function here exists since librbd 14.2.0 (Nautilus)
//! or earlier, so the binary runs against Nautilus and newer client libraries.
//! `rbd_snap_exists` (16.2.6) is deliberately not declared.
//!
//! Only declarations live here; the safe API that owns the handles is in
//! [`crate::rbd`].

#![allow(non_camel_case_types, missing_docs)]

use libc::{c_char, c_int, c_void, size_t, ssize_t, time_t, timespec};

use super::rados::rados_ioctx_t;

pub type rbd_image_t = *mut c_void;
pub type rbd_image_options_t = *mut c_void;
pub type rbd_completion_t = *mut c_void;
pub type rbd_callback_t = Option<unsafe extern "C" fn(cb: rbd_completion_t, arg: *mut c_void)>;
pub type librbd_progress_fn_t =
    Option<unsafe extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int>;
/// `rbd_snap_namespace_type_t`, a C enum (an `int`).
pub type rbd_snap_namespace_type_t = c_int;
/// The callback of `rbd_diff_iterate2` (the header writes the type inline).
pub type rbd_diff_cb_t =
    Option<unsafe extern "C" fn(offs: u64, len: size_t, exists: c_int, arg: *mut c_void) -> c_int>;

/// `rbd_image_info_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_image_info_t {
    pub size: u64,
    pub obj_size: u64,
    pub num_objs: u64,
    pub order: c_int,
    pub block_name_prefix: [c_char; RBD_MAX_BLOCK_NAME_SIZE],
    pub parent_pool: i64,
    pub parent_name: [c_char; RBD_MAX_IMAGE_NAME_SIZE],
}

/// `rbd_snap_info_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_snap_info_t {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

/// `rbd_image_spec_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_image_spec_t {
    pub id: *mut c_char,
    pub name: *mut c_char,
}

/// `rbd_linked_image_spec_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_linked_image_spec_t {
    pub pool_id: i64,
    pub pool_name: *mut c_char,
    pub pool_namespace: *mut c_char,
    pub image_id: *mut c_char,
    pub image_name: *mut c_char,
    pub trash: bool,
}

/// `rbd_snap_spec_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_snap_spec_t {
    pub id: u64,
    pub namespace_type: c_int,
    pub name: *mut c_char,
}

/// `rbd_image_watcher_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_image_watcher_t {
    pub addr: *mut c_char,
    pub id: i64,
    pub cookie: u64,
}

/// `rbd_trash_image_info_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_trash_image_info_t {
    pub id: *mut c_char,
    pub name: *mut c_char,
    pub source: c_int,
    pub deletion_time: time_t,
    pub deferment_end_time: time_t,
}

pub const RBD_MAX_IMAGE_NAME_SIZE: usize = 96;
pub const RBD_MAX_BLOCK_NAME_SIZE: usize = 24;

// Image options (enum in librbd.h).
pub const RBD_IMAGE_OPTION_FORMAT: c_int = 0;
pub const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
pub const RBD_IMAGE_OPTION_ORDER: c_int = 2;
pub const RBD_IMAGE_OPTION_DATA_POOL: c_int = 10;
pub const RBD_IMAGE_OPTION_FLATTEN: c_int = 11;
pub const RBD_IMAGE_OPTION_CLONE_FORMAT: c_int = 12;

// Snapshot namespaces (rbd_snap_namespace_type_t).
pub const RBD_SNAP_NAMESPACE_TYPE_USER: c_int = 0;
pub const RBD_SNAP_NAMESPACE_TYPE_GROUP: c_int = 1;
pub const RBD_SNAP_NAMESPACE_TYPE_TRASH: c_int = 2;
pub const RBD_SNAP_NAMESPACE_TYPE_MIRROR: c_int = 3;

pub const RBD_SNAP_REMOVE_UNPROTECT: u32 = 1 << 0;

// Trash sources (rbd_trash_image_source_t).
pub const RBD_TRASH_IMAGE_SOURCE_USER: c_int = 0;
pub const RBD_TRASH_IMAGE_SOURCE_MIRRORING: c_int = 1;
pub const RBD_TRASH_IMAGE_SOURCE_MIGRATION: c_int = 2;
pub const RBD_TRASH_IMAGE_SOURCE_REMOVING: c_int = 3;
pub const RBD_TRASH_IMAGE_SOURCE_USER_PARENT: c_int = 4;

#[link(name = "rbd")]
unsafe extern "C" {
    pub fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);

    pub fn rbd_image_options_create(opts: *mut rbd_image_options_t);
    pub fn rbd_image_options_destroy(opts: rbd_image_options_t);
    pub fn rbd_image_options_set_string(
        opts: rbd_image_options_t,
        optname: c_int,
        optval: *const c_char,
    ) -> c_int;
    pub fn rbd_image_options_set_uint64(opts: rbd_image_options_t, optname: c_int, optval: u64) -> c_int;

    pub fn rbd_create4(io: rados_ioctx_t, name: *const c_char, size: u64, opts: rbd_image_options_t)
    -> c_int;
    pub fn rbd_clone3(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        c_opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
    pub fn rbd_rename(src_io_ctx: rados_ioctx_t, srcname: *const c_char, destname: *const c_char) -> c_int;
    pub fn rbd_list2(io: rados_ioctx_t, images: *mut rbd_image_spec_t, max: *mut size_t) -> c_int;
    pub fn rbd_image_spec_list_cleanup(images: *mut rbd_image_spec_t, num_images: size_t);

    pub fn rbd_namespace_create(io: rados_ioctx_t, namespace_name: *const c_char) -> c_int;
    pub fn rbd_namespace_remove(io: rados_ioctx_t, namespace_name: *const c_char) -> c_int;

    pub fn rbd_trash_move(io: rados_ioctx_t, name: *const c_char, delay: u64) -> c_int;
    pub fn rbd_trash_list(
        io: rados_ioctx_t,
        entries: *mut rbd_trash_image_info_t,
        num_entries: *mut size_t,
    ) -> c_int;
    pub fn rbd_trash_list_cleanup(entries: *mut rbd_trash_image_info_t, num_entries: size_t);
    pub fn rbd_trash_remove(io: rados_ioctx_t, id: *const c_char, force: bool) -> c_int;
    pub fn rbd_trash_restore(io: rados_ioctx_t, id: *const c_char, name: *const c_char) -> c_int;

    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_by_id_read_only(
        io: rados_ioctx_t,
        id: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;

    pub fn rbd_stat(image: rbd_image_t, info: *mut rbd_image_info_t, infosize: size_t) -> c_int;
    pub fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
    pub fn rbd_get_flags(image: rbd_image_t, flags: *mut u64) -> c_int;
    pub fn rbd_get_data_pool_id(image: rbd_image_t) -> i64;
    pub fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: size_t) -> c_int;
    pub fn rbd_get_overlap(image: rbd_image_t, overlap: *mut u64) -> c_int;
    pub fn rbd_get_parent(
        image: rbd_image_t,
        parent_image: *mut rbd_linked_image_spec_t,
        parent_snap: *mut rbd_snap_spec_t,
    ) -> c_int;
    pub fn rbd_linked_image_spec_cleanup(image: *mut rbd_linked_image_spec_t);
    pub fn rbd_snap_spec_cleanup(snap: *mut rbd_snap_spec_t);
    pub fn rbd_list_children3(
        image: rbd_image_t,
        images: *mut rbd_linked_image_spec_t,
        max_images: *mut size_t,
    ) -> c_int;
    pub fn rbd_linked_image_spec_list_cleanup(images: *mut rbd_linked_image_spec_t, num_images: size_t);

    pub fn rbd_resize2(
        image: rbd_image_t,
        size: u64,
        allow_shrink: bool,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_flatten(image: rbd_image_t) -> c_int;

    pub fn rbd_snap_create(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_remove2(
        image: rbd_image_t,
        snap_name: *const c_char,
        flags: u32,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_snap_rollback(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_protect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_unprotect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_is_protected(
        image: rbd_image_t,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_list(image: rbd_image_t, snaps: *mut rbd_snap_info_t, max_snaps: *mut c_int) -> c_int;
    pub fn rbd_snap_list_end(snaps: *mut rbd_snap_info_t);
    pub fn rbd_snap_set(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_get_timestamp(image: rbd_image_t, snap_id: u64, timestamp: *mut timespec) -> c_int;
    pub fn rbd_snap_get_namespace_type(
        image: rbd_image_t,
        snap_id: u64,
        namespace_type: *mut rbd_snap_namespace_type_t,
    ) -> c_int;

    pub fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut size_t,
    ) -> c_int;
    pub fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;
    pub fn rbd_metadata_remove(image: rbd_image_t, key: *const c_char) -> c_int;
    pub fn rbd_metadata_list(
        image: rbd_image_t,
        start: *const c_char,
        max: u64,
        keys: *mut c_char,
        key_len: *mut size_t,
        values: *mut c_char,
        vals_len: *mut size_t,
    ) -> c_int;

    pub fn rbd_watchers_list(
        image: rbd_image_t,
        watchers: *mut rbd_image_watcher_t,
        max_watchers: *mut size_t,
    ) -> c_int;
    pub fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num_watchers: size_t);

    pub fn rbd_diff_iterate2(
        image: rbd_image_t,
        fromsnapname: *const c_char,
        ofs: u64,
        len: u64,
        include_parent: u8,
        whole_object: u8,
        cb: rbd_diff_cb_t,
        arg: *mut c_void,
    ) -> c_int;

    pub fn rbd_copy3(
        src: rbd_image_t,
        dest_io_ctx: rados_ioctx_t,
        destname: *const c_char,
        dest_opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_deep_copy(
        src: rbd_image_t,
        dest_io_ctx: rados_ioctx_t,
        destname: *const c_char,
        dest_opts: rbd_image_options_t,
    ) -> c_int;

    pub fn rbd_read2(image: rbd_image_t, ofs: u64, len: size_t, buf: *mut c_char, op_flags: c_int)
    -> ssize_t;
    pub fn rbd_write2(
        image: rbd_image_t,
        ofs: u64,
        len: size_t,
        buf: *const c_char,
        op_flags: c_int,
    ) -> ssize_t;
    pub fn rbd_discard(image: rbd_image_t, ofs: u64, len: u64) -> c_int;
    pub fn rbd_flush(image: rbd_image_t) -> c_int;

    pub fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_write2(
        image: rbd_image_t,
        off: u64,
        len: size_t,
        buf: *const c_char,
        c: rbd_completion_t,
        op_flags: c_int,
    ) -> c_int;
    pub fn rbd_aio_read2(
        image: rbd_image_t,
        off: u64,
        len: size_t,
        buf: *mut c_char,
        c: rbd_completion_t,
        op_flags: c_int,
    ) -> c_int;
    pub fn rbd_aio_wait_for_complete(c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_get_return_value(c: rbd_completion_t) -> ssize_t;
    pub fn rbd_aio_release(c: rbd_completion_t);
}

/// The declarations above against the installed `rbd/librbd.h`, as git2-rs's
/// systest checks its bindings: a C program compiled with the header prints
/// every struct's size, alignment and field offsets and every constant, which
/// must equal Rust's; and every function is assigned to a pointer of the type
/// its Rust declaration says, which the C compiler refuses on any mismatch.
#[cfg(test)]
mod layout {
    use std::fmt::Write as _;
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    macro_rules! structs {
        ($($t:ident { $($f:ident),* }),* $(,)?) => {
            vec![$((stringify!($t), size_of::<$t>(), align_of::<$t>(),
                    vec![$((stringify!($f), offset_of!($t, $f))),*])),*]
        };
    }

    macro_rules! consts {
        ($($c:ident),* $(,)?) => { vec![$((stringify!($c), i128::try_from($c).unwrap_or(-1))),*] };
    }

    /// The C type of a parameter or return type as written in the declarations.
    fn c_type(rust: &str) -> String {
        let rust = rust.trim();
        if let Some(inner) = rust.strip_prefix("*const ") {
            return format!("const {} *", c_type(inner));
        }
        if let Some(inner) = rust.strip_prefix("*mut ") {
            return format!("{} *", c_type(inner));
        }
        match rust {
            "c_char" => "char",
            "c_int" => "int",
            "c_void" => "void",
            "u8" => "uint8_t",
            "u32" => "uint32_t",
            "u64" => "uint64_t",
            "i64" => "int64_t",
            "size_t" => "size_t",
            "ssize_t" => "ssize_t",
            "bool" => "bool",
            "timespec" => "struct timespec",
            "rbd_diff_cb_t" => "int (*)(uint64_t, size_t, int, void *)",
            other => other,
        }
        .to_string()
    }

    /// `(name, return type, parameter types)` of every `pub fn` in the extern block.
    fn functions() -> Vec<(String, String, Vec<String>)> {
        let src = include_str!("rbd.rs");
        let block = &src
            [src.find("unsafe extern \"C\" {").unwrap_or(0)..src.find("#[cfg(test)]").unwrap_or(src.len())];
        let mut out = Vec::new();
        for decl in block.split("pub fn ").skip(1) {
            let decl = &decl[..decl.find(';').unwrap_or(decl.len())];
            let (name, rest) = decl.split_once('(').expect("a parameter list");
            let close = rest.rfind(')').expect("a closing parenthesis");
            let params: Vec<String> = rest[..close]
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| c_type(p.split_once(':').map_or(p, |(_, t)| t)))
                .collect();
            let ret = rest[close + 1..].trim().strip_prefix("->").map_or("void".to_string(), c_type);
            out.push((name.trim().to_string(), ret, params));
        }
        out
    }

    #[test]
    fn the_declarations_match_the_installed_librbd_header() {
        let structs = structs![
            rbd_image_info_t { size, obj_size, num_objs, order, block_name_prefix, parent_pool, parent_name },
            rbd_snap_info_t { id, size, name },
            rbd_image_spec_t { id, name },
            rbd_linked_image_spec_t { pool_id, pool_name, pool_namespace, image_id, image_name, trash },
            rbd_snap_spec_t { id, namespace_type, name },
            rbd_image_watcher_t { addr, id, cookie },
            rbd_trash_image_info_t { id, name, source, deletion_time, deferment_end_time },
        ];
        let consts = consts![
            RBD_MAX_IMAGE_NAME_SIZE,
            RBD_MAX_BLOCK_NAME_SIZE,
            RBD_IMAGE_OPTION_FORMAT,
            RBD_IMAGE_OPTION_FEATURES,
            RBD_IMAGE_OPTION_ORDER,
            RBD_IMAGE_OPTION_DATA_POOL,
            RBD_IMAGE_OPTION_FLATTEN,
            RBD_IMAGE_OPTION_CLONE_FORMAT,
            RBD_SNAP_NAMESPACE_TYPE_USER,
            RBD_SNAP_NAMESPACE_TYPE_GROUP,
            RBD_SNAP_NAMESPACE_TYPE_TRASH,
            RBD_SNAP_NAMESPACE_TYPE_MIRROR,
            RBD_SNAP_REMOVE_UNPROTECT,
            RBD_TRASH_IMAGE_SOURCE_USER,
            RBD_TRASH_IMAGE_SOURCE_MIRRORING,
            RBD_TRASH_IMAGE_SOURCE_MIGRATION,
            RBD_TRASH_IMAGE_SOURCE_REMOVING,
            RBD_TRASH_IMAGE_SOURCE_USER_PARENT,
        ];
        let fns = functions();
        assert!(fns.len() >= 50, "the declarations were read ({} functions)", fns.len());

        let mut c = String::from(
            "#include <stdbool.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n\
             #include <time.h>\n#include <sys/types.h>\n#include <rbd/librbd.h>\n",
        );
        for (name, ret, params) in &fns {
            let params = if params.is_empty() { "void".to_string() } else { params.join(", ") };
            let _ = writeln!(c, "{ret} (*check_{name})({params}) = {name};");
        }
        c.push_str("int main(void) {\n");
        let mut want = String::new();
        for (name, size, align, fields) in &structs {
            let _ = writeln!(c, "printf(\"{name} %zu %zu\\n\", sizeof({name}), _Alignof({name}));");
            let _ = writeln!(want, "{name} {size} {align}");
            for (f, off) in fields {
                let _ = writeln!(c, "printf(\"{name}.{f} %zu\\n\", offsetof({name}, {f}));");
                let _ = writeln!(want, "{name}.{f} {off}");
            }
        }
        for (name, value) in &consts {
            let _ = writeln!(c, "printf(\"{name} %lld\\n\", (long long){name});");
            let _ = writeln!(want, "{name} {value}");
        }
        c.push_str("return 0;\n}\n");

        let dir = tempfile_dir();
        let (src, bin) = (dir.join("layout.c"), dir.join("layout"));
        std::fs::write(&src, &c).expect("write the C program");
        let cc = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-std=c11", "-Werror=incompatible-pointer-types", "-Werror=discarded-qualifiers", "-o"])
            .arg(&bin)
            .arg(&src)
            .args(["-lrbd", "-lrados"])
            .output()
            .expect("run the C compiler (build-essential)");
        assert!(
            cc.status.success(),
            "the C compiler refused the declarations:\n{}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let out = std::process::Command::new(&bin).output().expect("run the layout program");
        let _ = std::fs::remove_dir_all(&dir);
        let got = String::from_utf8_lossy(&out.stdout);
        let differ: Vec<String> = got
            .lines()
            .zip(want.lines())
            .filter(|(g, w)| g != w)
            .map(|(g, w)| format!("C: {g}, Rust: {w}"))
            .collect();
        assert!(differ.is_empty() && got.lines().count() == want.lines().count(), "{}", differ.join("; "));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rbdx-layout-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary directory");
        d
    }
}
