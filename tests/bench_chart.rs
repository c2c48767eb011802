//! `tmoe bench chart`: draws a `bench kernels --out` report, refuses to replace
//! an image without --force, and says so when a report has no GPU figures.

use std::path::Path;

use traffic_moe::cli::bench::{Args, ChartArgs, What};

fn report(path: &Path, gpu: bool) {
    let pct = |p: f64| {
        if gpu {
            serde_json::json!(p)
        } else {
            serde_json::Value::Null
        }
    };
    let r = serde_json::json!({
        "device": {"name": "Test GPU", "peak_bandwidth": 4.8e12, "mem_total": null},
        "copy_bandwidth": if gpu { serde_json::json!(4.3e12) } else { serde_json::Value::Null },
        "note": "",
        "results": [
            {"kernel": "rmsnorm_fwd", "shape": "rows 8 d 8", "executor": "cuda", "ms": 0.03,
             "bytes": 1, "gb_per_s": 3000.0, "pct_of_peak": pct(62.5), "pct_of_copy": pct(69.8)},
            {"kernel": "embed_fwd", "shape": "rows 8 d 8", "executor": "cuda", "ms": 0.04,
             "bytes": 1, "gb_per_s": 3500.0, "pct_of_peak": pct(72.9), "pct_of_copy": pct(81.4)}
        ]
    });
    std::fs::write(path, serde_json::to_string(&r).unwrap()).unwrap();
}

fn chart(json: &Path, force: bool) -> anyhow::Result<()> {
    chart_to(json, None, force)
}

fn chart_to(json: &Path, out: Option<&Path>, force: bool) -> anyhow::Result<()> {
    traffic_moe::cli::bench::run(Args {
        what: What::Chart(ChartArgs {
            json: json.to_path_buf(),
            out: out.map(Path::to_path_buf),
            force,
        }),
    })
}

/// `--out` naming the report itself (under any spelling) is refused even
/// with --force: the image replaced the report it was drawn from.
#[test]
fn chart_never_replaces_its_own_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    report(&json, true);
    let before = std::fs::read(&json).unwrap();
    let other_spelling = dir.path().join(".").join("bench.json");
    for out in [&json, &other_spelling] {
        let e = chart_to(&json, Some(out), true).unwrap_err();
        assert!(e.to_string().contains("is the report being drawn"), "{e:#}");
    }
    assert_eq!(std::fs::read(&json).unwrap(), before, "the report changed");
}

#[test]
fn chart_draws_refuses_to_overwrite_and_needs_gpu_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    report(&json, true);
    chart(&json, false).unwrap();
    let png = dir.path().join("bench.png");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 5_000,
        "suspiciously small image: {} bytes",
        bytes.len()
    );

    let e = chart(&json, false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    chart(&json, true).unwrap();

    let sim = dir.path().join("sim.json");
    report(&sim, false);
    let e = chart(&sim, false).unwrap_err();
    assert!(format!("{e:#}").contains("no GPU results"), "{e:#}");
}

/// The numbers in an SVG element's attribute list, by name.
fn attr(element: &str, name: &str) -> Option<String> {
    let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(element[start..].split('"').next()?.to_string())
}

/// The gaps above the first bar and below the last, and the bars' heights,
/// in the SVG chart of `results`. The goal line spans the whole plot, so
/// its ends are the plot's.
fn bar_layout(results: &[serde_json::Value]) -> (f64, f64, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    std::fs::write(&json, serde_json::json!({ "results": results }).to_string()).unwrap();
    let svg_path = dir.path().join("bench.svg");
    chart_to(&json, Some(&svg_path), false).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let elements: Vec<&str> = svg.split('<').collect();
    let bars: Vec<(f64, f64)> = elements
        .iter()
        .filter(|e| e.starts_with("rect") && ["#2E8B57", "#466EB4"].iter().any(|c| e.contains(c)))
        .map(|e| {
            let y: f64 = attr(e, "y").unwrap().parse().unwrap();
            let h: f64 = attr(e, "height").unwrap().parse().unwrap();
            (y, y + h)
        })
        .collect();
    assert_eq!(bars.len(), results.len(), "one bar per result");
    let goal = elements
        .iter()
        .find(|e| e.starts_with("polyline") && e.contains("#FF0000"))
        .expect("the goal line");
    let ys: Vec<f64> = attr(goal, "points")
        .unwrap()
        .split_whitespace()
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let (top, bottom) = (ys[0].min(ys[1]), ys[0].max(ys[1]));
    let above = bars.iter().map(|b| b.0).fold(f64::INFINITY, f64::min) - top;
    let below = bottom - bars.iter().map(|b| b.1).fold(0.0, f64::max);
    (above, below, bars.iter().map(|b| b.1 - b.0).collect())
}

