// bf16 tensor-core GEMMs for the linear layers (weights W[out, in], PyTorch
// layout) and the grouped expert GEMMs of the MoE layer. fp32 accumulation.
//   gemm_nt: C[M,N] = A[M,K] . B[N,K]^T (+ bias[N])  bf16 out   forward Y = X W^T
//   gemm_nn: C[M,N] = A[M,K] . B[K,N]   (+ bias[N])  bf16 out   dX = dY W
//   gemm_tn: C[M,N] (+)= A[K,M]^T . B[K,N]           fp32 out   dW += dY^T X
//   gemm_splitk_reduce: C (+)= sum_s workspace[s], s ascending (deterministic split-K)
// Reference: backend/cpu/matmul.rs (fwd, bwd); tests: tests/kernel_gemm.rs.
//
// Tiling (cuda/gemm_tile.cuh): `gemm_<op>` 128 x 128 x 32 blocks of 128 threads
// (4 warps as 2 x 2, warp tile 64 x 64 = 4 x 8 mma m16n8k16: 8 ldmatrix.x4 per
// 32 mma, the ratio that keeps shared-memory bandwidth off the critical path on
// sm_90), 3-stage cp.async pipeline, 48 KiB dynamic shared memory, 218-232
// registers (2 blocks per SM); 16-byte path only. `gemm_<op>_small` 64 x 64 x 32,
// 128 threads (2 x 2 warps of 32 x 32), 24 KiB, ~100 registers: products with few
// 128-tiles, and every product off the 16-byte path (scalar loads).
// Launch: grid (ceil(N/BN), ceil(M/BM), splits), block 128, smem Cfg::SMEM_BYTES.
// blockIdx.x walks N so concurrent blocks share the A panel in L2.
//
// p.vec = 1 takes the 16-byte cp.async path (zero fill past M, N, K); the host
// enables it when every contiguous extent, row stride and base pointer is a
// multiple of 8 elements (16 bytes), else p.vec = 0: scalar loads, any shape.
// Epilogue (PTX C layout: rows g, g+8, columns 2t, 2t+1): bf16 outputs go
// through a shared staging tile over the drained pipeline buffers (GemmStage)
// and leave as coalesced 16-byte row chunks; fp32 dW (a 64 KiB tile, more than
// the pipeline's 48 KiB) straight from the accumulators as float2 (+=) stores.
// Scalar at the edges and when the output is not 16-byte (8-byte) granular.
//
// Grouped (MoE) products reuse gemm_nt / gemm_nn: with p.tile_expert set, M tile
// y uses expert e = tile_expert[y * BM / plan_tile] (B at b + e * b_expert_stride; GEMM_NONE:
// the block exits), and with p.gather set, A row r is row gather[r] / gather_div
// of a (the routed token: the permutation gather fused into the A load; padding
// rows GEMM_NONE read as zeros). The plan's tile height is a multiple of BM.
//
// Grouped dW (gemm_tn_grouped[_small]): dW_e (+)= dY_e^T . X_e over expert e's
// plan rows. Grid (ceil(N/BN), ceil(M/BM), E * S): blockIdx.z = e * S + s takes
// split s of the segment [seg_offset[e], seg_offset[e+1]) read on the device
// (chunks of ceil(len/S) rows rounded up to BK, gemm_group_chunk); empty splits
// exit (an empty expert with S = 1 and overwrite writes zeros). B (X) rows go
// through the gather (sorted_slot / k, GEMM_NONE = zero row) in an MN-major
// loader that fetches the next slice's indices one slice ahead. S > 1: partials
// in workspace [E, S, M, N], summed by gemm_splitk_reduce in split order,
// skipping the same empty splits. The host picks S for the balanced share of
// rows per expert (segment lengths stay on the device): with skewed routing the
// busiest expert's blocks set the time.
//
// SwiGLU (gemm_nt_swiglu[_small]): B = [gate rows; up rows] of F rows each, C =
// H[M, F] = silu(gate) * up. The B loader maps block tile row r to gate row h
// (8-row group r/8 even) or up row F + h (odd), h = x*BN/2 + (r/16)*8 + r%8, so
// a warp's n8 tiles 2q and 2q+1 are the gate and the up of the same 8 H columns:
// the epilogue pairs them in registers (no shared-memory exchange). gate and up
// are rounded to bf16 first (the unfused GEMM's output; optional c_pre gets
// them, natural [gate | up] layout for swiglu_bwd, which recomputes the
// activation), so H has the bits of swiglu_fwd on the unfused output.
//
// Determinism: a fixed k order per output (one block owns a tile's whole K, or
// its split's part, reduced by gemm_splitk_reduce in split order); no atomics.
#include "gemm_tile.cuh"

