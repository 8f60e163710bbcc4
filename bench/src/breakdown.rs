//! Where each action's time goes: every OpenNebula action of a VM's life run
//! with `RBDX_TRACE`, at several disk sizes, beside the null action (`rbdx one
//! ping`: one oned call and a Ceph connection). Each run's spans are sorted
//! into the parts an operator can act on; the bars show the run of median
//! wall time, so its parts add up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::one::One;
use crate::{Bench, GIB, MIB};

/// The parts of an action's time, in the order the chart stacks them.
pub const PARTS: &[&str] = &[
    "process start and exit",
    "oned",
    "connect",
    "lock",
    "map-update waits",
    "other Ceph calls",
    "rbdx itself",
];

/// One action at one disk size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Breakdown {
    /// `tm clone`, `ds clone (unchanged image)`, `null (one ping)`, …
    pub action: String,
    /// `1 GiB (64 MiB written)`.
    pub size: String,
    /// Median wall time of the whole invocation, ms.
    pub wall_ms: f64,
    /// The median run's parts ([`PARTS`]), ms.
    pub parts: BTreeMap<String, f64>,
    /// Snapshot creates and removes in the median run: each waits for an OSD
    /// map update.
    pub map_waits: u32,
    /// Ceph calls of the median run by kind: (count, ms).
    pub calls: BTreeMap<String, (u32, f64)>,
}

/// One traced run.
struct Run {
    wall_ms: f64,
    parts: BTreeMap<String, f64>,
    map_waits: u32,
    calls: BTreeMap<String, (u32, f64)>,
}

/// Sorts one trace line (see `rbdx`'s `write_trace`) into parts.
fn sort(wall_ms: f64, line: &serde_json::Value) -> Run {
    let inside = line["us"].as_f64().unwrap_or(0.0) / 1000.0;
    let mut parts: BTreeMap<String, f64> = PARTS.iter().map(|p| ((*p).to_string(), 0.0)).collect();
    let mut calls: BTreeMap<String, (u32, f64)> = BTreeMap::new();
    let mut map_waits = 0;
    let mut traced = 0.0;
    for s in line["spans"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("").trim_start_matches("host: ");
        let ms = s["us"].as_f64().unwrap_or(0.0) / 1000.0;
        let part = match name {
            n if n.starts_with("oned ") => "oned",
            "connect" | "connect (made ahead)" => "connect",
            "lock" => "lock",
            n if n.starts_with("snapshot create") || n.starts_with("snapshot remove") => {
                map_waits += 1;
                "map-update waits"
            }
            // The hop and a host's whole job contain the spans above.
            "ssh" | "job" => continue,
            _ => "other Ceph calls",
        };
        *parts.get_mut(part).expect("a part") += ms;
        traced += ms;
        if part != "oned" {
            let c = calls.entry(name.to_string()).or_default();
            c.0 += 1;
            c.1 += ms;
        }
    }
    parts.insert("process start and exit".into(), (wall_ms - inside).max(0.0));
    parts.insert("rbdx itself".into(), (inside - traced).max(0.0));
    Run { wall_ms, parts, map_waits, calls }
}

/// The disk sizes: (virtual size, bytes written).
const SIZES: &[(u64, u64)] =
    &[(64 * MIB, 16 * MIB), (GIB, 64 * MIB), (8 * GIB, 64 * MIB), (64 * GIB, 64 * MIB)];

fn label(size: u64, written: u64) -> String {
    let h = |b: u64| if b >= GIB { format!("{} GiB", b / GIB) } else { format!("{} MiB", b / MIB) };
    format!("{} ({} written)", h(size), h(written))
}

