//! Launch wrappers for cuda/moe_route.cu: router softmax + top-k, the
//! load-balancing loss, and the router backward. All fp32.
//!
//! `valid` (`[T]` bytes, 1 = real token, 0 = `[PAD]`; `None` = all real): the
//! aux loss's statistics (counts, load, prob, the aux gradient) are over the
//! real tokens only; padded positions are still routed. Pass the same mask
//! to all three, with the counts `router_fwd` wrote under it (the plan's
//! counts are over every position: the same only without a mask).

use crate::backend::gpu::params::{
    LbLossFwdParams, LbLossPartialParams, MOE_MAX_EXPERTS, MOE_MAX_K, RouterBwdParams,
    RouterFwdParams,
};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

/// Kernel limits (cuda/params.h): experts of a router, experts per token.
pub const MAX_EXPERTS: usize = MOE_MAX_EXPERTS as usize;
pub const MAX_K: usize = MOE_MAX_K as usize;

/// Rows per block of the one-thread-per-token kernels (`ROW_THREADS` in
/// cuda/moe_route.cu, their `__launch_bounds__`).
const ROW_THREADS: u32 = 128;
/// Threads of both aux-loss passes (`LB_THREADS` in cuda/moe_route.cu).
const LB_THREADS: u32 = 256;
/// Aux-loss pass 1: at least this many probabilities per block (16 per
/// thread: four float4 loads in flight), at most `LB_MAX_PARTIALS` blocks.
const LB_PER_BLOCK: usize = LB_THREADS as usize * 16;
const LB_MAX_PARTIALS: usize = 1024;

/// Length of the `partials` scratch buffer of [`lb_loss_fwd`] (the number of
/// blocks of its first pass; fixed by the shape, so the sum order is too).
pub fn lb_loss_partials(r: &Routing) -> usize {
    (r.tokens * r.n_experts)
        .div_ceil(LB_PER_BLOCK)
        .clamp(1, LB_MAX_PARTIALS)
}

/// Token count, experts, experts per token.
#[derive(Clone, Copy, Debug)]
pub struct Routing {
    pub tokens: usize,
    pub n_experts: usize,
    pub k: usize,
}

impl Routing {
    pub(crate) fn check(&self) -> Result<(i32, i32, i32)> {
        let Routing {
            tokens,
            n_experts: n,
            k,
        } = *self;
        if tokens == 0 || n == 0 || n > MAX_EXPERTS || k == 0 || k > n || k > MAX_K {
            return Err(GpuError::Invalid(format!(
                "moe routing: bad shape {self:?} (need 1 <= k <= min(N, {MAX_K}), N <= {MAX_EXPERTS})"
            )));
        }
        let t = i32::try_from(tokens)
            .map_err(|_| GpuError::Invalid(format!("moe routing: {tokens} tokens is too many")))?;
        Ok((t, n as i32, k as i32))
    }
    fn row_blocks(&self) -> u32 {
        self.tokens.div_ceil(ROW_THREADS as usize) as u32
    }
}

/// The kernels' nullable `valid` pointer, after checking its length (`[T]`).
fn check_valid(
    ex: &Executor,
    what: &str,
    valid: Option<&Buf<u8>>,
    r: &Routing,
) -> Result<*const u8> {
    match valid {
        Some(v) => {
            ex.check_buf(what, v, r.tokens)?;
            Ok(v.cptr())
        }
        None => Ok(std::ptr::null()),
    }
}

/// `probs [T,N]` =, `topk_idx [T,k]` =, `topk_w [T,k]` =; `counts [N]` += slots of
/// real tokens (zero it first; optional: without a mask `moe_permute_plan`
/// writes the same counts).
#[allow(clippy::too_many_arguments)]
pub fn router_fwd(
    ex: &Executor,
    logits: &Buf<f32>,
    probs: &Buf<f32>,
    topk_idx: &Buf<u32>,
    topk_w: &Buf<f32>,
    counts: Option<&Buf<u32>>,
    valid: Option<&Buf<u8>>,
    r: &Routing,
) -> Result<()> {
    let (tokens, n_experts, k) = r.check()?;
    ex.check_buf("router logits", logits, r.tokens * r.n_experts)?;
    ex.check_buf("router probs", probs, r.tokens * r.n_experts)?;
    ex.check_buf("router topk_idx", topk_idx, r.tokens * r.k)?;
    ex.check_buf("router topk_w", topk_w, r.tokens * r.k)?;
    if let Some(c) = counts {
        ex.check_buf("router counts", c, r.n_experts)?;
    }
    let valid = check_valid(ex, "router valid", valid, r)?;
    let params = RouterFwdParams {
        logits: logits.cptr(),
        probs: probs.mptr(),
        topk_idx: topk_idx.mptr(),
        topk_w: topk_w.mptr(),
        counts: counts.map_or(std::ptr::null_mut(), |c| c.mptr()),
        valid,
        tokens,
        n_experts,
        k,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "router_fwd",
        r.row_blocks(),
        ROW_THREADS,
        params,
    ))
}

