//! TM prebackup / prebackup_live and postbackup / postbackup_live: a VM's disks
//! written into its backup directory on the host, as the backup datastores
//! (rsync, restic) pick them up, with the stock drivers' snapshot names so a
//! chain survives a switch in either direction:
//!
//! - **full**: the disk (live: its snapshot `one_backup`, removed after) as
//!   qcow2 `disk.<id>.0`; the incremental snapshots `one_backup_<n>` go;
//! - **first increment**: snapshot `one_backup_0` (older `one_backup_<n>` go),
//!   exported whole as qcow2 `disk.<id>.0`;
//! - **increment n+1**: snapshot `one_backup_<n+1>`, and only what changed
//!   since `one_backup_<n>`: a qcow2 overlay `disk.<id>.<n+1>` (the chain's
//!   next link, no backing file named) or, for a backup image of FORMAT rbd,
//!   an `rbd export-diff` stream `disk.<id>.<n+1>.rbdiff`. When the base is not
//!   on the disk any more (a revert replaced the head), the increment holds the
//!   whole disk, still as the next link of the chain.
//!
//! Files are written straight from librbd (no temporary raw copy, no qemu
//! process). The snapshots are taken together, the guest frozen around them;
//! on failure the snapshots this run took are removed, the previous base kept.
//! postbackup keeps the one snapshot the next increment starts from and
//! removes the directory.

use std::fs;
use std::io::{BufWriter, Write};

use rbdx_core::Cluster;
use rbdx_core::ops::changes::{self, for_each_changed_run};
use rbdx_import::export::{CLUSTER, Qcow2Writer, RbdDiffWriter};
use serde::{Deserialize, Serialize};

use super::{Done, spec};
use crate::error::{Context, Error, Result};
use crate::hostfs::{BackupDir, remove_tree};
use crate::job::{CephAccess, Freeze};
use crate::naming::{BACKUP_SNAP, backup_increment_of, backup_increment_snap};

/// What one disk's backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BackupKind {
    /// A full backup.
    Full,
    /// An incremental backup: the first (`last` none) or the one after `last`.
    Increment {
        /// The last increment taken.
        last: Option<u32>,
        /// As an `rbd export-diff` stream (backup image FORMAT rbd), not qcow2.
        rbdiff: bool,
    },
}

/// One disk of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupDisk {
    /// The DISK_ID.
    pub id: u32,
    /// Ceph access for it.
    pub ceph: CephAccess,
    /// Its image.
    pub image: String,
    /// Full or incremental.
    pub kind: BackupKind,
}

/// Largest read from Ceph at once.
const RUN: u64 = 4 << 20;

/// What one disk's backup does with snapshots.
struct Plan {
    /// Snapshot to take (`None`: export the head of a stopped VM).
    take: Option<String>,
    /// Snapshots to drop before taking it (stale ones of a failed run, or an
    /// older chain's).
    drop_before: fn(&str, &BackupKind) -> bool,
    /// The increment's base, if any.
    since: Option<String>,
    /// The file written, in the backup directory.
    file: String,
    /// rbd export-diff format, not qcow2.
    rbdiff: bool,
}

fn plan(d: &BackupDisk, live: bool) -> Plan {
    match d.kind {
        BackupKind::Full => Plan {
            take: live.then(|| BACKUP_SNAP.to_string()),
            drop_before: |s, _| s == BACKUP_SNAP,
            since: None,
            file: format!("disk.{}.0", d.id),
            rbdiff: false,
        },
        BackupKind::Increment { last: None, .. } => Plan {
            take: Some(backup_increment_snap(0)),
            drop_before: |s, _| backup_increment_of(s).is_some(),
            since: None,
            file: format!("disk.{}.0", d.id),
            rbdiff: false,
        },
        BackupKind::Increment { last: Some(n), rbdiff } => Plan {
            take: Some(backup_increment_snap(n + 1)),
            drop_before: |s, k| matches!(k, BackupKind::Increment { last: Some(n), .. } if backup_increment_of(s) == Some(n + 1)),
            since: Some(backup_increment_snap(n)),
            file: if rbdiff {
                format!("disk.{}.{}.rbdiff", d.id, n + 1)
            } else {
                format!("disk.{}.{}", d.id, n + 1)
            },
            rbdiff,
        },
    }
}