/// The bars fill the plot from top to bottom: plotters' segmented `0..n`
/// has n + 1 slots, and the chart left an empty one (with a stray tick)
/// above the first kernel: the gap above the first bar equals the one
/// below the last.
#[test]
fn chart_bars_fill_the_plot_without_an_empty_slot() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    report(&json, true);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (above, below, _) = bar_layout(r["results"].as_array().unwrap());
    assert!(
        (above - below).abs() <= 2.0,
        "{above} px above the first bar, {below} px below the last"
    );
}

/// One bar stands in the middle of the plot, as thick as one of several:
/// the layout kept room for a second bar, an empty slot above it.
#[test]
fn one_bar_stands_in_the_middle_of_the_plot() {
    let bar = |k: &str| serde_json::json!({"kernel": k, "pct_of_peak": 50.0});
    let (above, below, one) = bar_layout(&[bar("a")]);
    assert!(
        (above - below).abs() <= 2.0,
        "{above} px above the bar, {below} px below it"
    );
    let (_, _, several) = bar_layout(&[bar("a"), bar("b"), bar("c"), bar("d")]);
    assert!(
        (one[0] - several[0]).abs() <= 2.0,
        "one bar {} px thick, one of four {} px",
        one[0],
        several[0]
    );
}

/// A report of very many results (a damaged or foreign one) is refused,
/// naming the file: its chart was a bitmap 26 pixels high per bar, and
/// 100,000 bars overflowed plotters' size arithmetic (a panic), fewer
/// allocated gigabytes.
#[test]
fn chart_refuses_a_report_of_more_bars_than_it_draws() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let results: Vec<_> = (0..100_000)
        .map(|i| serde_json::json!({"kernel": format!("k{i}"), "pct_of_peak": 50.0}))
        .collect();
    std::fs::write(&json, serde_json::json!({ "results": results }).to_string()).unwrap();
    let e = format!("{:#}", chart(&json, false).unwrap_err());
    assert!(
        e.contains("bench.json") && e.contains("100000 results") && e.contains("at most 500"),
        "{e}"
    );
    assert!(!dir.path().join("bench.png").exists());
}

fn kernels(out: &Path, filter: &str, force: bool) -> anyhow::Result<()> {
    traffic_moe::cli::bench::run(Args {
        what: What::Kernels(traffic_moe::cli::bench::KernelArgs {
            exec: Some("sim".into()),
            filter: Some(filter.into()),
            iters: 1,
            warmup: 1,
            config: None,
            batch: None,
            seq: None,
            json: false,
            out: Some(out.to_path_buf()),
            force,
        }),
    })
}

#[test]
fn bench_kernels_keeps_an_existing_report_and_refuses_a_filter_that_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kernels.json");
    std::fs::write(&out, "mine").unwrap();
    let e = kernels(&out, "rmsnorm", false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
    kernels(&out, "rmsnorm", true).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kernel"].as_str().unwrap().contains("rmsnorm"))
    );
    let e = kernels(&dir.path().join("none.json"), "no_such_kernel", false).unwrap_err();
    assert!(e.to_string().contains("no_such_kernel"), "{e}");
}

/// The kernels a `bench kernels --exec sim --filter` report lists.
fn filtered(filter: &str) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kernels.json");
    kernels(&out, filter, false)?;
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    Ok(r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kernel"].as_str().unwrap().to_string())
        .collect())
}

