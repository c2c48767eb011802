//! Batched inference of a classifier: class probabilities per sequence.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use rayon::prelude::*;

use crate::autograd::{ParamStore, Tape};
use crate::backend::cpu_bf16::pack::Elem;
use crate::backend::cpu_bf16::{Bf16Params, CpuBf16, Kernel};
use crate::backend::gpu::engine::{Gpu, GpuParams};
use crate::engine::{Backend, Device, Param, Precision};
use crate::eval::routing::RoutingCounts;
use crate::model::batch::{Sequences, make_batch};
use crate::model::net::next_token_targets;
use crate::model::{IGNORE, Inputs, Model};
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

    /// On `device` at `precision`: on the CPU, the packed-weight inference
    /// engine (`backend::cpu_bf16`, weights packed here, once) with bf16
    /// weights for `Bf16`, and with f32 weights for `F32` where the CPU has
    /// AVX-512F (elsewhere the f32 reference engine); on `cuda`/`sim` the
    /// GPU engine whichever the precision: it computes in bf16 (bf16 weights,
    /// f32 sums) either way, what `Bf16` asks for (`Precision::on`).
    pub fn with_precision(
        device: Device,
        params: Vec<Param>,
        precision: Precision,
    ) -> Result<Loaded> {
        if precision == Precision::Bf16 && device == Device::Cpu {
            let store = Bf16Params::pack(&params);
            return Ok(Loaded::CpuBf16(CpuBf16::new(), Box::new(store)));
        }
        Ok(match device.gpu()? {
            // f32 weights in the kernels' panels where the CPU has AVX-512F
            // (packed once here, not per product as the gemm crate does).
            None => match Kernel::detect_f32() {
                Some(kernel) => {
                    let store = Bf16Params::pack_as(Elem::F32, &params);
                    Loaded::CpuBf16(CpuBf16::with_kernel(kernel)?, Box::new(store))
                }
                None => Loaded::Cpu(params),
            },
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
    /// Pretraining's next-token loss through the tied LM head: two values
    /// per batch (each part of one on the CPU engines), the mean loss over
    /// its targets and their count; [`lm_loss_batch`] combines them.
    LmLoss,
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
        Output::Logits => model.cls_logits(&mut tape, p, x, 0.0)?.0,
        Output::Pooled => model.pooled(&mut tape, p, x, 0.0)?.0,
        Output::LmLoss => {
            let targets = next_token_targets(x);
            let n = targets.iter().filter(|&&t| t != IGNORE).count();
            let mean = if n > 0 {
                model.lm_forward(&mut tape, p, x, 0.0)?.task_loss
            } else {
                // No target (one-token flows): no head to run, but the
                // routing asked for is every token's, as in other parts.
                if keep_routing {
                    model.pooled(&mut tape, p, x, 0.0)?;
                }
                0.0
            };
            return Ok((vec![mean, n as f32], tape.routing()?));
        }
    };
    // Reading the result waits for a device.
    Ok((tape.to_host(t)?, tape.routing()?))
}

/// `forward_batch` on the engine that holds `weights`. On the CPU
/// engines a batch is split across rayon's threads, each part run on its own
/// tape with serial ops: at inference flows are independent (causal
/// attention, masked pooling, routing per token), and a part per thread
/// replaces a fork and join per op (about 20 % of a tiny batch of 8 went to
/// waking and parking threads). Each part also drops the padding columns
/// that none of its flows use.
pub fn infer_batch(
    model: &Model,
    weights: Weights,
    x: &Inputs,
    keep_routing: bool,
    out: Output,
) -> Result<(Vec<f32>, Vec<u32>)> {
    match cpu_parts(weights, x.b) {
        Some((cpu, parts)) if parts > 1 => infer_parts(model, cpu, x, keep_routing, out, parts),
        _ => infer_whole(model, weights, x, keep_routing, out),
    }
}

/// Pretraining's next-token loss of one batch on an inference tape of any
/// engine (the CPU engines split it across threads as [`infer_batch`]
/// does): the sum of the losses over its targets, and their count
/// (`next_token_targets`: each real token followed by a real token).
/// With `keep_routing`, each MoE layer's routing as [`infer_batch`] gives it.
pub fn lm_loss_batch(
    model: &Model,
    weights: Weights,
    x: &Inputs,
    keep_routing: bool,
) -> Result<(f64, u64, Vec<u32>)> {
    let (parts, routing) = infer_batch(model, weights, x, keep_routing, Output::LmLoss)?;
    let (mut sum, mut count) = (0f64, 0u64);
    for p in parts.chunks_exact(2) {
        // Counts are at most b·s, exact in f32 below 2^24.
        let n = p[1] as u64;
        sum += p[0] as f64 * n as f64;
        count += n;
    }
    Ok((sum, count, routing))
}

/// [`infer_whole`] on `parts` contiguous slices of the batch in parallel,
/// the outputs (and routing) put back together in batch order.
fn infer_parts(
    model: &Model,
    cpu: CpuWeights,
    x: &Inputs,
    keep_routing: bool,
    out: Output,
    parts: usize,
) -> Result<(Vec<f32>, Vec<u32>)> {
    let bounds: Vec<(usize, usize)> = (0..parts)
        .map(|p| (x.b * p / parts, x.b * (p + 1) / parts))
        .filter(|(r0, r1)| r1 > r0)
        .collect();
    let results: Vec<Result<(Vec<f32>, Vec<u32>)>> = bounds
        .par_iter()
        .map(|&(r0, r1)| {
            let part = PartInputs::new(x, r0, r1, !keep_routing);
            infer_whole(model, cpu.weights(), &part.inputs(), keep_routing, out)
        })
        .collect();
    let mut y = Vec::new();
    let mut routing_parts = Vec::with_capacity(bounds.len());
    for (r, &(r0, r1)) in results.into_iter().zip(&bounds) {
        let (yp, rp) = r?;
        y.extend(yp);
        routing_parts.push((rp, r1 - r0));
    }
    Ok((y, merge_routing(model, x, routing_parts)))
}

/// Weights on a CPU engine (shareable across threads, unlike a GPU's).
#[derive(Clone, Copy)]
enum CpuWeights<'a> {
    F32(&'a [Param]),
    Bf16(&'a CpuBf16, &'a Bf16Params),
}

impl<'a> CpuWeights<'a> {
    fn weights(self) -> Weights<'a> {
        match self {
            CpuWeights::F32(p) => Weights::Cpu(p),
            CpuWeights::Bf16(e, p) => Weights::CpuBf16(e, p),
        }
    }
}

