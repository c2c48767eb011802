//! The dense SwiGLU FFN composed of the interface's own ops (two linear
//! layers, SwiGLU, the down projection, the residual add), for an engine
//! that has no fused one: the reference CPU engine's `ffn_fwd`/`ffn_bwd`,
//! in the order of operations the model used when it called them one by one
//! (so its results did not change when the FFN became one op).

use super::{Backend, FfnDims, FfnGradRefs, FfnRefs, Float, OpError, OpResult};

/// What the backward reads: the gate and up projections and their SwiGLU.
pub struct ComposedFfnSaved<T> {
    gate: T,
    up: T,
    h: T,
}

/// The saved state: None after an inference forward.
pub type Saved<T> = Option<ComposedFfnSaved<T>>;

/// `resid + w_down·(silu(w_gate·z) ⊙ (w_up·z))`; the saved state only when
/// `train` (at inference the intermediates are dropped as soon as they are read).
pub fn fwd<F: Float, B: Backend<F>>(
    be: &B,
    z: &B::Tensor,
    resid: &B::Tensor,
    w: FfnRefs<B::Param>,
    dm: &FfnDims,
    train: bool,
) -> OpResult<(B::Tensor, Saved<B::Tensor>)> {
    let FfnDims { t, d, ff } = *dm;
    let [w_gate, w_up, w_down] = w;
    let gate = be.linear_fwd(z, w_gate, None, t, d, ff)?;
    let up = be.linear_fwd(z, w_up, None, t, d, ff)?;
    let h = be.swiglu_fwd(&gate, &up)?;
    let kept = train.then_some((gate, up));
    let y = be.linear_fwd(&h, w_down, None, t, ff, d)?;
    let saved = kept.map(|(gate, up)| ComposedFfnSaved { gate, up, h });
    Ok((be.add(resid, &y)?, saved))
}

/// Returns `dz`; the three weights' grads accumulate.
pub fn bwd<F: Float, B: Backend<F>>(
    be: &B,
    z: &B::Tensor,
    w: FfnRefs<B::Param>,
    saved: &Saved<B::Tensor>,
    dy: &B::Tensor,
    dm: &FfnDims,
    grads: FfnGradRefs<B::Param>,
) -> OpResult<B::Tensor> {
    let FfnDims { t, d, ff } = *dm;
    let s = saved.as_ref().ok_or_else(|| inference_forward("ffn_bwd"))?;
    let [w_gate, w_up, w_down] = w;
    let [g_gate, g_up, g_down] = grads;
    let dh = be.linear_bwd(&s.h, w_down, dy, t, ff, d, g_down, None)?;
    let (dgate, dup) = be.swiglu_bwd(&s.gate, &s.up, &dh)?;
    // Up before gate: the order the tape's reverse walk took.
    let mut dz = be.linear_bwd(z, w_up, &dup, t, d, ff, g_up, None)?;
    let dz_gate = be.linear_bwd(z, w_gate, &dgate, t, d, ff, g_gate, None)?;
    be.add_assign(&mut dz, &dz_gate)?;
    Ok(dz)
}

/// The error of a backward through a forward run with `train: false`.
pub fn inference_forward(op: &'static str) -> OpError {
    OpError::msg(
        op,
        "the forward ran for inference (train: false) and kept nothing for a backward",
    )
}
