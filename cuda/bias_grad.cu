// Bias gradient of a linear layer: db[c] (+)= sum_t dy[t, c]
// (dy bf16 [rows, n] with row stride ld, db fp32 [n]). Reference: the column
// sum of backend::cpu::matmul's linear backward.
//
// Deterministic, no float atomics: a fixed partition and summation order for
// a given (rows, n, width), chosen by the launch wrapper.
//   bias_grad_partial: block (x, y) = (a slab of block_items column items,
//     split y of rows_per_split rows). Thread (tx, ty) of the 256 sums the rows
//     ty, ty + by, ty + 2 by, ... of the split (by = 256 / block_items) for its
//     item of `width` columns, in row order; the block then adds its by row
//     lanes in lane order (shared memory) and writes one partial row per split.
//     A warp reads 32 consecutive items of one row: 512 contiguous bytes on
//     the 16-byte path. Several rows' loads are in flight per thread (BG_UNROLL).
//   bias_grad_reduce: db[c] (+)= the split rows in a fixed order (32 warps
//     stride the splits, then warp 0 adds the 32 warp sums in warp order).
// With one split (few rows) the partial kernel writes db directly: one pass.
#include "common.cuh"

#define BG_THREADS 256
#define BG_UNROLL 4

// W consecutive bf16 of one row: W = 8 is one 16-byte load, W = 1 one element.
template <int W>
struct BgPack;
template <>
struct BgPack<8> {
  uint4 raw;
  __device__ __forceinline__ void load(const bf16* ptr) { raw = *reinterpret_cast<const uint4*>(ptr); }
  __device__ __forceinline__ void unpack(float out[8]) const { unpack_bf16x8(raw, out); }
};
template <>
struct BgPack<1> {
  bf16 raw;
  __device__ __forceinline__ void load(const bf16* ptr) { raw = *ptr; }
  __device__ __forceinline__ void unpack(float out[1]) const { out[0] = bf2f(raw); }
};

// A thread's column sums into shared memory (16-byte stores on the vector path).
static __device__ __forceinline__ void bg_stash(float* dst, const float (&acc)[8]) {
  reinterpret_cast<float4*>(dst)[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
  reinterpret_cast<float4*>(dst)[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
}
static __device__ __forceinline__ void bg_stash(float* dst, const float (&acc)[1]) { dst[0] = acc[0]; }

template <int W>
static __device__ __forceinline__ void bias_grad_block(const BiasGradPartialParams& p, float* red) {
  const int bx = p.block_items, by = BG_THREADS / bx;
  const int tx = threadIdx.x % bx, ty = threadIdx.x / bx;
  const int item = blockIdx.x * bx + tx;
  const int r0 = blockIdx.y * p.rows_per_split;
  const int r1 = min(p.rows, r0 + p.rows_per_split);
  float acc[W];
#pragma unroll
  for (int e = 0; e < W; e++) acc[e] = 0.f;
  if (item < p.n / W) {
    const bf16* col = p.dy + (size_t)item * W;
    for (int r = r0 + ty; r < r1; r += by * BG_UNROLL) {
      BgPack<W> v[BG_UNROLL];
#pragma unroll
      for (int k = 0; k < BG_UNROLL; k++) {
        const int rr = r + k * by;
        if (rr < r1) v[k].load(col + (size_t)rr * p.ld);
      }
#pragma unroll
      for (int k = 0; k < BG_UNROLL; k++) {
        if (r + k * by < r1) {
          float f[W];
          v[k].unpack(f);
#pragma unroll
          for (int e = 0; e < W; e++) acc[e] += f[e];
        }
      }
    }
  }
  // Row lane ty's sums for the block's cols = bx * W columns: red[ty][col].
  const int cols = bx * W;
  bg_stash(red + ty * cols + tx * W, acc);
  __syncthreads();
  const int c0 = blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols && c0 + c < p.n; c += BG_THREADS) {
    float s = 0.f;
    for (int q = 0; q < by; q++) s += red[q * cols + c];
    float* o = p.out + (size_t)blockIdx.y * p.n + c0 + c;
    *o = p.accumulate ? *o + s : s;
  }
}

extern "C" __global__ void __launch_bounds__(256) bias_grad_partial(const BiasGradPartialParams p) {
  // BG_THREADS row-lane x item sums of up to 8 columns each.
  TMOE_SHARED(float __align__(16), red, [BG_THREADS * 8]);
  if (p.width == 8) bias_grad_block<8>(p, red);
  else bias_grad_block<1>(p, red);
}

// 32 columns per block x 32 warps: warp q sums split rows q, q + 32, ... in
// order, then warp 0 adds the 32 warp sums in warp order.
extern "C" __global__ void __launch_bounds__(1024) bias_grad_reduce(const BiasGradReduceParams p) {
  TMOE_SHARED(float, sums, [TMOE_WARP][TMOE_WARP + 1]);
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const int n_warps = blockDim.x / TMOE_WARP;
  const int c = blockIdx.x * TMOE_WARP + lane;
  float s = 0.f;
  if (c < p.n) {
#pragma unroll 4
    for (int b = warp; b < p.splits; b += n_warps) s += p.partial[(size_t)b * p.n + c];
  }
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && c < p.n) {
    float t = 0.f;
    for (int q = 0; q < n_warps; q++) t += sums[q][lane];
    p.db[c] = p.accumulate ? p.db[c] + t : t;
  }
}
