// Softmax cross-entropy over a large vocabulary, fused with its backward
// (llm.c's fused classifier): no T x V probability matrix is ever stored.
//
// xent_fwd_bwd, one block per row t (logits bf16, row stride ld >= V so the
// caller may pad rows):
//   pass 1: online max / sum-of-exp per thread, merged across the block -> lse
//   losses[t] = lse - x[target]   (0 for target == ignore_index)
//   pass 2 (when dlogits != nullptr): dlogits[t, i] = grad_scale *
//     (exp(x_i - lse) - [i == target]), zero rows for ignored targets.
//   dlogits may alias logits (each element is read before it is written by the
//   same thread), which is how training uses it. grad_scale = dloss / n_valid,
//   known on the host (it built the targets), so nothing waits on the device.
// xent_mean, one block: loss = sum(losses) / n_valid in a fixed order.
// A target >= V makes that row's loss NaN (visible, never an out-of-bounds read).
// Reference: backend::cpu::xent::{fwd, bwd}.
#include "common.cuh"

// Merge (m_b, s_b) into (m, s): s is a sum of exp(x - m).
static __device__ __forceinline__ void lse_merge(float& m, float& s, float mb, float sb) {
    const float mn = fmaxf(m, mb);
    if (mn == -INFINITY) return;  // both empty
    s = s * expf(m - mn) + sb * expf(mb - mn);
    m = mn;
}

extern "C" __global__ void xent_fwd_bwd(const XentFwdBwdParams p) {
    __shared__ float s_m[32], s_s[32];
    __shared__ float s_lse;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
        const bf16* x = p.logits + t * p.ld;
        const uint32_t target = p.targets[t];
        const bool ignored = target == p.ignore_index;
        if (ignored) {
            if (threadIdx.x == 0) p.losses[t] = 0.0f;
            if (p.dlogits) {
                bf16* dx = p.dlogits + t * p.ld;
                for (int i = threadIdx.x; i < p.vocab; i += blockDim.x) dx[i] = f2bf(0.0f);
            }
            continue;  // uniform across the block
        }
        float m = -INFINITY, s = 0.0f;
        for (int i = threadIdx.x; i < p.vocab; i += blockDim.x) {
            const float v = bf2f(x[i]);
            if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }
            else s += expf(v - m);
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float mb = __shfl_xor_sync(0xFFFFFFFFu, m, o);
            const float sb = __shfl_xor_sync(0xFFFFFFFFu, s, o);
            lse_merge(m, s, mb, sb);
        }
        if (lane == 0) { s_m[warp] = m; s_s[warp] = s; }
        __syncthreads();
        if (threadIdx.x == 0) {
            float mm = -INFINITY, ss = 0.0f;
            for (int w = 0; w < n_warps; w++) lse_merge(mm, ss, s_m[w], s_s[w]);
            const float lse = mm + logf(ss);
            s_lse = lse;
            p.losses[t] = target < (uint32_t)p.vocab ? lse - bf2f(x[target]) : NAN;
        }
        __syncthreads();
        const float lse = s_lse;
        if (p.dlogits) {
            bf16* dx = p.dlogits + t * p.ld;
            for (int i = threadIdx.x; i < p.vocab; i += blockDim.x) {
                const float pr = expf(bf2f(x[i]) - lse);
                dx[i] = f2bf(p.grad_scale * (pr - ((uint32_t)i == target ? 1.0f : 0.0f)));
            }
        }
        __syncthreads();  // s_lse / s_m are reused by the next row
    }
}

extern "C" __global__ void xent_mean(const XentMeanParams p) {
    __shared__ float s_red[32];
    float sum = 0.0f, cnt = 0.0f;
    for (int64_t t = threadIdx.x; t < p.tokens; t += blockDim.x) {
        if (p.targets[t] != p.ignore_index) { sum += p.losses[t]; cnt += 1.0f; }
    }
    sum = block_sum(sum, s_red);
    cnt = block_sum(cnt, s_red);
    if (threadIdx.x == 0) p.loss[0] = cnt > 0.0f ? sum / cnt : 0.0f;
}
