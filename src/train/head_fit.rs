//! LP-FT's first stage (Kumar et al., ICLR 2022, "Fine-Tuning can Distort
//! Pretrained Features and Underperform Out-of-Distribution"): the
//! classifier head is trained alone on the frozen encoder's mean-pooled
//! features before the whole model is fine-tuned. A fresh head sends
//! large, random gradients into the encoder during fine-tuning's first
//! steps; a head fitted first does not, and on a few flows per class a
//! short fine-tuning budget no longer has to spend itself on the head.
//!
//! The features are computed once, so the head's epochs cost almost
//! nothing (two small products a flow): it runs many of them, on the CPU
//! reference ops whatever engine fine-tunes, with AdamW (warmup + cosine)
//! on the head's four tensors only.

use anyhow::{Context, Result};

use super::optim::{AdamWConfig, Param, adamw_update};
use super::sampling::Shuffler;
use super::schedule::WarmupCosine;
use crate::autograd::{ParamStore, Tape};
use crate::backend::cpu::Cpu;
use crate::model::{IGNORE, Model};
use crate::stop::Interrupted;
use std::sync::atomic::AtomicBool;

/// The head fit's default peak learning rate: a probe on fixed features
/// takes a larger one than fine-tuning the whole model.
pub const DEFAULT_HEAD_LR: f64 = 1e-3;

/// How the head is fitted.
#[derive(Clone, Copy, Debug)]
pub struct HeadFitOpts {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate (warmup over the first 5 % of steps, then cosine
    /// to a tenth).
    pub lr: f64,
    pub seed: u64,
}

/// Trains `model`'s head (in `params`, the whole model's list) on
/// `features` (`[n, d]`, one row a flow) against `labels`, leaving every
/// other parameter as it is. Returns the mean training loss of each epoch.
pub fn fit_head(
    model: &Model,
    params: &mut [Param],
    features: &[f32],
    labels: &[u32],
    o: &HeadFitOpts,
) -> Result<Vec<f32>> {
    fit_head_until(model, params, features, labels, o, &AtomicBool::new(false))
}

/// [`fit_head`], polling `stop` before each step (thousands of epochs on
/// a large training set take minutes): once it is set, fails with
/// [`Interrupted`], the head part-fitted (its caller keeps nothing of it).
pub fn fit_head_until(
    model: &Model,
    params: &mut [Param],
    features: &[f32],
    labels: &[u32],
    o: &HeadFitOpts,
    stop: &AtomicBool,
) -> Result<Vec<f32>> {
    let d = model.cfg.d;
    let n = labels.len();
    anyhow::ensure!(
        n > 0 && features.len() == n * d,
        "head fit: {} feature values for {n} flows of width {d}",
        features.len()
    );
    anyhow::ensure!(o.batch > 0, "head fit: batch must be at least 1");
    let head = model.head_ids().context("head fit")?;
    let cfg = AdamWConfig::default();
    let mut moments: Vec<(Vec<f32>, Vec<f32>)> = head
        .iter()
        .map(|&i| {
            let len = params[i].value.len();
            (vec![0.0; len], vec![0.0; len])
        })
        .collect();
    let steps_per_epoch = n.div_ceil(o.batch);
    let total = (steps_per_epoch * o.epochs) as u64;
    let sched = WarmupCosine {
        base_lr: o.lr,
        warmup_steps: (total / 20).max(1),
        total_steps: total,
        min_lr_ratio: 0.1,
    };
    let mut order = Shuffler::new((0..n).collect(), o.seed);
    let mut history = Vec::with_capacity(o.epochs);
    let mut step = 0u64;
    for _ in 0..o.epochs {
        let mut loss_sum = 0.0f64;
        for _ in 0..steps_per_epoch {
            Interrupted::check(stop)?;
            let rows = order.next_in_pass(o.batch);
            let x: Vec<f32> = rows
                .iter()
                .flat_map(|&r| &features[r * d..(r + 1) * d])
                .copied()
                .collect();
            let y: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
            let mut tape = Tape::<f32, Cpu>::new();
            let loss = {
                let p = params.values();
                let x = tape.input(x);
                let logits = model.head_logits(&mut tape, &p, x)?;
                let (loss, value) = tape.cross_entropy(logits, &y, IGNORE)?;
                loss_sum += value as f64;
                loss
            };
            for &i in &head {
                params[i].zero_grad();
            }
            tape.backward(loss, params)?;
            step += 1;
            let lr = sched.lr_at(step - 1) as f32;
            for (&i, (m, v)) in head.iter().zip(&mut moments) {
                let p = &mut params[i];
                let wd = if p.decay { cfg.weight_decay } else { 0.0 };
                adamw_update(&mut p.value, &p.grad, m, v, lr, &cfg, wd, step as u32, 1.0);
            }
        }
        let mean = loss_sum / steps_per_epoch as f64;
        anyhow::ensure!(
            mean.is_finite(),
            "head fit: the loss is {mean}: training diverged (try a lower --lr)"
        );
        history.push(mean as f32);
    }
    Ok(history)
}
