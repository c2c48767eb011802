//! Confusion matrix: counts of (true class, predicted class), with text and CSV
//! renderings.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ConfusionError {
    #[error("{what} has {got} labels but there are {want} predictions/targets")]
    LengthMismatch {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("label {label} at position {index} is out of range for {n_classes} classes")]
    OutOfRange {
        label: u32,
        index: usize,
        n_classes: usize,
    },
}

/// Rows are true classes, columns predicted classes (sklearn's convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub n_classes: usize,
    /// Row-major `n_classes * n_classes`.
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(n_classes: usize) -> Self {
        ConfusionMatrix {
            n_classes,
            counts: vec![0; n_classes * n_classes],
        }
    }

    /// Counts pairs; refuses unequal lengths and labels `>= n_classes`.
    pub fn from_labels(
        n_classes: usize,
        y_true: &[u32],
        y_pred: &[u32],
    ) -> Result<Self, ConfusionError> {
        if y_true.len() != y_pred.len() {
            return Err(ConfusionError::LengthMismatch {
                what: "y_pred",
                got: y_pred.len(),
                want: y_true.len(),
            });
        }
        let mut cm = ConfusionMatrix::new(n_classes);
        for (index, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
            cm.add(t, p).map_err(|label| ConfusionError::OutOfRange {
                label,
                index,
                n_classes,
            })?;
        }
        Ok(cm)
    }

    /// Adds one pair; `Err(label)` names the out-of-range label.
    pub fn add(&mut self, true_class: u32, predicted: u32) -> Result<(), u32> {
        for l in [true_class, predicted] {
            if l as usize >= self.n_classes {
                return Err(l);
            }
        }
        self.counts[true_class as usize * self.n_classes + predicted as usize] += 1;
        Ok(())
    }

    pub fn get(&self, true_class: usize, predicted: usize) -> u64 {
        self.counts[true_class * self.n_classes + predicted]
    }

    pub fn row(&self, true_class: usize) -> &[u64] {
        &self.counts[true_class * self.n_classes..(true_class + 1) * self.n_classes]
    }

    /// Samples whose true class is `c` (support).
    pub fn row_sum(&self, c: usize) -> u64 {
        self.row(c).iter().sum()
    }

    /// Samples predicted as `c`.
    pub fn col_sum(&self, c: usize) -> u64 {
        (0..self.n_classes).map(|t| self.get(t, c)).sum()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn correct(&self) -> u64 {
        (0..self.n_classes).map(|c| self.get(c, c)).sum()
    }

    /// Each row divided by its sum (rows without samples stay 0).
    pub fn row_normalised(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.counts.len()];
        for t in 0..self.n_classes {
            let s = self.row_sum(t);
            if s > 0 {
                for p in 0..self.n_classes {
                    out[t * self.n_classes + p] = self.get(t, p) as f64 / s as f64;
                }
            }
        }
        out
    }

    /// Aligned text table: rows = true class, columns = predicted class.
    /// When full names would make it wider than 160 characters, columns are
    /// headed by class number and rows start with theirs.
    pub fn to_text(&self, classes: &[String]) -> String {
        let names = names(classes, self.n_classes);
        let count_w = |p: usize| {
            (0..self.n_classes)
                .map(|t| self.get(t, p).to_string().len())
                .max()
                .unwrap_or(1)
        };
        let label_w = names.iter().map(|n| n.len()).max().unwrap_or(0).max(11);
        let wide: usize = (0..self.n_classes)
            .map(|p| count_w(p).max(names[p].len()) + 2)
            .sum();
        let numbered = label_w + wide > 160;
        let heads: Vec<String> = if numbered {
            (0..self.n_classes).map(|p| p.to_string()).collect()
        } else {
            names.clone()
        };
        let rows: Vec<String> = if numbered {
            let iw = (self.n_classes.max(1) - 1).to_string().len();
            names
                .iter()
                .enumerate()
                .map(|(t, n)| format!("{t:>iw$} {n}"))
                .collect()
        } else {
            names.clone()
        };
        let label_w = rows.iter().map(|n| n.len()).max().unwrap_or(0).max(11);
        let col_w: Vec<usize> = (0..self.n_classes)
            .map(|p| count_w(p).max(heads[p].len()))
            .collect();
        let mut s = String::new();
        let _ = writeln!(s, "{:>label_w$}  predicted ->", "true \\ pred");
        let _ = write!(s, "{:>label_w$}", "");
        for (head, w) in heads.iter().zip(&col_w) {
            let _ = write!(s, "  {head:>w$}");
        }
        s.push('\n');
        for (t, row) in rows.iter().enumerate() {
            let _ = write!(s, "{row:>label_w$}");
            for (p, w) in col_w.iter().enumerate() {
                let _ = write!(s, "  {:>w$}", self.get(t, p));
            }
            s.push('\n');
        }
        s
    }

    /// The `(true, predicted, count)` cells off the diagonal with the most
    /// flows, at most `n`, largest first (ties by true, then predicted
    /// class, so the list does not depend on anything but the counts).
    pub fn top_confusions(&self, n: usize) -> Vec<(usize, usize, u64)> {
        let mut cells: Vec<(usize, usize, u64)> = (0..self.n_classes)
            .flat_map(|t| (0..self.n_classes).map(move |p| (t, p)))
            .filter(|&(t, p)| t != p)
            .map(|(t, p)| (t, p, self.get(t, p)))
            .filter(|&(_, _, c)| c > 0)
            .collect();
        cells.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        cells.truncate(n);
        cells
    }

    /// For a terminal: [`Self::to_text`] where its rows fit in `max_width`
    /// characters; otherwise (hundreds of classes make rows thousands of
    /// characters long) its size, where the whole matrix is, and the
    /// `top` most frequent confusions.
    pub fn to_terminal(
        &self,
        classes: &[String],
        max_width: usize,
        top: usize,
        whole_in: &str,
    ) -> String {
        let text = self.to_text(classes);
        let width = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        if width <= max_width {
            return text;
        }
        let names = names(classes, self.n_classes);
        let mut s = format!(
            "confusion matrix: {n} x {n} classes, rows of {width} characters: whole in {whole_in}\n",
            n = self.n_classes
        );
        let cells = self.top_confusions(top);
        if cells.is_empty() {
            s.push_str("no flow was put in another class\n");
            return s;
        }
        let _ = writeln!(
            s,
            "the {} most frequent confusions (true -> predicted: flows):",
            cells.len()
        );
        for (t, p, c) in cells {
            let _ = writeln!(
                s,
                "  {} -> {}: {c} of {}",
                names[t],
                names[p],
                self.row_sum(t)
            );
        }
        s
    }

    /// CSV with a header row of predicted classes and one row per true class.
    pub fn to_csv(&self, classes: &[String]) -> String {
        let names = names(classes, self.n_classes);
        let mut s = String::from("true\\predicted");
        for n in &names {
            s.push(',');
            s.push_str(&csv_field(n));
        }
        s.push('\n');
        for (t, name) in names.iter().enumerate() {
            s.push_str(&csv_field(name));
            for p in 0..self.n_classes {
                let _ = write!(s, ",{}", self.get(t, p));
            }
            s.push('\n');
        }
        s
    }
}