/// One connection per distinct Ceph access.
fn connect_all(disks: &[BackupDisk]) -> Result<Vec<(CephAccess, Cluster)>> {
    let mut out: Vec<(CephAccess, Cluster)> = Vec::new();
    for d in disks {
        if !out.iter().any(|(a, _)| *a == d.ceph) {
            out.push((d.ceph.clone(), d.ceph.connect()?));
        }
    }
    Ok(out)
}

fn cluster_of<'a>(conns: &'a [(CephAccess, Cluster)], d: &BackupDisk) -> &'a Cluster {
    &conns.iter().find(|(a, _)| *a == d.ceph).expect("connected above").1
}

/// Removes the snapshots of `image` that `pick` selects.
fn drop_snapshots(
    c: &Cluster,
    image: &str,
    pick: impl Fn(&str) -> bool,
    log: &mut Vec<String>,
) -> Result<()> {
    let s = spec(image)?;
    let io = rbdx_core::ops::ioctx(c, &s)?;
    let img = io.open(&s.name)?;
    for snap in img.snapshots()? {
        if pick(&snap.name) {
            match img.snap_remove(&snap.name) {
                Ok(()) => log.push(format!("removed snapshot {image}@{}", snap.name)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::from(e).within(format!("removing {image}@{}", snap.name))),
            }
        }
    }
    Ok(())
}

/// Prebackup: see the module documentation.
///
/// # Errors
/// Ceph and file errors; nothing this run took is left behind.
pub fn run(
    dir: &BackupDir,
    vm_xml: &str,
    disks: &[BackupDisk],
    live: bool,
    freeze: Option<&Freeze>,
    log: &mut Vec<String>,
) -> Result<Done> {
    let path = dir.check()?.to_path_buf();
    remove_tree(&path)?;
    fs::create_dir_all(&path).context(format!("creating {}", path.display()))?;
    fs::write(path.join("vm.xml"), vm_xml).context(format!("writing {}/vm.xml", path.display()))?;
    let conns = connect_all(disks)?;
    let plans: Vec<Plan> = disks.iter().map(|d| plan(d, live)).collect();

    // The snapshots, together, the guest frozen around them.
    let mut taken: Vec<usize> = Vec::new();
    let thaw = match freeze.filter(|_| live) {
        Some(f) => crate::freeze::freeze(f, log)?,
        None => None,
    };
    let snapped = (|| {
        for (i, (d, p)) in disks.iter().zip(&plans).enumerate() {
            let Some(snap) = &p.take else { continue };
            let c = cluster_of(&conns, d);
            drop_snapshots(c, &d.image, |s| (p.drop_before)(s, &d.kind), log)?;
            let s = spec(&d.image)?;
            let io = rbdx_core::ops::ioctx(c, &s)?;
            io.open(&s.name)?.snap_create(snap).context(format!("snapshot {}@{snap}", d.image))?;
            taken.push(i);
        }
        Ok(())
    })();
    if let Some(t) = thaw {
        t.thaw(log);
    }
    let exported = snapped.and_then(|()| {
        for (d, p) in disks.iter().zip(&plans) {
            export(cluster_of(&conns, d), d, p, &path, log)
                .map_err(|e| e.within(format!("backing up disk {} ({})", d.id, d.image)))?;
        }
        Ok(())
    });
    if let Err(e) = exported {
        // Undo: the snapshots this run took (the previous base stays).
        for &i in &taken {
            let (d, snap) = (&disks[i], plans[i].take.as_deref().unwrap_or_default());
            let _ = drop_snapshots(cluster_of(&conns, d), &d.image, |s| s == snap, log);
        }
        return Err(e);
    }
    // A full backup ends any incremental chain, and needs its snapshot no more.
    for d in disks.iter().filter(|d| d.kind == BackupKind::Full) {
        drop_snapshots(
            cluster_of(&conns, d),
            &d.image,
            |s| s == BACKUP_SNAP || backup_increment_of(s).is_some(),
            log,
        )?;
    }
    Done::nothing()
}

