//! Classic baselines on exactly the flows and splits the model sees: the
//! token shards' labels and the packet metadata written beside them
//! (`<part>.pkts`). Fitted on `train`, scored on `test` (or another part)
//! with the same report as `tmoe eval`.
//!
//! - **AppScanner** (Taylor et al., EuroS&P 2016): 54 statistics of packet
//!   sizes per direction, random forest (smartcore, 100 trees).
//! - **k-NN** on the first K packets' sizes, directions and inter-arrival
//!   times (smartcore, Euclidean distance, brute-force search: ties as in
//!   scikit-learn): re-evaluations of traffic
//!   classifiers (e.g. "When Simple Model Just Works", 2025) find that it
//!   often matches deep models, and with one neighbour it tells how often a
//!   test flow's nearest training flow has its label (a shortcut check).

pub mod features;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use smartcore::algorithm::neighbour::KNNAlgorithmName;
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::metrics::distance::euclidian::Euclidian;
use smartcore::neighbors::knn_classifier::{KNNClassifier, KNNClassifierParameters};

use crate::eval::captures::capture_vote;
use crate::eval::report::EvalReport;
use crate::stop::Interrupted;
use crate::traffic::dataset::build::load_dataset_info;
use crate::traffic::dataset::packet_meta;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Appscanner,
    Knn,
}

#[derive(Clone, Debug)]
pub struct BaselineOpts {
    pub method: Method,
    /// Part to score (`test`, `val`, `train`).
    pub split: String,
    /// Random forest trees (AppScanner).
    pub trees: u16,
    /// Neighbours (k-NN).
    pub neighbours: usize,
    pub seed: u64,
    /// Rows of the train part to fit on (the study passes the flows its
    /// models fine-tune on, capped per class); None: every training flow.
    pub train_rows: Option<Vec<usize>>,
}

impl Default for BaselineOpts {
    fn default() -> Self {
        BaselineOpts {
            method: Method::Appscanner,
            split: "test".into(),
            trees: 100,
            neighbours: 1,
            seed: 1,
            train_rows: None,
        }
    }
}

/// A fitted and scored baseline.
pub struct BaselineResult {
    pub report: EvalReport,
    pub train_flows: usize,
    pub fit_seconds: f64,
    pub predict_seconds: f64,
    pub y_pred: Vec<u32>,
}

/// Feature rows and labels of one part.
struct Part {
    x: Vec<Vec<f64>>,
    y: Vec<u32>,
    /// Each flow's capture (dataset.json's `files`).
    files: Vec<u32>,
}

fn load_part(data: &Path, part: &str, method: Method, k: usize) -> Result<Part> {
    let shard = crate::model::batch::open_part(data, part)?;
    let pkts_path = data.join(format!("{part}.pkts"));
    let meta = packet_meta::read_tagged(&pkts_path)?;
    let (id, pkts) = (meta.dataset_id, meta.rows);
    // The shard's id is dataset.json's (open_part checked it): packet
    // metadata of another build (same flow counts, another split) would
    // pair its flows' features with this shard's labels.
    anyhow::ensure!(
        id == shard.dataset_id(),
        "{}: belongs to another dataset (dataset id {id:016x}, {}'s is {:016x})",
        pkts_path.display(),
        shard.path().display(),
        shard.dataset_id()
    );
    // Another part of the same build (val.pkts copied as test.pkts, often
    // of the same flow count) would score the baselines on its flows.
    crate::traffic::dataset::shard::ensure_part(&pkts_path, meta.part, part)?;
    anyhow::ensure!(
        pkts.len() == shard.len(),
        "{}: {} flows of packet metadata for {} token rows",
        data.join(format!("{part}.pkts")).display(),
        pkts.len(),
        shard.len()
    );
    let mut y = Vec::with_capacity(pkts.len());
    let files = (0..shard.len()).map(|i| shard.meta(i).file_id).collect();
    for i in 0..shard.len() {
        y.push(
            shard
                .label(i)
                .with_context(|| format!("{}: flow {i} has no label", shard.path().display()))?,
        );
    }
    let x = pkts
        .iter()
        .map(|p| match method {
            Method::Appscanner => features::appscanner(p),
            Method::Knn => features::first_packets(p, k),
        })
        .collect();
    Ok(Part { x, y, files })
}

