//! The report: `results.json`, the Markdown table and the chart, all generated.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::breakdown::{self, Breakdown};
use crate::measure::{Target, Workload};

/// Where and how the numbers were taken.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    /// `RBDX_BENCH_DATE`, set by `tests/bench`.
    pub date: String,
    /// CPU count, memory and OS.
    pub machine: String,
    /// The Ceph version of the local cluster's daemons (`ceph --version`).
    pub ceph: String,
    /// Repetitions of the light workloads.
    pub reps: usize,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// The EC pool's raw write bandwidth (`rados bench`, 4 MiB objects, 16 ops).
    pub rados_bench_mbs: f64,
}

/// "2 CPUs, 24 GiB, Debian GNU/Linux 12 (bookworm)".
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| (kb + (1 << 19)) >> 20);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|o| {
            o.lines().find_map(|l| Some(l.strip_prefix("PRETTY_NAME=")?.trim_matches('"').to_string()))
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {mem} GiB, {os}")
}

/// `ceph --version`, first three words.
pub fn ceph_version() -> String {
    std::process::Command::new("ceph")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn find<'w>(ws: &'w [Workload], id: &str) -> Option<&'w Workload> {
    ws.iter().find(|w| w.id == id)
}

/// Targets that compare workloads with each other, and the `rados bench` figure
/// beside the imports.
pub fn cross_targets(ws: &mut [Workload], rados_mbs: f64) {
    let med = |id: &str, series: &str| {
        find(ws, id).map(|w| if series == "rbdx" { w.rbdx.median } else { w.baselines[series].median })
    };
    let mut extra: Vec<(String, Target, String)> = Vec::new();
    if let (Some(small), Some(big)) =
        (med("tm_snap_revert_1g_256m", "rbdx"), med("tm_snap_revert_8g_256m", "rbdx"))
    {
        let r = big / small;
        extra.push((
            "tm_snap_revert_8g_256m".into(),
            Target {
                goal: "revert of the 8 GiB image within 1.2x of the 1 GiB one".into(),
                measured: r,
                bound: 1.2,
                met: r <= 1.2,
                note: if r <= 1.2 { String::new() } else { "revert time depends on the image size".into() },
            },
            String::new(),
        ));
        if let (Some(rs), Some(rb)) = (
            med("tm_snap_revert_1g_256m", "rbd_snap_rollback"),
            med("tm_snap_revert_8g_256m", "rbd_snap_rollback"),
        ) {
            extra.push((
                "tm_snap_revert_8g_256m".into(),
                Target {
                    goal: "for comparison: rbd snap rollback, 8 GiB / 1 GiB".into(),
                    measured: rb / rs,
                    bound: 1.2,
                    met: rb / rs <= 1.2,
                    note: "rollback writes back every object of the image that changed or exists".into(),
                },
                String::new(),
            ));
        }
    }
    if let (Some(few), Some(many)) =
        (med("tm_snap_revert_8g_256m", "rbdx"), med("tm_snap_revert_8g_4096m", "rbdx"))
    {
        let mut note = format!(
            "growth with the data rewritten since the snapshot (256 MiB -> 4 GiB): rbdx {:.2}x",
            many / few
        );
        if let (Some(rf), Some(rm)) = (
            med("tm_snap_revert_8g_256m", "rbd_snap_rollback"),
            med("tm_snap_revert_8g_4096m", "rbd_snap_rollback"),
        ) {
            let _ = write!(note, ", rbd snap rollback {:.2}x", rm / rf);
        }
        extra.push(("tm_snap_revert_8g_4096m".into(), dummy(), note));
    }
    for (id, t, note) in extra {
        if let Some(w) = ws.iter_mut().find(|w| w.id == id) {
            if !t.goal.is_empty() {
                w.targets.push(t);
            }
            if !note.is_empty() {
                w.notes.push(note);
            }
        }
    }
    if rados_mbs > 0.0 {
        for w in ws.iter_mut().filter(|w| w.id.starts_with("ds_cp_")) {
            let share = w.rbdx.median / rados_mbs;
            w.ratios.insert("c_rados_bench".into(), share);
            w.notes.push(format!(
                "rados bench into the EC pool: {rados_mbs:.0} MiB/s; rbdx reaches {:.0}%",
                share * 100.0
            ));
        }
    }
}

/// The goal every OpenNebula action that waits for no OSD map update is held
/// to against the stock driver (TM clone states its own, with its note).
pub const STOCK_GOAL: &str = "at least 3x faster than (a)";

