// Token embedding forward and backward.
//   out[t] = table[ids[t]]                     (fp32 table -> bf16 activations)
//   embed_fwd_bf16: the same from the table's bf16 copy (inference weights)
//   dtable[id] += sum of dout[t] over t with ids[t] == id   (deterministic)
// The backward needs no host plan and no float atomics, and does O(rows) work:
// rows are cut into tiles of EMBED_TILE; each tile's block sorts its (id, row)
// keys in shared memory; each distinct id of a tile is an "entry"
// e = tile * EMBED_TILE + group. An entry of one row is just that row of dout
// (entry_row); an entry of several rows gets one fp32 partial row (its rows
// summed in row order, written by the tile). Integer atomics then gather each
// id's entries into one segment (embed_bwd_alloc, embed_bwd_scatter): their
// order there varies from run to run, the set does not. embed_bwd_reduce sorts
// each segment (ascending entry = tile order) and adds the entries in that
// order, so every sum has a fixed order. Traffic: dout read once, table rows
// read + written once, plus a partial written + read only for ids repeated
// inside a tile (a hot id like [PAD] is summed in parallel by the tiles).
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
  // 16-byte loads and stores: every row start is aligned when the bases are and d % 8 == 0.
  if (p.d % 8 == 0 && aligned16(p.table) && aligned16(p.out)) {
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

// embed_fwd from the bf16 copy: a row copy, 16 bytes (8 elements) per lane.
extern "C" __global__ void __launch_bounds__(256) embed_fwd_bf16(const EmbedFwdBf16Params p) {
  const int lane = threadIdx.x % TMOE_WARP;
  const int row = blockIdx.x * (blockDim.x / TMOE_WARP) + threadIdx.x / TMOE_WARP;
  if (row >= p.rows) return;
  const uint32_t id = p.ids[row];
  bf16* out = p.out + (size_t)row * p.d;
  const bf16* src = id < (uint32_t)p.vocab ? p.table + (size_t)id * p.d : nullptr;
  if (p.d % 8 == 0 && aligned16(p.table) && aligned16(p.out)) {
    uint4* o4 = reinterpret_cast<uint4*>(out);
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    for (int j = lane; j < p.d / 8; j += TMOE_WARP) o4[j] = src ? s4[j] : make_uint4(0u, 0u, 0u, 0u);
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) out[j] = src ? src[j] : f2bf(0.f);
  }
}

#define EMBED_NONE 0xFFFFFFFFu
#define EMBED_ROW_BITS 8  // log2(EMBED_TILE): the local row in a sort key's low bits
#define EMBED_UNROLL 4    // partial items per thread in flight (embed_bwd_tile)

// Exclusive rank of this thread among the block's threads with `flag` set, in
// thread order; *total = their count. Every thread must call it (one barrier;
// `counts` must not be read by a previous call any more).
static __device__ uint32_t embed_block_rank(bool flag, uint32_t* counts, uint32_t* total) {
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const uint32_t bits = __ballot_sync(TMOE_FULL_MASK, flag);
  if (lane == 0) counts[warp] = __popc(bits);
  __syncthreads();
  uint32_t base = 0, n = 0;
  for (int w = 0; w < (int)(blockDim.x / TMOE_WARP); w++) {
    if (w < warp) base += counts[w];
    n += counts[w];
  }
  *total = n;
  return base + __popc(bits & ((1u << lane) - 1u));
}

