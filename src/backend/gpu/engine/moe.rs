//! The Traffic-MoE layer on the device,
//! `out = resid + sigmoid(z·w_D) * E_shared(z) + Σ_j w_j * E_{e_j}(z)`:
//!
//! - router: fp32 logits by `rowdot`, softmax + top-k + counts (`router_fwd`),
//!   the load-balancing loss (`lb_loss_*`);
//! - the permutation plan (`moe_permute_*`: a stable counting sort by
//!   expert, tile-padded), then per expert the gate|up GEMM with the row
//!   gather fused into its A load and SwiGLU fused into its epilogue, and the
//!   down GEMM, both grouped over the plan;
//! - the shared expert (the same fused GEMM, dense) and its sigmoid gate
//!   (`rowdot` with the sigmoid);
//! - the deterministic combine (`moe_combine_fwd`).
//!
//! The backward mirrors it; the routed rows' input gradients return to their
//! tokens through the combine kernel itself (the un-permute sum). An
//! inference forward (`train: false`) skips the load-balancing loss and the
//! pre-activations, and frees each expert intermediate once it is read.

use half::bf16;

use super::ffn::{self, Block, SwigluSaved, pair, swiglu_bwd};
use super::{Gpu, GpuParam, GpuTensor};
use crate::backend::gpu::Buf;
use crate::backend::gpu::ops::gemm::{self, Mat};
use crate::backend::gpu::ops::moe_combine::{self, CombineInputs};
use crate::backend::gpu::ops::moe_permute::MoePlan;
use crate::backend::gpu::ops::moe_route::{self, Routing};
use crate::backend::gpu::ops::rowdot;
use crate::engine::ffn::inference_forward;
use crate::engine::{MoeDims, MoeGradRefs, MoeRefs, OpContext, OpResult};

/// Everything the backward reads (z and the weights come from the tape).
pub struct GpuMoeSaved {
    pub(super) probs: Buf<f32>,
    pub(super) topk_idx: Buf<u32>,
    pub(super) topk_w: Buf<f32>,
    pub(super) plan: MoePlan,
    /// Routed rows in plan order: the experts' outputs.
    pub(super) y_rows: Buf<bf16>,
    /// The shared expert's output and its gate (after the sigmoid).
    pub(super) s_out: Buf<bf16>,
    pub(super) g: Buf<f32>,
    pub(super) valid: std::rc::Rc<Buf<u8>>,
    /// What only training reads (the aux loss, the backward's state); None
    /// after an inference forward.
    pub(super) train: Option<MoeTrainState>,
}

/// The load-balancing loss and the experts' SwiGLU state: routed rows in
/// plan order (gate|up pre-activations, SwiGLU output) and the shared
/// expert's.
pub struct MoeTrainState {
    /// Router counts over real tokens only (the aux loss's Load_e; the plan
    /// keeps its own counts over every position).
    pub(super) counts: Buf<u32>,
    /// The layer's load-balancing loss `[1]` (read with the others at the end).
    pub(super) aux: std::rc::Rc<Buf<f32>>,
    pre_e: Buf<bf16>,
    h_e: Buf<bf16>,
    shared: SwigluSaved,
}

/// The plan's tile: the big GEMM tile when experts get enough rows to fill it.
pub(crate) fn plan_tile(t: usize, k: usize, n: usize) -> usize {
    if t * k / n.max(1) >= 512 { 128 } else { 64 }
}

