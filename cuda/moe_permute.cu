// MoE permutation, all on the device (no host sync between router and GEMMs).
//
// The plan is a stable counting sort of the T*k routed slots (slot = t*k + j)
// by expert; expert e's segment starts at expert_offset[e] and is padded up to
// a multiple of `tile` rows (the grouped GEMM's tile height). Outputs: counts
// [N], expert_offset [N+1], total_rows [1], sorted_slot [max_rows] (slot id per
// padded row, 0xFFFFFFFF = padding), tile_expert [max_rows / tile] (expert of
// each tile, 0xFFFFFFFF past the end), slot_pos [T*k] (slot -> padded row).
// Buffers are sized for the worst case (moe_max_rows) so the launch grid of the
// GEMMs never needs the counts on the host. Bit-for-bit equal to
// backend::cpu::moe_permute::plan. Two launches, both over chunks of
// blockDim.x * MOE_PLAN_ROUNDS slots (one chunk per block):
//
// moe_permute_count: per-chunk expert histogram -> block_hist [chunks, N]
//   (shared-memory integer atomics: order-independent, so deterministic).
// moe_permute_plan: every block sums the (tiny) histogram table itself: the
//   totals give the padded offsets, the chunks before its own give its base.
//   Inside the chunk, warp w owns MOE_PLAN_ROUNDS consecutive groups of 32
//   slots; a slot's stable rank is its rank among the lanes with the same
//   expert (match mask from log2(N+1) ballots) plus the warp's running count,
//   plus the counts of earlier warps (a shared prefix). Then the padding rows
//   and the tile table are written grid-stride: rows the scatter does not
//   write, so no ordering between blocks is needed. Latency bound (~1 us of
//   work per launch at T*k = 65536): both kernels are one pass with no serial
//   loop longer than N.
//
// moe_gather: xp[r] = x[sorted_slot[r] / k], zero rows for padding (for GEMMs
//   that do not fuse the gather into their A load). One warp per row, 16-byte
//   copies (d % 8 == 0 and aligned pointers; scalar otherwise), ROW_UNROLL
//   vectors per lane in flight; 4 bytes per element (read + write).
#include "common.cuh"

#define MOE_NONE 0xFFFFFFFFu
#define PLAN_MAX_WARPS 32
#define ROW_UNROLL 3  // d = 768: 96 vectors, one pass of 3 per lane


extern "C" __global__ void __launch_bounds__(256) moe_permute_count(const MoePermuteCountParams p) {
  TMOE_SHARED(uint32_t, s_hist, [MOE_MAX_EXPERTS]);
  const int n = p.n_experts;
  for (int e = threadIdx.x; e < n; e += blockDim.x) s_hist[e] = 0;
  __syncthreads();
  const int64_t slots = (int64_t)p.tokens * p.k;
  const int64_t base = (int64_t)blockIdx.x * blockDim.x * MOE_PLAN_ROUNDS;
  uint32_t e[MOE_PLAN_ROUNDS];
#pragma unroll
  for (int r = 0; r < MOE_PLAN_ROUNDS; r++) {
    const int64_t s = base + r * (int64_t)blockDim.x + threadIdx.x;
    e[r] = s < slots ? p.topk_idx[s] : MOE_NONE;
  }
#pragma unroll
  for (int r = 0; r < MOE_PLAN_ROUNDS; r++)
    if (e[r] < (uint32_t)n) atomicAdd(&s_hist[e[r]], 1u);
  __syncthreads();
  for (int x = threadIdx.x; x < n; x += blockDim.x) p.block_hist[(int64_t)blockIdx.x * n + x] = s_hist[x];
}

