//! Launch wrappers for cuda/moe_permute.cu: the device-side routing plan
//! (stable sort of the routed slots by expert, tile-padded segments) and the
//! row gather.

use half::bf16;

use super::moe_route::Routing;
use crate::backend::gpu::params::{
    MOE_PLAN_ROUNDS, MoeGatherParams, MoePermuteCountParams, MoePermutePlanParams,
};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

/// Marks padding rows in `sorted_slot` and tiles past the end in `tile_expert`.
pub const NONE: u32 = u32::MAX;

/// Threads per block of both plan kernels (whole warps, at most 32 of them);
/// a block sorts `PLAN_THREADS * PLAN_ROUNDS` slots.
const PLAN_THREADS: u32 = 256;
/// Slots per thread (cuda/params.h).
const PLAN_ROUNDS: usize = MOE_PLAN_ROUNDS as usize;
const PLAN_CHUNK: usize = PLAN_THREADS as usize * PLAN_ROUNDS;
/// Row kernels (gather, combine): one warp per row, 8 rows per block.
pub(crate) const ROW_THREADS: u32 = 256;
const ROWS_PER_BLOCK: usize = ROW_THREADS as usize / 32;

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
    /// [chunks, N] per-chunk expert histogram (scratch between the two launches).
    block_hist: Buf<u32>,
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
            block_hist: ex.alloc_zeroed(plan_chunks(&routing) * routing.n_experts)?,
        })
    }

    /// Builds the plan from topk_idx [T, k] (expert ids; ids >= N are dropped:
    /// their slot_pos is NONE). Two launches (per-chunk histograms, then the
    /// sort and the tables), no host synchronisation.
    pub fn build(&self, ex: &Executor, topk_idx: &Buf<u32>) -> Result<()> {
        let (tokens, n_experts, k) = self.routing.check()?;
        ex.check_buf(
            "moe plan topk_idx",
            topk_idx,
            self.routing.tokens * self.routing.k,
        )?;
        let chunks = plan_chunks(&self.routing);
        let count = MoePermuteCountParams {
            topk_idx: topk_idx.cptr(),
            block_hist: self.block_hist.mptr(),
            tokens,
            n_experts,
            k,
            _pad: 0,
        };
        ex.launch(&Launch::linear(
            "moe_permute_count",
            chunks as u32,
            PLAN_THREADS,
            count,
        ))?;
        let params = MoePermutePlanParams {
            topk_idx: topk_idx.cptr(),
            block_hist: self.block_hist.cptr(),
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
            n_chunks: chunks as i32,
        };
        ex.launch(&Launch::linear(
            "moe_permute_plan",
            chunks as u32,
            PLAN_THREADS,
            params,
        ))
    }
}

/// Blocks of the plan kernels: one per chunk of `PLAN_CHUNK` slots.
fn plan_chunks(r: &Routing) -> usize {
    (r.tokens * r.k).div_ceil(PLAN_CHUNK)
}

/// Blocks for `rows` rows at one warp per row.
pub(crate) fn row_blocks(rows: usize) -> u32 {
    rows.div_ceil(ROWS_PER_BLOCK) as u32
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
        row_blocks(plan.max_rows),
        ROW_THREADS,
        params,
    ))
}
