//! An evaluation's outputs: the per-class report table, the confusion matrix as
//! text / CSV / PNG / SVG, and `metrics.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::eval::confusion::{ConfusionMatrix, names};
use crate::eval::metrics::Metrics;
use crate::eval::plot;

/// The left-out classes the averaging note names; the rest it counts.
const LEFT_OUT_NAMED: usize = 12;

/// Everything an evaluation produced, plus free-form context (checkpoint,
/// data set, split, timings) that goes into `metrics.json`.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub classes: Vec<String>,
    pub confusion: ConfusionMatrix,
    pub metrics: Metrics,
    pub info: BTreeMap<String, Value>,
}

impl EvalReport {
    pub fn new(classes: Vec<String>, confusion: ConfusionMatrix) -> Self {
        let metrics = Metrics::from_confusion(&confusion);
        EvalReport {
            classes,
            confusion,
            metrics,
            info: BTreeMap::new(),
        }
    }

    /// From parallel label lists (`y_true[i]`, `y_pred[i]`).
    pub fn from_labels(classes: Vec<String>, y_true: &[u32], y_pred: &[u32]) -> Result<Self> {
        let cm = ConfusionMatrix::from_labels(classes.len(), y_true, y_pred)?;
        Ok(Self::new(classes, cm))
    }

    /// Headline figures on one line.
    pub fn summary(&self) -> String {
        let m = &self.metrics;
        format!(
            "samples {}  accuracy {:.4}  macro P {:.4}  macro R {:.4}  macro F1 {:.4}",
            m.samples, m.accuracy, m.macro_precision, m.macro_recall, m.macro_f1
        )
    }

    /// The per-capture majority vote on one line, when the report has one.
    pub fn capture_vote(&self) -> Option<String> {
        let v = self.info.get("per_capture")?;
        Some(format!(
            "per capture (majority vote of its flows): {} of {} captures, accuracy {:.4}",
            v["correct"],
            v["captures"],
            v["accuracy"].as_f64().unwrap_or(0.0)
        ))
    }

