// Router and load-balancing loss (fp32 throughout: routing decisions must not
// depend on bf16 rounding).
//
// Real tokens: `valid` ([T], 1 = real, 0 = [PAD]; null = all real) selects the
// tokens of the aux loss's statistics. R below is the set of real tokens and
// T_r their number, = sum_e count_e / k (so pass 2 and router_bwd read it off
// the counts). Padded positions are routed like any other (probs, top-k).
//
// router_fwd:  probs = softmax(logits) over N experts; top-k by probability,
//              ties to the lower expert index, ordered by descending prob;
//              topk_w = the kept probs (not renormalised); counts[e] += number
//              of slots of real tokens routed to e (integer atomics:
//              order-independent, so deterministic). One thread per token row
//              (N is small: 8).
// lb_loss_partial + lb_loss_fwd: L = N * sum_e load_e * prob_e, load_e =
//              count_e / (T_r k), prob_e = sum_{t in R} probs[t, e] / T_r; 0
//              when T_r = 0. Two passes (a multi-block weighted sum, then one
//              block over the partials), fixed partition and order.
// router_bwd:  dprobs = scatter(dtopk_w) + dL/dprobs, where dL/dprobs[t, e] =
//              lb_dloss * N * load_e / T_r for t in R and 0 for padding (load
//              is piecewise constant), then the softmax backward
//              dlogits = p * (dp - sum_e p_e dp_e). Writes dlogits (=).
// References: backend::cpu::router::{fwd, lb_loss, lb_loss_bwd}.
#include "common.cuh"

// One thread per token (ROW_THREADS in src/backend/gpu/ops/moe_route.rs): the
// bound caps registers for that block and lets a launcher refuse a bigger one.
#define ROW_THREADS 128

extern "C" __global__ void __launch_bounds__(ROW_THREADS) router_fwd(const RouterFwdParams p) {
    TMOE_SHARED(uint32_t, s_counts, [MOE_MAX_EXPERTS]);
    const int n = p.n_experts;
    for (int e = threadIdx.x; e < n; e += blockDim.x) s_counts[e] = 0;
    __syncthreads();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < p.tokens) {
        const float* x = p.logits + (int64_t)t * n;
        float* pr = p.probs + (int64_t)t * n;
        float mx = -INFINITY;
        for (int e = 0; e < n; e++) mx = fmaxf(mx, x[e]);
        float sum = 0.0f;
        for (int e = 0; e < n; e++) sum += expf(x[e] - mx);
        const float inv = 1.0f / sum;
        for (int e = 0; e < n; e++) pr[e] = expf(x[e] - mx) * inv;
        // k passes of arg-max over the not-yet-chosen experts; strict '>' in
        // ascending order keeps ties on the lower index.
        uint64_t chosen = 0ull;
        for (int j = 0; j < p.k; j++) {
            int best = -1;
            float bv = 0.0f;
            for (int e = 0; e < n; e++) {
                if ((chosen >> e) & 1ull) continue;
                const float v = pr[e];
                if (best < 0 || v > bv) { best = e; bv = v; }
            }
            chosen |= 1ull << best;
            p.topk_idx[(int64_t)t * p.k + j] = (uint32_t)best;
            p.topk_w[(int64_t)t * p.k + j] = bv;
            if (p.counts && (!p.valid || p.valid[t])) atomicAdd(&s_counts[best], 1u);
        }
    }
    __syncthreads();
    if (p.counts)
        for (int e = threadIdx.x; e < n; e += blockDim.x)
            if (s_counts[e]) atomicAdd(&p.counts[e], s_counts[e]);
}

// lb_loss_partial: L = N / (T_r k T_r) * sum_{t in R, e} count_e * probs[t, e],
// so one weighted sum over the flat [T, N] array (padding rows weigh 0).
// Grid-stride over float4s (4 loads in flight per thread, 16-byte accesses
// when probs is aligned; scalar otherwise and for the < 4 trailing elements),
// block_sum, one partial per block: partials[blockIdx.x]. The grid is fixed by the shape (the wrapper's
// lb_loss_partials), so the partition and the order are too.
// lb_loss_fwd: one block sums the partials in index order (per thread, then
// block_sum's fixed tree) and scales. Deterministic; 4 bytes per probability.
#define LB_THREADS 256
static __device__ __forceinline__ float weighted4(const float4 v, const float* w, int e, int n) {
  // columns e, e+1, e+2, e+3 (mod n) of the flat array
  float s = w[e] * v.x;
  e = e + 1 == n ? 0 : e + 1;
  s += w[e] * v.y;
  e = e + 1 == n ? 0 : e + 1;
  s += w[e] * v.z;
  e = e + 1 == n ? 0 : e + 1;
  return s + w[e] * v.w;
}
// weighted4 of float4 `v` of the flat array (elements 4v..4v+3), skipping the
// elements of padding rows when there is a mask (same sum order).
static __device__ __forceinline__ float weighted4_valid(const float4 x, const float* w, int e,
                                                        int n, const uint8_t* valid, int64_t v) {
  if (!valid) return weighted4(x, w, e, n);
  int64_t row = 4 * v / n;
  const float xs[4] = {x.x, x.y, x.z, x.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    if (valid[row]) s += w[e] * xs[i];
    if (++e == n) { e = 0; row++; }
  }
  return s;
}

