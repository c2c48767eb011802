//! Classification metrics from a confusion matrix: accuracy, per-class
//! precision / recall / F1 / support, macro and support-weighted averages.
//!
//! Undefined ratios follow scikit-learn with `zero_division=0`: a class never
//! predicted has precision 0, a class without samples has recall 0, and F1 is 0
//! when precision + recall is 0. Averages follow sklearn's default label set
//! (`unique_labels(y_true, y_pred)`): a class with neither samples nor
//! predictions is left out of the macro and weighted averages (it would
//! otherwise drag the macro score down for a class the test split lacks),
//! while a class that was predicted but has no samples is included with 0.

use serde::{Deserialize, Serialize};

use crate::eval::confusion::ConfusionMatrix;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Samples of this class.
    pub support: u64,
    /// Samples predicted as this class.
    pub predicted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub samples: u64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    /// Classes entering the averages (with samples or predictions).
    pub classes_averaged: usize,
    pub per_class: Vec<ClassMetrics>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

pub fn class_metrics(cm: &ConfusionMatrix, c: usize) -> ClassMetrics {
    let tp = cm.get(c, c);
    let support = cm.row_sum(c);
    let predicted = cm.col_sum(c);
    let precision = ratio(tp, predicted);
    let recall = ratio(tp, support);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    ClassMetrics {
        precision,
        recall,
        f1,
        support,
        predicted,
    }
}

impl Metrics {
    pub fn from_confusion(cm: &ConfusionMatrix) -> Metrics {
        let per_class: Vec<ClassMetrics> =
            (0..cm.n_classes).map(|c| class_metrics(cm, c)).collect();
        let present: Vec<&ClassMetrics> = per_class
            .iter()
            .filter(|m| m.support > 0 || m.predicted > 0)
            .collect();
        let k = present.len();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if k == 0 {
                0.0
            } else {
                present.iter().map(|m| f(m)).sum::<f64>() / k as f64
            }
        };
        let samples = cm.total();
        let weighted = |f: fn(&ClassMetrics) -> f64| {
            if samples == 0 {
                0.0
            } else {
                present.iter().map(|m| f(m) * m.support as f64).sum::<f64>() / samples as f64
            }
        };
        Metrics {
            samples,
            accuracy: ratio(cm.correct(), samples),
            macro_precision: mean(|m| m.precision),
            macro_recall: mean(|m| m.recall),
            macro_f1: mean(|m| m.f1),
            weighted_precision: weighted(|m| m.precision),
            weighted_recall: weighted(|m| m.recall),
            weighted_f1: weighted(|m| m.f1),
            classes_averaged: k,
            per_class,
        }
    }
}