    /// Per-class table in scikit-learn's `classification_report` layout.
    pub fn classification_report(&self) -> String {
        let labels = names(&self.classes, self.confusion.n_classes);
        let w = labels
            .iter()
            .map(|l| l.len())
            .max()
            .unwrap_or(0)
            .max("weighted avg".len());
        let m = &self.metrics;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>w$}  {:>9}  {:>9}  {:>9}  {:>9}\n",
            "", "precision", "recall", "f1-score", "support"
        );
        for (name, c) in labels.iter().zip(&m.per_class) {
            let _ = writeln!(
                s,
                "{name:>w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}",
                c.precision, c.recall, c.f1, c.support
            );
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "{:>w$}  {:>9}  {:>9}  {:>9.4}  {:>9}",
            "accuracy", "", "", m.accuracy, m.samples
        );
        for (name, p, r, f) in [
            ("macro avg", m.macro_precision, m.macro_recall, m.macro_f1),
            (
                "weighted avg",
                m.weighted_precision,
                m.weighted_recall,
                m.weighted_f1,
            ),
        ] {
            let _ = writeln!(
                s,
                "{name:>w$}  {p:>9.4}  {r:>9.4}  {f:>9.4}  {:>9}",
                m.samples
            );
        }
        s.push('\n');
        s += &self.averaging_note();
        s
    }

    /// How the averages were taken, as the table alone does not say: over
    /// the classes with samples or predictions (the others, listed with
    /// zeros above, are left out) and with 0/0 counted as 0.
    pub fn averaging_note(&self) -> String {
        let labels = names(&self.classes, self.confusion.n_classes);
        let m = &self.metrics;
        let left_out: Vec<&str> = labels
            .iter()
            .zip(&m.per_class)
            .filter(|(_, c)| c.support == 0 && c.predicted == 0)
            .map(|(n, _)| n.as_str())
            .collect();
        let over = if left_out.is_empty() {
            format!("all {} classes", labels.len())
        } else {
            // Named up to a dozen: nDPI's 344 classes left out 188, a line
            // of 2,000 characters; the rest are the table's rows of zeros.
            let named = left_out.len().min(LEFT_OUT_NAMED);
            let more = match left_out.len() - named {
                0 => String::new(),
                n => format!(" and {n} more with support 0 and no predictions in the table"),
            };
            format!(
                "the {} of {} classes with samples or predictions (left out: {}{more})",
                m.classes_averaged,
                labels.len(),
                left_out[..named].join(", ")
            )
        };
        format!("Averages over {over}; a ratio 0/0 counts as 0 (scikit-learn's zero_division=0).\n")
    }

    /// The `metrics.json` document.
    pub fn to_json(&self) -> Value {
        let labels = names(&self.classes, self.confusion.n_classes);
        let m = &self.metrics;
        let per_class: Vec<Value> = labels
            .iter()
            .zip(&m.per_class)
            .map(|(name, c)| {
                json!({"class": name, "precision": c.precision, "recall": c.recall,
                       "f1": c.f1, "support": c.support, "predicted": c.predicted})
            })
            .collect();
        let matrix: Vec<&[u64]> = (0..self.confusion.n_classes)
            .map(|t| self.confusion.row(t))
            .collect();
        json!({
            "info": self.info,
            "samples": m.samples,
            "accuracy": m.accuracy,
            "macro": {"precision": m.macro_precision, "recall": m.macro_recall, "f1": m.macro_f1,
                      "classes_averaged": m.classes_averaged},
            "averaging": self.averaging_note().trim_end(),
            "weighted": {"precision": m.weighted_precision, "recall": m.weighted_recall,
                         "f1": m.weighted_f1},
            "per_class": per_class,
            "confusion_matrix": {"rows": "true class", "columns": "predicted class",
                                 "classes": labels, "counts": matrix},
        })
    }

    /// Every file an evaluation report folder can hold (`eval`: these, its
    /// routing files and training curves; `baseline`: these): what
    /// replacing a report removes, and nothing else of the folder.
    pub const FILES: [&str; 11] = [
        "metrics.json",
        "report.txt",
        "confusion.txt",
        "confusion.csv",
        "confusion.png",
        "confusion.svg",
        "routing.json",
        "routing.png",
        "routing-per-class.png",
        "curves.png",
        "curves.svg",
    ];

    /// Writes `metrics.json`, `report.txt`, `confusion.txt`, `confusion.csv`,
    /// `confusion.png` and `confusion.svg` into `dir` (created if needed);
    /// returns the paths written.
    pub fn write_all(&self, dir: &Path, title: &str) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut written = Vec::new();
        let mut put = |name: &str, text: String| -> Result<()> {
            let p = dir.join(name);
            // Whole or not at all: a killed run leaves none cut short.
            crate::atomic_file::write_whole(&p, text.as_bytes())?;
            written.push(p);
            Ok(())
        };
        put(
            "metrics.json",
            serde_json::to_string_pretty(&self.to_json())? + "\n",
        )?;
        let vote = self.capture_vote().map_or(String::new(), |v| v + "\n\n");
        // What was scored, so that the file read alone says it (the test
        // and val reports of one model were otherwise told apart by their
        // folder names only).
        let scored: Vec<String> = ["baseline", "checkpoint", "data", "split"]
            .iter()
            .filter_map(|&k| Some(format!("{k} {}", self.info.get(k)?.as_str()?)))
            .collect();
        let scored = if scored.is_empty() {
            String::new()
        } else {
            scored.join("; ") + "\n"
        };
        put(
            "report.txt",
            format!(
                "{scored}{}\n\n{vote}{}",
                self.summary(),
                self.classification_report()
            ),
        )?;
        put("confusion.txt", self.confusion.to_text(&self.classes))?;
        put("confusion.csv", self.confusion.to_csv(&self.classes))?;
        for ext in ["png", "svg"] {
            let p = dir.join(format!("confusion.{ext}"));
            plot::save_confusion(&p, &self.confusion, &self.classes, title)?;
            written.push(p);
        }
        Ok(written)
    }
}