/// Runs every action `reps` times at each size; with `traces`, appends each
/// run's spans there (JSON lines).
pub fn run(b: &Bench, o: &One<'_>, reps: usize, dir: &Path, traces: Option<&Path>) -> Vec<Breakdown> {
    let trace = dir.join("trace.jsonl");
    let mut out = Vec::new();
    for &(size, written) in SIZES {
        let mut runs: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
        let mut timed = |action: &'static str, mut cmd: std::process::Command, stdin: &[u8]| {
            let _ = std::fs::remove_file(&trace);
            cmd.env("RBDX_TRACE", &trace);
            let t = Instant::now();
            let res = rbdx_tests::run_with_stdin(&mut cmd, stdin);
            let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(res.status.success(), "{action}: {}", String::from_utf8_lossy(&res.stderr));
            let text = std::fs::read_to_string(&trace).expect("the trace");
            let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one trace line");
            if let Some(all) = traces {
                // Every span in order, for reading one run call by call.
                use std::io::Write as _;
                let mut f =
                    std::fs::OpenOptions::new().create(true).append(true).open(all).expect("--traces");
                let run = serde_json::json!({"action": action, "size": label(size, written), "wall_ms": wall_ms, "trace": line});
                writeln!(f, "{run}").expect("--traces");
            }
            runs.entry(action).or_default().push(sort(wall_ms, &line));
        };
        let img = b.image(size, written);
        for _ in 0..reps {
            for step in o.lifecycle(img, size) {
                timed(step.action, step.cmd, &step.stdin);
                if let Some(after) = step.after {
                    after();
                }
            }
        }
        b.wipe(&format!("one-{img}"));
        b.settle();
        for (action, mut rs) in runs {
            rs.sort_by(|x, y| x.wall_ms.total_cmp(&y.wall_ms));
            let m = rs.swap_remove(rs.len() / 2);
            out.push(Breakdown {
                action: action.to_string(),
                size: label(size, written),
                wall_ms: m.wall_ms,
                parts: m.parts,
                map_waits: m.map_waits,
                calls: m.calls,
            });
        }
    }
    // By action, in the order of a VM's life, then by size.
    let order = |b: &Breakdown| {
        let a = ORDER.iter().position(|o| *o == b.action).unwrap_or(ORDER.len());
        let s = SIZES.iter().position(|&(v, w)| label(v, w) == b.size).unwrap_or(SIZES.len());
        (a, s)
    };
    out.sort_by_key(order);
    out
}

/// The actions of [`One::lifecycle`], in its order.
const ORDER: &[&str] = &[
    "null action (one ping)",
    "tm clone",
    "tm snap_create",
    "tm snap_revert",
    "tm cpds",
    "tm snap_delete",
    "tm delete",
    "ds clone",
    "ds rm",
];

/// Map-update waits the stock driver's remote commands make for the same step
/// of the same life (format-2 images; the image already has its `@snap`):
/// `src/tm_mad/ceph/*` and `src/datastore_mad/remotes/ceph/*`, as
/// `../shared/spec/opennebula-ceph.md` describes them.
const STOCK_WAITS: &[(&str, u32, &str)] = &[
    ("tm clone", 0, "`rbd_make_snap` finds `@snap`; `rbd clone`"),
    ("tm snap_create", 1, "`rbd snap create`, `snap protect`"),
    ("tm snap_revert", 0, "`rbd_rename_rm` (no snapshot removed), `rbd clone`"),
    ("tm cpds", 0, "`rbd copy` of the live disk (a full copy, not crash-consistent)"),
    ("tm snap_delete", 1, "`snap unprotect`, `snap rm`"),
    ("tm delete", 1, "`rbd_rm_r` of the disk, then `rbd_rm_snap SOURCE` (the base `@snap`)"),
    ("ds clone", 0, "`rbd copy` (a full copy)"),
    ("ds rm", 0, "`rbd_rm_r` of a copy without snapshots"),
];

