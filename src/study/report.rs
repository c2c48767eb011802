//! The study's report: per row, mean +- std over seeds of accuracy and macro
//! P/R/F1 (`report.md`, `report.json`, `macro-f1.png`), and the shortcut
//! checks.

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::json;
use std::sync::atomic::AtomicBool;

use super::{Row, RunResult, StudyOpts, StudySummary};
use crate::baseline::{BaselineOpts, Method};
use crate::eval::plot::{Panel, Series, YAxis, bar_end, bar_margin, bar_slots, save_curves};
use crate::traffic::dataset::build::load_dataset_info;
use crate::traffic::tokens::features::View;

/// The report's files at the top of a study folder, replaced at every call
/// (a folder that is not a study's and holds one of them is refused:
/// `settings::refuse_others_report_files`).
pub(crate) const REPORT_MD: &str = "report.md";
const REPORT_JSON: &str = "report.json";
const MACRO_F1_PNG: &str = "macro-f1.png";
const FEW_SHOT_PNG: &str = "few-shot.png";
const BUDGET_PNG: &str = "budget.png";
pub(super) const REPORT_FILES: [&str; 5] = [
    REPORT_MD,
    REPORT_JSON,
    MACRO_F1_PNG,
    FEW_SHOT_PNG,
    BUDGET_PNG,
];

