//! `tmoe bench kernels` entries for attention (cuda/attention.cu): the
//! FlashAttention-2 forward and backward, reading Q, K, V from the fused QKV
//! projection, all keys visible. At a model's shapes (`bench kernels
//! --config/--batch/--seq`; on a GPU by default `base`: B 64, S 512, H 12,
//! hd 64); without one the simulator runs a tiny shape once as a launch-path
//! smoke (outputs only checked to be finite and non-zero).
//!
//! Useful work (causal: half the score matrix): forward 4·B·H·S²·hd / 2 flops
//! (Q Kᵀ and P V), backward 2.5x that (Q Kᵀ, dO Vᵀ, Pᵀ dO, dSᵀ Q, dS K); the
//! backward kernels also recompute Q Kᵀ and dO Vᵀ for dQ (7 products, not 5),
//! which the TFLOP/s figure does not count.

use half::bf16;

use super::{ModelShape, Recorder, Reps, median_ms};
use crate::backend::gpu::Executor;
use crate::backend::gpu::ops::attention::{self, AttnSaved, AttnShape, Rows};

/// Runs the selected entries (`attn_fwd`, `attn_bwd`), recording each into `rec`.
pub(super) fn run(
    ex: &Executor,
    iters: Reps,
    model: Option<&ModelShape>,
    want: &dyn Fn(&str) -> bool,
    rec: &mut Recorder,
) -> anyhow::Result<()> {
    if !want("attn_fwd") && !want("attn_bwd") {
        return Ok(());
    }
    let s = if let Some(m) = model {
        AttnShape {
            batch: m.batch,
            seq: m.seq,
            heads: m.cfg.heads,
            head_dim: m.cfg.head_dim(),
        }
    } else {
        AttnShape {
            batch: 1,
            seq: 40,
            heads: 2,
            head_dim: 32,
        }
    };
    let (t, w) = (s.batch * s.seq, s.heads * s.head_dim);
    let act = |n: usize, k: usize| -> Vec<bf16> {
        (0..n)
            .map(|i| bf16::from_f32((((i * k) % 251) as f32 - 125.0) / 125.0))
            .collect()
    };
    let qkv = ex.upload(&act(t * 3 * w, 7))?;
    let dout = ex.upload(&act(t * w, 13))?;
    let mask = ex.upload(&vec![1u8; t])?;
    let out = ex.alloc_zeroed::<bf16>(t * w)?;
    let dqkv = ex.alloc_zeroed::<bf16>(t * 3 * w)?;
    let stats = ex.alloc_zeroed::<f32>(s.stats_len())?;
    let delta = ex.alloc_zeroed::<f32>(s.rows())?;
    let [q, k, v] = Rows::qkv(&qkv, &s);
    let o = Rows::dense(&out, &s);
    let [dq, dk, dv] = Rows::qkv(&dqkv, &s);
    let shape = format!(
        "batch {} seq {} heads {} head_dim {} causal",
        s.batch, s.seq, s.heads, s.head_dim
    );
    let fwd_flops = 4.0 * (s.batch * s.heads) as f64 * (s.seq * s.seq * s.head_dim) as f64 / 2.0;
    let (act_bytes, row_bytes) = ((t * w * 2) as u64, s.rows() as u64 * 4);
    let stats_bytes = s.stats_len() as u64 * 4; // (m, 1/l) per query row

    // The forward runs at least once: the backward reads its O and stats.
    let ms = median_ms(ex, iters, || {
        attention::fwd(ex, q, k, v, &mask, o, &stats, &s)
    })?;
    if want("attn_fwd") {
        // Q, K, V read, O written, stats written, mask read.
        rec.compute(
            "attn_fwd",
            &shape,
            fwd_flops,
            4 * act_bytes + stats_bytes + t as u64,
            ms,
        );
    }
    if want("attn_bwd") {
        let saved = AttnSaved {
            q,
            k,
            v,
            out: o,
            stats: &stats,
            mask: &mask,
        };
        let dout = Rows::dense(&dout, &s);
        let ms = median_ms(ex, iters, || {
            attention::bwd(ex, &saved, dout, dq, dk, dv, &delta, &s)
        })?;
        // Q, K, V, O, dO read, dQ, dK, dV written; stats read, delta written +
        // read, mask read.
        rec.compute(
            "attn_bwd",
            &shape,
            2.5 * fwd_flops,
            8 * act_bytes + stats_bytes + 2 * row_bytes + t as u64,
            ms,
        );
    }
    if !ex.is_gpu() {
        let o = ex.download(&out)?;
        let g = ex.download(&dqkv)?;
        anyhow::ensure!(
            o.iter().chain(&g).all(|x| x.to_f32().is_finite())
                && o.iter().any(|x| x.to_f32() != 0.0),
            "attention smoke: output or gradients not finite (or all zero)"
        );
    }
    Ok(())
}
