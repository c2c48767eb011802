//! Batched inference of a classifier: class probabilities per sequence.

use anyhow::Result;

use crate::autograd::{ParamStore, Tape};
use crate::backend::cpu_bf16::{Bf16Params, CpuBf16};
use crate::backend::gpu::engine::{Gpu, GpuParams};
use crate::engine::{Backend, Device, Param, Precision};
use crate::eval::routing::RoutingCounts;
use crate::model::batch::{Sequences, make_batch};
use crate::model::{Inputs, Model};
use crate::progress::progress_bar;

/// A model's weights on an engine, ready for inference.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    Cpu(&'a [Param]),
    /// The bf16 CPU inference engine and its packed weights.
    CpuBf16(&'a CpuBf16, &'a Bf16Params),
    Gpu(&'a Gpu, &'a GpuParams),
}

/// Weights owned on an engine (uploaded once for a GPU engine).
pub enum Loaded {
    Cpu(Vec<Param>),
    CpuBf16(CpuBf16, Box<Bf16Params>),
    Gpu(Gpu, Box<GpuParams>),
}

impl Loaded {
    /// On `device` at the engine's own precision (f32 on the CPU).
    pub fn new(device: Device, params: Vec<Param>) -> Result<Loaded> {
        Loaded::with_precision(device, params, Precision::F32)
    }

    /// On `device` at `precision`: `Bf16` on the CPU is the bf16 inference
    /// engine (weights packed here, once); on `cuda`/`sim` only `F32` is
    /// accepted, as the GPU engine already computes in bf16.
    pub fn with_precision(
        device: Device,
        params: Vec<Param>,
        precision: Precision,
    ) -> Result<Loaded> {
        if precision == Precision::Bf16 {
            anyhow::ensure!(
                device == Device::Cpu,
                "--precision bf16 is for --device cpu: the GPU engine ({}) already computes in bf16",
                device.name()
            );
            let store = Bf16Params::pack(&params);
            return Ok(Loaded::CpuBf16(CpuBf16::new(), Box::new(store)));
        }
        Ok(match device.gpu()? {
            None => Loaded::Cpu(params),
            Some(gpu) => {
                let store = GpuParams::upload_inference(gpu.executor(), &params)?;
                Loaded::Gpu(gpu, Box::new(store))
            }
        })
    }

    pub fn weights(&self) -> Weights<'_> {
        match self {
            Loaded::Cpu(p) => Weights::Cpu(p),
            Loaded::CpuBf16(e, p) => Weights::CpuBf16(e, p),
            Loaded::Gpu(g, s) => Weights::Gpu(g, s),
        }
    }
}

/// Class probabilities of sequences `idx` of `data` on the CPU engine,
/// row-major `[idx.len(), C]` in the order of `idx`, with a progress bar
/// (and its rate) when `progress`.
pub fn predict_probs(
    model: &Model,
    params: &[Param],
    data: &dyn Sequences,
    idx: &[usize],
    batch: usize,
    seq_len: usize,
    progress: bool,
) -> Result<Vec<f32>> {
    predict_probs_on(
        model,
        Weights::Cpu(params),
        data,
        idx,
        batch,
        seq_len,
        progress,
    )
}

/// What an inference pass returns per flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The classifier head's logits, `C` per flow.
    Logits,
    /// The encoder's mean-pooled final hidden state, `d` per flow (works on
    /// a pretrained model, which has no head).
    Pooled,
}

/// One batch on an inference tape of any engine: the rows `out` asks for,
/// and each MoE layer's routing when `keep_routing` (a device sync per layer
/// on a GPU).
fn forward_batch<B: Backend<f32>>(
    mut tape: Tape<f32, B>,
    p: &[&B::Param],
    model: &Model,
    x: &Inputs,
    keep_routing: bool,
    out: Output,
) -> Result<(Vec<f32>, Vec<u32>)> {
    if keep_routing {
        tape = tape.keep_routing();
    }
    let t = match out {
        Output::Logits => model.cls_forward(&mut tape, p, x, None, 0.0)?.logits,
        Output::Pooled => model.pooled(&mut tape, p, x, 0.0)?.0,
    };
    // Reading the result waits for a device.
    Ok((tape.to_host(t)?, tape.routing()?))
}

/// [`forward_batch`] on the engine that holds `weights`.
pub fn infer_batch(
    model: &Model,
    weights: Weights,
    x: &Inputs,
    keep_routing: bool,
    out: Output,
) -> Result<(Vec<f32>, Vec<u32>)> {
    match weights {
        Weights::Cpu(params) => forward_batch(
            Tape::<f32>::cpu_inference(),
            &params.values(),
            model,
            x,
            keep_routing,
            out,
        ),
        Weights::CpuBf16(engine, store) => forward_batch(
            Tape::inference(*engine),
            &store.values(),
            model,
            x,
            keep_routing,
            out,
        ),
        Weights::Gpu(gpu, store) => forward_batch(
            Tape::inference(gpu.clone()),
            &store.values(),
            model,
            x,
            keep_routing,
            out,
        ),
    }
}

/// The classifier's logits `[B, C]` for one batch on an inference tape, and
/// each MoE layer's routing when `keep_routing` (a device sync per layer).
pub fn class_logits(
    model: &Model,
    weights: Weights,
    x: &Inputs,
    keep_routing: bool,
) -> Result<(Vec<f32>, Vec<u32>)> {
    infer_batch(model, weights, x, keep_routing, Output::Logits)
}