/// The k-NN: Euclidean distance, uniform votes, brute-force search. Among
/// equidistant training flows the earliest (lowest row) counts, as in
/// scikit-learn's `KNeighborsClassifier`; smartcore's default cover tree
/// picks one by the tree's shape instead (a duplicate feature row with
/// another label could flip a 1-NN answer). Tied votes go to the smallest
/// label, as in scikit-learn.
fn knn_params(k: usize) -> KNNClassifierParameters<f64, Euclidian<f64>> {
    KNNClassifierParameters::default()
        .with_k(k.max(1))
        .with_algorithm(KNNAlgorithmName::LinearSearch)
}

/// Predictions for `rows`, in parallel chunks: both models answer each row
/// alone, and the k-NN's brute-force search costs a pass over the training
/// flows per row.
/// Polls `stop` before each chunk (a k-NN's pass over a large test set
/// takes minutes): once set, fails with [`Interrupted`].
fn predict_in_chunks(
    rows: &[Vec<f64>],
    what: &str,
    stop: &AtomicBool,
    predict: impl Fn(&DenseMatrix<f64>) -> Result<Vec<u32>> + Sync,
) -> Result<Vec<u32>> {
    use rayon::prelude::*;
    let parts = rows
        .par_chunks(256)
        .map(|c| {
            Interrupted::check(stop)?;
            predict(&matrix(c, what)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(parts.concat())
}

fn matrix(x: &[Vec<f64>], what: &str) -> Result<DenseMatrix<f64>> {
    DenseMatrix::from_2d_vec(&x.to_vec()).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// Fits `opts.method` on the dataset's `train` part and scores `opts.split`.
pub fn run(data: &Path, opts: &BaselineOpts) -> Result<BaselineResult> {
    run_until(data, opts, &AtomicBool::new(false))
}

/// [`run`], failing with [`Interrupted`] once `stop` is set (a study's
/// Ctrl-C): polled before the fit and before each chunk of predictions
/// (the random forest's fit itself is one smartcore call).
pub fn run_until(data: &Path, opts: &BaselineOpts, stop: &AtomicBool) -> Result<BaselineResult> {
    let info = load_dataset_info(data)?;
    anyhow::ensure!(
        info.labelled && !info.classes.is_empty(),
        "{}: an unlabelled dataset (a pretraining corpus) has nothing to classify",
        data.display()
    );
    let k = info.config.tokenizer.packets;
    let mut train = load_part(data, "train", opts.method, k)?;
    if let Some(rows) = &opts.train_rows {
        if let Some(&bad) = rows.iter().find(|&&r| r >= train.y.len()) {
            anyhow::bail!(
                "{}: training row {bad} asked for, but the train part has {} flows",
                data.display(),
                train.y.len()
            );
        }
        train = Part {
            x: rows.iter().map(|&r| train.x[r].clone()).collect(),
            y: rows.iter().map(|&r| train.y[r]).collect(),
            files: rows.iter().map(|&r| train.files[r]).collect(),
        };
    }
    let test = load_part(data, &opts.split, opts.method, k)?;
    anyhow::ensure!(
        !train.y.is_empty(),
        "{}: the train part is empty",
        data.display()
    );
    anyhow::ensure!(
        !test.y.is_empty(),
        "{}: the {} part is empty",
        data.display(),
        opts.split
    );
    anyhow::ensure!(
        opts.method != Method::Knn || opts.neighbours <= train.y.len(),
        "--neighbours {} is more than the {} training flows of {}",
        opts.neighbours,
        train.y.len(),
        data.display()
    );
    let xtr = matrix(&train.x, "train")?;
    Interrupted::check(stop)?;
    let t = Instant::now();
    let (y_pred, fit_seconds, predict_seconds) = match opts.method {
        Method::Appscanner => {
            // smartcore's defaults besides the trees and seed: Gini, trees
            // grown full (no depth limit, leaves of 1), floor(sqrt(54)) = 7
            // features tried per split (scikit-learn's "sqrt"); unlike
            // scikit-learn, each tree's bootstrap redraws every class to its
            // own size and trees vote by majority, not by mean probability.
            // Tree i is seeded `seed + i`: the same seed, the same forest.
            let params = RandomForestClassifierParameters::default()
                .with_n_trees(opts.trees)
                .with_seed(opts.seed);
            let rf = RandomForestClassifier::fit(&xtr, &train.y, params)
                .map_err(|e| anyhow::anyhow!("fitting the random forest: {e}"))?;
            let fit = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let p = predict_in_chunks(&test.x, &opts.split, stop, |x| {
                rf.predict(x)
                    .map_err(|e| anyhow::anyhow!("random forest prediction: {e}"))
            })?;
            (p, fit, t.elapsed().as_secs_f64())
        }
        Method::Knn => {
            let knn = KNNClassifier::fit(&xtr, &train.y, knn_params(opts.neighbours))
                .map_err(|e| anyhow::anyhow!("fitting the k-NN: {e}"))?;
            let fit = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let p = predict_in_chunks(&test.x, &opts.split, stop, |x| {
                knn.predict(x)
                    .map_err(|e| anyhow::anyhow!("k-NN prediction: {e}"))
            })?;
            (p, fit, t.elapsed().as_secs_f64())
        }
    };
    let mut report = EvalReport::from_labels(info.classes.clone(), &test.y, &y_pred)?;
    report.info.insert(
        "per_capture".into(),
        serde_json::json!(capture_vote(&test.files, &test.y, &y_pred)),
    );
    report
        .info
        .insert("baseline".into(), serde_json::json!(opts.method));
    report
        .info
        .insert("data".into(), serde_json::json!(data.display().to_string()));
    report
        .info
        .insert("split".into(), serde_json::json!(opts.split));
    Ok(BaselineResult {
        report,
        train_flows: train.y.len(),
        fit_seconds,
        predict_seconds,
        y_pred,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knn_predict(x: &[Vec<f64>], y: &[u32], q: &[Vec<f64>], k: usize) -> Vec<u32> {
        let knn =
            KNNClassifier::fit(&matrix(x, "train").unwrap(), &y.to_vec(), knn_params(k)).unwrap();
        knn.predict(&matrix(q, "test").unwrap()).unwrap()
    }

    #[test]
    fn knn_ties_go_to_the_earliest_training_flow_as_in_sklearn() {
        // Two training flows at distance 0 with labels 5 and 3: the first
        // (row 1) decides, as scikit-learn's KNeighborsClassifier answers
        // (the cover tree answered 3).
        let x = [vec![1.0], vec![0.0], vec![0.0]];
        assert_eq!(knn_predict(&x, &[9, 5, 3], &[vec![0.0]], 1), [5]);
        assert_eq!(knn_predict(&x, &[9, 3, 5], &[vec![0.0]], 1), [3]);
        // Equidistant on either side: the earlier row.
        let x = [vec![1.0], vec![-1.0], vec![5.0]];
        assert_eq!(knn_predict(&x, &[5, 3, 9], &[vec![0.0]], 1), [5]);
        // Tied vote (one each of 4 and 2): the smaller label.
        let x = [vec![0.0], vec![1.0], vec![5.0], vec![6.0]];
        assert_eq!(knn_predict(&x, &[4, 2, 9, 9], &[vec![0.5]], 2), [2]);
    }

    #[test]
    fn predictions_in_chunks_equal_one_call_in_order() {
        // 1,000 queries: several chunks, the last a partial one.
        let point = |i: usize| vec![(i * 37 % 101) as f64, (i * 11 % 13) as f64];
        let x: Vec<Vec<f64>> = (0..60).map(point).collect();
        let y: Vec<u32> = (0..60).map(|i| (i % 7) as u32).collect();
        let q: Vec<Vec<f64>> = (0..1000).map(|i| point(i * 3 + 1)).collect();
        let knn = KNNClassifier::fit(&matrix(&x, "train").unwrap(), &y, knn_params(3)).unwrap();
        let whole = knn.predict(&matrix(&q, "test").unwrap()).unwrap();
        let go = AtomicBool::new(false);
        let chunked = predict_in_chunks(&q, "test", &go, |m| {
            knn.predict(m).map_err(|e| anyhow::anyhow!("{e}"))
        })
        .unwrap();
        assert_eq!(chunked, whole);
        assert!(whole.iter().any(|&c| c != whole[0]), "more than one class");
        // Stopped (a study's Ctrl-C): no chunk is predicted.
        let stop = AtomicBool::new(true);
        let e = predict_in_chunks(&q, "test", &stop, |_| -> Result<Vec<u32>> {
            panic!("a chunk was predicted after the stop")
        })
        .unwrap_err();
        assert!(e.is::<Interrupted>(), "{e:#}");
    }
}