// Grid = tiles, block = EMBED_TILE threads (one per row of the tile). The sort
// is short (36 barrier steps on 256 keys); the partial rows of repeated ids are
// (group, 8 columns) items spread over the whole block, EMBED_UNROLL first-row
// loads in flight per thread.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_tile(const EmbedBwdTileParams p) {
  TMOE_SHARED(uint32_t, key, [EMBED_TILE]);
  TMOE_SHARED(uint32_t, group_start, [EMBED_TILE + 1]);
  TMOE_SHARED(uint32_t, multi, [EMBED_TILE]);  // groups of several rows, ascending
  TMOE_SHARED(uint32_t, counts, [2][EMBED_TILE / TMOE_WARP]);
  const int t = threadIdx.x;
  const int64_t row0 = (int64_t)blockIdx.x * EMBED_TILE;
  const int64_t row = row0 + t;
  const uint32_t id = row < p.rows ? p.ids[row] : EMBED_NONE;
  // vocab <= 2^24 - 1 (checked by the wrapper), so valid keys never equal EMBED_NONE.
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

  // Group heads (first key of each id) ranked in key order.
  const uint32_t kt = key[t];
  const bool valid = kt != EMBED_NONE;
  const bool head = valid && (t == 0 || (key[t - 1] >> EMBED_ROW_BITS) != (kt >> EMBED_ROW_BITS));
  uint32_t n_groups, n_valid;
  const uint32_t g_me = embed_block_rank(head, counts[0], &n_groups);
  embed_block_rank(valid, counts[1], &n_valid);  // the barrier above made counts[1] free
  if (head) {
    group_start[g_me] = (uint32_t)t;
    p.tile_ids[row0 + g_me] = kt >> EMBED_ROW_BITS;
    p.entry_slot[row0 + g_me] = atomicAdd(&p.id_count[kt >> EMBED_ROW_BITS], 1u);
  }
  if (blockIdx.x == 0 && t == 0) *p.cursor = 0;
  if (t == 0) {
    group_start[n_groups] = n_valid;
    p.n_groups[blockIdx.x] = n_groups;
  }
  __syncthreads();

  // Thread t describes group t: one row (entry_row = that row) or several
  // (entry_row = NONE, a partial row below).
  const bool is_group = (uint32_t)t < n_groups;
  const uint32_t g_len = is_group ? group_start[t + 1] - group_start[t] : 0;
  if (is_group)
    p.entry_row[row0 + t] = g_len == 1 ? (uint32_t)(row0 + (key[group_start[t]] & (EMBED_TILE - 1)))
                                       : EMBED_NONE;
  uint32_t n_multi;
  const uint32_t m_me = embed_block_rank(g_len > 1, counts[0], &n_multi);
  if (g_len > 1) multi[m_me] = (uint32_t)t;
  __syncthreads();
  if (n_multi == 0) return;  // uniform

  // Partial rows of the repeated ids, rows summed in row order.
  const bool vec = p.d % 8 == 0 && (reinterpret_cast<uintptr_t>(p.dout) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.partial) & 15) == 0;
  if (vec) {
    const int nv = p.d / 8;
    const int n_items = (int)n_multi * nv;
    for (int it0 = t; it0 < n_items; it0 += EMBED_UNROLL * EMBED_TILE) {
      float acc[EMBED_UNROLL][8];
      uint32_t b[EMBED_UNROLL], e[EMBED_UNROLL];
      int col[EMBED_UNROLL];
#pragma unroll
      for (int u = 0; u < EMBED_UNROLL; u++) {  // first rows: independent loads
        const int it = it0 + u * EMBED_TILE;
        if (it < n_items) {
          const uint32_t g = multi[it / nv];
          col[u] = (it % nv) * 8;
          b[u] = group_start[g];
          e[u] = group_start[g + 1];
          load_bf16x8(p.dout + (row0 + (key[b[u]] & (EMBED_TILE - 1))) * p.d + col[u], acc[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < EMBED_UNROLL; u++) {
        const int it = it0 + u * EMBED_TILE;
        if (it >= n_items) continue;
        for (uint32_t i = b[u] + 1; i < e[u]; i++) {
          float v[8];
          load_bf16x8(p.dout + (row0 + (key[i] & (EMBED_TILE - 1))) * p.d + col[u], v);
#pragma unroll
          for (int c = 0; c < 8; c++) acc[u][c] += v[c];
        }
        float* out = p.partial + (row0 + multi[it / nv]) * p.d + col[u];
        *reinterpret_cast<float4*>(out) = make_float4(acc[u][0], acc[u][1], acc[u][2], acc[u][3]);
        *reinterpret_cast<float4*>(out + 4) = make_float4(acc[u][4], acc[u][5], acc[u][6], acc[u][7]);
      }
    }
  } else {
    const int n_items = (int)n_multi * p.d;
    for (int it = t; it < n_items; it += EMBED_TILE) {
      const uint32_t g = multi[it / p.d];
      const int j = it % p.d;
      float acc = 0.f;
      for (uint32_t i = group_start[g]; i < group_start[g + 1]; i++)
        acc += bf2f(p.dout[(row0 + (key[i] & (EMBED_TILE - 1))) * p.d + j]);
      p.partial[(row0 + g) * p.d + j] = acc;
    }
  }
}

// Entry e = tile * EMBED_TILE + group; false past the tile's groups.
static __device__ bool embed_entry_valid(const uint32_t* n_groups, int e) {
  return (uint32_t)(e % EMBED_TILE) < n_groups[e / EMBED_TILE];
}

// One thread per entry: the id's slot-0 entry reserves the id's segment.
// Tiny (16 bytes per entry): launch-latency bound.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_alloc(const EmbedBwdAllocParams p) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= p.n_entries || !embed_entry_valid(p.n_groups, e) || p.entry_slot[e] != 0) return;
  const uint32_t id = p.tile_ids[e];
  const uint32_t len = p.id_count[id];
  p.id_base[id] = atomicAdd(p.cursor, len);
  p.entry_len[e] = len;
}

// One thread per entry: its index into the id's segment; the counts go back to 0.
// Tiny (coalesced 32-bit reads of per-entry fields): launch-latency bound.
extern "C" __global__ void __launch_bounds__(256) embed_bwd_scatter(const EmbedBwdScatterParams p) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= p.n_entries || !embed_entry_valid(p.n_groups, e)) return;
  const uint32_t id = p.tile_ids[e], slot = p.entry_slot[e];
  p.segment[p.id_base[id] + slot] = (uint32_t)e;
  if (slot == 0) p.id_count[id] = 0;
}

