// Row dot products against a few fp32 weight rows, for output widths J <= 64
// where a tensor-core GEMM tile (64-128 columns) would be mostly padding:
//   rowdot_fwd:    out[t, j] = sum_c z[t, c] * w[j, c]     (optionally sigmoid)
//   rowdot_bwd_dz: dz[t, c] (= or +=) sum_j dl[t, j] * w[j, c]          (bf16)
//   rowdot_bwd_dw: dw[j, c] += sum_t dl[t, j] * z[t, c]  (per-block partials,
//                  then rmsnorm_dw_reduce over the flat [J*d] rows)
// with dl = dout, or dl = dout * y * (1 - y) when y (the forward's sigmoid
// output) is given: the kernels apply the sigmoid derivative themselves.
// Uses: router logits (J = N experts, fp32 for moe_route's softmax) and the
// shared-expert gate g = sigmoid(z . w_D) (J = 1). z bf16, w / out / grads fp32,
// fp32 accumulation in fixed orders (deterministic: no atomics, fixed grids).
// References: backend::cpu::matmul (fwd/bwd with dout = J), act::sigmoid_*.
//
// Layouts and launch shapes (16-byte path W = 8 columns per access when d % 8
// == 0 and z / w / dz are 16-byte aligned; single columns otherwise):
// - fwd: a warp per RD_FWD_ROWS rows (32 rows per 256-thread block), lanes over
//   the columns (lane takes c = (lane + 32 i) * W), RD_JC outputs at a time:
//   each lane keeps RD_FWD_ROWS x RD_JC fp32 sums over its columns in ascending
//   order (each w load, an L1 hit, serves the warp's 4 rows), then warp_sum
//   (xor butterfly); lane r * RD_JC + jj writes (row0 + r, j0 + jj). J > RD_JC
//   re-reads the rows (L1). Reads 2d bytes of z per row from DRAM; w (J*d*4
//   bytes) stays in L1/L2.
// - bwd_dz: a flat grid-stride walk over items of (RD_DZ_ROWS rows x W
//   columns); the thread sums j ascending (each w load serves RD_DZ_ROWS rows),
//   then adds the old dz (accumulate) and rounds once. 2-4 bytes per element.
// - bwd_dw: grid (column slabs of 32 items, row ranges of rows_per_block, J
//   chunks of RD_JC); 8 warps per block, warp q takes rows q, q + 8, ... of the
//   range (ascending), lane owns W columns and RD_JC x W sums; the block adds the
//   8 warps' sums in warp order through an 8 KiB static shared buffer (one
//   chunk row j at a time) and writes dw_partial[y][j][c].
#include "common.cuh"

#define RD_JC 8
#define RD_DZ_ROWS 4
#define RD_FWD_ROWS 4 /* RD_FWD_ROWS * RD_JC <= 32: one lane per output */
#define RD_DW_WARPS 8

// Matches backend::cpu::float::sigmoid (finite in both tails).
static __device__ __forceinline__ float rd_sigmoid(float x) {
  const float e = expf(-fabsf(x));
  const float inv = 1.0f / (1.0f + e);
  return x >= 0.f ? inv : e * inv;
}

template <int W>
static __device__ __forceinline__ void rd_load_z(const bf16* ptr, float out[W]) {
  if (W == 8) load_bf16x8(ptr, out);
  else out[0] = bf2f(*ptr);
}
template <int W>
static __device__ __forceinline__ void rd_load_w(const float* ptr, float out[W]) {
  if (W == 8) {
    const float4 a = *reinterpret_cast<const float4*>(ptr);
    const float4 b = *reinterpret_cast<const float4*>(ptr + 4);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  } else {
    out[0] = *ptr;
  }
}

// Gradient of the logit (t, j): dout, times y (1 - y) after a sigmoid.
static __device__ __forceinline__ float rd_dlogit(const float* dout, const float* y, size_t i) {
  const float d = dout[i];
  if (y == nullptr) return d;
  const float g = y[i];
  return d * g * (1.0f - g);
}