/// The factor of [`STOCK_GOAL`].
pub const STOCK_FACTOR: f64 = 3.0;

/// Why an in-place revert may miss [`STOCK_GOAL`].
const ROLLBACK_WHY: &str = "the head is rolled back in place: rbdx rolls back the 64 objects rewritten since \
     the snapshot (the OSDs copy each back; the unchanged ones are skipped) and writes the head's \
     object map, without opening the image, where the stock sequence renames the head and clones the \
     snapshot, constant but one clone level deeper each time (rbdx's own clone swap, which keeps the \
     chain bounded, costs more than this rollback); (a) also leaves out the stock driver's ssh hop and \
     Ruby start-ups";

/// The wait-free OpenNebula workloads measured against the stock driver's
/// commands, and why one may miss [`STOCK_GOAL`].
const WAIT_FREE: &[(&str, &str)] = &[
    ("tm_delete", ""),
    ("tm_snap_revert_1g_256m", ROLLBACK_WHY),
    ("tm_snap_revert_8g_256m", ROLLBACK_WHY),
    ("tm_cpds", ""),
    ("ds_clone", ""),
    ("ds_monitor", ""),
    ("ds_monitor_vm_disks", ""),
];

/// Holds each wait-free OpenNebula workload measured against the stock driver
/// (`a_stock_cli`) to [`STOCK_GOAL`]: decided from the ratios alone, so that
/// `--render` decides it for an earlier run too, replacing what that run
/// decided (once per workload).
pub fn stock_targets(ws: &mut [Workload]) {
    for (id, why) in WAIT_FREE {
        let Some(w) = ws.iter_mut().find(|w| w.id == *id) else { continue };
        let Some(&ratio) = w.ratios.get("a_stock_cli") else { continue };
        w.targets.retain(|t| t.goal != STOCK_GOAL);
        w.targets.insert(0, Target::check(STOCK_GOAL, ratio, STOCK_FACTOR, true, why));
    }
}

fn dummy() -> Target {
    Target { goal: String::new(), measured: 0.0, bound: 0.0, met: true, note: String::new() }
}

fn fmt_val(v: f64, unit: &str) -> String {
    if unit == "s" {
        if v < 1.0 { format!("{:.0} ms", v * 1000.0) } else { format!("{v:.2} s") }
    } else {
        format!("{v:.0} MiB/s")
    }
}

/// The Markdown page.
pub fn markdown(meta: &Meta, ws: &[Workload]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# rbdx benchmarks\n");
    let _ = writeln!(
        m,
        "Generated by `make bench` (`tests/bench`); do not edit. Machine: {}; {}; local test cluster \
         (1 mon, 1 mgr, 3 memstore OSDs, replicated pool + EC k=2,m=1 data pool), restricted `profile rbd` \
         client. {} repetitions of the light workloads (fewer for the heavy ones); the whole run took {:.0} s.{}\n",
        meta.machine,
        meta.ceph,
        meta.reps,
        meta.seconds,
        if meta.date.is_empty() { String::new() } else { format!(" Run on {}.", meta.date) }
    );
    let _ = writeln!(
        m,
        "Baselines, measured in the same run:\n\n\
         - **(a) stock**: the remote part of the stock driver as its sequence of `rbd`/`ceph` CLI processes \
         (OpenNebula `tm/ceph`, `datastore/ceph`; Proxmox `RBDPlugin.pm`), without the ssh hop and the Ruby \
         `onevm`/`onedatastore` start-ups the stock driver also pays;\n\
         - **(b) bare librbd**: the minimal librados/librbd calls in one process, new connection included: the floor;\n\
         - **(c)** for imports: `qemu-img convert` into `rbd:`, and `rados bench` (raw write bandwidth of the EC pool: \
         {:.0} MiB/s);\n\
         - `rbd snap rollback`, beside the reverts.\n\n\
         rbdx runs through its real entry points: `rbdx tm|ds <action>` with oned's argv and stdin and the \
         metadata read from a double of oned's XML-RPC API, and `rbdx pve` with the Perl plugin's JSON.\n",
        meta.rados_bench_mbs
    );
    let _ = writeln!(m, "![chart](chart.png)\n");
    let _ = writeln!(m, "| # | workload | rbdx median (min–max) | baseline medians | rbdx vs baseline |");
    let _ = writeln!(m, "|---|---|---|---|---|");
    for (i, w) in ws.iter().enumerate() {
        let base: Vec<String> =
            w.baselines.iter().map(|(k, s)| format!("{k}: {}", fmt_val(s.median, &w.unit))).collect();
        let ratios: Vec<String> = w
            .ratios
            .iter()
            .map(|(k, r)| match (w.unit == "s", *r >= 1.0) {
                (true, true) => format!("{r:.2}x faster than {k}"),
                (true, false) => format!("{:.2}x slower than {k}", 1.0 / r),
                (false, _) => format!("{:.0}% of {k}", r * 100.0),
            })
            .collect();
        let _ = writeln!(
            m,
            "| {} | {} | {} ({}–{}) | {} | {} |",
            i + 1,
            w.title,
            fmt_val(w.rbdx.median, &w.unit),
            fmt_val(w.rbdx.min, &w.unit),
            fmt_val(w.rbdx.max, &w.unit),
            base.join("<br>"),
            ratios.join("<br>")
        );
    }
    let _ = writeln!(m, "\n## Targets\n");
    let _ = writeln!(m, "| workload | target | measured | met |");
    let _ = writeln!(m, "|---|---|---|---|");
    for w in ws {
        for t in &w.targets {
            let met = if t.met { "yes".to_string() } else { format!("**no**: {}", t.note) };
            let _ =
                writeln!(m, "| {} | {} | {:.2} (bound {:.2}) | {} |", w.id, t.goal, t.measured, t.bound, met);
        }
    }
    let notes: Vec<String> =
        ws.iter().flat_map(|w| w.notes.iter().map(move |n| format!("- `{}`: {n}", w.id))).collect();
    if !notes.is_empty() {
        let _ = writeln!(m, "\n## Notes\n\n{}", notes.join("\n"));
    }
    m
}