/// [`predict_probs`] on any engine (an inference tape: no backward state,
/// activations freed after their last use).
pub fn predict_probs_on(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    idx: &[usize],
    batch: usize,
    seq_len: usize,
    progress: bool,
) -> Result<Vec<f32>> {
    predict_probs_routed(model, weights, data, idx, batch, seq_len, progress, None)
}

/// [`predict_probs_on`] that also counts, in the same pass, where each MoE
/// layer routes the real tokens (a device sync per layer on a GPU engine).
#[allow(clippy::too_many_arguments)]
pub fn predict_probs_routed(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    idx: &[usize],
    batch: usize,
    seq_len: usize,
    progress: bool,
    routing: Option<&mut RoutingCounts>,
) -> Result<Vec<f32>> {
    let c = model.cfg.n_classes;
    anyhow::ensure!(
        c > 0,
        "the model has no classification head (n_classes = 0)"
    );
    let pass = Pass {
        batch,
        seq_len,
        progress,
    };
    let mut probs = pass.run(model, weights, data, idx, routing, Output::Logits)?;
    for row in probs.chunks_exact_mut(c) {
        let logits = row.to_vec();
        softmax_into(&logits, row);
    }
    Ok(probs)
}

/// Mean-pooled encoder features `[idx.len(), d]` of sequences `idx` (in the
/// order of `idx`), counting the routing in the same pass when asked.
#[allow(clippy::too_many_arguments)]
pub fn pooled_features(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    idx: &[usize],
    batch: usize,
    seq_len: usize,
    progress: bool,
    routing: Option<&mut RoutingCounts>,
) -> Result<Vec<f32>> {
    let pass = Pass {
        batch,
        seq_len,
        progress,
    };
    pass.run(model, weights, data, idx, routing, Output::Pooled)
}

/// How sequences are batched for inference.
struct Pass {
    batch: usize,
    seq_len: usize,
    progress: bool,
}

impl Pass {
    /// Rows of `out` for sequences `idx`, in the order of `idx`. Sequences
    /// are batched by length (less padding; the result does not depend on
    /// batching: attention is causal, pooling masked and routing per token).
    fn run(
        &self,
        model: &Model,
        weights: Weights,
        data: &dyn Sequences,
        idx: &[usize],
        mut routing: Option<&mut RoutingCounts>,
        out: Output,
    ) -> Result<Vec<f32>> {
        let width = match out {
            Output::Logits => model.cfg.n_classes,
            Output::Pooled => model.cfg.d,
        };
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by_key(|&r| data.n_tokens(idx[r]));
        let mut rows_out = vec![0f32; idx.len() * width];
        let pb = progress_bar(idx.len() as u64, "classify", self.progress);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} flows {per_sec} [{elapsed_precise}<{eta_precise}]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        for rows in order.chunks(self.batch.max(1)) {
            let seqs: Vec<usize> = rows.iter().map(|&r| idx[r]).collect();
            let b = make_batch(data, &seqs, self.seq_len);
            let x = Inputs {
                ids: &b.ids,
                mask: &b.mask,
                b: b.b,
                s: b.s,
            };
            let (y, routed) = infer_batch(model, weights, &x, routing.is_some(), out)?;
            if let Some(counts) = routing.as_deref_mut() {
                let labels: Vec<Option<u32>> = seqs.iter().map(|&i| data.label(i)).collect();
                counts.add(&routed, &b.mask, b.s, &labels);
            }
            for (&r, y) in rows.iter().zip(y.chunks_exact(width)) {
                rows_out[r * width..(r + 1) * width].copy_from_slice(y);
            }
            pb.inc(rows.len() as u64);
        }
        pb.finish_and_clear();
        Ok(rows_out)
    }
}

/// Sequence length to classify with: `--seq-len` if given, else the length the
/// classifier was fine-tuned with (checkpoint metadata `extra.seq_len`), else
/// `fallback` (the data's own length) with a warning. A model fine-tuned on
/// sequences cut to 64 tokens scores far worse on 256 (0.79 -> 0.21 accuracy
/// measured on IoT Sentinel), so the training length matters.
pub fn resolve_seq_len(
    arg: Option<usize>,
    meta: &crate::model::checkpoint::CheckpointMeta,
    fallback: usize,
) -> (usize, &'static str) {
    if let Some(s) = arg {
        return (s, "--seq-len");
    }
    if let Some(s) = meta.extra.get("seq_len").and_then(|v| v.parse().ok()) {
        return (s, "checkpoint");
    }
    eprintln!(
        "warning: the checkpoint does not record its fine-tuning sequence length; using {fallback} (pass --seq-len to match training)"
    );
    (fallback, "data")
}

/// Numerically stable softmax (f64 sums).
pub fn softmax_into(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&z| ((z - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    for (o, e) in out.iter_mut().zip(exps) {
        *o = (e / sum) as f32;
    }
}

/// Index and value of the largest entry (ties: the lower index).
pub fn argmax(row: &[f32]) -> (u32, f32) {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    (best as u32, row.get(best).copied().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let mut out = [0f32; 3];
        softmax_into(&[1000.0, 1001.0, 999.0], &mut out);
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((out[1] - 0.665_240_9).abs() < 1e-5, "{out:?}");
        assert_eq!(argmax(&out).0, 1);
        assert_eq!(argmax(&[0.5, 0.5]).0, 0);
    }
}
