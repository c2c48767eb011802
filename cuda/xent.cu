// Softmax cross-entropy over a large vocabulary, fused with its backward
// (llm.c's fused classifier): no T x V probability matrix is ever stored.
//
// xent_fwd_bwd: grid = T (one block per row), block = 64..512 threads (the
// wrapper picks ~64 logits per thread, 512 for a 65k vocabulary; 2 blocks of
// 512 per SM at <= 64 registers). Memory-bound: 2 bytes per logit read once
// (loss only), or read twice + 2 bytes written (with dlogits; the second
// read, backwards, partly hits L2: 264 rows of 128 KiB in flight ~ L2's size).
//   pass 1: one streaming read, online softmax per thread (running max m of
//     the logits and a rescaled sum s of 2^((x - m) * log2(e))), merged over
//     the block -> lse; losses[t] = lse - x[target]   (0 for target == ignore_index)
//   pass 2 (when dlogits != nullptr): dlogits[t, i] = grad_scale *
//     (exp(x_i - lse) - [i == target]), zero rows for ignored targets.
// Rows start anywhere (odd vocab / ld): each row is an unaligned head of < 8
// logits up to the first 16-byte boundary, a body of 16-byte vectors (4 loads
// in flight per thread), and a tail of < 8; head and tail are one scalar per
// thread. dlogits must have the same 16-byte alignment as logits (the wrapper
// checks it); it may alias logits (each element is read before it is written,
// by the same thread), which is how training uses it. grad_scale = dloss /
// n_valid, known on the host (it built the targets): nothing waits on the device.
// xent_mean, one block: loss = sum(losses) / n_valid in a fixed order.
// A target >= V makes that row's loss NaN (visible, never an out-of-bounds read).
// Reference: backend::cpu::xent::{fwd, bwd}.
#include "common.cuh"

#define XENT_MAX_THREADS 512
#define XENT_UNROLL 4
#define XENT_LOG2E 1.4426950408889634f
#define XENT_LN2 0.6931471805599453f
// Running maximum starts finite, so -inf logits add exp(-inf) = 0, never inf - inf.
#define XENT_M0 (-3.402823466e38f)

// exp(x - m) as 2^((x - m) log2 e): the difference is taken in the logits'
// own units, so it is 0 exactly at the maximum and never overflows where
// the logits do not (x * log2 e did for |x| > 2.36e38: an inf maximum, then
// inf - inf = NaN). A difference below -FLT_MAX (|x|, |m| near the bf16
// range's ends) is -inf and adds exp(-inf) = 0, its true value in float.
static __device__ __forceinline__ float xent_exp(float x, float m) {
  return exp2f((x - m) * XENT_LOG2E);
}

// Adds n logits x to the running (m, s): s = sum of exp(x_i - m).
template <int N>
static __device__ __forceinline__ void lse_add(float& m, float& s, const float* x) {
  float mx = m;
#pragma unroll
  for (int k = 0; k < N; k++) mx = fmaxf(mx, x[k]);
  float acc = s * xent_exp(m, mx);
#pragma unroll
  for (int k = 0; k < N; k++) acc += xent_exp(x[k], mx);
  m = mx;
  s = acc;
}

// Merges (mb, sb) into (m, s).
static __device__ __forceinline__ void lse_merge(float& m, float& s, float mb, float sb) {
  const float mx = fmaxf(m, mb);
  s = s * xent_exp(m, mx) + sb * xent_exp(mb, mx);
  m = mx;
}

// dlogit of one element: grad_scale * (p - [is target]), p = exp(x - m) / s.
// Not exp(x - lse): lse = m + ln(s) loses ln(s) to rounding once |m| is
// large (1e30: every p of an all-equal row came out 0).
static __device__ __forceinline__ float xent_grad(float x, float m, float inv_s, float gs, bool is_target) {
  return gs * (xent_exp(x, m) * inv_s - (is_target ? 1.0f : 0.0f));
}