typedef GemmCfg<128, 128, 2, 2> GemmBig;
typedef GemmCfg<64, 64, 2, 2> GemmSmall;

#define GEMM_NT 0
#define GEMM_NN 1
#define GEMM_TN 2

// Variants of gemm_run (template MODE).
#define GEMM_PLAIN 0    // the products above (dense, or grouped by tile_expert for nt/nn)
#define GEMM_SWIGLU 1   // nt: H = silu(gate) * up epilogue (see gemm_swiglu_epilogue)
#define GEMM_GROUPED 2  // tn: dW_e over expert segments (see gemm_group_range)

static __device__ __forceinline__ bool gemm_aligned(const void* ptr, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(ptr) & (bytes - 1)) == 0;
}

// Grouped dW: the rows of split s (of `splits`) of the segment [seg_b, seg_e):
// chunks of ceil(len / splits) rounded up to GEMM_BK, in order. A function of
// the segment alone, shared with gemm_splitk_reduce (which skips empty splits).
static __device__ __forceinline__ int gemm_group_chunk(int len, int splits) {
  const int rows = (len + splits - 1) / splits;
  return (rows + GEMM_BK - 1) / GEMM_BK * GEMM_BK;
}

static __device__ __forceinline__ float gemm_silu_mul(float g, float u) {
  return g * (1.0f / (1.0f + expf(-g))) * u;  // as swiglu_fwd (cuda/swiglu.cu)
}

// bf16 epilogue through shared memory: the warps write their fragments (bf16x2
// at row g / g+8, columns 2t, 2t+1 of each m16n8 tile) into a [BM][COLS + 8]
// staging tile over the drained pipeline buffers (the row stride of COLS + 8
// elements = 4 banks mod 32 puts the 8 rows x 4 lanes of a fragment store in 32
// distinct banks), then every thread copies 16-byte chunks of 8 columns to
// global memory, coalesced along rows (scalar at the right edge or when the
// output's start / stride are not 16-byte granular).
template <int COLS>
struct GemmStage {
  static constexpr int LD = COLS + 8;
  static __device__ __forceinline__ void put(bf16* st, int r, int c, float v0, float v1) {
    *reinterpret_cast<__nv_bfloat162*>(st + r * LD + c) = __floats2bfloat162_rn(v0, v1);
  }
  // Rows [r0, r0 + ROWS) and columns [c0, c0 + COLS) of out (row stride ld);
  // only rows < m and columns < n are written.
  template <int ROWS, int THREADS>
  static __device__ __forceinline__ void store(const bf16* st, bf16* out, int64_t ld, int r0, int c0,
                                               int m, int n) {
    constexpr int CPR = COLS / 8;
    const bool vec = gemm_aligned(out, 16) && ld % 8 == 0;
    for (int i = threadIdx.x; i < ROWS * CPR; i += THREADS) {
      const int r = i / CPR, c = (i % CPR) * 8;
      const int gr = r0 + r, gc = c0 + c;
      if (gr >= m || gc >= n) continue;
      const bf16* src = st + r * LD + c;
      bf16* dst = out + (int64_t)gr * ld + gc;
      if (vec && gc + 8 <= n) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else {
        for (int e = 0; e < 8 && gc + e < n; e++) dst[e] = src[e];
      }
    }
  }
};

