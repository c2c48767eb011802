// RMSNorm forward and backward (the exemplar kernel family: copy its shape).
//   y = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps)        (per row of d)
//   dx = rstd * (w*dy - x * rstd^2 * mean(x*w*dy))             (=)
//   dw += sum_rows dy * x * rstd                                (deterministic)
// bf16 activations, fp32 weight and accumulation. Reference: backend/cpu/rmsnorm.rs.
#include "common.cuh"

static __device__ __forceinline__ void load_f32x8(const float* ptr, float out[8]) {
  const float4 a = *reinterpret_cast<const float4*>(ptr);
  const float4 b = *reinterpret_cast<const float4*>(ptr + 4);
  out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
  out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}
static __device__ __forceinline__ void store_f32x8(float* ptr, const float in[8]) {
  *reinterpret_cast<float4*>(ptr) = make_float4(in[0], in[1], in[2], in[3]);
  *reinterpret_cast<float4*>(ptr + 4) = make_float4(in[4], in[5], in[6], in[7]);
}

// Rows of d <= RMS_CACHED_D on the 16-byte path keep the lane's share in
// registers: RMS_GROUPS groups of 8 columns, j = (g*32 + lane)*8 (d = 768: all
// 32 lanes x 3 groups busy). More groups cost registers (occupancy) for no gain
// at the model's d; wider rows loop (nvcc unrolls those loops by 4).
#define RMS_GROUPS 3
#define RMS_CACHED_D (RMS_GROUPS * TMOE_WARP * 8)
// One warp per row (rows are many, d is a few hundred): no block barrier, so
// warps past the last row may return early. 16-byte accesses when d % 8 == 0
// and x, y, w are aligned; for d <= RMS_CACHED_D the lane's x is loaded at once
// and kept in registers for the second pass (a loop over d would issue one load
// per trip: d = 768 is 3 trips, below nvcc's unroll of 4, and each waited for
// its DRAM latency in turn).
extern "C" __global__ void __launch_bounds__(256) rmsnorm_fwd(const RmsNormFwdParams p) {
  const int lane = threadIdx.x % TMOE_WARP;
  const int row = blockIdx.x * (blockDim.x / TMOE_WARP) + threadIdx.x / TMOE_WARP;
  if (row >= p.rows) return;
  const bf16* x = p.x + (size_t)row * p.d;
  bf16* y = p.y + (size_t)row * p.d;
  const bool vec = p.d % 8 == 0 && aligned16(p.x) && aligned16(p.y) && aligned16(p.w);

  if (vec && p.d <= RMS_CACHED_D) {
    uint4 xr[RMS_GROUPS];
#pragma unroll
    for (int g = 0; g < RMS_GROUPS; g++) {
      const int j = (g * TMOE_WARP + lane) * 8;
      if (j < p.d) xr[g] = *reinterpret_cast<const uint4*>(x + j);
    }
    float ss = 0.f;
#pragma unroll
    for (int g = 0; g < RMS_GROUPS; g++) {
      const int j = (g * TMOE_WARP + lane) * 8;
      if (j < p.d) {
        float v[8];
        unpack_bf16x8(xr[g], v);
#pragma unroll
        for (int k = 0; k < 8; k++) ss += v[k] * v[k];
      }
    }
    const float rstd = rsqrtf(warp_sum(ss) / p.d + p.eps);
    if (lane == 0) p.rstd[row] = rstd;
#pragma unroll
    for (int g = 0; g < RMS_GROUPS; g++) {
      const int j = (g * TMOE_WARP + lane) * 8;
      if (j < p.d) {
        float v[8], w[8], o[8];
        unpack_bf16x8(xr[g], v);
        load_f32x8(p.w + j, w);
#pragma unroll
        for (int k = 0; k < 8; k++) o[k] = v[k] * rstd * w[k];
        store_bf16x8(y + j, o);
      }
    }
    return;
  }

  float ss = 0.f;
  if (vec) {
    for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
      float v[8];
      load_bf16x8(x + j, v);
#pragma unroll
      for (int k = 0; k < 8; k++) ss += v[k] * v[k];
    }
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) {
      const float v = bf2f(x[j]);
      ss += v * v;
    }
  }
  const float rstd = rsqrtf(warp_sum(ss) / p.d + p.eps);
  if (lane == 0) p.rstd[row] = rstd;

  // Wider rows: the second pass re-reads x (an L1/L2 hit) rather than holding d/32 values per lane.
  if (vec) {
    for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
      float v[8], w[8], o[8];
      load_bf16x8(x + j, v);
      load_f32x8(p.w + j, w);
#pragma unroll
      for (int k = 0; k < 8; k++) o[k] = v[k] * rstd * w[k];
      store_bf16x8(y + j, o);
    }
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) y[j] = f2bf(bf2f(x[j]) * rstd * p.w[j]);
  }
}