pub(super) fn fwd(
    g: &Gpu,
    z: &GpuTensor,
    resid: &GpuTensor,
    mask: &[u8],
    w: MoeRefs<GpuParam>,
    dm: &MoeDims,
    train: bool,
) -> OpResult<(GpuTensor, GpuMoeSaved)> {
    let op = "moe_fwd";
    let [
        router,
        shared_gate,
        s_gate,
        _s_up,
        s_down,
        e_gate,
        _e_up,
        e_down,
    ] = w;
    let MoeDims {
        t,
        d,
        n,
        k,
        shared_ff: sf,
        expert_ff: f,
    } = *dm;
    let ex = &g.ex;
    let zb = z.bf16(op)?;
    let r = Routing {
        tokens: t,
        n_experts: n,
        k,
    };
    let valid = g.dev_mask(mask, op)?;
    // Router (fp32), and at training the aux loss: inference skips its
    // counts, its two launches and its memset.
    let logits = g.alloc_f32(t * n, op)?;
    rowdot::fwd(ex, zb, &router.w, &logits, t, d, n, false).op(op)?;
    let probs = g.alloc_f32(t * n, op)?;
    let topk_idx = ex.alloc_zeroed::<u32>(t * k).op(op)?;
    let topk_w = g.alloc_f32(t * k, op)?;
    let counts = if train {
        Some(ex.alloc_zeroed::<u32>(n).op(op)?)
    } else {
        None
    };
    moe_route::router_fwd(
        ex,
        &logits,
        &probs,
        &topk_idx,
        &topk_w,
        counts.as_ref(),
        Some(&valid),
        &r,
    )
    .op(op)?;
    let aux = match &counts {
        Some(counts) => {
            let partials = g.alloc_f32(moe_route::lb_loss_partials(&r), op)?;
            let loss = g.alloc_f32(1, op)?;
            moe_route::lb_loss_fwd(ex, &probs, counts, Some(&valid), &partials, &loss, &r)
                .op(op)?;
            Some(std::rc::Rc::new(loss))
        }
        None => None,
    };
    // Routed experts over the plan.
    let plan = MoePlan::alloc(ex, r, plan_tile(t, k, n)).op(op)?;
    plan.build(ex, &topk_idx).op(op)?;
    let rows = plan.max_rows;
    let pre_e = if train {
        Some(g.alloc_bf16(rows * 2 * f, op)?)
    } else {
        None
    };
    let h_e = g.alloc_bf16(rows * f, op)?;
    gemm::grouped_fwd_swiglu(
        ex,
        &plan,
        Mat::dense(zb, d),
        true,
        pair(e_gate, "experts.w_gate", op)?.bf16(op)?,
        Mat::dense(&h_e, f),
        pre_e.as_ref().map(|p| Mat::dense(p, 2 * f)),
        f,
        d,
    )
    .op(op)?;
    let y_rows = g.alloc_bf16(rows * d, op)?;
    gemm::grouped_fwd(
        ex,
        &plan,
        Mat::dense(&h_e, f),
        false,
        e_down.bf16(op)?,
        Mat::dense(&y_rows, d),
        d,
        f,
    )
    .op(op)?;
    // At inference `h_e` goes back to the pool before the shared expert runs.
    let routed = pre_e.map(|pre_e| (pre_e, h_e));
    // Shared expert and its gate.
    let s_gate = pair(s_gate, "shared.w_gate", op)?;
    let (s_out, shared) = ffn::fwd(g, zb, s_gate, s_down, Block { t, d, f: sf }, train, op)?;
    let gate = g.alloc_f32(t, op)?;
    rowdot::fwd(ex, zb, &shared_gate.w, &gate, t, d, 1, true).op(op)?;
    // out = resid + g * shared + Σ w_j y_j.
    let out = g.alloc_bf16(t * d, op)?;
    moe_combine::fwd(
        ex,
        &plan,
        &CombineInputs {
            resid: Some(resid.bf16(op)?),
            shared_out: Some(&s_out),
            shared_gate: Some(&gate),
            y_rows: &y_rows,
            topk_w: Some(&topk_w),
        },
        &out,
        d,
    )
    .op(op)?;
    let train_state = match (counts, aux, routed, shared) {
        (Some(counts), Some(aux), Some((pre_e, h_e)), Some(shared)) => Some(MoeTrainState {
            counts,
            aux,
            pre_e,
            h_e,
            shared,
        }),
        _ => None,
    };
    Ok((
        GpuTensor::from_bf16(out),
        GpuMoeSaved {
            probs,
            topk_idx,
            topk_w,
            plan,
            y_rows,
            s_out,
            g: gate,
            valid,
            train: train_state,
        },
    ))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn bwd(
    g: &Gpu,
    z: &GpuTensor,
    w: MoeRefs<GpuParam>,
    s: &GpuMoeSaved,
    dy: &GpuTensor,
    aux_weight: f32,
    dm: &MoeDims,
    grads: MoeGradRefs<GpuParam>,
) -> OpResult<GpuTensor> {
    let op = "moe_bwd";
    let [
        router,
        shared_gate,
        s_gate,
        _s_up,
        s_down,
        e_gate,
        _e_up,
        e_down,
    ] = w;
    let [
        gr_router,
        gr_shared_gate,
        gr_s_gate,
        _,
        gr_s_down,
        gr_e_gate,
        _,
        gr_e_down,
    ] = grads;
    let MoeDims {
        t,
        d,
        n,
        k,
        shared_ff: sf,
        expert_ff: f,
    } = *dm;
    let ex = &g.ex;
    let (zb, dyb) = (z.bf16(op)?, dy.bf16(op)?);
    let ts = s.train.as_ref().ok_or_else(|| inference_forward(op))?;
    let plan = &s.plan;
    let rows = plan.max_rows;
    // The combine's backward: routed rows, top-k weights, shared output and gate.
    let dy_rows = g.alloc_bf16(rows * d, op)?;
    let dtopk_w = g.alloc_f32(t * k, op)?;
    moe_combine::bwd_rows(
        ex,
        plan,
        dyb,
        &s.y_rows,
        Some(&s.topk_w),
        &dy_rows,
        Some(&dtopk_w),
        d,
    )
    .op(op)?;
    let ds_out = g.alloc_bf16(t * d, op)?;
    let dgate = g.alloc_f32(t, op)?;
    moe_combine::bwd_tokens(ex, dyb, &s.s_out, Some(&s.g), &ds_out, Some(&dgate), t, d).op(op)?;
    // Routed experts: down, SwiGLU, gate|up (grouped over the plan).
    let dh_e = g.alloc_bf16(rows * f, op)?;
    gemm::grouped_dx(
        ex,
        plan,
        Mat::dense(&dy_rows, d),
        e_down.bf16(op)?,
        Mat::dense(&dh_e, f),
        d,
        f,
    )
    .op(op)?;
    grouped_dw(g, plan, &dy_rows, &ts.h_e, false, &gr_e_down.w, d, f, op)?;
    let dpre_e = g.alloc_bf16(rows * 2 * f, op)?;
    swiglu_bwd(g, &ts.pre_e, &dh_e, &dpre_e, rows, f, op)?;
    let dx_rows = g.alloc_bf16(rows * d, op)?;
    gemm::grouped_dx(
        ex,
        plan,
        Mat::dense(&dpre_e, 2 * f),
        pair(e_gate, "experts.w_gate", op)?.bf16(op)?,
        Mat::dense(&dx_rows, d),
        2 * f,
        d,
    )
    .op(op)?;
    grouped_dw(g, plan, &dpre_e, zb, true, &gr_e_gate.w, 2 * f, d, op)?;
    // Shared expert.
    let dz = ffn::bwd(
        g,
        zb,
        pair(s_gate, "shared.w_gate", op)?,
        s_down,
        &ts.shared,
        &ds_out,
        Block { t, d, f: sf },
        [gr_s_gate, gr_s_down],
        op,
    )?;
    // The shared gate's sigmoid and the router: fp32 row products.
    rowdot::bwd_dz(ex, &dgate, Some(&s.g), &shared_gate.w, &dz, t, d, 1, true).op(op)?;
    let scratch = g.alloc_f32(rowdot::dw_scratch_len(t, d, 1), op)?;
    rowdot::bwd_dw(
        ex,
        &dgate,
        Some(&s.g),
        zb,
        &gr_shared_gate.w,
        &scratch,
        t,
        d,
        1,
    )
    .op(op)?;
    let scratch = g.alloc_f32(rowdot::dw_scratch_len(t, d, n), op)?;
    let r = Routing {
        tokens: t,
        n_experts: n,
        k,
    };
    let dlogits = g.alloc_f32(t * n, op)?;
    moe_route::router_bwd(
        ex,
        &s.probs,
        &s.topk_idx,
        Some(&dtopk_w),
        &ts.counts,
        Some(&s.valid),
        aux_weight,
        &dlogits,
        &r,
    )
    .op(op)?;
    rowdot::bwd_dz(ex, &dlogits, None, &router.w, &dz, t, d, n, true).op(op)?;
    rowdot::bwd_dw(ex, &dlogits, None, zb, &gr_router.w, &scratch, t, d, n).op(op)?;
    // dz += the routed rows' gradients, summed back onto their tokens.
    let dz_all = g.alloc_bf16(t * d, op)?;
    moe_combine::fwd(
        ex,
        plan,
        &CombineInputs {
            resid: Some(&dz),
            shared_out: None,
            shared_gate: None,
            y_rows: &dx_rows,
            topk_w: None,
        },
        &dz_all,
        d,
    )
    .op(op)?;
    Ok(GpuTensor::from_bf16(dz_all))
}

/// Grouped `dW[e] += dy_eᵀ · x_e` with its split-K workspace.
#[allow(clippy::too_many_arguments)]
fn grouped_dw(
    g: &Gpu,
    plan: &MoePlan,
    dy: &Buf<bf16>,
    x: &Buf<bf16>,
    gather: bool,
    dw: &Buf<f32>,
    n_out: usize,
    k_in: usize,
    op: &'static str,
) -> OpResult<()> {
    let splits = gemm::grouped_dw_splits(plan, n_out, k_in);
    let len = gemm::grouped_dw_workspace_len(plan, n_out, k_in, splits);
    let ws = if len > 0 {
        Some(g.alloc_f32(len, op)?)
    } else {
        None
    };
    gemm::grouped_dw(
        &g.ex,
        plan,
        Mat::dense(dy, n_out),
        Mat::dense(x, k_in),
        gather,
        Mat::dense(dw, k_in),
        true,
        ws.as_ref(),
        n_out,
        k_in,
    )
    .op(op)
}