/// What one Ceph call costs, for the calls that alone take more than the
/// floor bound leaves an action (half the null action): each is one librbd
/// function (or what rbdx writes in its place), its round trips one after another (read from a client log with
/// `debug rbd = 20`, `debug ms = 1` on the test cluster, librbd 16).
const LIBRBD_CALLS: &[(&str, &str)] = &[
    (
        "clone",
        "rbdx writes the clone itself: three reads of the parent, the old-format name check and six writes \
         (directory, object map, header, its parent link, the parent's link, the id object), one after \
         another",
    ),
    (
        "clone (librbd)",
        "librbd's clone opens the parent at its snapshot, creates the child and opens it to link the two: \
         about 35 round trips",
    ),
    (
        "remove",
        "rbdx removes the image itself, in librbd's order: its data objects (all in flight at once), the \
         parent snapshot's link, the header and object map, the id object, the directory entry",
    ),
    (
        "remove (librbd)",
        "librbd 16's removal opens the image three times (a check, the move to the trash, the removal from \
         it), each time taking its exclusive lock, notifying and releasing it: about 95 round trips for a \
         clone that holds no data of its own",
    ),
    (
        "rollback",
        "rbdx rolls back the objects the head or the snapshot holds (64 at a time; back to the newest \
         snapshot, only those written since it), then writes the snapshot's object map as the head's",
    ),
    (
        "rollback (librbd)",
        "librbd's rollback takes the exclusive lock, writes the snapshot's object map as the head's, rolls \
         back every object the head or the snapshot holds (64 at a time) and reads the map back",
    ),
    ("copy", "the disk's own data, copied instead of a snapshot and its OSD map update wait"),
    (
        "open",
        "a read-write open reads the header in about ten round trips, opens every image above a clone and \
         watches the header",
    ),
];

/// Why an action without a map-update wait is over 1.5x the floor (which
/// leaves it half the null action): its two largest Ceph calls by kind
/// (connect and the action lock are parts of their own), and what the largest
/// costs when it alone takes more than that half.
fn over_the_bound(b: &Breakdown, floor: f64) -> String {
    let mut calls: Vec<(&String, f64)> = b
        .calls
        .iter()
        .filter(|(k, _)| !k.starts_with("connect") && *k != "lock")
        .map(|(k, (_, ms))| (k, *ms))
        .collect();
    calls.sort_by(|x, y| y.1.total_cmp(&x.1));
    let Some(&(kind, ms)) = calls.first() else { return "over the bound".into() };
    let named: Vec<String> = calls.iter().take(2).map(|(k, ms)| format!("`{k}` {ms:.0} ms")).collect();
    let mut why =
        format!("over the bound by {:.0} ms; largest calls {}", b.wall_ms - 1.5 * floor, named.join(", "));
    if ms > floor / 2.0 {
        if let Some((_, what)) = LIBRBD_CALLS.iter().find(|(k, _)| k == kind) {
            why.push_str(&format!(" ({kind} alone is {:.2}x the floor: {what})", ms / floor));
        }
    }
    why
}

/// The targets read from the breakdown: an action with no map-update
/// wait within 1.5x of the null action at the same size; one with waits within
/// 50 ms per wait of the null action plus the waits; no more waits than stock.
fn targets(bs: &[Breakdown]) -> String {
    use std::fmt::Write as _;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "\n### Targets from the breakdown\n\nFloor: the null action at the same disk size. An action with no \
         map-update wait: wall / floor, at most 1.5. With waits: (wall − floor − the waits) / waits, at most \
         50 ms. Stock waits: what the stock driver's remote commands wait for in the same step.\n"
    );
    let _ = writeln!(
        m,
        "| action | disk | map waits (stock) | measure | bound | met |\n|---|---|---|---|---|---|"
    );
    let null =
        |size: &str| bs.iter().find(|b| b.action.starts_with("null") && b.size == size).map(|b| b.wall_ms);
    for b in bs.iter().filter(|b| !b.action.starts_with("null")) {
        let Some(floor) = null(&b.size) else { continue };
        let stock = STOCK_WAITS.iter().find(|(a, _, _)| *a == b.action);
        let waits = match stock {
            Some((_, n, _)) => format!("{} ({n})", b.map_waits),
            None => b.map_waits.to_string(),
        };
        let more = stock.is_some_and(|(_, n, _)| b.map_waits > *n);
        let (measure, bound, ok) = if b.map_waits == 0 {
            let r = b.wall_ms / floor;
            (format!("{r:.2}x the floor"), "1.5x".to_string(), r <= 1.5)
        } else {
            let waited = b.parts.get("map-update waits").copied().unwrap_or(0.0);
            let over = (b.wall_ms - floor - waited) / f64::from(b.map_waits);
            (format!("{over:.0} ms per wait"), "50 ms".to_string(), over <= 50.0)
        };
        let met = match (ok, more) {
            (true, false) => "yes".to_string(),
            (ok, more) => {
                let mut why: Vec<String> = Vec::new();
                if !ok {
                    why.push(over_the_bound(b, floor));
                }
                if more {
                    why.push("more waits than stock".into());
                }
                format!("**no**: {}", why.join(", "))
            }
        };
        let _ = writeln!(m, "| {} | {} | {waits} | {measure} | {bound} | {met} |", b.action, b.size);
    }
    let _ = writeln!(m, "\nStock's commands, step by step:\n");
    for (a, n, how) in STOCK_WAITS {
        let _ = writeln!(m, "- {a}: {n} — {how}");
    }
    m
}