// dx for 8 columns and the lane's dw sums (acc, shared memory) for them.
static __device__ __forceinline__ void bwd_cols8(const float xv[8], const float dyv[8], const float* w,
                                                 float rstd, float c, float* acc, bf16* dx) {
  float wv[8], a[8], o[8];
  load_f32x8(w, wv);
  load_f32x8(acc, a);
#pragma unroll
  for (int k = 0; k < 8; k++) {
    o[k] = rstd * (wv[k] * dyv[k] - xv[k] * c);
    a[k] += dyv[k] * xv[k] * rstd;
  }
  store_f32x8(acc, a);
  store_bf16x8(dx, o);
}

// Rows of d <= RMS_CACHED_D on the 16-byte path: the lane's x and dy stay in
// registers between the two passes; all their loads are issued before any use.
static __device__ __forceinline__ void bwd_row_cached(const RmsNormBwdParams& p, int row, int lane,
                                                      float* acc) {
  const size_t base = (size_t)row * p.d;
  uint4 xr[RMS_GROUPS], dyr[RMS_GROUPS];
#pragma unroll
  for (int g = 0; g < RMS_GROUPS; g++) {
    const int j = (g * TMOE_WARP + lane) * 8;
    if (j < p.d) {
      xr[g] = *reinterpret_cast<const uint4*>(p.x + base + j);
      dyr[g] = *reinterpret_cast<const uint4*>(p.dy + base + j);
    }
  }
  const float rstd = p.rstd[row];
  float dot = 0.f;
#pragma unroll
  for (int g = 0; g < RMS_GROUPS; g++) {
    const int j = (g * TMOE_WARP + lane) * 8;
    if (j < p.d) {
      float xv[8], dyv[8], wv[8];
      unpack_bf16x8(xr[g], xv);
      unpack_bf16x8(dyr[g], dyv);
      load_f32x8(p.w + j, wv);
#pragma unroll
      for (int k = 0; k < 8; k++) dot += xv[k] * wv[k] * dyv[k];
    }
  }
  const float c = warp_sum(dot) * rstd * rstd / p.d;
#pragma unroll
  for (int g = 0; g < RMS_GROUPS; g++) {
    const int j = (g * TMOE_WARP + lane) * 8;
    if (j < p.d) {
      float xv[8], dyv[8];
      unpack_bf16x8(xr[g], xv);
      unpack_bf16x8(dyr[g], dyv);
      bwd_cols8(xv, dyv, p.w + j, rstd, c, acc + j, p.dx + base + j);
    }
  }
}

// Wider rows on the 16-byte path: the second pass re-reads x and dy (L1 hits).
static __device__ void bwd_row_vec(const RmsNormBwdParams& p, int row, int lane, float* acc) {
  const bf16* x = p.x + (size_t)row * p.d;
  const bf16* dy = p.dy + (size_t)row * p.d;
  const float rstd = p.rstd[row];
  float dot = 0.f;
  for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
    float xv[8], dyv[8], wv[8];
    load_bf16x8(x + j, xv);
    load_bf16x8(dy + j, dyv);
    load_f32x8(p.w + j, wv);
#pragma unroll
    for (int k = 0; k < 8; k++) dot += xv[k] * wv[k] * dyv[k];
  }
  const float c = warp_sum(dot) * rstd * rstd / p.d;
  for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
    float xv[8], dyv[8];
    load_bf16x8(x + j, xv);
    load_bf16x8(dy + j, dyv);
    bwd_cols8(xv, dyv, p.w + j, rstd, c, acc + j, p.dx + (size_t)row * p.d + j);
  }
}

