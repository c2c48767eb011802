//! Attention on the device: RoPE on Q and K read straight from the fused QKV
//! rows, then FlashAttention-2 (forward with the softmax row statistics; backward with dQ,
//! dK, dV). V is never copied: the kernels read it inside the QKV rows, and
//! its gradient lands inside the dQKV rows.

use std::rc::Rc;

use half::bf16;

use super::{Gpu, GpuTensor};
use crate::backend::gpu::Buf;
use crate::backend::gpu::ops::attention::{self, AttnSaved, AttnShape, Rows};
use crate::backend::gpu::ops::rope::{self, RopeShape};
use crate::engine::{AttnDims, OpContext, OpResult};

/// What the backward reads: roped Q and K, the QKV rows (for V), the output,
/// softmax row statistics and the mask. All shared with the forward, none copied.
pub struct GpuAttnSaved {
    q: Rc<Buf<bf16>>,
    k: Rc<Buf<bf16>>,
    qkv: GpuTensor,
    out: GpuTensor,
    stats: Buf<f32>,
    mask: Rc<Buf<u8>>,
}

fn shapes(d: &AttnDims, theta: f64) -> (AttnShape, RopeShape) {
    (
        AttnShape {
            batch: d.b,
            seq: d.s,
            heads: d.h,
            head_dim: d.hd,
        },
        RopeShape {
            batch: d.b,
            seq: d.s,
            heads: d.h,
            head_dim: d.hd,
            theta: theta as f32,
        },
    )
}

pub(super) fn fwd(
    g: &Gpu,
    qkv: &GpuTensor,
    mask: &[u8],
    d: &AttnDims,
    theta: f64,
) -> OpResult<(GpuTensor, GpuAttnSaved)> {
    let op = "attention_fwd";
    let (sa, sr) = shapes(d, theta);
    let (t, w) = (d.b * d.s, d.h * d.hd);
    let src = qkv.bf16(op)?;
    let m = g.dev_mask(mask, op)?;
    let (q, k) = (g.alloc_bf16(t * w, op)?, g.alloc_bf16(t * w, op)?);
    let at = |buf, offset, ld| Rows { buf, offset, ld };
    rope::fwd_strided(&g.ex, at(src, 0, 3 * w), at(&q, 0, w), &sr).op(op)?;
    rope::fwd_strided(&g.ex, at(src, w, 3 * w), at(&k, 0, w), &sr).op(op)?;
    let out = g.alloc_bf16(t * w, op)?;
    let stats = g.alloc_f32(sa.stats_len(), op)?;
    attention::fwd(
        &g.ex,
        at(&q, 0, w),
        at(&k, 0, w),
        at(src, 2 * w, 3 * w),
        &m,
        at(&out, 0, w),
        &stats,
        &sa,
    )
    .op(op)?;
    let out = GpuTensor::from_bf16(out);
    let saved = GpuAttnSaved {
        q: Rc::new(q),
        k: Rc::new(k),
        qkv: qkv.clone(),
        out: out.clone(),
        stats,
        mask: m,
    };
    Ok((out, saved))
}

pub(super) fn bwd(
    g: &Gpu,
    s: &GpuAttnSaved,
    dy: &GpuTensor,
    d: &AttnDims,
    theta: f64,
) -> OpResult<GpuTensor> {
    let op = "attention_bwd";
    let (sa, sr) = shapes(d, theta);
    let (t, w) = (d.b * d.s, d.h * d.hd);
    let at = |buf, offset, ld| Rows { buf, offset, ld };
    let qkv = s.qkv.bf16(op)?;
    let dqkv = g.alloc_bf16(t * 3 * w, op)?;
    let (dq, dk) = (g.alloc_bf16(t * w, op)?, g.alloc_bf16(t * w, op)?);
    let delta = g.alloc_f32(sa.rows(), op)?;
    let saved = AttnSaved {
        q: at(&s.q, 0, w),
        k: at(&s.k, 0, w),
        v: at(qkv, 2 * w, 3 * w),
        out: at(s.out.bf16(op)?, 0, w),
        stats: &s.stats,
        mask: &s.mask,
    };
    attention::bwd(
        &g.ex,
        &saved,
        at(dy.bf16(op)?, 0, w),
        at(&dq, 0, w),
        at(&dk, 0, w),
        at(&dqkv, 2 * w, 3 * w),
        &delta,
        &sa,
    )
    .op(op)?;
    rope::bwd_strided(&g.ex, at(&dq, 0, w), at(&dqkv, 0, 3 * w), &sr).op(op)?;
    rope::bwd_strided(&g.ex, at(&dk, 0, w), at(&dqkv, w, 3 * w), &sr).op(op)?;
    Ok(GpuTensor::from_bf16(dqkv))
}
