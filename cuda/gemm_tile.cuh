// The tile core of every bf16 GEMM in cuda/gemm.cu: a block computes a BM x BN
// fp32 tile C += A . B over a range of the reduction dimension, with
//   - a GEMM_STAGES-deep cp.async pipeline of BK = GEMM_BK (32) slices of A and B
//     in shared memory (one commit group per slice, cp.async.wait_group
//     STAGES-2 before use, one __syncthreads per slice);
//   - XOR-swizzled shared tiles (no padding, no bank conflicts for the 16-byte
//     cp.async stores nor for ldmatrix's 8-row phases);
//   - ldmatrix.x4 fragments (.trans for operands stored with M or N contiguous)
//     and mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA 9.7.14.5.8,
//     fragment layouts of "Matrix Fragments for mma.m16n8k16", ldmatrix 9.7.14.5.15;
//     the register layouts are spelled out in common.cuh);
//   - warps arranged WARPS_M x WARPS_N, each owning a (BM/WARPS_M) x (BN/WARPS_N)
//     sub-tile = MI x NJ mma tiles of 16 x 8, accumulators in registers.
//
// Operand layouts in shared memory (bf16 elements, 16-byte chunks of 8):
//   K-major ("row" A [M,K], "col" B [N,K]): ROWS rows of BK = 4 chunks; chunk c
//     of row r sits at chunk r*4 + (c ^ ((r>>1)&3)). 8 consecutive rows at one
//     chunk column hit 8 distinct 16-byte bank groups.
//   MN-major (A stored [K,M], B stored [K,N]): BK rows of COLS/8 chunks; chunk c
//     of k-row kr at kr*(COLS/8) + (c ^ (kr&7)).
// Loads: each thread moves ROWS*BK/8/THREADS 16-byte chunks per slice and
// operand (4 for the big tile, 2 for the small). VEC: cp.async with zero fill
// for rows/columns/k past the end (needs the contiguous extent, stride and base
// 16-byte granular); !VEC: scalar bounds-checked loads packed into one 16-byte
// shared store (any shape).
#pragma once
#include "common.cuh"

#define GEMM_NONE 0xFFFFFFFFu

template <bool C, class T, class F>
struct GemmIf {
  typedef T type;
};
template <class T, class F>
struct GemmIf<false, T, F> {
  typedef F type;
};

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_>
struct GemmCfg {
  static constexpr int BM = BM_, BN = BN_, BK = GEMM_BK, STAGES = GEMM_STAGES;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_;
  static constexpr int THREADS = TMOE_WARP * WARPS_M * WARPS_N;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp sub-tile
  static constexpr int MI = WM / 16, NJ = WN / 8;             // mma tiles per warp
  static constexpr int A_ELEMS = BM * BK, B_ELEMS = BN * BK;  // per stage
  static constexpr int SMEM_BYTES = STAGES * (A_ELEMS + B_ELEMS) * 2;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile: whole ldmatrix.x4 loads");
  static_assert(BK == 32, "swizzles assume 4 chunks of 8 per K-major row");
};

// Element offsets of chunk (row, c) in the two shared layouts.
static __device__ __forceinline__ int gemm_kmaj_off(int r, int c) {
  return (r * 4 + (c ^ ((r >> 1) & 3))) * 8;
}
template <int CPR>
static __device__ __forceinline__ int gemm_mnmaj_off(int kr, int c) {
  static_assert(CPR % 8 == 0, "MN-major rows of 8k chunks");
  return (kr * CPR + (c ^ (kr & 7))) * 8;
}

