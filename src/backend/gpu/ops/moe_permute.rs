//! Launch wrappers for cuda/moe_permute.cu: the device-side routing plan
//! (stable sort of the routed slots by expert, tile-padded segments) and the
//! row gather.

use half::bf16;

use super::moe_route::Routing;
use crate::backend::gpu::params::{MoeGatherParams, MoePermutePlanParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

/// Marks padding rows in `sorted_slot` and tiles past the end in `tile_expert`.
pub const NONE: u32 = u32::MAX;

/// Threads of the single plan block (GPU); whole warps, at most 1024.
const PLAN_THREADS: u32 = 1024;
const ROW_THREADS: usize = 256;

/// Worst-case padded row count: every expert may waste up to `tile - 1` rows.
/// A multiple of `tile`; buffers sized with it never need the counts on the host.
pub fn max_rows(tokens: usize, k: usize, n_experts: usize, tile: usize) -> usize {
    ((tokens * k).div_ceil(tile) + n_experts) * tile
}

/// The plan's device buffers (see `MoePermutePlanParams` in cuda/params.h).
pub struct MoePlan {
    pub routing: Routing,
    pub tile: usize,
    pub max_rows: usize,
    pub counts: Buf<u32>,
    pub expert_offset: Buf<u32>,
    pub total_rows: Buf<u32>,
    pub sorted_slot: Buf<u32>,
    pub tile_expert: Buf<u32>,
    pub slot_pos: Buf<u32>,
}

impl MoePlan {
    pub fn alloc(ex: &Executor, routing: Routing, tile: usize) -> Result<Self> {
        routing.check()?;
        if tile == 0 || tile > 1 << 16 {
            return Err(GpuError::Invalid(format!(
                "moe plan: bad tile height {tile}"
            )));
        }
        let max_rows = max_rows(routing.tokens, routing.k, routing.n_experts, tile);
        if i32::try_from(max_rows).is_err() {
            return Err(GpuError::Invalid(format!(
                "moe plan: {max_rows} rows is too many"
            )));
        }
        Ok(MoePlan {
            routing,
            tile,
            max_rows,
            counts: ex.alloc_zeroed(routing.n_experts)?,
            expert_offset: ex.alloc_zeroed(routing.n_experts + 1)?,
            total_rows: ex.alloc_zeroed(1)?,
            sorted_slot: ex.alloc_zeroed(max_rows)?,
            tile_expert: ex.alloc_zeroed(max_rows / tile)?,
            slot_pos: ex.alloc_zeroed(routing.tokens * routing.k)?,
        })
    }

    /// Builds the plan from topk_idx [T, k] (expert ids; ids >= N are dropped:
    /// their slot_pos is NONE). One block; no host synchronisation.
    pub fn build(&self, ex: &Executor, topk_idx: &Buf<u32>) -> Result<()> {
        let (tokens, n_experts, k) = self.routing.check()?;
        ex.check_buf(
            "moe plan topk_idx",
            topk_idx,
            self.routing.tokens * self.routing.k,
        )?;
        let params = MoePermutePlanParams {
            topk_idx: topk_idx.cptr(),
            counts: self.counts.mptr(),
            expert_offset: self.expert_offset.mptr(),
            total_rows: self.total_rows.mptr(),
            sorted_slot: self.sorted_slot.mptr(),
            tile_expert: self.tile_expert.mptr(),
            slot_pos: self.slot_pos.mptr(),
            tokens,
            n_experts,
            k,
            tile: self.tile as i32,
            max_rows: self.max_rows as i32,
            _pad: 0,
        };
        ex.launch(&Launch::linear("moe_permute_plan", 1, PLAN_THREADS, params))
    }
}

/// Threads for a row of `d` elements: whole warps, at most 256.
pub(crate) fn row_threads(d: usize) -> u32 {
    (d.div_ceil(32) * 32).min(ROW_THREADS) as u32
}

/// xp [max_rows, d] = x [T, d] rows in plan order, zero rows for padding.
pub fn gather(
    ex: &Executor,
    plan: &MoePlan,
    x: &Buf<bf16>,
    xp: &Buf<bf16>,
    d: usize,
) -> Result<()> {
    let di = i32::try_from(d)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| GpuError::Invalid(format!("moe gather: bad d {d}")))?;
    ex.check_buf("moe gather x", x, plan.routing.tokens * d)?;
    ex.check_buf("moe gather out", xp, plan.max_rows * d)?;
    let params = MoeGatherParams {
        x: x.cptr(),
        sorted_slot: plan.sorted_slot.cptr(),
        out: xp.mptr(),
        rows: plan.max_rows as i32,
        d: di,
        k: plan.routing.k as i32,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "moe_gather",
        plan.max_rows as u32,
        row_threads(d),
        params,
    ))
}