// RD_FWD_ROWS rows from row0 (nr of them exist): each w load serves all of them.
template <int W>
static __device__ __forceinline__ void fwd_rows(const RowdotFwdParams& p, int row0, int lane) {
  const int nr = min(RD_FWD_ROWS, p.rows - row0);
  for (int j0 = 0; j0 < p.j; j0 += RD_JC) {
    const int jn = min(RD_JC, p.j - j0);
    float acc[RD_FWD_ROWS][RD_JC];
#pragma unroll
    for (int r = 0; r < RD_FWD_ROWS; r++) {
#pragma unroll
      for (int jj = 0; jj < RD_JC; jj++) acc[r][jj] = 0.f;
    }
    for (int c = lane * W; c < p.d; c += TMOE_WARP * W) {
      float zv[RD_FWD_ROWS][W];
#pragma unroll
      for (int r = 0; r < RD_FWD_ROWS; r++) {
        if (r < nr) rd_load_z<W>(p.z + (size_t)(row0 + r) * p.d + c, zv[r]);
        else {
#pragma unroll
          for (int e = 0; e < W; e++) zv[r][e] = 0.f;
        }
      }
#pragma unroll
      for (int jj = 0; jj < RD_JC; jj++) {
        if (jj < jn) {
          float wv[W];
          rd_load_w<W>(p.w + (size_t)(j0 + jj) * p.d + c, wv);
#pragma unroll
          for (int r = 0; r < RD_FWD_ROWS; r++) {
#pragma unroll
            for (int e = 0; e < W; e++) acc[r][jj] += zv[r][e] * wv[e];
          }
        }
      }
    }
    // Lane r * RD_JC + jj keeps the sum of (row0 + r, j0 + jj).
    float mine = 0.f;
#pragma unroll
    for (int r = 0; r < RD_FWD_ROWS; r++) {
#pragma unroll
      for (int jj = 0; jj < RD_JC; jj++) {
        if (r < nr && jj < jn) {  // warp-uniform
          const float s = warp_sum(acc[r][jj]);
          if (lane == r * RD_JC + jj) mine = s;
        }
      }
    }
    const int r = lane / RD_JC, jj = lane % RD_JC;
    if (r < nr && jj < jn) p.out[(size_t)(row0 + r) * p.j + j0 + jj] = p.sigmoid ? rd_sigmoid(mine) : mine;
  }
}

// A warp per RD_FWD_ROWS rows, no block barrier: warps past the last row return.
extern "C" __global__ void __launch_bounds__(256) rowdot_fwd(const RowdotFwdParams p) {
  const int lane = threadIdx.x % TMOE_WARP;
  const int row0 = (blockIdx.x * (blockDim.x / TMOE_WARP) + threadIdx.x / TMOE_WARP) * RD_FWD_ROWS;
  if (row0 >= p.rows) return;
  const bool vec = p.d % 8 == 0 && aligned16(p.z) && aligned16(p.w);
  if (vec) fwd_rows<8>(p, row0, lane);
  else fwd_rows<1>(p, row0, lane);
}