/// Mean and (sample) standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `mean ± std` to `digits` places over `n` values; the mean alone for one
/// value, whose spread is unknown (not 0).
fn mean_pm(n: usize, (m, sd): (f64, f64), digits: usize) -> String {
    if n > 1 {
        format!("{m:.digits$} ± {sd:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// `[mean, std]` over `n` values for `report.json`; the std is null for one
/// value, whose spread is unknown (as `report.md` shows the mean alone), not 0.
fn pair(n: usize, (m, sd): (f64, f64)) -> serde_json::Value {
    if n > 1 {
        json!([m, sd])
    } else {
        json!([m, null])
    }
}

/// A macro-F1 cell over the runs it has: `mean ± std`, the mean alone for
/// one run, `-` for none (not a mean of nothing printed as 0).
fn f1_cell(v: &[f64]) -> String {
    match v.len() {
        0 => "-".to_string(),
        n => mean_pm(n, mean_std(v), 3),
    }
}

struct Line {
    row: Row,
    seeds: usize,
    acc: (f64, f64),
    p: (f64, f64),
    r: (f64, f64),
    f1: (f64, f64),
    /// Per-capture accuracy over the seeds that recorded it, and how many
    /// did.
    capture: Option<((f64, f64), usize)>,
}

fn lines(results: &[RunResult], rows: &[Row]) -> Vec<Line> {
    rows.iter()
        .filter_map(|&row| {
            let rs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.row == row && r.fraction >= 1.0)
                .collect();
            if rs.is_empty() {
                return None;
            }
            let col =
                |f: fn(&RunResult) -> f64| mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            Some(Line {
                row,
                seeds: rs.len(),
                acc: col(|r| r.accuracy),
                p: col(|r| r.macro_precision),
                r: col(|r| r.macro_recall),
                f1: col(|r| r.macro_f1),
                capture: {
                    let v: Vec<f64> = rs.iter().filter_map(|r| r.per_capture).collect();
                    (!v.is_empty()).then(|| (mean_std(&v), v.len()))
                },
            })
        })
        .collect()
}

/// `1, 2, 3`, not Debug's `[1, 2, 3]`.
fn seed_list(seeds: &[u64]) -> String {
    let shown: Vec<String> = seeds.iter().map(u64::to_string).collect();
    shown.join(", ")
}

pub fn write(o: &StudyOpts, s: &StudySummary, stop: &AtomicBool) -> Result<()> {
    let lines = lines(&s.results, &o.rows);
    let mut md = String::from("# Study\n\n");
    md += &format!(
        "Captures: {}; vocabulary {}; split by {}; sequence {}; identifiers masked: {}; seeds {}; model {} ({} layers, d {}); pretraining {} steps; fine-tuning at most {} epoch{}{}.\n\n",
        o.captures_shown(),
        o.vocab_file
            .as_ref()
            .map_or("learnt on the studied flows".to_string(), |v| v
                .display()
                .to_string()),
        o.split_by,
        o.seq_len,
        o.mask_identifiers,
        seed_list(&o.seeds),
        o.cfg.name,
        o.cfg.layers,
        o.cfg.d,
        o.pretrain_steps,
        o.epochs,
        if o.epochs == 1 { "" } else { "s" },
        o.max_per_class.map_or(String::new(), |c| format!(
            ", at most {c} training flows per class"
        ))
    );
    md += "| row | seeds | accuracy | macro P | macro R | macro F1 | per capture |\n|---|---|---|---|---|---|---|\n";
    for l in &lines {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            l.row.name(),
            l.seeds,
            mean_pm(l.seeds, l.acc, 3),
            mean_pm(l.seeds, l.p, 3),
            mean_pm(l.seeds, l.r, 3),
            mean_pm(l.seeds, l.f1, 3),
            l.capture.map_or("-".into(), |(c, n)| mean_pm(n, c, 3))
        );
    }
    md += "\nMean ± sample standard deviation (n - 1) over the seeds, here and below (the mean alone for one seed); every seed scores the same train/val/test split (a seed sets initialisation, training order and the flows subsampled), so the spread leaves out the split's. Per capture: a capture's flows vote (majority) for its class.\n";
    // Built again if it is gone: every run can be found done without it
    // (a folder cleaned to save disk, or runs copied from a committed study).
    let full = super::dataset(o, View::Full, stop)?;
    let info = load_dataset_info(&full)?;
    // The shortcut check's 1-NN, fitted like the k-NN row.
    // Stopped (`stop`): fails with `Interrupted` before any file is written.
    let nn = crate::baseline::run_until(
        &full,
        &BaselineOpts {
            method: Method::Knn,
            neighbours: 1,
            ..BaselineOpts::default()
        },
        stop,
    )?;
    // The classic rows fit on the models' flows; the shortcut check below
    // on all of them: say which is which beside a header that names the cap.
    let classic = lines
        .iter()
        .any(|l| matches!(l.row, Row::Appscanner | Row::Knn));
    if let (Some(c), true) = (o.max_per_class, classic) {
        md += &format!(
            "The appscanner and knn rows fit on the flows fine-tuning and the probe see (at most {c} per class, drawn with each seed); the shortcut check's 1-NN below fits on all {} training flows.\n",
            nn.train_flows
        );
    }
    // Shortcut checks.
    let f1_of = |row: Row| lines.iter().find(|l| l.row == row).map(|l| l.f1.0);
    md += "\n## Shortcut checks\n\n";
    md += &format!(
        "- Exact duplicate flows (same tokens and label) dropped before the split: {} (so none cross splits).\n",
        info.dropped.duplicates
    );
    md += &format!(
        "- Test flows whose nearest training flow (1-NN on the first packets' sizes, directions, gaps) has their label: {:.1} % of {}.\n",
        nn.report.metrics.accuracy * 100.0,
        nn.report.metrics.samples
    );
    // The header and payload rows train from scratch: `moe-scratch` is
    // the full view they are compared with.
    let opt = |v: Option<f64>| v.map_or("not run".to_string(), |v| format!("{v:.3}"));
    match (f1_of(Row::MoeHeader), f1_of(Row::MoePayload)) {
        (None, None) => {
            md += "- Header only vs payload only: not run (add moe-header,moe-payload to --rows).\n"
        }
        (h, p) => {
            md += &format!(
                "- Macro-F1 from scratch, header only {} vs payload only {} (full, moe-scratch: {}).\n",
                opt(h),
                opt(p),
                opt(f1_of(Row::MoeScratch))
            )
        }
    }
    md += &format!(
        "\nThis call ran {} runs and found {} done, in {:.0} s.\n",
        s.ran, s.skipped, s.seconds
    );
    let few = few_shot(o, &s.results)?;
    md += &few;
    let (heat_md, heat_json) = heatmaps(o)?;
    md += &heat_md;
    if let Some(b) = &s.budget {
        md += &budget_section(o, b)?;
    }
    let put = |name: &str, text: String| put(&o.out.join(name), &text);
    put(REPORT_MD, md)?;
    let j = json!({
        "rows": lines.iter().map(|l| json!({
            "row": l.row.name(), "seeds": l.seeds,
            "accuracy": pair(l.seeds, l.acc), "macro_precision": pair(l.seeds, l.p),
            "macro_recall": pair(l.seeds, l.r), "macro_f1": pair(l.seeds, l.f1),
            "per_capture": l.capture.map(|(c, n)| pair(n, c)),
        })).collect::<Vec<_>>(),
        "routing": heat_json,
        "budget": s.budget,
        "runs": s.results,
        "shortcuts": {
            "duplicates_dropped": info.dropped.duplicates,
            "nearest_neighbour_same_label": nn.report.metrics.accuracy,
        },
        "seconds_this_call": s.seconds,
    });
    put(REPORT_JSON, serde_json::to_string_pretty(&j)? + "\n")?;
    bars(&o.out.join(MACRO_F1_PNG), &lines)
}

/// The few-shot table (macro-F1 against the share of training flows,
/// pretrained vs from scratch) and `few-shot.png`; empty without fractions.
fn few_shot(o: &StudyOpts, results: &[RunResult]) -> Result<String> {
    let mut fractions: Vec<f64> = results
        .iter()
        .filter(|r| r.fraction < 1.0)
        .map(|r| r.fraction)
        .collect();
    if fractions.is_empty() {
        return Ok(String::new());
    }
    fractions.push(1.0);
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    let cell = |row: Row, f: f64| -> Option<((f64, f64), usize)> {
        let v: Vec<f64> = results
            .iter()
            .filter(|r| r.row == row && (r.fraction - f).abs() < 1e-12)
            .map(|r| r.macro_f1)
            .collect();
        (!v.is_empty()).then(|| (mean_std(&v), v.len()))
    };
    let mut md = String::from(
        "\n## Few-shot\n\nTest macro-F1 against the share of training flows fine-tuned on:\n\n| fraction | moe-pretrained | moe-scratch |\n|---|---|---|\n",
    );
    let show = |c: Option<((f64, f64), usize)>| c.map_or("-".into(), |(c, n)| mean_pm(n, c, 3));
    let mut series = Vec::new();
    for row in [Row::MoePretrained, Row::MoeScratch] {
        series.push(Series {
            label: row.name().into(),
            points: fractions
                .iter()
                .filter_map(|&f| cell(row, f).map(|((m, _), _)| (f * 100.0, m)))
                .collect(),
        });
    }
    for &f in &fractions {
        md += &format!(
            "| {} % | {} | {} |\n",
            f * 100.0,
            show(cell(Row::MoePretrained, f)),
            show(cell(Row::MoeScratch, f))
        );
    }
    save_curves(
        &o.out.join(FEW_SHOT_PNG),
        &[Panel {
            title: "few-shot: test macro-F1 (mean of seeds)".into(),
            x_label: "% of training flows".into(),
            y_label: "macro-F1".into(),
            series,
            // A score in [0, 1] on its whole scale: pretrained against
            // scratch at 0.93 and 0.95 filled a fitted panel's height (the
            // table gives the figures).
            y_axis: YAxis::Unit,
        }],
    )?;
    Ok(md)
}

/// The pretraining-budget section and `budget.png`.
fn budget_section(o: &StudyOpts, b: &super::budget::Budget) -> Result<String> {
    // Each cell over the runs it has (a spread only where there are two).
    let f1s = |rs: Vec<&RunResult>| rs.iter().map(|r| r.macro_f1).collect::<Vec<_>>();
    let pre = |steps: u64, f: f64| {
        f1s(b
            .pretrained
            .iter()
            .filter(|(s, r)| *s == steps && (r.fraction - f).abs() < 1e-12)
            .map(|(_, r)| r)
            .collect())
    };
    let scratch = |f: f64| {
        f1s(b
            .scratch
            .iter()
            .filter(|r| (r.fraction - f).abs() < 1e-12)
            .collect())
    };
    let pct = |f: f64| format!("{} %", f * 100.0);
    let mut md = String::from("\n## Pretraining budget\n\n");
    md += &format!(
        "One pretraining run (seed {}, warmup then cosine to {} steps, batch {}, sequence {}) on {} flows: the training split{}; weights kept at each budget. Held-out LM loss on the validation flows (nats per next token; {} targets) beside count models fitted on the same corpus: unigram {:.3}, **bigram table {:.3}**. Fine-tuned from each budget vs from scratch, macro-F1 over seeds {}:\n\n",
        b.pretrain_seed,
        b.points.last().map_or(0, |p| p.steps),
        o.batch,
        o.seq_len,
        b.baseline.corpus_flows,
        if b.extra.is_empty() {
            String::new()
        } else {
            format!(
                " and the unlabelled captures in {}",
                b.extra
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        b.baseline.targets,
        b.baseline.unigram,
        b.baseline.bigram,
        seed_list(&o.seeds)
    );
    md += "| steps | tokens | wall (s) | held-out LM loss |";
    for &f in &b.fractions {
        md += &format!(" pretrained, {} |", pct(f));
    }
    md += "\n|---|---|---|---|";
    for _ in &b.fractions {
        md += "---|";
    }
    md += "\n";
    for p in &b.points {
        md += &format!(
            "| {} | {} | {:.0} | {:.3} |",
            p.steps, p.tokens, p.seconds, p.heldout_loss
        );
        for &f in &b.fractions {
            md += &format!(" {} |", f1_cell(&pre(p.steps, f)));
        }
        md += "\n";
    }
    md += "| from scratch | 0 | 0 | - |";
    for &f in &b.fractions {
        md += &format!(" {} |", f1_cell(&scratch(f)));
    }
    md += "\n\n";
    // Paired by seed: pretrained minus scratch with the same seed (one split).
    let diffs = |steps: u64, f: f64| -> Vec<f64> {
        b.pretrained
            .iter()
            .filter(|(s, r)| *s == steps && (r.fraction - f).abs() < 1e-12)
            .filter_map(|(_, r)| {
                b.scratch
                    .iter()
                    .find(|x| x.seed == r.seed && (x.fraction - f).abs() < 1e-12)
                    .map(|x| r.macro_f1 - x.macro_f1)
            })
            .collect()
    };
    for &f in &b.fractions {
        let mut cells = Vec::new();
        let mut wins = Vec::new();
        let mut paired = usize::MAX;
        for p in &b.points {
            let d = diffs(p.steps, f);
            paired = paired.min(d.len());
            let (m, sd) = mean_std(&d);
            let se = sd / (d.len().max(1) as f64).sqrt();
            if d.len() > 1 {
                cells.push(format!("{m:+.3} ± {sd:.3} at {}", p.steps));
            } else {
                cells.push(format!("{m:+.3} at {}", p.steps));
            }
            if m > 0.0 && m > se {
                wins.push(p.steps.to_string());
            }
        }
        // One seed has no spread: a standard error needs two.
        let verdict = if paired < 2 {
            "no standard error with one seed (run --seeds with two or more)".to_string()
        } else if wins.is_empty() {
            "above by more than one standard error at no budget up to the largest".to_string()
        } else {
            format!(
                "above by more than one standard error at {} steps",
                wins.join(", ")
            )
        };
        md += &format!(
            "- {} of the training flows, pretrained minus scratch (per seed, mean ± std): {}; {verdict}.\n",
            pct(f),
            cells.join(", "),
        );
    }
    let below: Vec<String> = b
        .points
        .iter()
        .filter(|p| p.heldout_loss < b.baseline.bigram)
        .map(|p| p.steps.to_string())
        .collect();
    md += &format!(
        "- Held-out LM loss below the bigram table at: {}.\n\n![budget curve](budget.png)\n",
        if below.is_empty() {
            "no budget".to_string()
        } else {
            format!("{} steps", below.join(", "))
        }
    );
    let steps: Vec<f64> = b.points.iter().map(|p| p.steps as f64).collect();
    let flat = |label: &str, v: f64| Series {
        label: label.into(),
        points: steps.iter().map(|&x| (x, v)).collect(),
    };
    let mut f1_series = Vec::new();
    for &f in &b.fractions {
        f1_series.push(Series {
            label: format!("pretrained, {}", pct(f)),
            points: b
                .points
                .iter()
                .map(|p| (p.steps as f64, pre(p.steps, f)))
                .filter(|(_, v)| !v.is_empty())
                .map(|(x, v)| (x, mean_std(&v).0))
                .collect(),
        });
        let s = scratch(f);
        if !s.is_empty() {
            f1_series.push(flat(&format!("scratch, {}", pct(f)), mean_std(&s).0));
        }
    }
    save_curves(
        &o.out.join(BUDGET_PNG),
        &[
            Panel {
                title: "held-out next-token loss".into(),
                x_label: "pretraining steps".into(),
                y_label: "nats".into(),
                // From zero, a perfect prediction's loss: the model is
                // read against the bigram and unigram tables by ratio.
                y_axis: YAxis::FromZero,
                series: vec![
                    Series {
                        label: "Traffic-MoE".into(),
                        points: b
                            .points
                            .iter()
                            .map(|p| (p.steps as f64, p.heldout_loss))
                            .collect(),
                    },
                    flat("bigram table", b.baseline.bigram),
                    flat("unigram", b.baseline.unigram),
                ],
            },
            Panel {
                title: "fine-tuned test macro-F1 (mean of seeds)".into(),
                x_label: "pretraining steps".into(),
                y_label: "macro-F1".into(),
                series: f1_series,
                // A score in [0, 1], as few-shot.png draws it.
                y_axis: YAxis::Unit,
            },
        ],
    )?;
    Ok(md)
}

/// The expert heatmaps section: per stage (after pretraining, after
/// fine-tuning), each MoE layer's load balance (largest share over 1/N) and
/// routing entropy, mean over the seeds whose routing was counted, and the
/// first such seed's images.
fn heatmaps(o: &StudyOpts) -> Result<(String, serde_json::Value)> {
    let stages = [
        ("pretrained", "after pretraining"),
        ("finetuned", "after fine-tuning"),
    ];
    let mut md = String::new();
    let mut out = serde_json::Map::new();
    for (stage, title) in stages {
        let mut per_seed = Vec::new();
        for &seed in &o.seeds {
            let p = super::routing_dir(&o.out, seed, stage).join("routing.json");
            if let Ok(text) = std::fs::read_to_string(&p) {
                let j: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not routing counts", p.display()))?;
                per_seed.push((seed, j));
            }
        }
        let Some((first, j0)) = per_seed.first() else {
            continue;
        };
        if md.is_empty() {
            md += "\n## Expert routing (Figures 9-10)\n\nShare of the test flows' real tokens each expert receives, per MoE layer, for the pretrained Traffic-MoE; load balance is the largest share over the uniform 1/N (1 = perfectly even), entropy in bits (at most log2 N = ";
            md += &format!(
                "{:.2}). Mean over {} seed(s).\n",
                j0["max_entropy_bits"].as_f64().unwrap_or(0.0),
                per_seed.len()
            );
        }
        // The file's own layers bound the table: its `layers` number alone
        // (10^12 in a damaged file) ran this loop for ever.
        let layers = j0["overall"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            j0["layers"].as_u64() == Some(layers as u64),
            "{}: not routing counts (`layers` is {}, but `overall` holds {layers} layers)",
            super::routing_dir(&o.out, *first, stage)
                .join("routing.json")
                .display(),
            j0["layers"]
        );
        let stat = |l: usize, key: &str| -> Vec<f64> {
            per_seed
                .iter()
                .filter_map(|(_, j)| j["overall"][l][key].as_f64())
                .collect()
        };
        md +=
            &format!("\n### {title}\n\n| layer | load balance | entropy (bits) |\n|---|---|---|\n");
        let mut rows = Vec::new();
        for l in 0..layers {
            let (lb, en) = (
                mean_std(&stat(l, "max_over_uniform")),
                mean_std(&stat(l, "entropy_bits")),
            );
            md += &format!(
                "| {l} | {} | {} |\n",
                mean_pm(per_seed.len(), lb, 2),
                mean_pm(per_seed.len(), en, 2)
            );
            rows.push(json!({"layer": l, "load_balance": pair(per_seed.len(), lb),
                       "entropy_bits": pair(per_seed.len(), en)}));
        }
        let rel = format!("routing/s{first}/{stage}");
        md += &format!(
            "\n![{title}, seed {first}]({rel}/routing.png)\n\nPer class: [{rel}/routing-per-class.png]({rel}/routing-per-class.png), counts in [{rel}/routing.json]({rel}/routing.json).\n"
        );
        out.insert(
            stage.into(),
            json!({"seeds": per_seed.iter().map(|(s, _)| s).collect::<Vec<_>>(), "layers": rows}),
        );
    }
    Ok((md, serde_json::Value::Object(out)))
}

/// Macro-F1 per row, mean with a +-1 std whisker (`.svg` -> SVG, otherwise
/// PNG).
fn bars(path: &std::path::Path, lines: &[Line]) -> Result<()> {
    let file = crate::eval::plot::ImageFile::create(path)?;
    crate::eval::plot::register_fonts();
    // Wide enough for the caption, whatever the number of bars.
    let size = ((120 + 90 * lines.len() as u32).max(440), 420);
    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, plotters::coord::Shift>,
        lines: &[Line],
    ) -> std::result::Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let n = lines.len();
        let mut chart = ChartBuilder::on(&root)
            .caption("test macro-F1 (mean ± std over seeds)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(60)
            .build_cartesian_2d(bar_slots(n).into_segmented(), 0f64..1f64)?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => {
                lines.get(*i).map_or(String::new(), |l| l.row.name().into())
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&name)
            .x_label_style(("sans-serif", 11))
            .y_desc("test macro-F1")
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        // At most 74 pixels wide, as where the image grows by 90 a bar (a
        // lone bar in the 440-pixel image's minimum width filled it), and
        // a gap between neighbours.
        let (xs, _) = chart.plotting_area().get_pixel_range();
        let margin = bar_margin((xs.end - xs.start) / n.max(1) as i32, 74, 8);
        chart.draw_series(lines.iter().enumerate().map(|(i, l)| {
            let b = bar_end(i, n);
            let a = SegmentValue::Exact(i);
            let mut bar = Rectangle::new([(a, 0.0), (b, l.f1.0)], BLUE.mix(0.5).filled());
            bar.set_margin(0, 0, margin, margin);
            bar
        }))?;
        chart.draw_series(lines.iter().enumerate().map(|(i, l)| {
            let x = SegmentValue::CenterOf(i);
            let (lo, hi) = ((l.f1.0 - l.f1.1).max(0.0), (l.f1.0 + l.f1.1).min(1.0));
            PathElement::new(vec![(x.clone(), lo), (x, hi)], BLACK.stroke_width(2))
        }))?;
        root.present()?;
        Ok(())
    }
    if path.extension().is_some_and(|e| e == "svg") {
        draw(
            SVGBackend::new(file.target(), size).into_drawing_area(),
            lines,
        )
    } else {
        draw(
            BitMapBackend::new(file.target(), size).into_drawing_area(),
            lines,
        )
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("writing {}", path.display()))
    .and_then(|()| file.keep())
}

/// Writes a report file whole: each call replaces the report, and one
/// killed (or stopped by a full disk) while writing it in place left the
/// last call's report cut short, with nothing to say so.
fn put(path: &std::path::Path, text: &str) -> Result<()> {
    crate::atomic_file::write_whole(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::{Line, Row, bars, f1_cell, put};

    /// Set in the child that [`a_killed_report_write_keeps_the_report`]
    /// starts: the report it writes.
    const CHILD: &str = "TMOE_STUDY_REPORT_CHILD";

    /// A call killed while it replaced `report.md` (here by SIGXFSZ:
    /// `ulimit -f` caps the size of a file it writes, as a full disk would)
    /// left the report cut short; now the last call's report stays whole.
    #[test]
    fn a_killed_report_write_keeps_the_report() {
        let row = |i: usize| format!("| moe-pretrained {i} | 0.901 +- 0.012 | 0.887 +- 0.020 |\n");
        if let Some(path) = std::env::var_os(CHILD) {
            let text: String = (0..100).map(row).collect();
            let _ = put(std::path::Path::new(&path), &text);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.md");
        let earlier: String = (0..10).map(row).collect();
        put(&report, &earlier).unwrap();
        let status = crate::testing::rerun_with_file_limit(
            "study::report::tests::a_killed_report_write_keeps_the_report",
            CHILD,
            report.as_os_str(),
        )
        .unwrap();
        assert!(!status.success(), "the child was not stopped: {status:?}");
        assert_eq!(
            std::fs::read_to_string(&report).unwrap(),
            earlier,
            "the report was cut"
        );
    }

    #[test]
    fn bars_draw_one_row_and_several() {
        let line = |row| Line {
            row,
            seeds: 1,
            acc: (0.9, 0.0),
            p: (0.9, 0.0),
            r: (0.9, 0.0),
            f1: (0.8, 0.05),
            capture: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            Row::MoePretrained,
            Row::MoeScratch,
            Row::DensePretrained,
            Row::Knn,
        ];
        for n in [1, 4] {
            let lines: Vec<Line> = rows[..n].iter().map(|&r| line(r)).collect();
            let p = dir.path().join(format!("bars-{n}.png"));
            bars(&p, &lines).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        }
    }

    /// The numbers of an SVG element's attribute, by name.
    fn attr(element: &str, name: &str) -> Option<f64> {
        let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
        element[start..].split('"').next()?.parse().ok()
    }

    /// An SVG element's text.
    fn body(element: &str) -> &str {
        element.split_once('>').map_or("", |(_, t)| t.trim())
    }

    /// One bar stands in the middle of the plot under its name, as wide as
    /// one of several: the layout kept a second, empty slot to its right
    /// (the bar and its name in the left half). The y axis names the
    /// metric.
    #[test]
    fn one_bar_stands_in_the_middle_and_the_y_axis_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut widths = Vec::new();
        for n in [1, 6] {
            let lines: Vec<Line> = (0..n)
                .map(|_| Line {
                    row: Row::MoePretrained,
                    seeds: 2,
                    acc: (0.9, 0.0),
                    p: (0.9, 0.0),
                    r: (0.9, 0.0),
                    f1: (0.8, 0.05),
                    capture: None,
                })
                .collect();
            let p = dir.path().join(format!("bars-{n}.svg"));
            bars(&p, &lines).unwrap();
            let svg = std::fs::read_to_string(&p).unwrap();
            let elements: Vec<&str> = svg.split('<').collect();
            let bar = elements
                .iter()
                .find(|e| e.starts_with("rect") && e.contains("#0000FF"))
                .expect("a bar");
            let (x, w) = (attr(bar, "x").unwrap(), attr(bar, "width").unwrap());
            widths.push(w);
            // The plot's frame: the horizontal grid lines span it.
            let grid = elements
                .iter()
                .filter(|e| e.starts_with("line") || e.starts_with("polyline"))
                .filter_map(|e| {
                    let (x1, x2) = (attr(e, "x1")?, attr(e, "x2")?);
                    (attr(e, "y1")? == attr(e, "y2")?).then_some((x1.min(x2), x1.max(x2)))
                })
                .fold((f64::INFINITY, 0.0f64), |a, b| (a.0.min(b.0), a.1.max(b.1)));
            if n == 1 {
                let (left, right) = (x - grid.0, grid.1 - (x + w));
                assert!(
                    (left - right).abs() <= 2.0,
                    "{left} px left of the bar, {right} px right of it"
                );
                let label = elements
                    .iter()
                    .find(|e| e.starts_with("text") && body(e) == "moe-pretrained")
                    .expect("the row's name");
                let centre = attr(label, "x").unwrap();
                assert!(
                    (centre - (x + w / 2.0)).abs() <= 2.0,
                    "name at {centre}, bar at {x}+{w}"
                );
            }
            assert!(
                elements
                    .iter()
                    .any(|e| e.starts_with("text") && body(e) == "test macro-F1"),
                "no y-axis label"
            );
        }
        assert!(
            (widths[0] - widths[1]).abs() <= 2.0,
            "bar widths {widths:?}"
        );
    }

    #[test]
    fn a_cell_shows_the_spread_only_of_the_runs_it_has() {
        assert_eq!(f1_cell(&[]), "-");
        assert_eq!(f1_cell(&[0.5]), "0.500");
        assert_eq!(f1_cell(&[0.5, 0.7]), "0.600 ± 0.141");
    }
}