extern "C" __global__ void __launch_bounds__(256) moe_permute_plan(const MoePermutePlanParams p) {
  TMOE_SHARED(uint32_t, s_count, [MOE_MAX_EXPERTS]);
  TMOE_SHARED(uint32_t, s_before, [MOE_MAX_EXPERTS]);  // this expert's slots in earlier chunks
  TMOE_SHARED(uint32_t, s_off, [MOE_MAX_EXPERTS + 1]);
  TMOE_SHARED(uint32_t, s_warp, [PLAN_MAX_WARPS][MOE_MAX_EXPERTS]);
  const int n = p.n_experts;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  const int64_t slots = (int64_t)p.tokens * p.k;

  // 1. Totals and this chunk's base from the [chunks, N] histogram table.
  for (int e = threadIdx.x; e < n; e += blockDim.x) { s_count[e] = 0; s_before[e] = 0; }
  for (int e = lane; e < n; e += 32) s_warp[warp][e] = 0;
  __syncthreads();
  const int64_t table = (int64_t)p.n_chunks * n;
  for (int64_t i = threadIdx.x; i < table; i += blockDim.x) {
    const uint32_t v = p.block_hist[i];
    const int e = (int)(i % n);
    if (v) {
      atomicAdd(&s_count[e], v);
      if (i / n < (int64_t)blockIdx.x) atomicAdd(&s_before[e], v);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t off = 0;
    for (int e = 0; e < n; e++) {
      s_off[e] = off;
      off += (s_count[e] + p.tile - 1) / p.tile * p.tile;
    }
    s_off[n] = off;
  }
  __syncthreads();
  if (blockIdx.x == 0) {
    for (int e = threadIdx.x; e <= n; e += blockDim.x) {
      p.expert_offset[e] = s_off[e];
      if (e < n) p.counts[e] = s_count[e];
    }
    if (threadIdx.x == 0) p.total_rows[0] = s_off[n];
  }

  // 2. Stable ranks inside the chunk: warp-local rank + running count per warp.
  const int64_t wbase = (int64_t)blockIdx.x * blockDim.x * MOE_PLAN_ROUNDS + (int64_t)warp * 32 * MOE_PLAN_ROUNDS;
  const int key_bits = 32 - __clz(n);  // keys 0..n (n = not routed / past the end)
  const uint32_t lt_mask = (1u << lane) - 1u;
  uint32_t key[MOE_PLAN_ROUNDS], rank[MOE_PLAN_ROUNDS];
#pragma unroll
  for (int r = 0; r < MOE_PLAN_ROUNDS; r++) {
    const int64_t s = wbase + r * 32 + lane;
    const uint32_t e = s < slots ? p.topk_idx[s] : MOE_NONE;
    key[r] = e < (uint32_t)n ? e : (uint32_t)n;
  }
#pragma unroll
  for (int r = 0; r < MOE_PLAN_ROUNDS; r++) {
    uint32_t peers = TMOE_FULL_MASK;
    for (int b = 0; b < key_bits; b++) {
      const bool bit = (key[r] >> b) & 1u;
      const uint32_t m = __ballot_sync(TMOE_FULL_MASK, bit);
      peers &= bit ? m : ~m;
    }
    const bool valid = key[r] < (uint32_t)n;
    rank[r] = (valid ? s_warp[warp][key[r]] : 0u) + __popc(peers & lt_mask);
    __syncwarp();
    if (valid && (peers & lt_mask) == 0) s_warp[warp][key[r]] += __popc(peers);
    __syncwarp();
  }
  __syncthreads();
  // Exclusive prefix over warps, starting at the expert's offset + earlier chunks.
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    uint32_t run = s_off[e] + s_before[e];
    for (int w = 0; w < n_warps; w++) {
      const uint32_t c = s_warp[w][e];
      s_warp[w][e] = run;
      run += c;
    }
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < MOE_PLAN_ROUNDS; r++) {
    const int64_t s = wbase + r * 32 + lane;
    if (s >= slots) continue;
    if (key[r] < (uint32_t)n) {
      const uint32_t pos = s_warp[warp][key[r]] + rank[r];
      p.sorted_slot[pos] = (uint32_t)s;
      p.slot_pos[s] = pos;
    } else {
      p.slot_pos[s] = MOE_NONE;
    }
  }

  // 3. Rows the scatter leaves alone (segment padding, past total_rows) and the
  //    tile table, grid-stride over all blocks.
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t gstride = (int64_t)gridDim.x * blockDim.x;
  for (int e = 0; e < n; e++)
    for (int64_t r = s_off[e] + s_count[e] + gid; r < s_off[e + 1]; r += gstride) p.sorted_slot[r] = MOE_NONE;
  for (int64_t r = s_off[n] + gid; r < p.max_rows; r += gstride) p.sorted_slot[r] = MOE_NONE;
  const int64_t n_tiles = p.max_rows / p.tile;
  for (int64_t ti = gid; ti < n_tiles; ti += gstride) {
    const uint32_t row = (uint32_t)(ti * p.tile);
    uint32_t ex = MOE_NONE;
    for (int e = 0; e < n; e++)
      if (row >= s_off[e] && row < s_off[e + 1]) ex = (uint32_t)e;
    p.tile_expert[ti] = ex;
  }
}

extern "C" __global__ void __launch_bounds__(256) moe_gather(const MoeGatherParams p) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  const int d = p.d;
  const bool vec = d % 8 == 0 && aligned16(p.x) && aligned16(p.out);
  for (int64_t r = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5); r < p.rows; r += (int64_t)gridDim.x * warps) {
    const uint32_t slot = p.sorted_slot[r];
    const bf16* x = slot == MOE_NONE ? nullptr : p.x + (int64_t)(slot / p.k) * d;
    bf16* o = p.out + r * d;
    if (vec) {
      const int nv = d / 8;
      const uint4* x4 = reinterpret_cast<const uint4*>(x);
      uint4* o4 = reinterpret_cast<uint4*>(o);
      for (int v0 = lane; v0 - lane < nv; v0 += 32 * ROW_UNROLL) {  // same trip count on every lane
        uint4 v[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          const int c = v0 + 32 * u;
          v[u] = make_uint4(0u, 0u, 0u, 0u);
          if (x && c < nv) v[u] = x4[c];
        }
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++)
          if (v0 + 32 * u < nv) o4[v0 + 32 * u] = v[u];
      }
    } else {
      for (int c = lane; c < d; c += 32) o[c] = x ? x[c] : f2bf(0.0f);
    }
  }
}