template <int W>
static __device__ __forceinline__ void dz_walk(const RowdotBwdDzParams& p) {
  const uint32_t per_row = p.d / W;
  const uint32_t groups = ((uint32_t)p.rows + RD_DZ_ROWS - 1) / RD_DZ_ROWS;
  const uint32_t n = groups * per_row;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const uint32_t grp = i / per_row;
    const int c = (int)(i - grp * per_row) * W;
    const int t0 = (int)grp * RD_DZ_ROWS;
    float acc[RD_DZ_ROWS][W];
#pragma unroll
    for (int r = 0; r < RD_DZ_ROWS; r++) {
#pragma unroll
      for (int e = 0; e < W; e++) acc[r][e] = 0.f;
    }
    for (int j = 0; j < p.j; j++) {
      float wv[W];
      rd_load_w<W>(p.w + (size_t)j * p.d + c, wv);
#pragma unroll
      for (int r = 0; r < RD_DZ_ROWS; r++) {
        const int t = t0 + r;
        const float dl = t < p.rows ? rd_dlogit(p.dout, p.y, (size_t)t * p.j + j) : 0.f;
#pragma unroll
        for (int e = 0; e < W; e++) acc[r][e] += dl * wv[e];
      }
    }
#pragma unroll
    for (int r = 0; r < RD_DZ_ROWS; r++) {
      const int t = t0 + r;
      if (t < p.rows) {
        bf16* dz = p.dz + (size_t)t * p.d + c;
        if (p.accumulate) {
          float old[W];
          rd_load_z<W>(dz, old);
#pragma unroll
          for (int e = 0; e < W; e++) acc[r][e] = old[e] + acc[r][e];
        }
        if (W == 8) store_bf16x8(dz, acc[r]);
        else dz[0] = f2bf(acc[r][0]);
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) rowdot_bwd_dz(const RowdotBwdDzParams p) {
  const bool vec = p.d % 8 == 0 && aligned16(p.w) && aligned16(p.dz);
  if (vec) dz_walk<8>(p);
  else dz_walk<1>(p);
}

// One slab of 32 column items (32 * W columns) of dw_partial[blockIdx.y][j0 .. j0 + RD_JC).
template <int W>
static __device__ __forceinline__ void dw_slab(const RowdotBwdDwParams& p, int slab_idx,
                                               float (*red)[TMOE_WARP * 8]) {
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const int slab = TMOE_WARP * W;  // columns of the slab
  const int c = slab_idx * slab + lane * W;
  const bool valid = c < p.d;
  const int j0 = blockIdx.z * RD_JC;
  const int jn = min(RD_JC, p.j - j0);
  const int t_end = min(p.rows, (int)(blockIdx.y + 1) * p.rows_per_block);

  float acc[RD_JC][W];
#pragma unroll
  for (int jj = 0; jj < RD_JC; jj++) {
#pragma unroll
    for (int e = 0; e < W; e++) acc[jj][e] = 0.f;
  }
  if (valid) {
    for (int t = blockIdx.y * p.rows_per_block + warp; t < t_end; t += RD_DW_WARPS) {
      float zv[W];
      rd_load_z<W>(p.z + (size_t)t * p.d + c, zv);
#pragma unroll
      for (int jj = 0; jj < RD_JC; jj++) {
        if (jj < jn) {
          const float dl = rd_dlogit(p.dout, p.y, (size_t)t * p.j + j0 + jj);
#pragma unroll
          for (int e = 0; e < W; e++) acc[jj][e] += dl * zv[e];
        }
      }
    }
  }

  // Sum the warps' slices in warp order, one output row j at a time.
  const int c_out = slab_idx * slab + threadIdx.x;
#pragma unroll
  for (int jj = 0; jj < RD_JC; jj++) {
    if (jj < jn) {  // block-uniform
#pragma unroll
      for (int e = 0; e < W; e++) red[warp][lane * W + e] = acc[jj][e];
      __syncthreads();
      if (threadIdx.x < slab && c_out < p.d) {
        float s = 0.f;
        for (int q = 0; q < RD_DW_WARPS; q++) s += red[q][threadIdx.x];
        p.dw_partial[((size_t)blockIdx.y * p.j + j0 + jj) * p.d + c_out] = s;
      }
      __syncthreads();
    }
  }
}

template <int W>
static __device__ __forceinline__ void dw_block(const RowdotBwdDwParams& p, float (*red)[TMOE_WARP * 8]) {
  // Block-uniform loop (the wrapper sizes gridDim.x for the 16-byte path; the
  // scalar path, or a grid that is short, loops over the remaining slabs).
  for (int s = blockIdx.x; s * TMOE_WARP * W < p.d; s += gridDim.x) dw_slab<W>(p, s, red);
}

// Block = RD_DW_WARPS warps (the wrapper launches exactly 256 threads).
extern "C" __global__ void __launch_bounds__(256) rowdot_bwd_dw(const RowdotBwdDwParams p) {
  TMOE_SHARED(float, red, [RD_DW_WARPS][TMOE_WARP * 8]);  // one slab row of each warp's sums
  const bool vec = p.d % 8 == 0 && aligned16(p.z);
  if (vec) dw_block<8>(p, red);
  else dw_block<1>(p, red);
}
