//! Proxmox workloads: the `rbdx pve` helper as the Perl plugin calls it (one JSON
//! request on stdin), against the `rbd` commands of Proxmox's built-in RBD plugin
//! (a) and the bare librbd calls (b).

use std::io::Write;
use std::process::{Command, Stdio};

use rbdx_core::rbd::ImageOptions;
use rbdx_pve::protocol::{Call, Ceph, Request, VERSION};

use crate::measure::{Workload, qemu_img, repeat, run_ok, time};
use crate::{Bench, GIB, MIB};

/// The Proxmox side of the bench: a storage with an EC data pool.
#[derive(Debug)]
pub struct Pve<'b> {
    b: &'b Bench,
}

impl<'b> Pve<'b> {
    /// An EC-backed storage on the test pools.
    pub fn new(b: &'b Bench) -> Self {
        Self { b }
    }

    fn call(&self, call: Call) -> serde_json::Value {
        self.call_through(call, None)
    }

    /// A call, through the warm agent when one is given.
    fn call_through(&self, call: Call, agent: Option<&crate::agent::Agent>) -> serde_json::Value {
        let c = &self.b.test_cluster;
        let req = Request {
            version: VERSION,
            storeid: "bench".into(),
            ceph: Ceph {
                pool: self.b.pool.clone(),
                data_pool: Some(self.b.ec_pool.clone()),
                id: Some(c.id.clone()),
                conf: Some(c.conf.display().to_string()),
                keyring: Some(c.keyring.display().to_string()),
                ..Ceph::default()
            },
            call,
        };
        let mut cmd = Command::new(&self.b.rbdx);
        cmd.arg("pve");
        if let Some(a) = agent {
            cmd = a.through(&cmd);
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        child.stdin.take().unwrap().write_all(&line).unwrap();
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("helper: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["ok"], true, "{v}");
        v["result"].clone()
    }

    fn vmid(&self) -> u32 {
        self.b.id()
    }

    fn spec(&self, name: &str) -> String {
        format!("{}/{name}", self.b.pool)
    }

    /// The built-in plugin's `alloc_image` of 1 GiB: find_free_diskname lists the
    /// pool, then the create. Returns the image spec.
    fn stock_alloc(&self, vmid: u32) -> String {
        self.b.cli.rbd_ok(&["ls", "-p", &self.b.pool]);
        let name = self.spec(&format!("vm-{vmid}-disk-0"));
        let ec = &self.b.ec_pool;
        self.b.cli.rbd_ok(&["create", "--image-format", "2", "--size", "1024", "--data-pool", ec, &name]);
        name
    }

    /// `alloc_image` of 1 GiB.
    pub fn alloc(&self) -> Workload {
        let reps = self.b.reps;
        let rbdx = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                self.call(Call::AllocImage { vmid, name: None, size_kib: GIB / 1024 });
            },
        );
        let ec = self.b.ec_pool.clone();
        let a = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                self.stock_alloc(vmid);
            },
        );
        let b = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                let c = self.b.connect_new();
                let io = c.ioctx(&self.b.pool).unwrap();
                io.create_image(
                    &format!("vm-{vmid}-disk-0"),
                    GIB,
                    &ImageOptions::new().data_pool(&ec).unwrap(),
                )
                .unwrap();
            },
        );
        self.b.wipe("vm-");
        Workload::new("pve_alloc", "Proxmox alloc_image, 1 GiB", "s", rbdx)
            .baseline("a_stock_cli", a)
            .baseline("b_bare_librbd", b)
    }

    /// `clone_image` of a template (linked clone) and a full clone (what
    /// qemu-server does: a new image, then `qemu-img convert`).
    pub fn clones(&self) -> (Workload, Workload) {
        let reps = self.b.reps.min(3);
        let tmpl = self.vmid();
        let vol = self.call(Call::AllocImage { vmid: tmpl, name: None, size_kib: GIB / 1024 });
        let vol = vol.as_str().unwrap().to_string();
        self.b.fill(&vol, 0, 256 * MIB, 3);
        let base = self.call(Call::CreateBase { volname: vol.clone() });
        let base = base.as_str().unwrap().to_string();
        let linked = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                self.call(Call::CloneImage { volname: base.clone(), vmid, snap: None });
            },
        );
        let ec = self.b.ec_pool.clone();
        let base_spec = self.spec(&base);
        let linked_a = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                self.b.cli.rbd_ok(&["info", "--format", "json", &base_spec]);
                self.b.cli.rbd_ok(&["ls", "-p", &self.b.pool]);
                let dst = self.spec(&format!("vm-{vmid}-disk-0"));
                self.b.cli.rbd_ok(&["clone", "--data-pool", &ec, &format!("{base_spec}@__base__"), &dst]);
            },
        );
        let linked_b = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                let c = self.b.connect_new();
                let io = c.ioctx(&self.b.pool).unwrap();
                let opts = ImageOptions::new().data_pool(&ec).unwrap();
                io.clone_image(&base, "__base__", &io, &format!("vm-{vmid}-disk-0"), &opts).unwrap();
            },
        );
        let src = self.b.cli.qemu_target(&base_spec, None);
        let full = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                let v = self.call(Call::AllocImage { vmid, name: None, size_kib: GIB / 1024 });
                let dst = self.b.cli.qemu_target(&self.spec(v.as_str().unwrap()), None);
                run_ok(qemu_img().args(["convert", "-n", "-f", "raw", "-O", "raw", &src, &dst]));
            },
        );
        let full_a = repeat(
            reps,
            |_| self.vmid(),
            |vmid| {
                let name = self.stock_alloc(vmid);
                let dst = self.b.cli.qemu_target(&name, None);
                run_ok(qemu_img().args(["convert", "-n", "-f", "raw", "-O", "raw", &src, &dst]));
            },
        );
        self.b.wipe("vm-");
        self.b.wipe("base-");
        (
            Workload::new(
                "pve_linked_clone",
                "Proxmox clone_image of a template (linked clone)",
                "s",
                linked,
            )
            .baseline("a_stock_cli", linked_a)
            .baseline("b_bare_librbd", linked_b),
            Workload::new(
                "pve_full_clone",
                "Proxmox full clone of a 1 GiB disk with 256 MiB written (alloc + qemu-img convert)",
                "s",
                full,
            )
            .baseline("a_stock_cli", full_a)
            .note(
                "qemu-server copies the data itself for a full clone: both sides run the same qemu-img \
                 convert, so the plugin cannot make this faster today",
            ),
        )
    }

    /// `volume_snapshot_rollback` of a `size` image with 512 MiB written before
    /// the snapshot and `rewrite` bytes rewritten since, against `rbd snap
    /// rollback` (the built-in plugin).
    pub fn rollback(&self, size: u64, rewrite: u64) -> Workload {
        let base = 512 * MIB;
        let reps = if rewrite >= GIB { self.b.reps.min(2) } else { self.b.reps };
        // Before a large rewrite, let the OSDs free what the last rollback discarded.
        let prepare = |name: &str| {
            if rewrite >= GIB {
                self.b.settle_with(base);
            }
            self.b.rewrite(name, rewrite);
        };
        let vmid = self.vmid();
        let vol = self.call(Call::AllocImage { vmid, name: None, size_kib: size / 1024 });
        let vol = vol.as_str().unwrap().to_string();
        self.b.fill(&vol, 0, base, 5);
        self.call(Call::VolumeSnapshot { volname: vol.clone(), snap: "s1".into() });
        let rbdx = repeat(
            reps,
            |_| prepare(&vol),
            |()| {
                self.call(Call::VolumeSnapshotRollback { volname: vol.clone(), snap: "s1".into() });
            },
        );
        self.b.wipe("vm-");
        self.b.settle();
        let other = self.vmid();
        let name = format!("vm-{other}-disk-0");
        let io = self.b.cluster().ioctx(&self.b.pool).unwrap();
        io.create_image(&name, size, &ImageOptions::new().data_pool(&self.b.ec_pool).unwrap()).unwrap();
        self.b.fill(&name, 0, base, 5);
        let spec = self.spec(&name);
        self.b.cli.rbd_ok(&["snap", "create", "--no-progress", &format!("{spec}@s1")]);
        let a = repeat(
            reps,
            |_| prepare(&name),
            |()| {
                self.b.cli.rbd_ok(&["snap", "rollback", "--no-progress", &format!("{spec}@s1")]);
            },
        );
        self.b.wipe("vm-");
        self.b.settle();
        // The 256 MiB cases keep their first names (pve_rollback_1g, _8g).
        let id = if rewrite == 256 * MIB {
            format!("pve_rollback_{}g", size / GIB)
        } else {
            format!("pve_rollback_{}g_{}m", size / GIB, rewrite / MIB)
        };
        let w = Workload::new(
            &id,
            &format!(
                "Proxmox volume_snapshot_rollback, {} GiB image, {} MiB rewritten",
                size / GIB,
                rewrite / MIB
            ),
            "s",
            rbdx,
        )
        .baseline("a_stock_cli", a);
        let r = w.rbdx.median / w.baselines["a_stock_cli"].median;
        w.target(
            "no slower than the built-in's rbd snap rollback (a)",
            r,
            1.0,
            false,
            "the helper's process and connection cost about what the rbd CLI's do; the rollback itself \
                 is the same librbd call (after a fast-diff read of what it would visit, for an image larger \
                 than half the bound); above the bound, the clone swap",
        )
    }

    /// The scenario's calls through `rbdx pve` (or `rbdx-run pve` and the
    /// agent), `reps` times.
    fn scenario_rbdx(&self, reps: usize, agent: Option<&crate::agent::Agent>) -> Vec<Tally> {
        let mut rbdx = Vec::new();
        let call = |c: Call| self.call_through(c, agent);
        for _ in 0..reps {
            let mut t = Tally::default();
            let vmid = self.vmid();
            t.time(false, || call(Call::Status {}));
            let v = t.time(false, || call(Call::AllocImage { vmid, name: None, size_kib: GIB / 1024 }));
            let vol = v.as_str().unwrap().to_string();
            t.time(false, || call(Call::ListImages { vmid: None }));
            self.b.fill(&vol, 0, 64 * MIB, 7);
            let (volname, snap) = (vol.clone(), "s1".to_string());
            t.time(true, || call(Call::VolumeSnapshot { volname: volname.clone(), snap: snap.clone() }));
            self.b.rewrite(&vol, 64 * MIB);
            t.time(false, || {
                call(Call::VolumeSnapshotRollback { volname: volname.clone(), snap: snap.clone() })
            });
            t.time(true, || call(Call::VolumeSnapshotDelete { volname, snap }));
            t.time(false, || call(Call::VolumeResize { volname: vol.clone(), size: 2 * GIB }));
            let base = t.time(true, || call(Call::CreateBase { volname: vol.clone() }));
            let base = base.as_str().unwrap().to_string();
            let clone = self.vmid();
            let c =
                t.time(false, || call(Call::CloneImage { volname: base.clone(), vmid: clone, snap: None }));
            let c = c.as_str().unwrap().to_string();
            t.time(false, || call(Call::FreeImage { volname: c }));
            t.time(true, || call(Call::FreeImage { volname: base }));
            rbdx.push(t);
            self.b.settle();
        }
        rbdx
    }

    /// A VM's life on the storage, API calls only (the guest's writes between
    /// them are set-up): status, alloc_image, list_images, volume_snapshot,
    /// volume_snapshot_rollback, volume_snapshot_delete, volume_resize,
    /// create_base, clone_image, free_image of the clone and of the template.
    /// Against the built-in plugin's `rbd` commands for the same calls (its
    /// status is a librados `df`, here in-process: what PVE::RADOS adds is
    /// not counted).
    /// Also through the warm agent, as the plugin runs it when the agent's
    /// socket exists.
    pub fn scenario(&self) -> Workload {
        let reps = self.b.reps.min(3);
        let (rbdx, mut stock) = (self.scenario_rbdx(reps, None), Vec::new());
        let warm = crate::agent::Agent::start(&self.b.rbdx).map(|a| self.scenario_rbdx(reps, Some(&a)));
        let ec = self.b.ec_pool.clone();
        let rbd = |args: &[&str]| {
            self.b.cli.rbd_ok(args);
        };
        for _ in 0..reps {
            let mut t = Tally::default();
            let vmid = self.vmid();
            t.time(false, || {
                let c = self.b.connect_new();
                c.mon_command(&serde_json::json!({"prefix": "df", "format": "json"})).unwrap();
            });
            let name = format!("vm-{vmid}-disk-0");
            let spec = self.spec(&name);
            t.time(false, || self.stock_alloc(vmid));
            t.time(false, || rbd(&["ls", "-l", "--format", "json", "-p", &self.b.pool]));
            self.b.fill(&name, 0, 64 * MIB, 7);
            t.time(true, || rbd(&["snap", "create", "--no-progress", "--snap", "s1", &spec]));
            self.b.rewrite(&name, 64 * MIB);
            t.time(false, || rbd(&["snap", "rollback", "--no-progress", "--snap", "s1", &spec]));
            t.time(true, || {
                rbd(&["info", "--format", "json", "--snap", "s1", &spec]);
                rbd(&["snap", "rm", "--no-progress", "--snap", "s1", &spec]);
            });
            t.time(false, || rbd(&["resize", "--no-progress", "--size", "2048", &spec]));
            let base = self.spec(&format!("base-{vmid}-disk-0"));
            t.time(true, || {
                rbd(&["info", "--format", "json", &spec]);
                rbd(&["rename", &spec, &base]);
                rbd(&["snap", "create", "--no-progress", "--snap", "__base__", &base]);
                rbd(&["snap", "protect", "--snap", "__base__", &base]);
            });
            let clone = self.spec(&format!("vm-{}-disk-0", self.vmid()));
            t.time(false, || {
                rbd(&["info", "--format", "json", &base]);
                rbd(&["ls", "-p", &self.b.pool]);
                rbd(&["clone", "--data-pool", &ec, &format!("{base}@__base__"), &clone]);
            });
            t.time(false, || {
                rbd(&["snap", "ls", "--format", "json", &clone]);
                rbd(&["snap", "purge", "--no-progress", &clone]);
                rbd(&["rm", "--no-progress", &clone]);
            });
            t.time(true, || {
                rbd(&["snap", "ls", "--format", "json", &base]);
                rbd(&["snap", "unprotect", "--snap", "__base__", &base]);
                rbd(&["snap", "purge", "--no-progress", &base]);
                rbd(&["rm", "--no-progress", &base]);
            });
            stock.push(t);
            self.b.settle();
        }
        let median = |v: &[Tally]| crate::measure::Stats::of(v.iter().map(|t| t.free).collect()).median;
        let (r_free_s, a_free_s) = (median(&rbdx), median(&stock));
        let free_ratio = r_free_s / a_free_s;
        let all = |v: Vec<Tally>| v.into_iter().map(|t| t.all).collect();
        let w = Workload::new(
            "pve_scenario",
            "Proxmox storage scenario: 11 API calls of a VM's life (status to free_image), 1 GiB disk",
            "s",
            all(rbdx),
        )
        .baseline("a_stock_cli", all(stock))
        .note(format!(
            "the 7 calls that wait for no OSD map update: {:.0} ms against {:.0} ms for the built-in's \
             ({free_ratio:.2}x)",
            r_free_s * 1e3,
            a_free_s * 1e3
        ));
        let w = match warm {
            Some(warm) => {
                let w_free_s = median(&warm);
                w.baseline("warm_agent", all(warm)).note(format!(
                    "through the warm agent, those 7 calls: {:.0} ms ({:.2}x the built-in's)",
                    w_free_s * 1e3,
                    w_free_s / a_free_s
                ))
            }
            None => w,
        };
        let r = w.rbdx.median / w.baselines["a_stock_cli"].median;
        w.target(
            "scenario API time at most half the built-in's (a)",
            r,
            0.5,
            false,
            "volume_snapshot, volume_snapshot_delete, create_base and the template's free_image each wait \
             for an OSD map update (a snapshot made or removed) on both sides, as many times, and those \
             waits are most of the time; the other calls are in the note",
        )
    }
    /// `list_images` of a storage holding `n` volumes: half of them plain
    /// disks, half linked clones of one template. Against the built-in's
    /// `rbd ls -l --format json`.
    pub fn list(&self, n: usize) -> Workload {
        let c = self.b.connect_new();
        let io = c.ioctx(&self.b.pool).unwrap();
        let opts = ImageOptions::new().data_pool(&self.b.ec_pool).unwrap();
        let tmpl = self.vmid();
        let base = format!("base-{tmpl}-disk-0");
        io.create_image(&base, GIB, &opts).unwrap();
        io.open(&base).unwrap().snap_create("__base__").unwrap();
        for i in 0..n {
            let name = format!("vm-{}-disk-0", self.vmid());
            if i % 2 == 0 {
                io.create_image(&name, GIB, &opts).unwrap();
            } else {
                io.clone_image(&base, "__base__", &io, &name, &opts).unwrap();
            }
        }
        let reps = self.b.reps;
        let rbdx = repeat(
            reps,
            |_| (),
            |()| {
                let listed = self.call(Call::ListImages { vmid: None });
                assert!(listed.as_array().unwrap().len() > n, "{n} volumes and the template");
            },
        );
        let pool = self.b.pool.clone();
        let a = repeat(
            reps,
            |_| (),
            |()| {
                self.b.cli.rbd_ok(&["ls", "-l", "--format", "json", "-p", &pool]);
            },
        );
        drop(io);
        self.b.wipe("vm-");
        self.b.wipe("base-");
        Workload::new(
            &format!("pve_list_{n}"),
            &format!("Proxmox list_images, {n} volumes (half of them linked clones)"),
            "s",
            rbdx,
        )
        .baseline("a_stock_cli", a)
    }
}

/// The time of a scenario's calls: all of them, and those that wait for no
/// OSD map update.
#[derive(Debug, Default)]
struct Tally {
    all: f64,
    free: f64,
}

impl Tally {
    /// Runs and times one call; `waits` if it waits for an OSD map update.
    fn time<T>(&mut self, waits: bool, f: impl FnOnce() -> T) -> T {
        let (s, v) = time(f);
        self.all += s;
        if !waits {
            self.free += s;
        }
        v
    }
}