/// Class names, or `class<i>` where the list is short.
pub(crate) fn names(classes: &[String], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            classes
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class{i}"))
        })
        .collect()
}

/// Quotes a CSV field when it holds a comma, quote or newline (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_true_columns_predicted() {
        let cm = ConfusionMatrix::from_labels(3, &[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2]).unwrap();
        assert_eq!(cm.counts, vec![1, 1, 0, 0, 1, 0, 1, 0, 2]);
        assert_eq!(cm.row_sum(2), 3);
        assert_eq!(cm.col_sum(0), 2);
        assert_eq!(cm.correct(), 4);
        assert_eq!(cm.total(), 6);
        let n = cm.row_normalised();
        assert!((n[8] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            ConfusionMatrix::from_labels(2, &[0, 1], &[0]),
            Err(ConfusionError::LengthMismatch { .. })
        ));
        assert_eq!(
            ConfusionMatrix::from_labels(2, &[0, 1], &[0, 5]),
            Err(ConfusionError::OutOfRange {
                label: 5,
                index: 1,
                n_classes: 2
            })
        );
    }

    #[test]
    fn text_and_csv() {
        let cm = ConfusionMatrix::from_labels(2, &[0, 0, 1], &[0, 1, 1]).unwrap();
        let classes = vec!["web,http".to_string(), "dns".to_string()];
        assert_eq!(
            cm.to_csv(&classes),
            "true\\predicted,\"web,http\",dns\n\"web,http\",1,1\ndns,0,1\n"
        );
        let text = cm.to_text(&classes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].trim_start().starts_with("web,http") && lines[2].ends_with("1    1"));
        assert!(lines[3].trim_start().starts_with("dns") && lines[3].ends_with("0    1"));
    }

    #[test]
    fn terminal_text_lists_the_top_confusions_when_too_wide() {
        // 0 -> 1 twice, 2 -> 0 three times, 1 -> 2 once; the rest right.
        let t = [0, 0, 0, 1, 1, 2, 2, 2, 2];
        let p = [0, 1, 1, 1, 2, 0, 0, 0, 2];
        let cm = ConfusionMatrix::from_labels(3, &t, &p).unwrap();
        assert_eq!(cm.top_confusions(2), vec![(2, 0, 3), (0, 1, 2)]);
        assert_eq!(cm.top_confusions(10).len(), 3);
        let classes: Vec<String> = ["web", "dns", "mqtt"].map(String::from).to_vec();
        // Narrow enough: the matrix itself.
        assert_eq!(cm.to_terminal(&classes, 160, 2, "x"), cm.to_text(&classes));
        let short = cm.to_terminal(&classes, 10, 2, "ev/confusion.txt");
        let lines: Vec<&str> = short.lines().collect();
        assert!(
            lines[0].starts_with("confusion matrix: 3 x 3 classes")
                && lines[0].ends_with("ev/confusion.txt"),
            "{short}"
        );
        assert_eq!(
            &lines[2..],
            ["  mqtt -> web: 3 of 4", "  web -> dns: 2 of 3"],
            "{short}"
        );
        let right = ConfusionMatrix::from_labels(3, &[0, 1, 2], &[0, 1, 2]).unwrap();
        assert!(
            right
                .to_terminal(&classes, 10, 5, "x")
                .ends_with("no flow was put in another class\n")
        );
    }

    #[test]
    fn wide_text_numbers_the_columns() {
        let classes: Vec<String> = (0..12).map(|i| format!("a-long-class-name-{i}")).collect();
        let t: Vec<u32> = (0..12).collect();
        let cm = ConfusionMatrix::from_labels(12, &t, &t).unwrap();
        let text = cm.to_text(&classes);
        assert!(text.lines().all(|l| l.len() <= 160), "{text}");
        let header = text.lines().nth(1).unwrap();
        assert!(header.split_whitespace().eq((0..12).map(|i| i.to_string())));
        assert!(
            text.lines()
                .nth(13)
                .unwrap()
                .trim_start()
                .starts_with("11 a-long-class-name-11")
        );
    }
}
