// RMSNorm forward and backward (the exemplar kernel family: copy its shape).
//   y = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps)        (per row of d)
//   dx = rstd * (w*dy - x * rstd^2 * mean(x*w*dy))             (=)
//   dw += sum_rows dy * x * rstd                                (deterministic)
// bf16 activations, fp32 weight and accumulation. Reference: backend/cpu/rmsnorm.rs.
#include "common.cuh"

// One warp per row (rows are many, d is a few hundred): no block barrier, so
// warps past the last row may return early. 16-byte accesses when d % 8 == 0.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_fwd(const RmsNormFwdParams p) {
  const int lane = threadIdx.x % TMOE_WARP;
  const int row = blockIdx.x * (blockDim.x / TMOE_WARP) + threadIdx.x / TMOE_WARP;
  if (row >= p.rows) return;
  const bf16* x = p.x + (size_t)row * p.d;
  bf16* y = p.y + (size_t)row * p.d;
  const bool vec = p.d % 8 == 0;

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

  // Second pass re-reads x (an L1/L2 hit) rather than holding d/32 values per lane.
  if (vec) {
    for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
      float v[8], o[8];
      load_bf16x8(x + j, v);
      const float4 w0 = *reinterpret_cast<const float4*>(p.w + j);
      const float4 w1 = *reinterpret_cast<const float4*>(p.w + j + 4);
      const float w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
      for (int k = 0; k < 8; k++) o[k] = v[k] * rstd * w[k];
      store_bf16x8(y + j, o);
    }
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) y[j] = f2bf(bf2f(x[j]) * rstd * p.w[j]);
  }
}

static __device__ __forceinline__ bool aligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0;
}
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

// One block per contiguous chunk of rows; thread t owns the same columns in
// every row (t, t+blockDim, ... or, on the vector path, the 8-column groups
// 8t, 8(t+blockDim), ...), so its dw sums stay in shared memory in a fixed row
// order (no atomics), and the block writes one partial row that
// rmsnorm_dw_reduce sums in block order. 16-byte accesses when d % 8 == 0 and
// the pointers are aligned; scalar otherwise. Dynamic shared memory: d floats.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_bwd(const RmsNormBwdParams p) {
  TMOE_DYNAMIC_SMEM(float, dw_acc);
  __shared__ float scratch[32];
  for (int j = threadIdx.x; j < p.d; j += blockDim.x) dw_acc[j] = 0.f;
  const bool vec = p.d % 8 == 0 && aligned16(p.x) && aligned16(p.dy) && aligned16(p.dx) &&
                   aligned16(p.w) && aligned16(dw_acc);
  const int vstep = blockDim.x * 8;
  __syncthreads();  // the vector path's column groups are not the zeroing threads' columns

  const int per_block = ceil_div(p.rows, gridDim.x);
  const int r0 = blockIdx.x * per_block;
  const int r1 = min(p.rows, r0 + per_block);
  for (int row = r0; row < r1; row++) {  // uniform trip count: barriers inside are safe
    const bf16* x = p.x + (size_t)row * p.d;
    const bf16* dy = p.dy + (size_t)row * p.d;
    bf16* dx = p.dx + (size_t)row * p.d;
    const float rstd = p.rstd[row];
    float dot = 0.f;
    if (vec) {
      for (int j = threadIdx.x * 8; j < p.d; j += vstep) {
        float xv[8], dyv[8], w[8];
        load_bf16x8(x + j, xv);
        load_bf16x8(dy + j, dyv);
        load_f32x8(p.w + j, w);
#pragma unroll
        for (int k = 0; k < 8; k++) dot += xv[k] * w[k] * dyv[k];
      }
    } else {
      for (int j = threadIdx.x; j < p.d; j += blockDim.x) dot += bf2f(x[j]) * p.w[j] * bf2f(dy[j]);
    }
    const float c = block_sum(dot, scratch) * rstd * rstd / p.d;
    if (vec) {
      // Re-reads x, dy, w (L1 hits) rather than holding them across the barrier.
      for (int j = threadIdx.x * 8; j < p.d; j += vstep) {
        float xv[8], dyv[8], w[8], o[8];
        load_bf16x8(x + j, xv);
        load_bf16x8(dy + j, dyv);
        load_f32x8(p.w + j, w);
        float acc[8];
        load_f32x8(dw_acc + j, acc);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          o[k] = rstd * (w[k] * dyv[k] - xv[k] * c);
          acc[k] += dyv[k] * xv[k] * rstd;
        }
        store_f32x8(dw_acc + j, acc);
        store_bf16x8(dx + j, o);
      }
    } else {
      for (int j = threadIdx.x; j < p.d; j += blockDim.x) {
        const float xv = bf2f(x[j]), dyv = bf2f(dy[j]);
        dx[j] = f2bf(rstd * (p.w[j] * dyv - xv * c));
        dw_acc[j] += dyv * xv * rstd;
      }
    }
  }
  __syncthreads();  // vector-path columns are written back by the scalar loop's threads
  for (int j = threadIdx.x; j < p.d; j += blockDim.x)
    p.dw_partial[(size_t)blockIdx.x * p.d + j] = dw_acc[j];
}

// dw[j] += sum over partial rows in order: deterministic for a given grid.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_dw_reduce(const RmsNormDwReduceParams p) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= p.d) return;
  float s = 0.f;
  for (int b = 0; b < p.n_partials; b++) s += p.dw_partial[(size_t)b * p.d + j];
  p.dw[j] += s;
}
