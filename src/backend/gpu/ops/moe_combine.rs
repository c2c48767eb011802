//! Launch wrappers for cuda/moe_combine.cu: the deterministic combine
//! `out = resid + g*S + sum_j w_j * Y[slot_pos]` and its backward.

use half::bf16;

use super::moe_permute::{MoePlan, ROW_THREADS, row_blocks};
use crate::backend::gpu::buffer::DeviceType;
use crate::backend::gpu::params::{
    MoeCombineBwdRowsParams, MoeCombineBwdTokensParams, MoeCombineFwdParams,
};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

fn dim(d: usize) -> Result<i32> {
    i32::try_from(d)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| GpuError::Invalid(format!("moe combine: bad d {d}")))
}

fn cptr<T: DeviceType>(b: Option<&Buf<T>>) -> *const T::C {
    b.map_or(std::ptr::null(), |b| b.cptr())
}

/// Inputs of the combine; `None` drops a term (resid, shared_out) or means 1
/// (shared_gate, topk_w).
pub struct CombineInputs<'a> {
    pub resid: Option<&'a Buf<bf16>>,      // [T, d]
    pub shared_out: Option<&'a Buf<bf16>>, // [T, d]
    pub shared_gate: Option<&'a Buf<f32>>, // [T], after the sigmoid
    pub y_rows: &'a Buf<bf16>,             // [max_rows, d]
    pub topk_w: Option<&'a Buf<f32>>,      // [T, k]
}

/// out [T, d] = resid + g*S + sum_j w_j * Y[slot_pos[t*k+j]] (j ascending).
/// With only `y_rows` it is the un-permute sum of expert-ordered rows.
pub fn fwd(
    ex: &Executor,
    plan: &MoePlan,
    inp: &CombineInputs,
    out: &Buf<bf16>,
    d: usize,
) -> Result<()> {
    let di = dim(d)?;
    let (t, k) = (plan.routing.tokens, plan.routing.k);
    if let Some(b) = inp.resid {
        ex.check_buf("moe combine resid", b, t * d)?;
    }
    if let Some(b) = inp.shared_out {
        ex.check_buf("moe combine shared_out", b, t * d)?;
    }
    if let Some(b) = inp.shared_gate {
        ex.check_buf("moe combine shared_gate", b, t)?;
    }
    if let Some(b) = inp.topk_w {
        ex.check_buf("moe combine topk_w", b, t * k)?;
    }
    ex.check_buf("moe combine y_rows", inp.y_rows, plan.max_rows * d)?;
    ex.check_buf("moe combine out", out, t * d)?;
    let params = MoeCombineFwdParams {
        resid: cptr(inp.resid),
        shared_out: cptr(inp.shared_out),
        shared_gate: cptr(inp.shared_gate),
        y_rows: inp.y_rows.cptr(),
        topk_w: cptr(inp.topk_w),
        slot_pos: plan.slot_pos.cptr(),
        out: out.mptr(),
        tokens: t as i32,
        k: k as i32,
        d: di,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "moe_combine_fwd",
        row_blocks(t),
        ROW_THREADS,
        params,
    ))
}

/// Expert-side backward, per padded row: `dy_rows [max_rows, d] = w * dout[t]`
/// (zero rows for padding), `dtopk_w [T, k] = <dout[t], Y[row]>` when given.
/// `dy_rows` may be `y_rows`.
#[allow(clippy::too_many_arguments)]
pub fn bwd_rows(
    ex: &Executor,
    plan: &MoePlan,
    dout: &Buf<bf16>,
    y_rows: &Buf<bf16>,
    topk_w: Option<&Buf<f32>>,
    dy_rows: &Buf<bf16>,
    dtopk_w: Option<&Buf<f32>>,
    d: usize,
) -> Result<()> {
    let di = dim(d)?;
    let (t, k) = (plan.routing.tokens, plan.routing.k);
    ex.check_buf("moe combine bwd dout", dout, t * d)?;
    ex.check_buf("moe combine bwd y_rows", y_rows, plan.max_rows * d)?;
    ex.check_buf("moe combine bwd dy_rows", dy_rows, plan.max_rows * d)?;
    for (name, b) in [("topk_w", topk_w), ("dtopk_w", dtopk_w)] {
        if let Some(b) = b {
            ex.check_buf(&format!("moe combine bwd {name}"), b, t * k)?;
        }
    }
    let params = MoeCombineBwdRowsParams {
        dout: dout.cptr(),
        y_rows: y_rows.cptr(),
        topk_w: cptr(topk_w),
        sorted_slot: plan.sorted_slot.cptr(),
        dy_rows: dy_rows.mptr(),
        dtopk_w: dtopk_w.map_or(std::ptr::null_mut(), |b| b.mptr()),
        rows: plan.max_rows as i32,
        k: k as i32,
        d: di,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "moe_combine_bwd_rows",
        row_blocks(plan.max_rows),
        ROW_THREADS,
        params,
    ))
}

/// Shared-expert backward, per token: dshared_out [T, d] = g * dout,
/// `dshared_gate [T] = <dout, shared_out>` (gradient after the sigmoid).
#[allow(clippy::too_many_arguments)]
pub fn bwd_tokens(
    ex: &Executor,
    dout: &Buf<bf16>,
    shared_out: &Buf<bf16>,
    shared_gate: Option<&Buf<f32>>,
    dshared_out: &Buf<bf16>,
    dshared_gate: Option<&Buf<f32>>,
    tokens: usize,
    d: usize,
) -> Result<()> {
    let di = dim(d)?;
    let ti = i32::try_from(tokens)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| GpuError::Invalid(format!("moe combine: bad tokens {tokens}")))?;
    for (name, b) in [
        ("dout", dout),
        ("shared_out", shared_out),
        ("dshared_out", dshared_out),
    ] {
        ex.check_buf(&format!("moe combine bwd {name}"), b, tokens * d)?;
    }
    for (name, b) in [("shared_gate", shared_gate), ("dshared_gate", dshared_gate)] {
        if let Some(b) = b {
            ex.check_buf(&format!("moe combine bwd {name}"), b, tokens)?;
        }
    }
    let params = MoeCombineBwdTokensParams {
        dout: dout.cptr(),
        shared_out: shared_out.cptr(),
        shared_gate: cptr(shared_gate),
        dshared_out: dshared_out.mptr(),
        dshared_gate: dshared_gate.map_or(std::ptr::null_mut(), |b| b.mptr()),
        tokens: ti,
        d: di,
    };
    ex.launch(&Launch::linear(
        "moe_combine_bwd_tokens",
        row_blocks(tokens),
        ROW_THREADS,
        params,
    ))
}