static __device__ __forceinline__ uint32_t gemm_pack2(bf16 lo, bf16 hi) {
  return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

// The scalar-load twin of cp_async_16_zfill: the 16-byte shared-memory chunk
// dst gets the first `valid` of 8 consecutive bf16 at src (src is read only
// there; valid <= 0 reads nothing) and zeros after them.
static __device__ __forceinline__ void gemm_copy8_scalar(bf16* dst, const bf16* src, int valid) {
  bf16 v[8];
#pragma unroll
  for (int e = 0; e < 8; e++) v[e] = e < valid ? src[e] : f2bf(0.f);
  uint4 w;
  w.x = gemm_pack2(v[0], v[1]);
  w.y = gemm_pack2(v[2], v[3]);
  w.z = gemm_pack2(v[4], v[5]);
  w.w = gemm_pack2(v[6], v[7]);
  *reinterpret_cast<uint4*>(dst) = w;
}

// K-major operand loader: tile rows [row0, row0+ROWS) of a [rows, k] matrix with
// row stride ld; the row of tile row r is gather[row0+r] / gather_div when
// gather is set (GEMM_NONE: zeros). Row pointers are fixed per block.
template <int ROWS, int THREADS, bool VEC>
struct GemmKMajorLoader {
  static constexpr int CH = ROWS * GEMM_BK / 8 / THREADS;
  static_assert(CH * THREADS * 8 == ROWS * GEMM_BK, "whole chunks per thread");
  const bf16* row[CH];  // nullptr: a zero row
  int soff[CH];         // shared offset of the chunk (without the stage)
  int kc[CH];           // k offset of the chunk within the slice

  __device__ __forceinline__ void init(const bf16* base, int64_t ld, int row0, int rows,
                                       const uint32_t* gather, int gather_div) {
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int i = threadIdx.x + j * THREADS, r = i >> 2, c = i & 3;
      soff[j] = gemm_kmaj_off(r, c);
      kc[j] = c * 8;
      const int gr = row0 + r;
      row[j] = nullptr;
      if (gr < rows) {
        if (gather == nullptr) {
          row[j] = base + (int64_t)gr * ld;
        } else {
          const uint32_t s = gather[gr];
          if (s != GEMM_NONE) row[j] = base + (int64_t)(s / (uint32_t)gather_div) * ld;
        }
      }
    }
  }
  // SwiGLU B operand (gemm_nt_swiglu): the fused [gate rows; up rows] weight of
  // F rows each; tile row r holds gate row h (8-row group r/8 even) or up row
  // F + h (odd), h = h0 + (r/16)*8 + r%8. A warp's n8 tiles 2q, 2q+1 are then
  // the gate and up of the same 8 H columns: the epilogue pairs them in registers.
  __device__ __forceinline__ void init_swiglu(const bf16* base, int64_t ld, int h0, int f) {
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int i = threadIdx.x + j * THREADS, r = i >> 2, c = i & 3;
      soff[j] = gemm_kmaj_off(r, c);
      kc[j] = c * 8;
      const int h = h0 + (r >> 4) * 8 + (r & 7);
      row[j] = h < f ? base + (int64_t)(((r >> 3) & 1) ? f + h : h) * ld : nullptr;
    }
  }
  __device__ __forceinline__ void begin(int, int) {}
  // Slice [k0, k0+BK) of the reduction, k < k_end.
  __device__ __forceinline__ void load(bf16* s, const bf16* fallback, int k0, int k_end) {
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int k = k0 + kc[j];
      if (VEC) {
        const bool ok = row[j] != nullptr && k < k_end;
        cp_async_16_zfill(s + soff[j], ok ? row[j] + k : fallback, ok);
      } else if (row[j] != nullptr) {
        gemm_copy8_scalar(s + soff[j], row[j] + k, k_end - k);
      } else {
        gemm_copy8_scalar(s + soff[j], nullptr, 0);
      }
    }
  }
};

// MN-major operand loader: columns [col0, col0+COLS) of a [k, cols] matrix with
// row stride ld (row = reduction index).
template <int COLS, int THREADS, bool VEC>
struct GemmMNMajorLoader {
  static constexpr int CPR = COLS / 8;
  static constexpr int CH = COLS * GEMM_BK / 8 / THREADS;
  static_assert(CH * THREADS * 8 == COLS * GEMM_BK, "whole chunks per thread");
  const bf16* base;  // column col0 of row 0
  int64_t ld;
  int soff[CH], kr[CH], cc[CH];
  int cols_left;  // cols - col0

  // Same signature as the K-major loader; a gather does not apply here.
  __device__ __forceinline__ void init(const bf16* b, int64_t ld_, int col0, int cols,
                                       const uint32_t* /*gather*/, int /*gather_div*/) {
    base = b + col0;
    ld = ld_;
    cols_left = cols - col0;
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int i = threadIdx.x + j * THREADS;
      kr[j] = i / CPR;
      cc[j] = (i % CPR) * 8;
      soff[j] = gemm_mnmaj_off<CPR>(kr[j], i % CPR);
    }
  }
  __device__ __forceinline__ void begin(int, int) {}
  __device__ __forceinline__ void load(bf16* s, const bf16* /*fallback*/, int k0, int k_end) {
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int k = k0 + kr[j];
      const bf16* src = base + (int64_t)k * ld + cc[j];
      if (VEC) {
        const bool ok = k < k_end && cc[j] < cols_left;
        cp_async_16_zfill(s + soff[j], ok ? src : base, ok);
      } else {
        gemm_copy8_scalar(s + soff[j], src, k < k_end ? cols_left - cc[j] : 0);
      }
    }
  }
};

