//! Accuracy per capture: some datasets label whole captures (IoT Sentinel:
//! one device setup per file), and their published figures are per capture.
//! A capture's prediction is the majority of its flows' predictions, its
//! truth the majority of its flows' labels (ties: the lower class id). A
//! capture whose predictions tie has no majority and counts as wrong: were
//! the tie broken by class id, as it was, the classes with low ids would
//! win every tie and score above the others.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CaptureVote {
    /// Captures with at least one scored flow.
    pub captures: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// Flows per class id.
type Counts = BTreeMap<u32, usize>;

/// Majority vote per capture; `files[i]` is flow i's capture.
pub fn capture_vote(files: &[u32], y_true: &[u32], y_pred: &[u32]) -> CaptureVote {
    // Per capture: (true labels, predictions).
    let mut by_file: BTreeMap<u32, (Counts, Counts)> = BTreeMap::new();
    for ((&f, &t), &p) in files.iter().zip(y_true).zip(y_pred) {
        let e = by_file.entry(f).or_default();
        *e.0.entry(t).or_default() += 1;
        *e.1.entry(p).or_default() += 1;
    }
    let majority = |m: &Counts| {
        // BTreeMap iterates ids upwards; max_by keeps the last maximum, so
        // compare on (count, Reverse(id)) to let the lower id win ties.
        m.iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    };
    // The predicted class when one has more votes than every other.
    let unique_majority = |m: &Counts| {
        let top = majority(m)?;
        let n = m[&top];
        (m.values().filter(|&&c| c == n).count() == 1).then_some(top)
    };
    let correct = by_file
        .values()
        .filter(|(t, p)| unique_majority(p).is_some_and(|p| Some(p) == majority(t)))
        .count();
    let captures = by_file.len();
    CaptureVote {
        captures,
        correct,
        accuracy: if captures == 0 {
            0.0
        } else {
            correct as f64 / captures as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_per_capture_and_a_tie_is_no_majority() {
        // Capture 0: truth 1, predictions 1,1,2 -> right.
        // Capture 1: truth 0, predictions 2,0 (a tie) -> wrong.
        // Capture 2: truth 2, predictions 0 -> wrong.
        let files = [0, 0, 0, 1, 1, 2];
        let truth = [1, 1, 1, 0, 0, 2];
        let pred = [1, 2, 1, 2, 0, 0];
        let v = capture_vote(&files, &truth, &pred);
        assert_eq!((v.captures, v.correct), (3, 1));
        assert!((v.accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(capture_vote(&[], &[], &[]).captures, 0);
    }
}