/// A CPU engine's weights and how many parts a batch of `b` flows runs as:
/// one per rayon thread (at most one flow each), one inside a rayon worker
/// (the caller already runs in parallel). `None` on a GPU engine.
fn cpu_parts(weights: Weights, b: usize) -> Option<(CpuWeights, usize)> {
    let cpu = match weights {
        Weights::Cpu(p) => CpuWeights::F32(p),
        Weights::CpuBf16(e, p) => CpuWeights::Bf16(e, p),
        Weights::Gpu(..) => return None,
    };
    let parts = if rayon::current_thread_index().is_some() {
        1
    } else {
        rayon::current_num_threads().min(b)
    };
    Some((cpu, parts))
}

/// Rows `r0..r1` of a batch; when `trim`, cut to the longest of their
/// sequences (the columns past it are padding in every one of these rows).
struct PartInputs {
    ids: Vec<u32>,
    mask: Vec<u8>,
    b: usize,
    s: usize,
}

impl PartInputs {
    fn new(x: &Inputs, r0: usize, r1: usize, trim: bool) -> PartInputs {
        let rows = r0..r1;
        // The last real column of any row, plus one (at least one column).
        let s = if trim {
            rows.clone()
                .filter_map(|r| x.mask[r * x.s..(r + 1) * x.s].iter().rposition(|&m| m != 0))
                .max()
                .map_or(1, |c| c + 1)
        } else {
            x.s
        };
        let mut ids = Vec::with_capacity((r1 - r0) * s);
        let mut mask = Vec::with_capacity((r1 - r0) * s);
        for r in rows {
            ids.extend_from_slice(&x.ids[r * x.s..r * x.s + s]);
            mask.extend_from_slice(&x.mask[r * x.s..r * x.s + s]);
        }
        PartInputs {
            ids,
            mask,
            b: r1 - r0,
            s,
        }
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            ids: &self.ids,
            mask: &self.mask,
            b: self.b,
            s: self.s,
        }
    }
}

