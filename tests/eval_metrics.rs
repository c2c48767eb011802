//! Metrics against hand computations (sklearn's definitions, zero_division=0).

use traffic_moe::eval::confusion::ConfusionMatrix;
use traffic_moe::eval::metrics::Metrics;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn metrics(n: usize, t: &[u32], p: &[u32]) -> Metrics {
    Metrics::from_confusion(&ConfusionMatrix::from_labels(n, t, p).unwrap())
}

#[test]
fn three_class_case_by_hand() {
    // confusion: t0 -> [2,1,0], t1 -> [0,1,1], t2 -> [0,0,1]
    let m = metrics(3, &[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2]);
    assert!(close(m.accuracy, 4.0 / 6.0));
    let want = [
        (1.0, 2.0 / 3.0, 0.8, 3), // P = 2/2, R = 2/3, F1 = 2PR/(P+R)
        (0.5, 0.5, 0.5, 2),       // P = 1/2, R = 1/2
        (0.5, 1.0, 2.0 / 3.0, 1), // P = 1/2, R = 1/1
    ];
    for (c, (p, r, f, s)) in want.iter().enumerate() {
        let got = &m.per_class[c];
        assert!(
            close(got.precision, *p) && close(got.recall, *r) && close(got.f1, *f),
            "{c}: {got:?}"
        );
        assert_eq!(got.support, *s);
    }
    assert!(close(m.macro_precision, 2.0 / 3.0));
    assert!(close(m.macro_recall, 13.0 / 18.0));
    assert!(close(m.macro_f1, (0.8 + 0.5 + 2.0 / 3.0) / 3.0));
    assert!(close(
        m.weighted_f1,
        (0.8 * 3.0 + 0.5 * 2.0 + 2.0 / 3.0) / 6.0
    ));
    assert_eq!(m.classes_averaged, 3);
}

#[test]
fn zero_division_follows_sklearn() {
    // sklearn: precision_recall_fscore_support([0,0,1,1], [0,2,0,0], average="macro",
    // zero_division=0) averages over unique_labels = {0,1,2}; class 3 (absent from
    // both) is left out.
    //   class 0: tp 1, predicted 3, support 2 -> P 1/3, R 1/2, F1 0.4
    //   class 1: never predicted             -> P 0 (0/0), R 0, F1 0
    //   class 2: predicted once, no support  -> P 0, R 0 (0/0), F1 0
    let m = metrics(4, &[0, 0, 1, 1], &[0, 2, 0, 0]);
    assert!(close(m.accuracy, 0.25));
    assert!(close(m.per_class[0].f1, 0.4));
    for c in 1..4 {
        let got = &m.per_class[c];
        assert_eq!((got.precision, got.recall, got.f1), (0.0, 0.0, 0.0), "{c}");
    }
    assert_eq!(m.classes_averaged, 3);
    assert!(close(m.macro_precision, 1.0 / 9.0));
    assert!(close(m.macro_recall, 1.0 / 6.0));
    assert!(close(m.macro_f1, 0.4 / 3.0));
    // weighted by support (2, 2, 0): (0.4*2 + 0 + 0) / 4
    assert!(close(m.weighted_f1, 0.2));
    assert!(close(m.weighted_recall, 0.25)); // equals accuracy, as in sklearn
}

#[test]
fn perfect_and_empty() {
    let m = metrics(2, &[0, 1, 1], &[0, 1, 1]);
    assert!(close(m.accuracy, 1.0) && close(m.macro_f1, 1.0) && close(m.weighted_f1, 1.0));
    let e = metrics(3, &[], &[]);
    assert_eq!(
        (e.samples, e.accuracy, e.macro_f1, e.classes_averaged),
        (0, 0.0, 0.0, 0)
    );
}

#[test]
fn macro_differs_from_micro_on_imbalance() {
    // 9 of class 0 all right, 1 of class 1 predicted as 0: accuracy 0.9, but
    // class 1 has F1 0, class 0 has P 0.9 R 1 F1 18/19 -> macro F1 9/19.
    let mut t = vec![0u32; 9];
    t.push(1);
    let p = vec![0u32; 10];
    let m = metrics(2, &t, &p);
    assert!(close(m.accuracy, 0.9));
    assert!(close(m.macro_f1, 9.0 / 19.0));
}

/// A capture whose flows' predictions tie has no majority: it counts as
/// wrong whichever class it belongs to. Ties went to the lower class id, so
/// class 0's captures won every tie and class 1's lost them: the same
/// 2-2 split scored 1 of 1 for the one and 0 of 1 for the other.
#[test]
fn a_tied_capture_vote_favours_no_class() {
    use traffic_moe::eval::captures::capture_vote;
    // Capture 0: class 0, predicted 0,0,1,1. Capture 1: class 1, the same.
    let files = [0, 0, 0, 0, 1, 1, 1, 1];
    let truth = [0, 0, 0, 0, 1, 1, 1, 1];
    let pred = [0, 0, 1, 1, 0, 0, 1, 1];
    let v = capture_vote(&files, &truth, &pred);
    assert_eq!((v.captures, v.correct), (2, 0), "{v:?}");
    // A real majority still counts: 3 of 4 for the true class.
    let pred = [0, 0, 0, 1, 1, 1, 1, 0];
    let v = capture_vote(&files, &truth, &pred);
    assert_eq!((v.captures, v.correct), (2, 2), "{v:?}");
}
