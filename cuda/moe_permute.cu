// MoE permutation, all on the device (no host sync between router and GEMMs).
//
// moe_permute_plan: stable counting sort of the T*k routed slots (slot = t*k + j)
//   by expert; expert e's segment starts at expert_offset[e] and is padded up to
//   a multiple of `tile` rows (the grouped GEMM's tile height). Outputs:
//   counts [N], expert_offset [N+1], total_rows [1], sorted_slot [max_rows]
//   (slot id per padded row, 0xFFFFFFFF = padding), tile_expert
//   [max_rows / tile] (expert of each tile, 0xFFFFFFFF past the end), slot_pos
//   [T*k] (slot -> padded row). Buffers are sized for the worst case
//   (moe_max_rows) so the launch grid of the GEMMs never needs the counts on
//   the host. Bit-for-bit equal to backend::cpu::moe_permute::plan.
//   One block (like vLLM's moe_align_block_size); the stable rank of a slot is
//   its rank inside its warp (ballot + popc) plus the counts of earlier warps
//   and earlier chunks.
// moe_gather: xp[r] = x[sorted_slot[r] / k], zero rows for padding (for GEMMs
//   that do not fuse the gather into their A load).
#include "common.cuh"

#define MOE_NONE 0xFFFFFFFFu

extern "C" __global__ void moe_permute_plan(const MoePermutePlanParams p) {
    __shared__ uint32_t s_count[MOE_MAX_EXPERTS];
    __shared__ uint32_t s_off[MOE_MAX_EXPERTS + 1];
    __shared__ uint32_t s_base[MOE_MAX_EXPERTS];
    __shared__ uint32_t s_warp[32][MOE_MAX_EXPERTS];
    const int n = p.n_experts;
    const int64_t slots = (int64_t)p.tokens * p.k;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;

    for (int e = threadIdx.x; e < n; e += blockDim.x) { s_count[e] = 0; s_base[e] = 0; }
    __syncthreads();
    for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
        const uint32_t e = p.topk_idx[s];
        if (e < (uint32_t)n) atomicAdd(&s_count[e], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t off = 0;
        for (int e = 0; e < n; e++) {
            s_off[e] = off;
            off += (s_count[e] + p.tile - 1) / p.tile * p.tile;
        }
        s_off[n] = off;
        p.total_rows[0] = off;
    }
    __syncthreads();
    for (int e = threadIdx.x; e <= n; e += blockDim.x) {
        p.expert_offset[e] = s_off[e];
        if (e < n) p.counts[e] = s_count[e];
    }
    for (int64_t r = threadIdx.x; r < p.max_rows; r += blockDim.x) p.sorted_slot[r] = MOE_NONE;
    const int64_t n_tiles = p.max_rows / p.tile;
    for (int64_t ti = threadIdx.x; ti < n_tiles; ti += blockDim.x) {
        const uint32_t row = (uint32_t)(ti * p.tile);
        uint32_t ex = MOE_NONE;
        for (int e = 0; e < n; e++)
            if (row >= s_off[e] && row < s_off[e + 1]) ex = (uint32_t)e;
        p.tile_expert[ti] = ex;
    }
    __syncthreads();  // padding marks land before the scatter overwrites them

    for (int64_t base = 0; base < slots; base += blockDim.x) {
        const int64_t s = base + threadIdx.x;
        const uint32_t e = s < slots ? p.topk_idx[s] : MOE_NONE;
        const bool valid = e < (uint32_t)n;
        // lanes of this warp routed to the same expert
        uint32_t same = 0;
        for (int x = 0; x < n; x++) {
            const uint32_t b = __ballot_sync(0xFFFFFFFFu, e == (uint32_t)x);
            if (e == (uint32_t)x) same = b;
        }
        for (int i = threadIdx.x; i < 32 * MOE_MAX_EXPERTS; i += blockDim.x) (&s_warp[0][0])[i] = 0;
        __syncthreads();
        if (valid) s_warp[warp][e] = __popc(same);  // same value from every such lane
        __syncthreads();
        if (valid) {
            uint32_t rank = s_base[e] + __popc(same & ((1u << lane) - 1u));
            for (int w = 0; w < warp; w++) rank += s_warp[w][e];
            const uint32_t pos = s_off[e] + rank;
            p.sorted_slot[pos] = (uint32_t)s;
            p.slot_pos[s] = pos;
        } else if (s < slots) {
            p.slot_pos[s] = MOE_NONE;
        }
        __syncthreads();
        for (int x = threadIdx.x; x < n; x += blockDim.x) {
            uint32_t add = 0;
            for (int w = 0; w < n_warps; w++) add += s_warp[w][x];
            s_base[x] += add;
        }
        __syncthreads();
    }
}

extern "C" __global__ void moe_gather(const MoeGatherParams p) {
    for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const uint32_t slot = p.sorted_slot[r];
        bf16* o = p.out + r * p.d;
        if (slot == MOE_NONE) {
            for (int c = threadIdx.x; c < p.d; c += blockDim.x) o[c] = f2bf(0.0f);
        } else {
            const bf16* x = p.x + (int64_t)(slot / p.k) * p.d;
            for (int c = threadIdx.x; c < p.d; c += blockDim.x) o[c] = x[c];
        }
    }
}