extern "C" __global__ void __launch_bounds__(LB_THREADS) lb_loss_partial(const LbLossPartialParams p) {
  TMOE_SHARED(float, s_w, [MOE_MAX_EXPERTS]);
  TMOE_SHARED(float, s_red, [32]);
  const int n = p.n_experts;
  for (int e = threadIdx.x; e < n; e += blockDim.x) s_w[e] = (float)p.counts[e];
  __syncthreads();
  const int64_t total = (int64_t)p.tokens * n;
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t gs = (int64_t)gridDim.x * blockDim.x;
  const int64_t nv = (reinterpret_cast<uintptr_t>(p.probs) & 15) == 0 ? total / 4 : 0;
  const float4* p4 = reinterpret_cast<const float4*>(p.probs);
  // Column of float4 v is (4 v) mod n; it advances by (4 gs) mod n per step.
  const int step = (int)((4 * gs) % n);
  int e = (int)((4 * gid) % n);
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  int64_t v = gid;
  const uint8_t* valid = p.valid;
  for (; v + 3 * gs < nv; v += 4 * gs) {
    const float4 x0 = p4[v], x1 = p4[v + gs], x2 = p4[v + 2 * gs], x3 = p4[v + 3 * gs];
    const int e1 = (e + step) % n, e2 = (e + 2 * step) % n, e3 = (e + 3 * step) % n;
    a0 += weighted4_valid(x0, s_w, e, n, valid, v);
    a1 += weighted4_valid(x1, s_w, e1, n, valid, v + gs);
    a2 += weighted4_valid(x2, s_w, e2, n, valid, v + 2 * gs);
    a3 += weighted4_valid(x3, s_w, e3, n, valid, v + 3 * gs);
    e = (e + 4 * step) % n;
  }
  for (; v < nv; v += gs) {
    a0 += weighted4_valid(p4[v], s_w, e, n, valid, v);
    e = (e + step) % n;
  }
  for (int64_t f = 4 * nv + gid; f < total; f += gs)
    if (!valid || valid[f / n]) a1 += s_w[f % n] * p.probs[f];
  const float sum = block_sum((a0 + a1) + (a2 + a3), s_red);
  if (threadIdx.x == 0) p.partials[blockIdx.x] = sum;
}

extern "C" __global__ void __launch_bounds__(LB_THREADS) lb_loss_fwd(const LbLossFwdParams p) {
  TMOE_SHARED(float, s_red, [32]);
  float acc = 0.0f;
  for (int i = threadIdx.x; i < p.n_partials; i += blockDim.x) acc += p.partials[i];
  const float sum = block_sum(acc, s_red);
  if (threadIdx.x == 0) {
    uint32_t slots = 0;  // T_r k
    for (int e = 0; e < p.n_experts; e++) slots += p.counts[e];
    p.loss[0] = slots ? (float)p.n_experts / (float)slots * (sum / (float)(slots / p.k)) : 0.0f;
  }
}

extern "C" __global__ void __launch_bounds__(ROW_THREADS) router_bwd(const RouterBwdParams p) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= p.tokens) return;
    const int n = p.n_experts, k = p.k;
    const float* pr = p.probs + (int64_t)t * n;
    const uint32_t* idx = p.topk_idx + (int64_t)t * k;
    const float* dw = p.dtopk_w ? p.dtopk_w + (int64_t)t * k : nullptr;
    // d lb / d probs[t, e] = dloss * N * count_e / (T_r k) / T_r for real t, else 0
    uint32_t slots = 0;  // T_r k
    for (int e = 0; e < n; e++) slots += p.counts[e];
    const bool real = slots && (!p.valid || p.valid[t]);
    const float lb_scale =
        real ? p.lb_dloss * (float)n / ((float)slots * (float)(slots / k)) : 0.0f;
    // dp_e without materialising an [N] array (it would live in local memory).
    float dot = 0.0f;
    for (int e = 0; e < n; e++) dot += pr[e] * (lb_scale * (float)p.counts[e]);
    if (dw)
        for (int j = 0; j < k; j++) dot += pr[idx[j]] * dw[j];
    float* dl = p.dlogits + (int64_t)t * n;
    for (int e = 0; e < n; e++) {
        float dp = lb_scale * (float)p.counts[e];
        if (dw)
            for (int j = 0; j < k; j++)
                if (idx[j] == (uint32_t)e) dp += dw[j];
        dl[e] = pr[e] * (dp - dot);
    }
}