// Scalar fallback (d % 8 != 0 or a misaligned pointer): lane owns j = lane + 32k.
static __device__ void bwd_row_scalar(const RmsNormBwdParams& p, int row, int lane, float* acc) {
  const bf16* x = p.x + (size_t)row * p.d;
  const bf16* dy = p.dy + (size_t)row * p.d;
  bf16* dx = p.dx + (size_t)row * p.d;
  const float rstd = p.rstd[row];
  float dot = 0.f;
  for (int j = lane; j < p.d; j += TMOE_WARP) dot += bf2f(x[j]) * p.w[j] * bf2f(dy[j]);
  const float c = warp_sum(dot) * rstd * rstd / p.d;
  for (int j = lane; j < p.d; j += TMOE_WARP) {
    const float xv = bf2f(x[j]), dyv = bf2f(dy[j]);
    dx[j] = f2bf(rstd * (p.w[j] * dyv - xv * c));
    acc[j] += dyv * xv * rstd;
  }
}

// One warp per row, like the forward: no block barrier per row, every lane busy
// (d = 768: 3 groups of 8 columns per lane). Warp q of block b handles rows
// (k*gridDim.x + b)*W + q for k = 0, 1, ... (W warps per block). Each lane adds
// dy*x*rstd of its own columns, in row order, into its warp's slice of dynamic
// shared memory (W*d floats; a lane only touches its own columns: no barrier,
// no conflicts); at the end the block sums its W slices in warp order into its
// dw_partial row, which rmsnorm_dw_reduce adds up in block order (deterministic
// for a given grid, chosen from rows and d by the launch wrapper: at most 4
// blocks per SM of an H200, one wave, which __launch_bounds__(256, 4) keeps
// resident). Per row: 4d bytes read (x, dy), 2d written (dx); w and the slices
// are L1 / shared.
extern "C" __global__ void __launch_bounds__(256, 4) rmsnorm_bwd(const RmsNormBwdParams p) {
  TMOE_DYNAMIC_SMEM(float, dw_acc);
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const int n_warps = blockDim.x / TMOE_WARP;
  float* acc = dw_acc + (size_t)warp * p.d;
  const bool vec = p.d % 8 == 0 && aligned16(p.x) && aligned16(p.dy) && aligned16(p.dx) &&
                   aligned16(p.w);
  // Each lane zeroes exactly the columns it will accumulate (no barrier needed).
  if (vec) {
    const float zero[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) store_f32x8(acc + j, zero);
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) acc[j] = 0.f;
  }

  const int row0 = blockIdx.x * n_warps + warp, stride = gridDim.x * n_warps;
  if (vec && p.d <= RMS_CACHED_D) {
    for (int row = row0; row < p.rows; row += stride) bwd_row_cached(p, row, lane, acc);
  } else if (vec) {
    for (int row = row0; row < p.rows; row += stride) bwd_row_vec(p, row, lane, acc);
  } else {
    for (int row = row0; row < p.rows; row += stride) bwd_row_scalar(p, row, lane, acc);
  }

  __syncthreads();  // slices are summed across warps
  for (int j = threadIdx.x; j < p.d; j += blockDim.x) {
    float s = 0.f;
    for (int q = 0; q < n_warps; q++) s += dw_acc[(size_t)q * p.d + j];
    p.dw_partial[(size_t)blockIdx.x * p.d + j] = s;
  }
}

// dw[j] += sum over partial rows b in a fixed order: block = 32 columns x 32
// warps; warp q sums rows b = q, q+32, ... (in order), then warp 0 adds the 32
// warp sums in warp order. Deterministic for a given n_partials. Small (a few
// hundred partial rows): latency-bound, so every warp keeps several loads in flight.
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_dw_reduce(const RmsNormDwReduceParams p) {
  TMOE_SHARED(float, sums, [TMOE_WARP][TMOE_WARP + 1]);
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const int n_warps = blockDim.x / TMOE_WARP;
  const int j = blockIdx.x * TMOE_WARP + lane;
  float s = 0.f;
  if (j < p.d) {
#pragma unroll 4
    for (int b = warp; b < p.n_partials; b += n_warps) s += p.dw_partial[(size_t)b * p.d + j];
  }
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < p.d) {
    float t = 0.f;
    for (int q = 0; q < n_warps; q++) t += sums[q][lane];
    p.dw[j] += t;
  }
}