/// `loss [1] = N * sum_e count_e/(T_r k) * sum_{real t} probs[t, e] / T_r`
/// (T_r real tokens; 0 without one). Two launches: block partial sums into
/// `partials` (scratch, `lb_loss_partials(r)` long), then one block sums them
/// in a fixed order (deterministic).
pub fn lb_loss_fwd(
    ex: &Executor,
    probs: &Buf<f32>,
    counts: &Buf<u32>,
    valid: Option<&Buf<u8>>,
    partials: &Buf<f32>,
    loss: &Buf<f32>,
    r: &Routing,
) -> Result<()> {
    let (tokens, n_experts, k) = r.check()?;
    ex.check_buf("lb_loss probs", probs, r.tokens * r.n_experts)?;
    ex.check_buf("lb_loss counts", counts, r.n_experts)?;
    let n_partials = lb_loss_partials(r);
    ex.check_buf("lb_loss partials", partials, n_partials)?;
    ex.check_buf("lb_loss loss", loss, 1)?;
    let valid = check_valid(ex, "lb_loss valid", valid, r)?;
    let p1 = LbLossPartialParams {
        probs: probs.cptr(),
        counts: counts.cptr(),
        valid,
        partials: partials.mptr(),
        tokens,
        n_experts,
    };
    ex.launch(&Launch::linear(
        "lb_loss_partial",
        n_partials as u32,
        LB_THREADS,
        p1,
    ))?;
    let p2 = LbLossFwdParams {
        partials: partials.cptr(),
        counts: counts.cptr(),
        loss: loss.mptr(),
        n_partials: n_partials as i32,
        n_experts,
        k,
        _pad: 0,
    };
    ex.launch(&Launch::linear("lb_loss_fwd", 1, LB_THREADS, p2))
}

/// `dlogits [T,N]` = softmax backward of (scatter(dtopk_w) + lb_dloss * dLb/dprobs);
/// dLb/dprobs is 0 on padded rows.
#[allow(clippy::too_many_arguments)]
pub fn router_bwd(
    ex: &Executor,
    probs: &Buf<f32>,
    topk_idx: &Buf<u32>,
    dtopk_w: Option<&Buf<f32>>,
    counts: &Buf<u32>,
    valid: Option<&Buf<u8>>,
    lb_dloss: f32,
    dlogits: &Buf<f32>,
    r: &Routing,
) -> Result<()> {
    let (tokens, n_experts, k) = r.check()?;
    ex.check_buf("router_bwd probs", probs, r.tokens * r.n_experts)?;
    ex.check_buf("router_bwd topk_idx", topk_idx, r.tokens * r.k)?;
    if let Some(d) = dtopk_w {
        ex.check_buf("router_bwd dtopk_w", d, r.tokens * r.k)?;
    }
    ex.check_buf("router_bwd counts", counts, r.n_experts)?;
    ex.check_buf("router_bwd dlogits", dlogits, r.tokens * r.n_experts)?;
    let valid = check_valid(ex, "router_bwd valid", valid, r)?;
    let params = RouterBwdParams {
        probs: probs.cptr(),
        topk_idx: topk_idx.cptr(),
        dtopk_w: dtopk_w.map_or(std::ptr::null(), |d| d.cptr()),
        counts: counts.cptr(),
        valid,
        dlogits: dlogits.mptr(),
        lb_dloss,
        tokens,
        n_experts,
        k,
    };
    ex.launch(&Launch::linear(
        "router_bwd",
        r.row_blocks(),
        ROW_THREADS,
        params,
    ))
}