extern "C" __global__ void __launch_bounds__(XENT_MAX_THREADS, 2) xent_fwd_bwd(const XentFwdBwdParams p) {
  TMOE_SHARED(float, s_m, [XENT_MAX_THREADS / 32]);
  TMOE_SHARED(float, s_s, [XENT_MAX_THREADS / 32]);
  const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row = blockIdx.x;
  const int V = p.vocab;
  const bf16* x = p.logits + row * p.ld;
  bf16* dx = p.dlogits ? p.dlogits + row * p.ld : nullptr;
  // Split of this row: [0, head) scalars, head + [0, 8 nvec) vectors, [tail0, V) scalars.
  const int head = min((int)(((16u - (uint32_t)(reinterpret_cast<uintptr_t>(x) & 15u)) & 15u) >> 1), V);
  const int nvec = (V - head) >> 3;
  const int tail0 = head + 8 * nvec;
  const bf16* xv = x + head;  // 16-byte aligned
  const uint32_t target = p.targets[row];

  if (target == p.ignore_index) {  // uniform over the block
    if (tid == 0) p.losses[row] = 0.0f;
    if (dx) {
      const float z[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int j = tid; j < nvec; j += nt) store_bf16x8(dx + head + 8 * j, z);
      if (tid < head) dx[tid] = f2bf(0.0f);
      if (tail0 + tid < V) dx[tail0 + tid] = f2bf(0.0f);
    }
    return;
  }

  // Pass 1: online (max, sum) per thread.
  float m = XENT_M0, s = 0.0f;
  int j = tid;
  for (; j + (XENT_UNROLL - 1) * nt < nvec; j += XENT_UNROLL * nt) {
    float t[XENT_UNROLL * 8];
#pragma unroll
    for (int u = 0; u < XENT_UNROLL; u++) load_bf16x8(xv + 8 * (j + u * nt), t + 8 * u);
    lse_add<XENT_UNROLL * 8>(m, s, t);
  }
  for (; j < nvec; j += nt) {
    float t[8];
    load_bf16x8(xv + 8 * j, t);
    lse_add<8>(m, s, t);
  }
  if (tid < head) {
    const float t = bf2f(x[tid]);
    lse_add<1>(m, s, &t);
  }
  if (tail0 + tid < V) {
    const float t = bf2f(x[tail0 + tid]);
    lse_add<1>(m, s, &t);
  }
  // Read before the barrier: pass 2 may overwrite it (in place).
  const float x_target = (tid == 0 && target < (uint32_t)V) ? bf2f(x[target]) : 0.0f;

  // Block merge: warps by shuffles, then every thread merges the warps in the
  // same order (identical lse everywhere, one barrier).
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float mb = __shfl_xor_sync(TMOE_FULL_MASK, m, o);
    const float sb = __shfl_xor_sync(TMOE_FULL_MASK, s, o);
    lse_merge(m, s, mb, sb);
  }
  if (lane == 0) { s_m[warp] = m; s_s[warp] = s; }
  __syncthreads();
  m = s_m[0];
  s = s_s[0];
  for (int w = 1; w < (nt >> 5); w++) lse_merge(m, s, s_m[w], s_s[w]);
  // loss = lse - x_target = (m - x_target) + ln(s): exact for a target at
  // the maximum (m + ln(s) would drop ln(s) at large |m|); inf only where
  // the loss passes FLT_MAX (a spread of logits above it).
  if (tid == 0) p.losses[row] = target < (uint32_t)V ? (m - x_target) + log2f(s) * XENT_LN2 : NAN;
  const float inv_s = 1.0f / s;
  if (!dx) return;

  // Pass 2: re-read the row, write its gradient. Vectors in reverse order:
  // pass 1 read the end of the row last, so that part is the likeliest to be
  // still in L2 (a fraction hits even when the rows in flight exceed L2).
  const float gs = p.grad_scale;
  bf16* dv = dx + head;  // same alignment as xv
  const int rel = (int)target - head;  // target's offset in the vector body (any int)
  j = tid;
  for (; j + (XENT_UNROLL - 1) * nt < nvec; j += XENT_UNROLL * nt) {
    float v[XENT_UNROLL][8];
#pragma unroll
    for (int u = 0; u < XENT_UNROLL; u++) load_bf16x8(xv + 8 * (nvec - 1 - j - u * nt), v[u]);
#pragma unroll
    for (int u = 0; u < XENT_UNROLL; u++) {
      const int jv = nvec - 1 - j - u * nt;
#pragma unroll
      for (int k = 0; k < 8; k++) v[u][k] = xent_grad(v[u][k], m, inv_s, gs, k == rel - 8 * jv);
      store_bf16x8(dv + 8 * jv, v[u]);
    }
  }
  for (; j < nvec; j += nt) {
    const int jv = nvec - 1 - j;
    float v[8];
    load_bf16x8(xv + 8 * jv, v);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = xent_grad(v[k], m, inv_s, gs, k == rel - 8 * jv);
    store_bf16x8(dv + 8 * jv, v);
  }
  if (tid < head) dx[tid] = f2bf(xent_grad(bf2f(x[tid]), m, inv_s, gs, (uint32_t)tid == target));
  if (tail0 + tid < V) {
    const int i = tail0 + tid;
    dx[i] = f2bf(xent_grad(bf2f(x[i]), m, inv_s, gs, (uint32_t)i == target));
  }
}

extern "C" __global__ void __launch_bounds__(1024) xent_mean(const XentMeanParams p) {
  TMOE_SHARED(float, s_red, [32]);
  float sum = 0.0f, cnt = 0.0f;
  for (int64_t t = threadIdx.x; t < p.tokens; t += blockDim.x) {
    if (p.targets[t] != p.ignore_index) { sum += p.losses[t]; cnt += 1.0f; }
  }
  sum = block_sum(sum, s_red);
  cnt = block_sum(cnt, s_red);
  if (threadIdx.x == 0) p.loss[0] = cnt > 0.0f ? sum / cnt : 0.0f;
}