/// The parts' routing as the whole batch's: per MoE layer, every token of
/// the batch (`b · s`) with its `top_k` experts, part after part. Parts are
/// not cut short when routing is kept, so each holds `b_p · s` tokens a layer.
fn merge_routing(model: &Model, x: &Inputs, parts: Vec<(Vec<u32>, usize)>) -> Vec<u32> {
    let k = model.cfg.top_k.max(1);
    let chunk = |b: usize| b * x.s * k;
    let layers = parts
        .iter()
        .find(|(r, _)| !r.is_empty())
        .map_or(0, |(r, b)| r.len() / chunk(*b));
    let mut out = Vec::with_capacity(layers * chunk(x.b));
    for l in 0..layers {
        for (r, b) in &parts {
            let c = chunk(*b);
            out.extend_from_slice(&r[l * c..(l + 1) * c]);
        }
    }
    out
}

/// One batch on one inference tape of the engine that holds `weights`.
fn infer_whole(
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
    predict_probs_routed(
        model, weights, data, idx, batch, seq_len, progress, None, None,
    )
}

/// [`predict_probs_on`] that also counts, in the same pass, where each MoE
/// layer routes the real tokens (a device sync per layer on a GPU engine).
/// With `stop`, polled before each batch: once set, fails with
/// [`crate::stop::Interrupted`] (a caller's Ctrl-C).
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
    stop: Option<&AtomicBool>,
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
        stop,
    };
    let mut probs = pass.run(model, weights, data, idx, routing, Output::Logits)?;
    for row in probs.chunks_exact_mut(c) {
        let logits = row.to_vec();
        softmax_into(&logits, row);
    }
    Ok(probs)
}

/// Mean-pooled encoder features `[idx.len(), d]` of sequences `idx` (in the
/// order of `idx`), counting the routing in the same pass when asked; with
/// `stop`, interrupted as [`predict_probs_routed`] is.
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
    stop: Option<&AtomicBool>,
) -> Result<Vec<f32>> {
    let pass = Pass {
        batch,
        seq_len,
        progress,
        stop,
    };
    pass.run(model, weights, data, idx, routing, Output::Pooled)
}

/// How sequences are batched for inference.
struct Pass<'a> {
    batch: usize,
    seq_len: usize,
    progress: bool,
    /// Polled before each batch: a long pass over a training set stops
    /// within a batch of a Ctrl-C.
    stop: Option<&'a AtomicBool>,
}