// SwiGLU epilogue: the warp's n8 tiles 2q (gate) and 2q+1 (up) hold the same 8
// H columns (the B row map of GemmKMajorLoader::init_swiglu). gate and up are
// rounded to bf16 first (what the unfused GEMM writes), so H has the bits of
// swiglu_fwd applied to the unfused output; c_pre gets those bf16 values.
// H goes through the staging tile (GemmStage<BN/2>, rows rbase - m0 ...,
// columns hbase - h0 ...); c_pre straight from registers (bf16x2).
template <class Cfg>
static __device__ __forceinline__ void gemm_swiglu_epilogue(const GemmParams& p, bf16* st, int rbase, int hbase,
                                                            int m0, int h0, float acc[Cfg::MI][Cfg::NJ][4]) {
  const int f = p.n / 2;
  const bool pair_pre = p.c_pre != nullptr && gemm_aligned(p.c_pre, 4) && p.ld_pre % 2 == 0 && f % 2 == 0;
#pragma unroll
  for (int q = 0; q < Cfg::NJ / 2; q++) {
    const int c = hbase + q * 8;  // H column of v0 (v1: c + 1)
    if (c >= f) continue;
    const bool two = c + 1 < f;
    float bg0 = 0.f, bg1 = 0.f, bu0 = 0.f, bu1 = 0.f;
    if (p.bias != nullptr) {
      bg0 = p.bias[c];
      bu0 = p.bias[f + c];
      if (two) {
        bg1 = p.bias[c + 1];
        bu1 = p.bias[f + c + 1];
      }
    }
#pragma unroll
    for (int i = 0; i < Cfg::MI; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = rbase + i * 16 + h * 8;
        if (r >= p.m) continue;
        const bf16 g0 = f2bf(acc[i][2 * q][2 * h] + bg0), g1 = f2bf(acc[i][2 * q][2 * h + 1] + bg1);
        const bf16 u0 = f2bf(acc[i][2 * q + 1][2 * h] + bu0), u1 = f2bf(acc[i][2 * q + 1][2 * h + 1] + bu1);
        GemmStage<Cfg::BN / 2>::put(st, r - m0, c - h0, gemm_silu_mul(bf2f(g0), bf2f(u0)),
                                    gemm_silu_mul(bf2f(g1), bf2f(u1)));
        if (p.c_pre != nullptr) {
          bf16* pg = p.c_pre + (int64_t)r * p.ld_pre + c;
          if (pair_pre && two) {
            *reinterpret_cast<uint32_t*>(pg) = gemm_pack2(g0, g1);
            *reinterpret_cast<uint32_t*>(pg + f) = gemm_pack2(u0, u1);
          } else {
            pg[0] = g0;
            pg[f] = u0;
            if (two) {
              pg[1] = g1;
              pg[f + 1] = u1;
            }
          }
        }
      }
  }
}

