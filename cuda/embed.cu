// Token embedding forward and backward.
//   out[t] = table[ids[t]]                     (fp32 table -> bf16 activations)
//   dtable[id] += sum of dout[t] over t with ids[t] == id   (deterministic)
// The backward needs no host plan and no float atomics, and does O(rows) work:
// rows are cut into tiles of EMBED_TILE; each tile's block sorts its (id, row)
// keys in shared memory and writes one fp32 partial per distinct id (rows
// summed in row order), an "entry" e = tile * EMBED_TILE + group. Integer
// atomics then gather each id's entries into one segment (embed_bwd_alloc,
// embed_bwd_scatter): their order there varies from run to run, the set does
// not. embed_bwd_reduce sorts each segment (ascending entry = tile order) and
// adds the partials in that order, so every sum has a fixed order.
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
    p.entry_slot[row0 + g] = atomicAdd(&p.id_count[kt >> EMBED_ROW_BITS], 1u);
  }
  if (blockIdx.x == 0 && t == 0) *p.cursor = 0;
  if (t == 0) {
    group_start[n_groups] = n_valid;
    p.n_groups[blockIdx.x] = n_groups;
  }
  __syncthreads();

  // Partial row per group: its rows in row order. One warp per group (a tile of
  // many distinct ids keeps every warp busy); 16-byte loads when possible.
  const bool vec = p.d % 8 == 0 && (reinterpret_cast<uintptr_t>(p.dout) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.partial) & 15) == 0;
  for (uint32_t g = warp; g < n_groups; g += EMBED_TILE / TMOE_WARP) {
    const uint32_t b = group_start[g], e = group_start[g + 1];
    float* out = p.partial + (size_t)(row0 + g) * p.d;
    if (vec) {
      for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
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
      for (int j = lane; j < p.d; j += TMOE_WARP) {
        float acc = 0.f;
        for (uint32_t i = b; i < e; i++)
          acc += bf2f(p.dout[(size_t)(row0 + (key[i] & (EMBED_TILE - 1))) * p.d + j]);
        out[j] = acc;
      }
    }
  }
}

// Entry e = tile * EMBED_TILE + group; false past the tile's groups.
static __device__ bool embed_entry_valid(const uint32_t* n_groups, int e) {
  return (uint32_t)(e % EMBED_TILE) < n_groups[e / EMBED_TILE];
}

// One thread per entry: the id's slot-0 entry reserves the id's segment.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_alloc(const EmbedBwdAllocParams p) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= p.n_entries || !embed_entry_valid(p.n_groups, e) || p.entry_slot[e] != 0) return;
  const uint32_t id = p.tile_ids[e];
  const uint32_t len = p.id_count[id];
  p.id_base[id] = atomicAdd(p.cursor, len);
  p.entry_len[e] = len;
}

// One thread per entry: its index into the id's segment; the counts go back to 0.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_scatter(const EmbedBwdScatterParams p) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= p.n_entries || !embed_entry_valid(p.n_groups, e)) return;
  const uint32_t id = p.tile_ids[e], slot = p.entry_slot[e];
  p.segment[p.id_base[id] + slot] = (uint32_t)e;
  if (slot == 0) p.id_count[id] = 0;
}

// Grid (n_entries, column blocks): the block of an id's slot-0 entry sorts the
// id's segment (entries ascending = tile order), then each thread sums its
// column over the entries in that order and adds once to the table.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_reduce(const EmbedBwdReduceParams p) {
  TMOE_DYNAMIC_SMEM(uint32_t, order);
  const int e = blockIdx.x;
  if (!embed_entry_valid(p.n_groups, e) || p.entry_slot[e] != 0) return;  // whole block
  const uint32_t id = p.tile_ids[e];
  const uint32_t len = p.entry_len[e], base = p.id_base[id];
  uint32_t n = 1;
  while (n < len) n <<= 1;
  for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
    order[i] = i < len ? p.segment[base + i] : 0xFFFFFFFFu;
  // Bitonic sort, ascending (entries are distinct).
  for (uint32_t k = 2; k <= n; k <<= 1) {
    for (uint32_t j = k >> 1; j > 0; j >>= 1) {
      __syncthreads();
      for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        const uint32_t o = i ^ j;
        if (o > i) {
          const uint32_t a = order[i], b = order[o];
          if ((a > b) == ((i & k) == 0)) { order[i] = b; order[o] = a; }
        }
      }
    }
  }
  __syncthreads();
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= p.d) return;
  float acc = 0.f;
  for (uint32_t i = 0; i < len; i++) acc += p.partial[(size_t)order[i] * p.d + j];
  p.dtable[(size_t)id * p.d + j] += acc;
}