/// Writes one disk's file.
fn export(c: &Cluster, d: &BackupDisk, p: &Plan, dir: &std::path::Path, log: &mut Vec<String>) -> Result<()> {
    let s = spec(&d.image)?;
    let io = rbdx_core::ops::ioctx(c, &s)?;
    let img = io.open_read_only(&s.name, p.take.as_deref())?;
    let size = img.info()?.size;
    // The base must be a snapshot of this very image (a revert starts a new head).
    let since = match &p.since {
        Some(b) if img.snapshots()?.iter().any(|x| &x.name == b) => Some(b.as_str()),
        Some(b) => {
            log.push(format!(
                "{} has no snapshot {b} (reverted since?): this increment holds the whole disk",
                d.image
            ));
            None
        }
        None => None,
    };
    let whole_increment = p.since.is_some() && since.is_none();
    let file = dir.join(&p.file);
    let werr = |e: std::io::Error| Error::Io { context: format!("writing {}", file.display()), source: e };
    let read = if p.rbdiff {
        let f = fs::File::create(&file).map_err(werr)?;
        let mut w = RbdDiffWriter::new(BufWriter::new(f), p.since.as_deref(), p.take.as_deref(), size)
            .map_err(werr)?;
        if whole_increment {
            w.zero(0, size).map_err(werr)?;
        }
        let mut read = 0;
        let mut buf = vec![0u8; RUN as usize];
        for e in changes::changed_extents(&img, since)? {
            if !e.exists {
                w.zero(e.offset, e.len).map_err(werr)?;
                continue;
            }
            let mut off = e.offset;
            while off < e.offset + e.len {
                let n = (e.offset + e.len - off).min(RUN) as usize;
                changes::read_exact_at(&img, off, &mut buf[..n])?;
                w.write(off, &buf[..n]).map_err(werr)?;
                off += n as u64;
                read += n as u64;
            }
        }
        let mut f = w.finish().map_err(werr)?;
        f.flush().map_err(werr)?;
        f.get_ref().sync_all().map_err(werr)?;
        read
    } else {
        let mut w = Qcow2Writer::create(&file, size).map_err(werr)?;
        let mut written = std::collections::BTreeSet::new();
        let read = for_each_changed_run(&img, since, CLUSTER, RUN, |off, data| {
            for (i, chunk) in data.chunks(CLUSTER as usize).enumerate() {
                let index = off / CLUSTER + i as u64;
                w.write_cluster(index, chunk).map_err(|e| rbdx_core::Error::Invalid(e.to_string()))?;
                if whole_increment {
                    written.insert(index);
                }
            }
            Ok(())
        })?;
        if whole_increment {
            // Every other cluster reads as zeros, whatever the older links hold.
            for index in (0..size.div_ceil(CLUSTER)).filter(|i| !written.contains(i)) {
                w.zero_cluster(index).map_err(werr)?;
            }
        }
        w.finish().map_err(werr)?;
        read
    };
    log.push(format!("wrote {} ({} MiB read from {})", p.file, read >> 20, d.image));
    Ok(())
}

/// Postbackup: keeps, of each disk's `one_backup_<n>`, the one the next
/// increment starts from (the new one after a success, the previous one after
/// a failure), and removes the backup directory. Never fails for oned (as the
/// stock action): what it could not do is logged and redone next time.
pub fn cleanup(dir: &BackupDir, disks: &[BackupDisk], success: bool, log: &mut Vec<String>) -> Result<Done> {
    match dir.removable().and_then(remove_tree) {
        Ok(()) => log.push(format!(
            "removed {}",
            dir.removable().map(|p| p.display().to_string()).unwrap_or_default()
        )),
        Err(e) => log.push(format!("could not remove the backup directory: {e}")),
    }
    let conns = match connect_all(disks) {
        Ok(c) => c,
        Err(e) => {
            log.push(format!("could not clean up backup snapshots: {e}"));
            return Done::nothing();
        }
    };
    for d in disks {
        let BackupKind::Increment { last, .. } = d.kind else { continue };
        let keep = if success { Some(last.map_or(0, |n| n + 1)) } else { last };
        let stale = |s: &str| backup_increment_of(s).is_some_and(|n| Some(n) != keep);
        if let Err(e) = drop_snapshots(cluster_of(&conns, d), &d.image, stale, log) {
            log.push(format!("could not clean up the backup snapshots of {}: {e}", d.image));
        }
    }
    Done::nothing()
}
