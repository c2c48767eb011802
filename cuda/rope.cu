// Rotary position embedding, half-split (GPT-NeoX / HF LLaMA rotate_half)
// convention, on Q or K laid out [B, S, H, hd] (token rows may be strided, so
// the kernel can work on slices of a fused QKV buffer). In place is allowed.
//
// for i < hd/2: a = x[i], b = x[i + hd/2], ang = s * theta^(-2i/hd)
//   out[i] = a cos - b sin,  out[i + hd/2] = b cos + a sin
// The backward is the rotation by -ang (a rotation's transpose).
//
// One thread per (token, head, pair); the angle is recomputed (cheaper than a
// table read at these sizes). Reference: backend::cpu::rope.
#include "common.cuh"

// Idx: 32-bit index arithmetic when the pair count fits (the 64-bit divisions
// dominated the kernel), 64-bit otherwise.
template <typename Idx, typename P>
static __device__ __forceinline__ void rope_apply_idx(const P& p, float sign, Idx pairs) {
    const Idx half = (Idx)(p.head_dim / 2), heads = (Idx)p.heads, seq = (Idx)p.seq;
    const float log2_theta = log2f(p.theta);
    for (Idx idx = (Idx)blockIdx.x * blockDim.x + threadIdx.x; idx < pairs;
         idx += (Idx)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const Idx th = idx / half;
        const int h = (int)(th % heads);
        const int64_t tok = (int64_t)(th / heads);
        const int pos = (int)((Idx)tok % seq);
        // theta^(-2i/hd) via exp2: exact at i = 0, ~1 ulp elsewhere.
        const float inv_freq = exp2f(-(2.0f * (float)i / (float)p.head_dim) * log2_theta);
        const float ang = sign * (float)pos * inv_freq;
        float s, c;
        sincosf(ang, &s, &c);
        const bf16* x = p.x + tok * p.x_stride + (int64_t)h * p.head_dim;
        bf16* y = p.out + tok * p.out_stride + (int64_t)h * p.head_dim;
        const float a = bf2f(x[i]);
        const float b = bf2f(x[i + half]);
        y[i] = f2bf(a * c - b * s);
        y[i + half] = f2bf(b * c + a * s);
    }
}

template <typename P>
static __device__ __forceinline__ void rope_apply(const P& p, float sign) {
    const int64_t pairs = (int64_t)p.batch * p.seq * p.heads * (p.head_dim / 2);
    if (pairs + (int64_t)gridDim.x * blockDim.x < (int64_t)0xFFFFFFFFu)
        rope_apply_idx<uint32_t>(p, sign, (uint32_t)pairs);
    else
        rope_apply_idx<int64_t>(p, sign, pairs);
}

extern "C" __global__ void rope_fwd(const RopeFwdParams p) { rope_apply(p, 1.0f); }
extern "C" __global__ void rope_bwd(const RopeBwdParams p) { rope_apply(p, -1.0f); }
