// Rotary position embedding, half-split (GPT-NeoX / HF LLaMA rotate_half)
// convention, on Q or K laid out [B, S, H, hd] (token rows may be strided, so
// the kernel can work on slices of a fused QKV buffer). In place is allowed.
//
// for i < hd/2: a = x[i], b = x[i + hd/2], ang = s * theta^(-2i/hd)
//   out[i] = a cos - b sin,  out[i + hd/2] = b cos + a sin
// The backward is the rotation by -ang (a rotation's transpose).
//
// One thread per (token, head, 8 pairs) (16-byte loads) or per pair; the angle
// is recomputed (cheaper than a table read at these sizes). Reference: backend::cpu::rope.
#include "common.cuh"

// V pairs per thread (1, or 8 with 16-byte loads: needs half % 8 == 0 and
// 16-byte aligned rows). Idx: 32-bit index arithmetic when the count fits (the
// 64-bit divisions dominated the kernel), 64-bit otherwise.
template <int V, typename Idx, typename P>
static __device__ __forceinline__ void rope_apply_idx(const P& p, float sign, Idx units) {
    const Idx half_units = (Idx)(p.head_dim / 2 / V), heads = (Idx)p.heads, seq = (Idx)p.seq;
    const int half = p.head_dim / 2;
    const float log2_theta = log2f(p.theta);
    for (Idx idx = (Idx)blockIdx.x * blockDim.x + threadIdx.x; idx < units;
         idx += (Idx)gridDim.x * blockDim.x) {
        const int i0 = (int)(idx % half_units) * V;
        const Idx th = idx / half_units;
        const int h = (int)(th % heads);
        const int64_t tok = (int64_t)(th / heads);
        const int pos = (int)((Idx)tok % seq);
        const bf16* x = p.x + tok * p.x_stride + (int64_t)h * p.head_dim;
        bf16* y = p.out + tok * p.out_stride + (int64_t)h * p.head_dim;
        float a[V], b[V];
        if (V == 8) {
            load_bf16x8(x + i0, a);
            load_bf16x8(x + i0 + half, b);
        } else {
            a[0] = bf2f(x[i0]);
            b[0] = bf2f(x[i0 + half]);
        }
        float ya[V], yb[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            // theta^(-2i/hd) via exp2: exact at i = 0, ~1 ulp elsewhere.
            const float inv_freq =
                exp2f(-(2.0f * (float)(i0 + v) / (float)p.head_dim) * log2_theta);
            const float ang = sign * (float)pos * inv_freq;
            float s, c;
            sincosf(ang, &s, &c);
            ya[v] = a[v] * c - b[v] * s;
            yb[v] = b[v] * c + a[v] * s;
        }
        if (V == 8) {
            store_bf16x8(y + i0, ya);
            store_bf16x8(y + i0 + half, yb);
        } else {
            y[i0] = f2bf(ya[0]);
            y[i0 + half] = f2bf(yb[0]);
        }
    }
}

template <int V, typename P>
static __device__ __forceinline__ void rope_apply_v(const P& p, float sign) {
    const int64_t units = (int64_t)p.batch * p.seq * p.heads * (p.head_dim / 2 / V);
    if (units + (int64_t)gridDim.x * blockDim.x < (int64_t)0xFFFFFFFFu)
        rope_apply_idx<V, uint32_t>(p, sign, (uint32_t)units);
    else
        rope_apply_idx<V, int64_t>(p, sign, units);
}

template <typename P>
static __device__ __forceinline__ void rope_apply(const P& p, float sign) {
    const bool vec = (p.head_dim / 2) % 8 == 0 && p.x_stride % 8 == 0 && p.out_stride % 8 == 0 &&
                     (reinterpret_cast<uintptr_t>(p.x) & 15) == 0 &&
                     (reinterpret_cast<uintptr_t>(p.out) & 15) == 0;
    if (vec)
        rope_apply_v<8>(p, sign);
    else
        rope_apply_v<1>(p, sign);
}

extern "C" __global__ void rope_fwd(const RopeFwdParams p) { rope_apply(p, 1.0f); }
extern "C" __global__ void rope_bwd(const RopeBwdParams p) { rope_apply(p, -1.0f); }
