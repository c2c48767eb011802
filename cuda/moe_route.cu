// Router and load-balancing loss (fp32 throughout: routing decisions must not
// depend on bf16 rounding).
//
// router_fwd:  probs = softmax(logits) over N experts; top-k by probability,
//              ties to the lower expert index, ordered by descending prob;
//              topk_w = the kept probs (not renormalised); counts[e] += number
//              of slots routed to e (integer atomics: order-independent, so
//              deterministic). One thread per token row (N is small: 8).
// lb_loss_fwd: L = N * sum_e load_e * prob_e, load_e = count_e / (T k),
//              prob_e = mean_t probs[t, e]. One block, coalesced, fixed order.
// router_bwd:  dprobs = scatter(dtopk_w) + dL/dprobs (= lb_dloss * N * load_e / T,
//              load is piecewise constant), then the softmax backward
//              dlogits = p * (dp - sum_e p_e dp_e). Writes dlogits (=).
// References: backend::cpu::router::{fwd, lb_loss, lb_loss_bwd}.
#include "common.cuh"

extern "C" __global__ void router_fwd(const RouterFwdParams p) {
    __shared__ uint32_t s_counts[MOE_MAX_EXPERTS];
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
            if (p.counts) atomicAdd(&s_counts[best], 1u);
        }
    }
    __syncthreads();
    if (p.counts)
        for (int e = threadIdx.x; e < n; e += blockDim.x)
            if (s_counts[e]) atomicAdd(&p.counts[e], s_counts[e]);
}

// Reads probs as one flat array, coalesced: thread i (< lanes, a multiple of
// N) sums elements i, i + lanes, ... (all of column i % N) with four
// accumulators for loads in flight; then column e sums threads e, e + N, ...
// in thread order. Fixed order throughout; one block (the input is ~1 MB).
#define LB_MAX_THREADS 1024
extern "C" __global__ void __launch_bounds__(LB_MAX_THREADS) lb_loss_fwd(const LbLossFwdParams p) {
    __shared__ float s_acc[LB_MAX_THREADS];
    __shared__ float s_mean[MOE_MAX_EXPERTS];
    const int n = p.n_experts;
    const int lanes = ((int)blockDim.x / n) * n;
    const int64_t total = (int64_t)p.tokens * n;
    float acc = 0.0f;
    if ((int)threadIdx.x < lanes) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        int64_t f = threadIdx.x;
        for (; f + 3 * (int64_t)lanes < total; f += 4 * (int64_t)lanes) {
            a0 += p.probs[f];
            a1 += p.probs[f + lanes];
            a2 += p.probs[f + 2 * (int64_t)lanes];
            a3 += p.probs[f + 3 * (int64_t)lanes];
        }
        for (; f < total; f += lanes) a0 += p.probs[f];
        acc = (a0 + a1) + (a2 + a3);
    }
    s_acc[threadIdx.x] = acc;
    __syncthreads();
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        float s = 0.0f;
        for (int i = e; i < lanes; i += n) s += s_acc[i];
        s_mean[e] = s / (float)p.tokens;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const float slots = (float)p.tokens * (float)p.k;
        float l = 0.0f;
        for (int e = 0; e < n; e++) l += ((float)p.counts[e] / slots) * s_mean[e];
        p.loss[0] = (float)n * l;
    }
}

extern "C" __global__ void router_bwd(const RouterBwdParams p) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= p.tokens) return;
    const int n = p.n_experts, k = p.k;
    const float* pr = p.probs + (int64_t)t * n;
    const uint32_t* idx = p.topk_idx + (int64_t)t * k;
    const float* dw = p.dtopk_w ? p.dtopk_w + (int64_t)t * k : nullptr;
    // d lb / d probs[t, e] = dloss * N * count_e / (T k) / T
    const float lb_scale = p.lb_dloss * (float)n / ((float)p.tokens * (float)k * (float)p.tokens);
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