/// The Markdown section: one row per action and size, the median run's parts.
pub fn markdown(bs: &[Breakdown]) -> String {
    use std::fmt::Write as _;
    let mut m = String::new();
    if bs.is_empty() {
        return m;
    }
    let _ = writeln!(m, "\n## Where the time goes\n");
    let _ = writeln!(
        m,
        "Each OpenNebula action of a VM's life (`rbdx tm|ds`, EXECUTION = local: no ssh hop), traced with \
         `RBDX_TRACE`, at four disk sizes; the null action is `rbdx one ping` (argv, one oned call, a Ceph \
         connection, the pool opened). The run of median wall time is shown, so the parts add up. \
         *Map-update waits* are snapshot creates and removes: each waits for the OSD map to move on, which \
         no client can shorten. A removal that also frees its parent's trashed snapshot (librbd removes a \
         snapshot removed while clones used it with its last clone) counts as one: `snapshot remove (freed \
         with its last clone)`; finding that out costs a traced run three header reads before the removal \
         and one after (no image open).\n"
    );
    let _ = writeln!(m, "![where the time goes](breakdown.png)\n");
    let _ = write!(m, "| action | disk | wall ms | map waits |");
    for p in PARTS {
        let _ = write!(m, " {p} |");
    }
    let _ = write!(m, " Ceph calls (count × kind) |\n|---|---|---|---|");
    for _ in PARTS {
        let _ = write!(m, "---|");
    }
    let _ = writeln!(m, "---|");
    for b in bs {
        let _ = write!(m, "| {} | {} | {:.0} | {} |", b.action, b.size, b.wall_ms, b.map_waits);
        for p in PARTS {
            let _ = write!(m, " {:.0} |", b.parts.get(*p).copied().unwrap_or(0.0));
        }
        let calls: Vec<String> = b.calls.iter().map(|(k, (n, _))| format!("{n}× {k}")).collect();
        let _ = writeln!(m, " {} |", calls.join(", "));
    }
    m + &targets(bs)
}

/// A stacked horizontal bar per action and size.
///
/// # Errors
/// Drawing errors.
pub fn chart(path: &Path, bs: &[Breakdown]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    const COLORS: [RGBColor; 7] = [
        RGBColor(127, 127, 127),
        RGBColor(148, 103, 189),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(23, 190, 207),
    ];
    let n = bs.len().max(1);
    let root = BitMapBackend::new(path, (1600, (120 + 26 * n) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let hi = bs.iter().map(|b| b.wall_ms).fold(0.0f64, f64::max) * 1.15;
    let labels: Vec<String> = bs.iter().map(|b| format!("{} · {}", b.action, b.size)).collect();
    let label = move |y: &f64| {
        let k = y.round();
        if (y - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
            labels[labels.len() - 1 - k as usize].clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&root)
        .caption("where each action's time goes (ms, the median run)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(430)
        .build_cartesian_2d(0.0..hi.max(1.0), -0.5f64..(n as f64 - 0.5))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .y_label_style(("sans-serif", 14))
        .x_desc("milliseconds")
        .draw()?;
    for (k, part) in PARTS.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bars = bs.iter().enumerate().map(|(i, b)| {
            let before: f64 = PARTS[..k].iter().map(|p| b.parts.get(*p).copied().unwrap_or(0.0)).sum();
            let v = b.parts.get(*part).copied().unwrap_or(0.0);
            let y = (n - 1 - i) as f64;
            Rectangle::new([(before, y - 0.38), (before + v, y + 0.38)], color.filled())
        });
        chart
            .draw_series(bars)?
            .label(*part)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
