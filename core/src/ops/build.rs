//! Building disks from others, each step re-runnable: a CoW clone of an image's
//! snapshot (taken once however many callers race for it) with a bounded clone
//! chain, and a new image made under a temporary name and renamed into place
//! only once complete.

use crate::error::{Error, Result};
use crate::rados::{Cluster, IoCtx};
use crate::rbd::{CloneSource, Image};

use super::{
    CloneOptions, CreateOptions, ImageSpec, RBDX_KEY_PREFIX, RemoveOptions, check_data_pool, clone_of,
    create, disk, finish_stopped_rename, ioctx, remove, rename, stat, strip_inherited,
};

/// What [`clone_from_snapshot`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cloned {
    /// The clone was there already (made by an earlier run).
    pub existed: bool,
    /// This call took the source snapshot.
    pub took_snapshot: bool,
    /// The clone was flattened: its chain would have been longer than allowed.
    pub flattened: bool,
    /// The clone's size, when this call knows it without opening the clone (it
    /// cloned a snapshot that was there already: the snapshot's size).
    pub size: Option<u64>,
}

/// Clones `src@snap` into `dst`, taking the snapshot first if `take_snapshot`
/// and it is missing (exactly one is taken however many callers race; one
/// removed under us by a racing delete is taken again). A `dst` that exists is
/// taken as this clone made by an earlier run. A clone whose chain (parents
/// above it) would be longer than `max_depth` is flattened.
///
/// # Errors
/// `NotFound` for a missing source (or snapshot, without `take_snapshot`); a
/// missing data pool; Ceph errors.
pub fn clone_from_snapshot(
    cluster: &Cluster,
    src: &ImageSpec,
    snap: &str,
    dst: &ImageSpec,
    opts: &CloneOptions,
    take_snapshot: bool,
    max_depth: u32,
) -> Result<Cloned> {
    let mut done = Cloned::default();
    // An earlier run may have stopped right after the clone: the clone's
    // name is taken then (`rbd_clone3` says so; no lookup beforehand).
    let existing = |done: &mut Cloned| -> Result<()> {
        strip_inherited(&ioctx(cluster, dst)?, &dst.name)?;
        done.existed = true;
        Ok(())
    };
    check_data_pool(cluster, opts.data_pool.as_deref())?;
    let io = ioctx(cluster, src)?;
    let (mut snap_size, above, inherited, header) = match source_view(&io, &src.name, snap) {
        Ok(found) => found,
        // Only "not found" means there is no source; its clone may be.
        Err(e) if e.is_not_found() => {
            return match stat(cluster, dst) {
                Ok(_) => existing(&mut done).map(|()| done),
                Err(d) if d.is_not_found() => Err(e),
                Err(d) => Err(d),
            };
        }
        Err(e) => return Err(e),
    };
    // Without the snapshot, an earlier run's clone may still be there (it keeps
    // a snapshot removed since in the trash namespace): looked up before one
    // is taken.
    if snap_size.is_none() {
        match stat(cluster, dst) {
            Ok(_) => return existing(&mut done).map(|()| done),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    for attempt in 0..3 {
        if take_snapshot && snap_size.is_none() && disk::ensure_snapshot(&io, &src.name, snap)? {
            done.took_snapshot = true;
        }
        // The header read above holds the snapshot unless it was taken since.
        let source = header.as_ref().filter(|_| snap_size.is_some());
        match clone_of(cluster, &src.at(snap)?, dst, opts, Some(&inherited), source, &[]) {
            Ok(_) => {
                done.size = snap_size;
                break;
            }
            // The snapshot was removed under us: take it again.
            Err(e) if e.is_not_found() && take_snapshot && attempt < 2 => snap_size = None,
            // Made by an earlier or a concurrent run.
            Err(e) if e.is_exists() => return existing(&mut done).map(|()| done),
            Err(e) => return Err(e),
        }
    }
    if above + 1 > max_depth {
        ioctx(cluster, dst)?.open(&dst.name)?.flatten()?;
        done.flattened = true;
    }
    Ok(done)
}

/// What [`clone_from_snapshot`] needs to know of its source `name`: the size
/// of its user snapshot `snap` if it has one (no read-write open, lock or
/// snapshot then), the chain above it (so the clone's depth needs no walk from
/// the clone), the rbdx keys the clone will inherit, to strip, and the header
/// as read, which the clone itself reuses. Read from the image's header (its
/// id, then everything in two reads, one more a parent link:
/// [`IoCtx::read_clone_source`]); an image without an id object (another
/// format) is opened.
///
/// # Errors
/// `NotFound` for a missing image; Ceph errors.
#[allow(clippy::type_complexity)]
fn source_view(
    io: &IoCtx<'_>,
    name: &str,
    snap: &str,
) -> Result<(Option<u64>, u32, Vec<String>, Option<CloneSource>)> {
    let keys = |list: Vec<(String, String)>| list.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    if let Some(h) = io.read_clone_source(name)? {
        let size = h.snapshot(snap).map(|s| s.snap.size);
        let above = disk::depth_from(io.cluster(), h.head_parent.clone())?;
        let inherited = h.keys(RBDX_KEY_PREFIX);
        return Ok((size, above, inherited, Some(h)));
    }
    let img = io.open_read_only(name, None)?;
    let size = img.snapshots()?.into_iter().find(|s| s.name == snap).map(|s| s.size);
    let above = if img.parent()?.is_some() { disk::depth(io, name)? } else { 0 };
    Ok((size, above, keys(img.metadata_list(RBDX_KEY_PREFIX)?), None))
}

/// The temporary name [`make_image`] builds `dst` under.
pub fn make_temp_name(dst: &str) -> String {
    format!("{dst}.rbdx-make")
}

/// Makes a new image `dst` of `size` bytes with `data_pool`, under a temporary
/// name first ([`make_temp_name`]), where `fill` (formatting, say) runs on it;
/// it is renamed into place only once complete. Returns false when `dst` was
/// there already with that size (an earlier run finished): nothing is done.
/// What an interrupted run left under the temporary name is removed and made
/// again. An image at `dst` is never removed or replaced.
///
/// # Errors
/// [`Error::Exists`] for an image at `dst` of another size; a missing data pool;
/// `fill`'s error; Ceph errors.
pub fn make_image(
    cluster: &Cluster,
    dst: &ImageSpec,
    size: u64,
    data_pool: Option<&str>,
    fill: &mut dyn FnMut(&Image<'_>) -> Result<()>,
) -> Result<bool> {
    check_data_pool(cluster, data_pool)?;
    // Only "not found" means there is none (a timeout fails at once).
    let temp = dst.sibling(&make_temp_name(&dst.name))?;
    match stat(cluster, dst) {
        Ok(st) if st.size == size => {
            // An earlier run's: its rename may have stopped half-way.
            finish_stopped_rename(cluster, &temp, &dst.name)?;
            return Ok(false);
        }
        Ok(st) => {
            return Err(Error::Exists(format!(
                "{dst} exists already ({} bytes, not {size}): not replacing it",
                st.size
            )));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    remove(cluster, &temp, RemoveOptions::default())?;
    create(cluster, &temp, size, &CreateOptions::with_data_pool(data_pool))?;
    {
        let io = ioctx(cluster, &temp)?;
        let img = io.open(&temp.name)?;
        fill(&img)?;
        img.close()?;
    }
    rename(cluster, &temp, &dst.name)?;
    Ok(true)
}
