//! The linear probe (the paper's frozen-encoder comparison): the pretrained
//! Traffic-MoE is not trained further; each flow becomes its mean-pooled
//! final hidden state (what the classifier head would read), and a
//! multinomial logistic regression (smartcore, L-BFGS) is fitted on the
//! standardised features of exactly the flows full fine-tuning sees. Its L2
//! strength is chosen by validation macro-F1, as early stopping chooses the
//! fine-tuned model's epoch.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use rayon::prelude::*;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use crate::engine::Device;
use crate::eval::predict::{Loaded, pooled_features};
use crate::eval::routing::RoutingCounts;
use crate::model::batch::Sequences;
use crate::model::checkpoint::{self, Expect};
use crate::model::{FfnKind, Model, ModelConfig};
use crate::train::finetune::{accuracy_macro_f1, training_flows};

/// L2 strengths tried (smartcore sums the loss over flows, so these are
/// mild to strong for a few hundred to a few thousand training flows).
const ALPHAS: [f64; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];

/// The frozen encoder: a pretrained checkpoint loaded without a head.
pub struct Encoder {
    model: Model,
    loaded: Loaded,
}

impl Encoder {
    /// `ckpt`'s weights on `device`; `cfg` is the architecture it was
    /// pretrained with (vocabulary included).
    pub fn open(ckpt: &Path, cfg: &ModelConfig, vocab_hash: u64, device: Device) -> Result<Self> {
        let mut cfg = cfg.clone();
        cfg.n_classes = 0;
        // Every tensor comes from the file: zeros, not random draws.
        let (model, mut params) = Model::zeroed(cfg)?;
        checkpoint::load_into(
            ckpt,
            &Expect {
                vocab_hash: Some(vocab_hash),
                ..Default::default()
            },
            &mut params,
        )
        .with_context(|| format!("loading the pretrained encoder {}", ckpt.display()))?;
        Ok(Encoder {
            model,
            loaded: Loaded::new(device, params)?,
        })
    }

    /// An encoder that was never trained (the init of `seed`): the probe's
    /// control, which tells what pretraining adds to random features.
    pub fn random(cfg: &ModelConfig, seed: u64, device: Device) -> Result<Self> {
        let mut cfg = cfg.clone();
        cfg.n_classes = 0;
        let (model, params) = Model::new(cfg, seed)?;
        Ok(Encoder {
            model,
            loaded: Loaded::new(device, params)?,
        })
    }

    /// Mean-pooled features `[idx.len(), d]`, counting the routing when
    /// asked; fails with [`crate::stop::Interrupted`] once `stop` is set
    /// (polled before each batch).
    pub fn features(
        &self,
        data: &dyn Sequences,
        idx: &[usize],
        (batch, seq_len): (usize, usize),
        routing: Option<&mut RoutingCounts>,
        stop: &AtomicBool,
    ) -> Result<Vec<f32>> {
        pooled_features(
            &self.model,
            self.loaded.weights(),
            data,
            idx,
            batch,
            seq_len,
            false,
            routing,
            Some(stop),
        )
    }

    /// Empty routing counts for this encoder (None when it is dense).
    pub fn routing_counts(&self, classes: usize) -> Option<RoutingCounts> {
        (self.model.cfg.ffn == FfnKind::Moe)
            .then(|| RoutingCounts::new(self.model.cfg.layers, self.model.cfg.n_experts, classes))
    }

    pub fn d(&self) -> usize {
        self.model.cfg.d
    }
}

/// Per-feature mean and standard deviation of the training rows.
struct Scaler {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Scaler {
    fn fit(x: &[f32], d: usize) -> Scaler {
        let n = (x.len() / d).max(1) as f64;
        let mut mean = vec![0f64; d];
        for row in x.chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64 / n;
            }
        }
        let mut var = vec![0f64; d];
        for row in x.chunks_exact(d) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2) / n;
            }
        }
        // A constant feature stays 0 rather than dividing by zero.
        let std = var.into_iter().map(|v| v.sqrt().max(1e-6)).collect();
        Scaler { mean, std }
    }

    fn matrix(&self, x: &[f32], d: usize) -> Result<DenseMatrix<f64>> {
        let rows: Vec<Vec<f64>> = x
            .chunks_exact(d)
            .map(|row| {
                row.iter()
                    .zip(self.mean.iter().zip(&self.std))
                    .map(|(&v, (m, s))| (v as f64 - m) / s)
                    .collect()
            })
            .collect();
        DenseMatrix::from_2d_vec(&rows).map_err(|e| anyhow::anyhow!("probe features: {e}"))
    }
}

