//! A dense SwiGLU FFN on the device: gate|up as one GEMM (the arena packs
//! the pair as `[2f, d]`, gate rows then up rows) with SwiGLU in its
//! epilogue, then the down GEMM. The MoE's shared expert and the dense
//! twin's FFN are both this block.
//!
//! Trained, the gate|up GEMM also writes the pre-activations `[t, 2f]` that
//! SwiGLU's backward reads; at inference it writes only `h`, and `h` is
//! freed once the down GEMM is queued (the pool reuses it in stream order),
//! so the forward neither stores nor holds what only a backward needs.

use half::bf16;

use super::{Gpu, GpuParam, Role};
use crate::backend::gpu::Buf;
use crate::backend::gpu::ops::gemm::{self, Mat};
use crate::backend::gpu::ops::swiglu::{self, Rows};
use crate::engine::{OpContext, OpError, OpResult};

/// What the backward reads: the pre-activations and the SwiGLU output.
pub struct SwigluSaved {
    pre: Buf<bf16>,
    h: Buf<bf16>,
}

/// Sizes of one block: `t` token rows, width `d`, intermediate `f`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Block {
    pub t: usize,
    pub d: usize,
    pub f: usize,
}

/// The packed gate|up pair of the arena (`what` names it in the error).
pub(super) fn pair<'a>(p: &'a GpuParam, what: &str, op: &'static str) -> OpResult<&'a GpuParam> {
    if p.role != Role::PairGate {
        return Err(OpError::msg(
            op,
            format!("{what}: expected the packed gate|up pair of the parameter arena"),
        ));
    }
    Ok(p)
}

/// `y = (silu(z·w_gateᵀ) ⊙ (z·w_upᵀ))·w_downᵀ`, `[t, d]`; with `train` the
/// state the backward reads.
pub(super) fn fwd(
    g: &Gpu,
    z: &Buf<bf16>,
    gate_up: &GpuParam,
    down: &GpuParam,
    b: Block,
    train: bool,
    op: &'static str,
) -> OpResult<(Buf<bf16>, Option<SwigluSaved>)> {
    let Block { t, d, f } = b;
    let pre = if train {
        Some(g.alloc_bf16(t * 2 * f, op)?)
    } else {
        None
    };
    let h = g.alloc_bf16(t * f, op)?;
    gemm::fwd_swiglu(
        &g.ex,
        Mat::dense(z, d),
        Mat::dense(gate_up.bf16(op)?, d),
        None,
        Mat::dense(&h, f),
        pre.as_ref().map(|p| Mat::dense(p, 2 * f)),
        t,
        d,
        f,
    )
    .op(op)?;
    let y = g.alloc_bf16(t * d, op)?;
    gemm::fwd(
        &g.ex,
        Mat::dense(&h, f),
        Mat::dense(down.bf16(op)?, f),
        None,
        Mat::dense(&y, d),
        t,
        f,
        d,
    )
    .op(op)?;
    Ok((y, pre.map(|pre| SwigluSaved { pre, h })))
}

/// Returns `dz` (fresh); the pair's and down's gradients accumulate.
#[allow(clippy::too_many_arguments)]
pub(super) fn bwd(
    g: &Gpu,
    z: &Buf<bf16>,
    gate_up: &GpuParam,
    down: &GpuParam,
    s: &SwigluSaved,
    dy: &Buf<bf16>,
    b: Block,
    [gr_gate_up, gr_down]: [&GpuParam; 2],
    op: &'static str,
) -> OpResult<Buf<bf16>> {
    let Block { t, d, f } = b;
    let dh = g.alloc_bf16(t * f, op)?;
    gemm::bwd_dx(
        &g.ex,
        Mat::dense(dy, d),
        Mat::dense(down.bf16(op)?, f),
        Mat::dense(&dh, f),
        t,
        f,
        d,
    )
    .op(op)?;
    g.dw(
        Mat::dense(dy, d),
        Mat::dense(&s.h, f),
        Mat::dense(&gr_down.w, f),
        t,
        f,
        d,
        op,
    )?;
    let dpre = g.alloc_bf16(t * 2 * f, op)?;
    swiglu_bwd(g, &s.pre, &dh, &dpre, t, f, op)?;
    drop(dh);
    let dz = g.alloc_bf16(t * d, op)?;
    gemm::bwd_dx(
        &g.ex,
        Mat::dense(&dpre, 2 * f),
        Mat::dense(gate_up.bf16(op)?, d),
        Mat::dense(&dz, d),
        t,
        d,
        2 * f,
    )
    .op(op)?;
    g.dw(
        Mat::dense(&dpre, 2 * f),
        Mat::dense(z, d),
        Mat::dense(&gr_gate_up.w, d),
        t,
        d,
        2 * f,
        op,
    )?;
    Ok(dz)
}

/// SwiGLU backward on packed `[rows, 2f]` pre-activations (gate columns, then up).
pub(super) fn swiglu_bwd(
    g: &Gpu,
    pre: &Buf<bf16>,
    dh: &Buf<bf16>,
    dpre: &Buf<bf16>,
    rows: usize,
    f: usize,
    op: &'static str,
) -> OpResult<()> {
    let at = |buf, offset, ld| Rows { buf, offset, ld };
    swiglu::bwd_strided(
        &g.ex,
        at(pre, 0, 2 * f),
        at(pre, f, 2 * f),
        at(dh, 0, f),
        at(dpre, 0, 2 * f),
        at(dpre, f, 2 * f),
        rows,
        f,
    )
    .op(op)
}