// Adds one entry's row, 8 columns from `c`, to acc: its dout row (bf16) or
// its partial (fp32).
static __device__ __forceinline__ void embed_entry_add8(const EmbedBwdReduceParams& p, uint32_t e,
                                                        int c, float acc[8]) {
  const uint32_t r = p.entry_row[e];
  if (r != EMBED_NONE) {
    float v[8];
    load_bf16x8(p.dout + (size_t)r * p.d + c, v);
#pragma unroll
    for (int k = 0; k < 8; k++) acc[k] += v[k];
  } else {
    const float4 a = *reinterpret_cast<const float4*>(p.partial + (size_t)e * p.d + c);
    const float4 b = *reinterpret_cast<const float4*>(p.partial + (size_t)e * p.d + c + 4);
    acc[0] += a.x; acc[1] += a.y; acc[2] += a.z; acc[3] += a.w;
    acc[4] += b.x; acc[5] += b.y; acc[6] += b.z; acc[7] += b.w;
  }
}

// Grid = entries, block = d/8 threads (whole warps, <= 256; d columns when d %
// 8 != 0): the block of an id's slot-0 entry sorts the id's segment (entries
// ascending = tile order), then each thread sums its 8 columns over the
// entries in that order and adds once to the table (16-byte accesses: one dout
// or partial row per entry, the table row read and written once). Other
// entries' blocks exit at once.
extern "C" __global__ void __launch_bounds__(256, 4) embed_bwd_reduce(const EmbedBwdReduceParams p) {
  TMOE_DYNAMIC_SMEM(uint32_t, order);
  const int e = blockIdx.x;
  if (!embed_entry_valid(p.n_groups, e) || p.entry_slot[e] != 0) return;  // whole block
  const uint32_t id = p.tile_ids[e];
  const uint32_t len = p.entry_len[e];
  if (len > 1) {  // uniform; an id in one tile (the common case) needs no sort
    const uint32_t base = p.id_base[id];
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
  }
  float* dt = p.dtable + (size_t)id * p.d;
  const bool vec = p.d % 8 == 0 && (reinterpret_cast<uintptr_t>(p.dout) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.partial) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.dtable) & 15) == 0;
  if (vec) {
    for (int c = threadIdx.x * 8; c < p.d; c += blockDim.x * 8) {
      // The table row first: its load overlaps the entries' (it does not depend on them).
      const float4 t0 = *reinterpret_cast<const float4*>(dt + c);
      const float4 t1 = *reinterpret_cast<const float4*>(dt + c + 4);
      float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 2
      for (uint32_t i = 0; i < len; i++) embed_entry_add8(p, len == 1 ? (uint32_t)e : order[i], c, acc);
      *reinterpret_cast<float4*>(dt + c) =
          make_float4(t0.x + acc[0], t0.y + acc[1], t0.z + acc[2], t0.w + acc[3]);
      *reinterpret_cast<float4*>(dt + c + 4) =
          make_float4(t1.x + acc[4], t1.y + acc[5], t1.z + acc[6], t1.w + acc[7]);
    }
  } else {
    for (int j = threadIdx.x; j < p.d; j += blockDim.x) {
      float acc = 0.f;
      for (uint32_t i = 0; i < len; i++) {
        const uint32_t en = len == 1 ? (uint32_t)e : order[i], r = p.entry_row[en];
        acc += r != EMBED_NONE ? bf2f(p.dout[(size_t)r * p.d + j]) : p.partial[(size_t)en * p.d + j];
      }
      dt[j] += acc;
    }
  }
}