template <class Cfg, int OP, int MODE, bool VEC>
static __device__ __forceinline__ void gemm_run(const GemmParams& p, bf16* smem) {
  constexpr bool A_K = OP != GEMM_TN;  // A stored [M, K]
  constexpr bool B_K = OP == GEMM_NT;  // B stored [N, K]
  static_assert(MODE != GEMM_SWIGLU || OP == GEMM_NT, "swiglu: forward only");
  static_assert(MODE != GEMM_GROUPED || OP == GEMM_TN, "grouped mode: dW only");
  static_assert(MODE != GEMM_SWIGLU || Cfg::NJ % 2 == 0, "swiglu: gate/up n8 pairs");
  // Swiglu: block column x covers H columns [x * BN/2, (x+1) * BN/2).
  const int m0 = blockIdx.y * Cfg::BM, n0 = blockIdx.x * Cfg::BN;
  const bf16* b = p.b;
  if (OP != GEMM_TN && p.tile_expert != nullptr) {
    const uint32_t e = p.tile_expert[(blockIdx.y * Cfg::BM) / p.plan_tile];
    if (e == GEMM_NONE) return;  // the whole block, before any barrier
    b += (int64_t)e * p.b_expert_stride;
  }
  int k_begin = 0, k_end = p.k;
  float* out = p.c_f32;
  int64_t ld = p.ldc;
  bool accumulate = p.accumulate != 0;
  if (MODE == GEMM_GROUPED) {
    const int e = blockIdx.z / p.group_splits, s = blockIdx.z % p.group_splits;
    const int seg_b = (int)p.seg_offset[e], seg_e = (int)p.seg_offset[e + 1];
    const int chunk = gemm_group_chunk(seg_e - seg_b, p.group_splits);
    k_begin = min(seg_e, seg_b + s * chunk);
    k_end = min(seg_e, k_begin + chunk);
    // Nothing to add: the reduce skips empty splits; an empty expert with one
    // split and overwrite falls through with zero accumulators (dW_e = 0).
    if (k_begin >= k_end && (p.group_splits > 1 || accumulate)) return;
    if (p.group_splits > 1) {
      out = p.workspace + blockIdx.z * (int64_t)p.m * p.n;
      ld = p.n;
      accumulate = false;
    } else {
      out += (int64_t)e * p.c_expert_stride;
    }
  } else if (OP == GEMM_TN) {
    k_begin = blockIdx.z * p.k_split;
    k_end = min(p.k, k_begin + p.k_split);
    if (gridDim.z > 1) {
      out = p.workspace + blockIdx.z * (int64_t)p.m * p.n;
      ld = p.n;
      accumulate = false;
    }
  }

  typename GemmIf<A_K, GemmKMajorLoader<Cfg::BM, Cfg::THREADS, VEC>,
                  GemmMNMajorLoader<Cfg::BM, Cfg::THREADS, VEC>>::type la;
  typename GemmIf<B_K, GemmKMajorLoader<Cfg::BN, Cfg::THREADS, VEC>,
                  typename GemmIf<MODE == GEMM_GROUPED, GemmMNMajorGatherLoader<Cfg::BN, Cfg::THREADS, VEC>,
                                  GemmMNMajorLoader<Cfg::BN, Cfg::THREADS, VEC>>::type>::type lb;
  la.init(p.a, p.lda, m0, p.m, OP == GEMM_TN ? nullptr : p.gather, p.gather_div);
  if constexpr (MODE == GEMM_SWIGLU) {
    lb.init_swiglu(b, p.ldb, blockIdx.x * (Cfg::BN / 2), p.n / 2);
  } else {
    lb.init(b, p.ldb, n0, p.n, MODE == GEMM_GROUPED ? p.gather : nullptr, p.gather_div);
  }

  float acc[Cfg::MI][Cfg::NJ][4];
  gemm_mainloop<Cfg, A_K, B_K>(la, lb, p.a, k_begin, k_end, smem, acc);

  const int warp = threadIdx.x / TMOE_WARP, lane = threadIdx.x % TMOE_WARP;
  const int g = lane >> 2, t = lane & 3;
  const int rbase = m0 + (warp / Cfg::WARPS_N) * Cfg::WM + g;
  const int cbase = n0 + (warp % Cfg::WARPS_N) * Cfg::WN + 2 * t;
  if (MODE == GEMM_SWIGLU) {
    constexpr int HC = Cfg::BN / 2;  // H columns per block
    static_assert(Cfg::BM * GemmStage<HC>::LD * 2 <= Cfg::SMEM_BYTES, "staging fits");
    const int h0 = blockIdx.x * HC;
    __syncthreads();  // every warp is done with the pipeline buffers
    gemm_swiglu_epilogue<Cfg>(p, smem, rbase, h0 + (warp % Cfg::WARPS_N) * (Cfg::WN / 2) + 2 * t, m0, h0, acc);
    __syncthreads();
    GemmStage<HC>::template store<Cfg::BM, Cfg::THREADS>(smem, p.c_bf16, p.ldc, m0, h0, p.m, p.n / 2);
  } else if (OP != GEMM_TN) {
    static_assert(Cfg::BM * GemmStage<Cfg::BN>::LD * 2 <= Cfg::SMEM_BYTES, "staging fits");
    __syncthreads();  // every warp is done with the pipeline buffers
#pragma unroll
    for (int j = 0; j < Cfg::NJ; j++) {
      const int c = cbase + j * 8;
      float b0 = 0.f, b1 = 0.f;
      if (p.bias != nullptr && c < p.n) {
        b0 = p.bias[c];
        b1 = c + 1 < p.n ? p.bias[c + 1] : 0.f;
      }
#pragma unroll
      for (int i = 0; i < Cfg::MI; i++)
#pragma unroll
        for (int h = 0; h < 2; h++)
          GemmStage<Cfg::BN>::put(smem, rbase - m0 + i * 16 + h * 8, c - n0, acc[i][j][2 * h] + b0,
                                  acc[i][j][2 * h + 1] + b1);
    }
    __syncthreads();
    GemmStage<Cfg::BN>::template store<Cfg::BM, Cfg::THREADS>(smem, p.c_bf16, p.ldc, m0, n0, p.m, p.n);
  } else {
    const bool pair = gemm_aligned(out, 8) && ld % 2 == 0;
#pragma unroll
    for (int j = 0; j < Cfg::NJ; j++) {
      const int c = cbase + j * 8;
      if (c >= p.n) continue;
      const bool two = c + 1 < p.n;
#pragma unroll
      for (int i = 0; i < Cfg::MI; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = rbase + i * 16 + h * 8;
          if (r >= p.m) continue;
          float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
          float* dst = out + (int64_t)r * ld + c;
          if (pair && two) {
            float2 v = make_float2(v0, v1);
            if (accumulate) {
              const float2 o = *reinterpret_cast<const float2*>(dst);
              v.x = o.x + v0;
              v.y = o.y + v1;
            }
            *reinterpret_cast<float2*>(dst) = v;
          } else {
            dst[0] = accumulate ? dst[0] + v0 : v0;
            if (two) dst[1] = accumulate ? dst[1] + v1 : v1;
          }
        }
    }
  }
}