/// A fitted probe and what it predicted on the test flows.
pub struct ProbeResult {
    /// The chosen L2 strength and its validation macro-F1.
    pub alpha: f64,
    pub val_macro_f1: f64,
    pub train_flows: usize,
    /// Test predictions, in the order of `test_idx` given to [`fit_and_score`].
    pub pred: Vec<u32>,
}

/// Labels of `idx` (every one labelled).
fn labels(data: &dyn Sequences, idx: &[usize]) -> Vec<u32> {
    idx.iter()
        .map(|&i| data.label(i).expect("labelled flows only"))
        .collect()
}

/// Fits the probe on the training flows a fine-tuning run with these
/// settings sees, picks the L2 strength on `val`, predicts `test_idx`.
/// Fails with [`crate::stop::Interrupted`] once `stop` is set: polled per
/// batch of features and before each strength's fit.
#[allow(clippy::too_many_arguments)]
pub fn fit_and_score(
    enc: &Encoder,
    (train, val, test): (&dyn Sequences, &dyn Sequences, &dyn Sequences),
    test_idx: &[usize],
    n_classes: usize,
    fraction: f64,
    max_per_class: Option<usize>,
    seed: u64,
    batching: (usize, usize),
    stop: &AtomicBool,
) -> Result<ProbeResult> {
    let d = enc.d();
    let train_idx = training_flows(train, fraction, max_per_class, seed);
    anyhow::ensure!(!train_idx.is_empty(), "no labelled training flows");
    let val_idx: Vec<usize> = (0..val.count())
        .filter(|&i| val.label(i).is_some())
        .collect();
    anyhow::ensure!(!val_idx.is_empty(), "no labelled validation flows");
    let xtr = enc.features(train, &train_idx, batching, None, stop)?;
    let xva = enc.features(val, &val_idx, batching, None, stop)?;
    let xte = enc.features(test, test_idx, batching, None, stop)?;
    let scaler = Scaler::fit(&xtr, d);
    let (mtr, mva, mte) = (
        scaler.matrix(&xtr, d)?,
        scaler.matrix(&xva, d)?,
        scaler.matrix(&xte, d)?,
    );
    let (ytr, yva) = (labels(train, &train_idx), labels(val, &val_idx));
    // The strengths are independent fits (smartcore's is single-threaded and
    // slow with hundreds of classes): one per core, then chosen in order.
    let fits = ALPHAS
        .par_iter()
        .map(
            |&alpha| -> Result<(f64, f64, LogisticRegression<f64, u32, _, _>)> {
                crate::stop::Interrupted::check(stop)?;
                let params = LogisticRegressionParameters::default().with_alpha(alpha);
                let lr = LogisticRegression::fit(&mtr, &ytr, params).map_err(|e| {
                    anyhow::anyhow!("fitting the linear probe (alpha {alpha}): {e}")
                })?;
                let pva: Vec<u32> = lr
                    .predict(&mva)
                    .map_err(|e| anyhow::anyhow!("linear probe prediction: {e}"))?;
                let (_, f1) = accuracy_macro_f1(&pva, &yva, n_classes)?;
                Ok((alpha, f1, lr))
            },
        )
        .collect::<Result<Vec<_>>>()?;
    let mut best: Option<(f64, f64, LogisticRegression<f64, u32, _, _>)> = None;
    for (alpha, f1, lr) in fits {
        // The first (weakest) alpha wins a tie.
        if best.as_ref().is_none_or(|(_, b, _)| f1 > *b) {
            best = Some((alpha, f1, lr));
        }
    }
    let (alpha, val_macro_f1, lr) = best.expect("at least one alpha");
    let pred: Vec<u32> = lr
        .predict(&mte)
        .map_err(|e| anyhow::anyhow!("linear probe prediction: {e}"))?;
    Ok(ProbeResult {
        alpha,
        val_macro_f1,
        train_flows: train_idx.len(),
        pred,
    })
}