const SERIES: [(&str, RGBColor); 8] = [
    ("rbdx", RGBColor(31, 119, 180)),
    ("a_stock_cli", RGBColor(214, 39, 40)),
    ("b_bare_librbd", RGBColor(44, 160, 44)),
    ("null_action", RGBColor(127, 127, 127)),
    ("rbd_snap_rollback", RGBColor(255, 127, 14)),
    ("c_qemu_img_convert", RGBColor(148, 103, 189)),
    ("warm_agent", RGBColor(23, 190, 207)),
    ("null_action_warm_agent", RGBColor(188, 189, 34)),
];

fn font() -> Result<(), Box<dyn std::error::Error>> {
    let path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e} (install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| "the chart font could not be loaded")?;
    Ok(())
}

fn value(w: &Workload, series: &str) -> Option<f64> {
    if series == "rbdx" { Some(w.rbdx.median) } else { w.baselines.get(series).map(|s| s.median) }
}

/// The chart: median times (log scale) and import throughputs, grouped per workload.
pub fn chart(path: &Path, ws: &[Workload]) -> Result<(), Box<dyn std::error::Error>> {
    font()?;
    let root = BitMapBackend::new(path, (1600, 1230)).into_drawing_area();
    root.fill(&WHITE)?;
    let (charts, key) = root.split_vertically(1100);
    let (top, bottom) = charts.split_vertically(700);
    // Bars are labelled with the workload's number in the table (README.md) and its id.
    let times: Vec<(usize, &Workload)> = ws.iter().enumerate().filter(|(_, w)| w.unit == "s").collect();
    let rates: Vec<(usize, &Workload)> = ws.iter().enumerate().filter(|(_, w)| w.unit != "s").collect();
    panel(
        &top,
        &times,
        "rbdx vs baselines: median time per action (log scale, lower is better)",
        "seconds",
        true,
    )?;
    panel(&bottom, &rates, "imports: throughput (higher is better)", "MiB/s", false)?;
    // The workloads by name, numbered as on the bars.
    let names: Vec<String> = ws.iter().enumerate().map(|(i, w)| format!("{} {}", i + 1, w.id)).collect();
    let style = ("sans-serif", 15).into_font().color(&BLACK);
    for (row, line) in names.chunks(7).enumerate() {
        let y = 10 + 22 * i32::try_from(row).unwrap_or(0);
        for (col, name) in line.iter().enumerate() {
            let x = 80 + 215 * i32::try_from(col).unwrap_or(0);
            key.draw(&Text::new(name.clone(), (x, y), style.clone()))?;
        }
    }
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    numbered: &[(usize, &Workload)],
    caption: &str,
    unit: &str,
    log: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let ws: Vec<&Workload> = numbered.iter().map(|(_, w)| *w).collect();
    let n = ws.len().max(1);
    let vals: Vec<f64> = ws.iter().flat_map(|w| SERIES.iter().filter_map(|(s, _)| value(w, s))).collect();
    let hi = vals.iter().copied().fold(0.0f64, f64::max) * 1.5;
    let labels: Vec<String> = numbered.iter().map(|(i, _)| format!("{}", i + 1)).collect();
    let label = move |x: &f64| {
        let k = x.round();
        if (x - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
            labels[k as usize].clone()
        } else {
            String::new()
        }
    };
    let x_range = -0.5f64..(n as f64 - 0.5);
    let group_width = 0.8;
    let slot = group_width / SERIES.len() as f64;
    macro_rules! draw {
        ($chart:expr, $lo:expr) => {{
            let chart = &mut $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&label)
                .x_label_style(("sans-serif", 15))
                .x_desc("workload (# in the table; names below)")
                .y_desc(unit)
                .draw()?;
            for (k, (name, color)) in SERIES.iter().enumerate() {
                let bars = ws.iter().enumerate().filter_map(|(i, w)| {
                    let v = value(w, name)?;
                    let x0 = i as f64 - group_width / 2.0 + k as f64 * slot;
                    Some(Rectangle::new([(x0, $lo), (x0 + slot * 0.9, v)], color.filled()))
                });
                chart
                    .draw_series(bars)?
                    .label(*name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }};
    }
    let mut builder = ChartBuilder::on(area);
    builder.caption(caption, ("sans-serif", 22)).margin(12).x_label_area_size(50).y_label_area_size(70);
    if log {
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
        let mut chart = builder.build_cartesian_2d(x_range, (lo..hi.max(lo * 10.0)).log_scale())?;
        draw!(chart, lo);
    } else {
        let mut chart = builder.build_cartesian_2d(x_range, 0.0..hi.max(1.0))?;
        draw!(chart, 0.0);
    }
    Ok(())
}

/// What a run measured: where, the workloads, and where the time goes.
pub type Results = (Meta, Vec<Workload>, Vec<Breakdown>);

/// The results of an earlier run (`results.json`), to render again.
pub fn read(dir: &Path) -> Result<Results, Box<dyn std::error::Error>> {
    #[derive(Deserialize)]
    struct Doc {
        meta: Meta,
        workloads: Vec<Workload>,
        #[serde(default)]
        breakdown: Vec<Breakdown>,
    }
    let d: Doc = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
    Ok((d.meta, d.workloads, d.breakdown))
}

/// Writes `results.json`, `README.md` and `chart.png` into `dir`.
pub fn write(
    dir: &Path,
    meta: &Meta,
    ws: &[Workload],
    bs: &[Breakdown],
) -> Result<(), Box<dyn std::error::Error>> {
    #[derive(Serialize)]
    struct Doc<'a> {
        meta: &'a Meta,
        workloads: &'a [Workload],
        breakdown: &'a [Breakdown],
    }
    let json = serde_json::to_string_pretty(&Doc { meta, workloads: ws, breakdown: bs })?;
    std::fs::write(dir.join("results.json"), json + "\n")?;
    std::fs::write(dir.join("README.md"), markdown(meta, ws) + &breakdown::markdown(bs))?;
    chart(&dir.join("chart.png"), ws)?;
    if !bs.is_empty() {
        breakdown::chart(&dir.join("breakdown.png"), bs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(id: &str, stock: f64) -> Workload {
        Workload::new(id, id, "s", vec![1.0]).baseline("a_stock_cli", vec![stock])
    }

    #[test]
    fn wait_free_actions_are_held_to_three_times_the_stock_speed_once() {
        let mut ws = vec![
            workload("tm_delete", 3.95),
            workload("tm_snap_revert_1g_256m", 2.79),
            workload("tm_snap_create", 1.0),
        ];
        stock_targets(&mut ws);
        stock_targets(&mut ws);
        let goals = |w: &Workload| w.targets.iter().filter(|t| t.goal == STOCK_GOAL).count();
        assert_eq!(
            ws.iter().map(goals).collect::<Vec<_>>(),
            [1, 1, 0],
            "once each, none where a map wait is due"
        );
        assert!(ws[0].targets[0].met && ws[0].targets[0].note.is_empty());
        assert!(!ws[1].targets[0].met && ws[1].targets[0].note.contains("in place"));
        assert!((ws[1].targets[0].measured - 2.79).abs() < 1e-9);
        // What an earlier run decided is decided again: its note is today's.
        ws[1].targets[0].note = "stale".into();
        stock_targets(&mut ws);
        assert_eq!(ws.iter().map(goals).collect::<Vec<_>>(), [1, 1, 0]);
        assert!(ws[1].targets[0].note.contains("in place"));
    }
}