// Entry points (one line each: build.rs scans them). The big tile (128 fp32
// accumulators per thread, ~250 registers) has the 16-byte path only, so the
// scalar path costs it no registers; the small tile has both (p.vec is uniform
// over the launch) and serves every product that cannot take the 16-byte path.
template <class Cfg, int OP, int MODE = GEMM_PLAIN>
static __device__ __forceinline__ void gemm_entry_any(const GemmParams& p) {
  TMOE_DYNAMIC_SMEM(bf16, smem);
  if (p.vec) gemm_run<Cfg, OP, MODE, true>(p, smem);
  else gemm_run<Cfg, OP, MODE, false>(p, smem);
}
template <class Cfg, int OP, int MODE = GEMM_PLAIN>
static __device__ __forceinline__ void gemm_entry_vec(const GemmParams& p) {
  TMOE_DYNAMIC_SMEM(bf16, smem);
  if (!p.vec) __trap();  // the host never launches it so
  gemm_run<Cfg, OP, MODE, true>(p, smem);
}
extern "C" __global__ void __launch_bounds__(128, 2) gemm_nt(const GemmParams p) { gemm_entry_vec<GemmBig, GEMM_NT>(p); }
extern "C" __global__ void __launch_bounds__(128, 2) gemm_nn(const GemmParams p) { gemm_entry_vec<GemmBig, GEMM_NN>(p); }
extern "C" __global__ void __launch_bounds__(128, 2) gemm_tn(const GemmParams p) { gemm_entry_vec<GemmBig, GEMM_TN>(p); }
extern "C" __global__ void __launch_bounds__(128, 4) gemm_nt_small(const GemmParams p) { gemm_entry_any<GemmSmall, GEMM_NT>(p); }
extern "C" __global__ void __launch_bounds__(128, 4) gemm_nn_small(const GemmParams p) { gemm_entry_any<GemmSmall, GEMM_NN>(p); }
extern "C" __global__ void __launch_bounds__(128, 4) gemm_tn_small(const GemmParams p) { gemm_entry_any<GemmSmall, GEMM_TN>(p); }
extern "C" __global__ void __launch_bounds__(128, 2) gemm_nt_swiglu(const GemmParams p) { gemm_entry_vec<GemmBig, GEMM_NT, GEMM_SWIGLU>(p); }
extern "C" __global__ void __launch_bounds__(128, 4) gemm_nt_swiglu_small(const GemmParams p) { gemm_entry_any<GemmSmall, GEMM_NT, GEMM_SWIGLU>(p); }
extern "C" __global__ void __launch_bounds__(128, 2) gemm_tn_grouped(const GemmParams p) { gemm_entry_vec<GemmBig, GEMM_TN, GEMM_GROUPED>(p); }
extern "C" __global__ void __launch_bounds__(128, 4) gemm_tn_grouped_small(const GemmParams p) { gemm_entry_any<GemmSmall, GEMM_TN, GEMM_GROUPED>(p); }

// C[r, c] (+)= sum_s workspace[s][r, c], s ascending. Grid-stride, one element
// per thread and trip (memory-bound, small next to the GEMM it finishes).
// Grouped: element i of expert e sums the expert's non-empty splits only (the
// gemm_group_chunk rule on its segment); no split at all: C_e = 0 (or kept).
extern "C" __global__ void __launch_bounds__(256) gemm_splitk_reduce(const GemmSplitkReduceParams p) {
  const int64_t mn = (int64_t)p.m * p.n;
  const int64_t total = mn * p.experts;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t e = i / mn, rem = i % mn;
    const int64_t r = rem / p.n, c = rem % p.n;
    int splits = p.splits;
    if (p.seg_offset != nullptr) {
      const int len = (int)(p.seg_offset[e + 1] - p.seg_offset[e]);
      const int chunk = gemm_group_chunk(len, p.splits);
      splits = len > 0 ? (len + chunk - 1) / chunk : 0;
    }
    float* dst = p.c + e * p.c_expert_stride + r * p.ldc + c;
    float s = p.accumulate ? *dst : 0.f;
    const float* ws = p.workspace + e * p.splits * mn + rem;
    for (int z = 0; z < splits; z++) s += ws[z * mn];
    *dst = s;
  }
}
