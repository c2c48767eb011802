//! The MoE layer's forward on the bf16 engine: the reference layer
//! (`backend::cpu::moe`) with its expert products on the bf16 GEMM. Each
//! SwiGLU expert is two products (gate|up packed as one, with `silu(g)·u` in
//! the kernel's epilogue; then down, on AMX from the hidden's bf16 rows); a
//! routed expert reads its tokens' rows of `z` by index (no gathered copy). The router, top-k and load-balancing
//! statistics are the reference ops in f32 (see `params` for why f32), on
//! logits computed row by row (`row_dots`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::{swiglu_down, swiglu_down_into};
use super::kernel::Kernel;
use super::pack::Layout;
use super::params::Bf16Param;
use super::row_dots::row_dots;
use crate::backend::cpu::{act, moe_permute, router};
use crate::engine::{MoeDims, MoeRefs, OpError, OpResult};

/// What inference keeps of a layer: its routing and load-balancing loss.
pub struct MoeRouting {
    pub topk_idx: Vec<u32>,
    pub aux: f32,
}

/// `resid + MoE(z)`; `mask` selects the tokens of the load-balancing loss.
pub fn fwd(
    kernel: Kernel,
    z: &[f32],
    resid: &[f32],
    mask: &[u8],
    w: MoeRefs<Bf16Param>,
    dm: &MoeDims,
) -> OpResult<(Vec<f32>, MoeRouting)> {
    let MoeDims {
        t,
        d,
        n,
        k,
        shared_ff: sf,
        expert_ff: _,
    } = *dm;
    const OP: &str = "moe_fwd (bf16)";
    if z.len() != t * d || resid.len() != t * d || mask.len() != t || k > n {
        return Err(OpError::msg(OP, format!("shapes do not match {dm:?}")));
    }
    let [router_w, gate_w, s_pair, _, s_down, e_pair, _, e_down] = w;
    let (router_w, gate_w) = (router_w.f32(OP)?, gate_w.f32(OP)?);
    if router_w.len() != n * d || gate_w.len() != d {
        return Err(OpError::msg(OP, "router or shared gate of the wrong size"));
    }
    let s_pair = &s_pair.packed(OP, 1, Layout::Swiglu)?[0];
    let s_down = &s_down.packed(OP, 1, Layout::Plain)?[0];
    let e_pair = e_pair.packed(OP, n, Layout::Swiglu)?;
    let e_down = e_down.packed(OP, n, Layout::Plain)?;

    // Router in f32: the reference layer's, from logits computed row by
    // row (`row_dots`: a token's routing does not depend on its batch),
    // together with the shared expert's gate logit (one pass over z; each
    // output's sum is the same alone or beside the others).
    let stacked: Vec<f32> = router_w.iter().chain(gate_w).copied().collect();
    let both = row_dots(kernel, z, t, d, &stacked, n + 1);
    let (mut logits, mut gl) = (Vec::with_capacity(t * n), Vec::with_capacity(t));
    for row in both.chunks_exact(n + 1) {
        logits.extend_from_slice(&row[..n]);
        gl.push(row[n]);
    }
    let router::Routed {
        topk_idx,
        topk_w,
        aux,
        ..
    } = router::route_logits(&logits, (t, n, k), Some(mask));

    // Shared expert and its per-token gate.
    let mut g = vec![0f32; t];
    act::sigmoid_fwd(&gl, &mut g);
    debug_assert_eq!(s_pair.n, sf);
    let mut out = swiglu_down(kernel, z, t, s_pair, s_down)?;

    // Routed experts on their tokens' rows, in parallel.
    let plan = moe_permute::plan(&topk_idx, t, n, k, 1);
    let tokens: Vec<u32> = plan.sorted_slot.iter().map(|&s| s / k as u32).collect();
    let off = &plan.expert_offset;
    let mut y_rows = Vec::<f32>::with_capacity(t * k * d);
    let mut segments: Vec<&mut [MaybeUninit<f32>]> = Vec::with_capacity(n);
    let mut rest = &mut y_rows.spare_capacity_mut()[..t * k * d];
    for e in 0..n {
        let (seg, tail) = rest.split_at_mut((off[e + 1] - off[e]) as usize * d);
        segments.push(seg);
        rest = tail;
    }
    segments
        .into_par_iter()
        .enumerate()
        .try_for_each(|(e, y)| -> OpResult<()> {
            let (r0, m) = (off[e] as usize, (off[e + 1] - off[e]) as usize);
            if m == 0 {
                return Ok(());
            }
            let rows = Some(&tokens[r0..r0 + m]);
            swiglu_down_into(kernel, z, rows, m, &e_pair[e], &e_down[e], y)
        })?;
    // SAFETY: the segments cover t·k·d elements, each written in full (Ok above).
    unsafe { y_rows.set_len(t * k * d) };

    // out = resid + g·shared + sum_j w_j·y_j, in place over the shared output.
    out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
        let gi = g[i];
        for (v, &r) in o.iter_mut().zip(&resid[i * d..(i + 1) * d]) {
            *v = r + gi * *v;
        }
        for j in 0..k {
            let wj = topk_w[i * k + j];
            let r = plan.slot_pos[i * k + j] as usize;
            for (v, &y) in o.iter_mut().zip(&y_rows[r * d..(r + 1) * d]) {
                *v += wj * y;
            }
        }
    });
    Ok((out, MoeRouting { topk_idx, aux }))
}
