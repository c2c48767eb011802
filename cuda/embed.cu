// Token embedding forward and backward.
//   out[t] = table[ids[t]]                     (fp32 table -> bf16 activations)
//   dtable[id] += sum of dout[t] over t with ids[t] == id   (deterministic)
// The backward needs no host plan and no float atomics: rows are cut into
// tiles of EMBED_TILE; each tile's block sorts its (id, row) keys in shared
// memory and writes one fp32 partial per distinct id (rows summed in row
// order); then one block per (tile, id) that is the id's first tile sums that
// id's partials in tile order. A frequent id ([PAD]) is thus summed by
// rows/EMBED_TILE blocks in parallel, and the order of every sum is fixed.
// Reference: backend/cpu/embedding.rs.
#include "common.cuh"

// One warp per row; ids outside the table give a zero row.
extern "C" __global__ void __launch_bounds__(256) embed_fwd(const EmbedFwdParams p) {
  const int lane = threadIdx.x % TMOE_WARP;
  const int row = blockIdx.x * (blockDim.x / TMOE_WARP) + threadIdx.x / TMOE_WARP;
  if (row >= p.rows) return;
  const uint32_t id = p.ids[row];
  bf16* out = p.out + (size_t)row * p.d;
  if (id >= (uint32_t)p.vocab) {
    for (int j = lane; j < p.d; j += TMOE_WARP) out[j] = f2bf(0.f);
    return;
  }
  const float* src = p.table + (size_t)id * p.d;
  if (p.d % 8 == 0) {
    for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
      const float4 a = *reinterpret_cast<const float4*>(src + j);
      const float4 b = *reinterpret_cast<const float4*>(src + j + 4);
      const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
      store_bf16x8(out + j, v);
    }
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) out[j] = f2bf(src[j]);
  }
}

#define EMBED_NONE 0xFFFFFFFFu
#define EMBED_ROW_BITS 8  // log2(EMBED_TILE): the local row in a sort key's low bits

// Block = EMBED_TILE threads, one per row of the tile.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_tile(const EmbedBwdTileParams p) {
  __shared__ uint32_t key[EMBED_TILE];
  __shared__ uint32_t group_start[EMBED_TILE + 1];
  __shared__ uint32_t warp_heads[EMBED_TILE / TMOE_WARP], warp_valid[EMBED_TILE / TMOE_WARP];
  const int t = threadIdx.x, lane = t % TMOE_WARP, warp = t / TMOE_WARP;
  const int64_t row0 = (int64_t)blockIdx.x * EMBED_TILE;
  const int64_t row = row0 + t;
  const uint32_t id = row < p.rows ? p.ids[row] : EMBED_NONE;
  // vocab < 2^24 (checked by the wrapper), so valid keys never equal EMBED_NONE.
  key[t] = id < (uint32_t)p.vocab ? (id << EMBED_ROW_BITS) | (uint32_t)t : EMBED_NONE;

  // Bitonic sort, ascending: (id, row) order, invalid rows last.
  for (int k = 2; k <= EMBED_TILE; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      __syncthreads();
      const int o = t ^ j;
      if (o > t) {
        const uint32_t a = key[t], b = key[o];
        if ((a > b) == ((t & k) == 0)) { key[t] = b; key[o] = a; }
      }
    }
  }
  __syncthreads();

  // Group heads (first key of each id) ranked by ballot + popc.
  const uint32_t kt = key[t];
  const bool valid = kt != EMBED_NONE;
  const bool head = valid && (t == 0 || (key[t - 1] >> EMBED_ROW_BITS) != (kt >> EMBED_ROW_BITS));
  const uint32_t heads = __ballot_sync(TMOE_FULL_MASK, head);
  const uint32_t valids = __ballot_sync(TMOE_FULL_MASK, valid);
  if (lane == 0) { warp_heads[warp] = __popc(heads); warp_valid[warp] = __popc(valids); }
  __syncthreads();
  uint32_t base = 0, n_groups = 0, n_valid = 0;
  for (int w = 0; w < EMBED_TILE / TMOE_WARP; w++) {
    if (w < warp) base += warp_heads[w];
    n_groups += warp_heads[w];
    n_valid += warp_valid[w];
  }
  if (head) {
    const uint32_t g = base + __popc(heads & ((1u << lane) - 1u));
    group_start[g] = (uint32_t)t;
    p.tile_ids[row0 + g] = kt >> EMBED_ROW_BITS;
  }
  if (t == 0) {
    group_start[n_groups] = n_valid;
    p.n_groups[blockIdx.x] = n_groups;
  }
  __syncthreads();

  // Partial row per group: its rows in row order. 16-byte loads when possible.
  const bool vec = p.d % 8 == 0 && (reinterpret_cast<uintptr_t>(p.dout) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.partial) & 15) == 0;
  for (uint32_t g = 0; g < n_groups; g++) {
    const uint32_t b = group_start[g], e = group_start[g + 1];
    float* out = p.partial + (size_t)(row0 + g) * p.d;
    if (vec) {
      for (int j = t * 8; j < p.d; j += EMBED_TILE * 8) {
        float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (uint32_t i = b; i < e; i++) {
          float v[8];
          load_bf16x8(p.dout + (size_t)(row0 + (key[i] & (EMBED_TILE - 1))) * p.d + j, v);
#pragma unroll
          for (int c = 0; c < 8; c++) acc[c] += v[c];
        }
        *reinterpret_cast<float4*>(out + j) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        *reinterpret_cast<float4*>(out + j + 4) = make_float4(acc[4], acc[5], acc[6], acc[7]);
      }
    } else {
      for (int j = t; j < p.d; j += EMBED_TILE) {
        float acc = 0.f;
        for (uint32_t i = b; i < e; i++)
          acc += bf2f(p.dout[(size_t)(row0 + (key[i] & (EMBED_TILE - 1))) * p.d + j]);
        out[j] = acc;
      }
    }
  }
}

// Group `id`'s index in tile k (binary search of its ascending ids), or -1.
static __device__ int embed_find(const EmbedBwdReduceParams& p, int k, uint32_t id) {
  const uint32_t* ids = p.tile_ids + (size_t)k * EMBED_TILE;
  int lo = 0, hi = (int)p.n_groups[k];
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (ids[mid] < id) lo = mid + 1; else hi = mid;
  }
  return lo < (int)p.n_groups[k] && ids[lo] == id ? lo : -1;
}

// Grid (n_tiles * EMBED_TILE, column blocks): block x = group g of tile k. Only
// the id's first tile does the work: it adds the id's partials of later tiles
// in tile order, then writes the table row once. No barriers: blocks exit early.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_reduce(const EmbedBwdReduceParams p) {
  const int k = blockIdx.x / EMBED_TILE, g = blockIdx.x % EMBED_TILE;
  if (g >= (int)p.n_groups[k]) return;
  const uint32_t id = p.tile_ids[blockIdx.x];
  for (int e = 0; e < k; e++)
    if (embed_find(p, e, id) >= 0) return;  // an earlier tile owns this id
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= p.d) return;
  float acc = p.partial[(size_t)blockIdx.x * p.d + j];
  for (int e = k + 1; e < p.n_tiles; e++) {
    const int ge = embed_find(p, e, id);
    if (ge >= 0) acc += p.partial[((size_t)e * EMBED_TILE + ge) * p.d + j];
  }
  p.dtable[(size_t)id * p.d + j] += acc;
}