// MN-major operand loader whose reduction rows are gathered (grouped dW's X):
// k-row r of the reduction is row gather[r] / gather_div of a [rows, cols]
// matrix (GEMM_NONE: a zero row); gather == nullptr: row r itself. Slices are
// loaded in order, so each load() also fetches the gather entries of the next
// slice into registers (one slice ahead: the index load's latency is not on
// the cp.async's path).
template <int COLS, int THREADS, bool VEC>
struct GemmMNMajorGatherLoader {
  static constexpr int CPR = COLS / 8;
  static constexpr int CH = COLS * GEMM_BK / 8 / THREADS;
  static_assert(CH * THREADS * 8 == COLS * GEMM_BK, "whole chunks per thread");
  const bf16* base;  // column col0 of row 0
  int64_t ld;
  const uint32_t* gather;
  uint32_t div;
  int soff[CH], kr[CH], cc[CH];
  int cols_left;
  int k_end;
  uint32_t next[CH];  // gather entries of the next slice's rows (GEMM_NONE past k_end)

  __device__ __forceinline__ void init(const bf16* b, int64_t ld_, int col0, int cols,
                                       const uint32_t* gather_, int gather_div) {
    base = b + col0;
    ld = ld_;
    gather = gather_;
    div = (uint32_t)gather_div;
    cols_left = cols - col0;
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int i = threadIdx.x + j * THREADS;
      kr[j] = i / CPR;
      cc[j] = (i % CPR) * 8;
      soff[j] = gemm_mnmaj_off<CPR>(kr[j], i % CPR);
    }
  }
  __device__ __forceinline__ void fetch(int k0) {
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int k = k0 + kr[j];
      next[j] = k >= k_end ? GEMM_NONE : gather != nullptr ? gather[k] : (uint32_t)k;
    }
  }
  __device__ __forceinline__ void begin(int k_begin, int k_end_) {
    k_end = k_end_;
    fetch(k_begin);
  }
  __device__ __forceinline__ void load(bf16* s, const bf16* /*fallback*/, int k0, int /*k_end*/) {
    uint32_t cur[CH];
#pragma unroll
    for (int j = 0; j < CH; j++) cur[j] = next[j];
    fetch(k0 + GEMM_BK);
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const bool live = cur[j] != GEMM_NONE;
      const int64_t r = live ? (int64_t)(gather != nullptr ? cur[j] / div : cur[j]) : 0;
      const bf16* src = base + r * ld + cc[j];
      if (VEC) {
        const bool ok = live && cc[j] < cols_left;
        cp_async_16_zfill(s + soff[j], ok ? src : base, ok);
      } else {
        gemm_copy8_scalar(s + soff[j], src, live ? cols_left - cc[j] : 0);
      }
    }
  }
};

// Per-lane ldmatrix offsets (elements, stage 0), computed once per block. The
// swizzles leave some steps additive: K-major tiles shift by 16 rows (+16*BK)
// per m16 / n16 step, so one offset per k16 step suffices; MN-major tiles shift
// by 16 k-rows (+16*COLS) per k16 step, so one offset per m16 / n16 step.
template <class Cfg, bool A_K, bool B_K>
struct GemmFragOffsets {
  static constexpr int KSTEPS = Cfg::BK / 16;
  static constexpr int NA = A_K ? KSTEPS : Cfg::MI;
  static constexpr int NB = B_K ? KSTEPS : Cfg::NJ / 2;
  int a[NA], b[NB];

  __device__ __forceinline__ void init(int wm0, int wn0, int lane) {
    // A x4 matrices: (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15)
#pragma unroll
    for (int x = 0; x < NA; x++) {
      if (A_K) {
        a[x] = gemm_kmaj_off(wm0 + (lane & 15), x * 2 + (lane >> 4));
      } else {
        const int kr = ((lane >> 4) << 3) + (lane & 7);
        a[x] = gemm_mnmaj_off<Cfg::BM / 8>(kr, (wm0 + x * 16) / 8 + ((lane >> 3) & 1));
      }
    }
    // B x4 matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
#pragma unroll
    for (int x = 0; x < NB; x++) {
      if (B_K) {
        b[x] = gemm_kmaj_off(wn0 + (lane & 7) + ((lane >> 4) << 3), x * 2 + ((lane >> 3) & 1));
      } else {
        const int kr = (((lane >> 3) & 1) << 3) + (lane & 7);
        b[x] = gemm_mnmaj_off<Cfg::BN / 8>(kr, (wn0 + x * 16) / 8 + (lane >> 4));
      }
    }
  }
  __device__ __forceinline__ int a_at(int kk, int i) const {
    return A_K ? a[kk] + i * 16 * Cfg::BK : a[i] + kk * 16 * Cfg::BM;
  }
  __device__ __forceinline__ int b_at(int kk, int jj) const {
    return B_K ? b[kk] + jj * 16 * Cfg::BK : b[jj] + kk * 16 * Cfg::BN;
  }
};