impl Pass<'_> {
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
            Output::LmLoss => anyhow::bail!("an LM loss has no rows per flow: see lm_loss_batch"),
        };
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by_key(|&r| data.n_tokens(idx[r]));
        let mut rows_out = vec![0f32; idx.len() * width];
        // Named for what the pass makes (an LP-FT head fit's features were
        // shown as "classify"), its rate in whole flows a second.
        let what = match out {
            Output::Logits => "classify",
            _ => "features",
        };
        let pb = progress_bar(idx.len() as u64, what, self.progress);
        pb.set_style(
            crate::progress::with_rate(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} flows {rate} flows/s [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid template"),
            )
            .progress_chars("=> "),
        );
        for rows in order.chunks(self.batch.max(1)) {
            if let Some(stop) = self.stop
                && let Err(e) = crate::stop::Interrupted::check(stop)
            {
                pb.finish_and_clear();
                return Err(e);
            }
            let seqs: Vec<usize> = rows.iter().map(|&r| idx[r]).collect();
            let b = make_batch(data, &seqs, self.seq_len);
            let x = b.inputs();
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

/// The class of each row of `probs` (`n_classes` a row, argmax), refused
/// when any row is not finite ([`finite_rows`]). `what` names the model in
/// the error.
pub fn predicted_classes(probs: &[f32], n_classes: usize, what: &Path) -> Result<Vec<u32>> {
    let rows = finite_rows(probs, n_classes, what, "no metrics computed")?;
    Ok(rows.map(|row| argmax(row).0).collect())
}

/// The rows of `probs` (`n_classes` a row), or an error naming `what` and
/// saying what was not done (`outcome`) when any row is not finite: argmax
/// calls a diverged checkpoint's NaN row class 0, and metrics or verdicts
/// were made from such rows as if the model had answered.
pub fn finite_rows<'a>(
    probs: &'a [f32],
    n_classes: usize,
    what: &Path,
    outcome: &str,
) -> Result<std::slice::ChunksExact<'a, f32>> {
    let rows = probs.chunks_exact(n_classes.max(1));
    let broken = rows
        .clone()
        .filter(|row| row.iter().any(|p| !p.is_finite()))
        .count();
    anyhow::ensure!(
        broken == 0,
        "{}: the model's outputs are not finite for {broken} of {} flows (NaN or infinite \
         weights: a diverged run?); {outcome}",
        what.display(),
        rows.len()
    );
    Ok(rows)
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

    #[test]
    fn predicted_classes_refuses_rows_that_are_not_finite() {
        let ckpt = Path::new("m.safetensors");
        let ok = predicted_classes(&[0.2, 0.8, 0.9, 0.1], 2, ckpt).unwrap();
        assert_eq!(ok, vec![1, 0]);
        // argmax alone called a NaN row class 0.
        assert_eq!(argmax(&[f32::NAN, 0.5]).0, 0);
        let e = predicted_classes(&[0.2, 0.8, f32::NAN, f32::NAN], 2, ckpt).unwrap_err();
        assert!(
            e.to_string()
                .contains("m.safetensors: the model's outputs are not finite for 1 of 2 flows"),
            "{e}"
        );
    }

    /// A small MoE classifier and a batch of `b` flows of varied lengths
    /// (row r keeps `s - 3·r` real tokens, at least one; padding after).
    fn model_and_batch(b: usize, s: usize) -> (Model, Vec<Param>, Vec<u32>, Vec<u8>) {
        let mut cfg = crate::model::ModelConfig::named("tiny").unwrap();
        cfg.layers = 2;
        cfg.vocab = 300;
        cfg.n_classes = 5;
        let (model, params) = Model::new(cfg, 7).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let ids = (0..b * s)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                5 + (x % 295) as u32
            })
            .collect();
        let mask = (0..b * s)
            .map(|i| u8::from(i % s < s.saturating_sub(3 * (i / s)).max(1)))
            .collect();
        (model, params, ids, mask)
    }

    /// Split across threads (uneven parts, each cut to its own longest
    /// flow) or not, a batch gives the same logits, pooled rows and routing.
    #[test]
    fn a_batch_split_into_parts_matches_the_whole_batch() {
        let (b, s) = (7, 16);
        let (model, params, ids, mask) = model_and_batch(b, s);
        let x = Inputs {
            ids: &ids,
            mask: &mask,
            b,
            s,
        };
        for out in [Output::Logits, Output::Pooled] {
            let (whole, routing) =
                infer_whole(&model, Weights::Cpu(&params), &x, true, out).unwrap();
            assert!(!routing.is_empty());
            for parts in [2, 3, 7] {
                let cpu = CpuWeights::F32(&params);
                let (split, _) = infer_parts(&model, cpu, &x, false, out, parts).unwrap();
                assert_eq!(split.len(), whole.len());
                for (i, (a, w)) in split.iter().zip(&whole).enumerate() {
                    assert!(
                        (a - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{out:?}, {parts} parts, element {i}: {a} vs {w}"
                    );
                }
                // With routing kept, parts keep every column: the merged
                // routing is the whole batch's, token by token.
                let (_, merged) = infer_parts(&model, cpu, &x, true, out, parts).unwrap();
                assert_eq!(merged, routing, "{parts} parts");
            }
        }
    }

    #[test]
    fn a_part_is_cut_to_its_longest_flow() {
        let (model, _, ids, mask) = model_and_batch(4, 16);
        let _ = model;
        let x = Inputs {
            ids: &ids,
            mask: &mask,
            b: 4,
            s: 16,
        };
        // Rows 2 and 3 keep 10 and 7 tokens.
        let part = PartInputs::new(&x, 2, 4, true);
        assert_eq!((part.b, part.s), (2, 10));
        assert_eq!(&part.ids[..10], &ids[32..42]);
        assert_eq!(&part.ids[10..], &ids[48..58]);
        assert_eq!(part.mask.iter().filter(|&&m| m == 1).count(), 17);
        let kept = PartInputs::new(&x, 2, 4, false);
        assert_eq!((kept.b, kept.s), (2, 16));
    }
}