#[test]
fn bench_kernels_filter_takes_a_name_from_the_table() {
    // A whole name from the table selects that entry alone, also where its
    // group runs more (rmsnorm_bwd needs rmsnorm_fwd's rstd).
    assert_eq!(filtered("rmsnorm_fwd").unwrap(), ["rmsnorm_fwd"]);
    assert_eq!(filtered("rope_bwd").unwrap(), ["rope_bwd"]);
    // Part of a name: every entry that contains it, and only those (the
    // router's group also times lb_loss_fwd).
    assert_eq!(filtered("router").unwrap(), ["router_fwd", "router_bwd"]);
    // A name that is no entry's (the file moe_route.cu) says which there are.
    let e = filtered("moe_route").unwrap_err();
    assert!(format!("{e:#}").contains("router"), "{e:#}");
}

/// An image that cannot be written is an error naming it in the system's
/// words, not plotters' nested debug text
/// (`BackendError(DrawingError(ImageError(IoError(Os { .. }))))`).
#[test]
fn an_image_that_cannot_be_written_is_a_plain_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    report(&json, true);
    let out = dir.path().join("missing").join("bench.png");
    let e = format!("{:#}", chart_to(&json, Some(&out), false).unwrap_err());
    assert!(
        e.contains("missing/bench.png: No such file or directory") && !e.contains("Error("),
        "{e}"
    );
}

/// A kernel name longer than the 190 pixels the chart kept for names is
/// drawn whole: it was cut at the image's left edge.
#[test]
fn chart_draws_long_kernel_names_whole() {
    use plotters::style::{FontDesc, FontFamily, FontStyle};
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let name = "moe_combine_bwd_tokens_with_a_much_longer_name";
    let results = [serde_json::json!({"kernel": name, "pct_of_peak": 50.0})];
    std::fs::write(&json, serde_json::json!({ "results": results }).to_string()).unwrap();
    let svg_path = dir.path().join("bench.svg");
    chart_to(&json, Some(&svg_path), false).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let label = svg
        .split('<')
        .find(|e| e.starts_with("text") && e.trim_end().ends_with(name))
        .expect("the kernel's label");
    assert!(label.contains("text-anchor=\"end\""), "{label}");
    let right: f64 = attr(label, "x").unwrap().parse().unwrap();
    // plotters writes points / 1.24 as the SVG font size.
    let size = attr(label, "font-size").unwrap().parse::<f64>().unwrap() * 1.24;
    traffic_moe::eval::plot::register_fonts();
    let width = FontDesc::new(FontFamily::Name("sans-serif"), size, FontStyle::Normal)
        .box_size(name)
        .unwrap()
        .0 as f64;
    assert!(
        right - width >= 0.0,
        "the name starts at {} px",
        right - width
    );
}

/// Nothing is drawn over the bars: the goal's legend box sat in the lower
/// right corner, over the last bar and its value where that bar is long.
#[test]
fn nothing_covers_the_bars() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let results = [
        serde_json::json!({"kernel": "a", "pct_of_peak": 40.0}),
        serde_json::json!({"kernel": "b", "pct_of_peak": 150.0}),
    ];
    std::fs::write(&json, serde_json::json!({ "results": results }).to_string()).unwrap();
    let svg_path = dir.path().join("bench.svg");
    chart_to(&json, Some(&svg_path), false).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let rect = |e: &str| -> (f64, f64, f64, f64) {
        let n = |k| attr(e, k).unwrap().parse::<f64>().unwrap();
        (n("x"), n("y"), n("x") + n("width"), n("y") + n("height"))
    };
    let rects: Vec<&str> = svg.split('<').filter(|e| e.starts_with("rect")).collect();
    let bars: Vec<_> = rects
        .iter()
        .filter(|e| ["#2E8B57", "#466EB4"].iter().any(|c| e.contains(c)))
        .map(|e| rect(e))
        .collect();
    assert_eq!(bars.len(), 2);
    // Every other filled box but the background.
    for e in rects.iter().skip(1).filter(|e| !bars.contains(&rect(e))) {
        let (x0, y0, x1, y1) = rect(e);
        for b in &bars {
            let overlap = x0 < b.2 && b.0 < x1 && y0 < b.3 && b.1 < y1;
            assert!(!overlap, "<{e} lies over the bar {b:?}");
        }
    }
}