// One BK slice from shared memory: BK/16 k16 steps of MI x NJ mma per warp.
template <class Cfg, bool A_K, bool B_K>
static __device__ __forceinline__ void gemm_compute_slice(const bf16* As, const bf16* Bs,
                                                          const GemmFragOffsets<Cfg, A_K, B_K>& off,
                                                          float acc[Cfg::MI][Cfg::NJ][4]) {
#pragma unroll
  for (int kk = 0; kk < Cfg::BK / 16; kk++) {
    uint32_t af[Cfg::MI][4], bfr[Cfg::NJ][2];
#pragma unroll
    for (int i = 0; i < Cfg::MI; i++) {
      if (A_K) ldmatrix_x4(af[i], As + off.a_at(kk, i));
      else ldmatrix_x4_trans(af[i], As + off.a_at(kk, i));
    }
#pragma unroll
    for (int jj = 0; jj < Cfg::NJ / 2; jj++) {
      uint32_t t[4];
      if (B_K) ldmatrix_x4(t, Bs + off.b_at(kk, jj));
      else ldmatrix_x4_trans(t, Bs + off.b_at(kk, jj));
      bfr[2 * jj][0] = t[0];
      bfr[2 * jj][1] = t[1];
      bfr[2 * jj + 1][0] = t[2];
      bfr[2 * jj + 1][1] = t[3];
    }
#pragma unroll
    for (int i = 0; i < Cfg::MI; i++)
#pragma unroll
      for (int j = 0; j < Cfg::NJ; j++) mma_bf16_16816(acc[i][j], af[i], bfr[j], acc[i][j]);
  }
}

// The pipelined main loop over the reduction range [k_begin, k_end): loads slice
// t + STAGES-1 while computing slice t. ALoad / BLoad are the loaders above
// (`fallback`: a valid source address for zero-filled chunks; begin() is
// called once with the range, then load() once per slice in order).
template <class Cfg, bool A_K, bool B_K, class ALoad, class BLoad>
static __device__ __forceinline__ void gemm_mainloop(ALoad& la, BLoad& lb,
                                                     const bf16* fallback, int k_begin, int k_end,
                                                     bf16* smem, float acc[Cfg::MI][Cfg::NJ][4]) {
  const int warp = threadIdx.x / TMOE_WARP, lane = threadIdx.x % TMOE_WARP;
  const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
  bf16* As = smem;
  bf16* Bs = smem + Cfg::STAGES * Cfg::A_ELEMS;
#pragma unroll
  for (int i = 0; i < Cfg::MI; i++)
#pragma unroll
    for (int j = 0; j < Cfg::NJ; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

  auto load = [&](int stage, int k0) {
    la.load(As + stage * Cfg::A_ELEMS, fallback, k0, k_end);
    lb.load(Bs + stage * Cfg::B_ELEMS, fallback, k0, k_end);
  };
  GemmFragOffsets<Cfg, A_K, B_K> off;
  off.init(wm0, wn0, lane);
  la.begin(k_begin, k_end);
  lb.begin(k_begin, k_end);
  const int tiles = k_end > k_begin ? ceil_div(k_end - k_begin, Cfg::BK) : 0;
#pragma unroll
  for (int s = 0; s < Cfg::STAGES - 1; s++) {
    if (s < tiles) load(s, k_begin + s * Cfg::BK);
    cp_async_commit();
  }
  int st = 0, st_next = Cfg::STAGES - 1;  // stage read at t, stage written at t
  for (int t = 0; t < tiles; t++) {
    cp_async_wait<Cfg::STAGES - 2>();  // slice t has landed (this thread's copies)
    __syncthreads();                   // ... everyone's; slice t-1 fully consumed
    const int next = t + Cfg::STAGES - 1;
    if (next < tiles) load(st_next, k_begin + next * Cfg::BK);
    cp_async_commit();
    gemm_compute_slice<Cfg, A_K, B_K>(As + st * Cfg::A_ELEMS, Bs + st * Cfg::B_ELEMS, off, acc);
    st = st + 1 == Cfg::STAGES ? 0 : st + 1;
    st_next = st_next + 1 == Cfg::STAGES ? 0 : st_next + 1;
  }
  cp_async_wait_all();
}
