// Rotary position embedding, half-split (GPT-NeoX / HF LLaMA rotate_half)
// convention, on Q or K laid out [B, S, H, hd] (token rows may be strided, so
// the kernel can work on slices of a fused QKV buffer). In place is allowed.
//
// for i < hd/2: a = x[i], b = x[i + hd/2], ang = s * theta^(-2i/hd)
//   out[i] = a cos - b sin,  out[i + hd/2] = b cos + a sin
// The backward is the rotation by -ang (a rotation's transpose). Both kernels
// take RopeParams.
//
// Launch: 1-D grid, 256 threads, one thread per (token, head, 8 pairs): two
// 16-byte loads and two 16-byte stores (needs hd/2 % 8 == 0 and 16-byte
// aligned rows), else one pair per thread; grid-stride past the grid. Memory-
// bound (2 bytes read + 2 written per element); the angle is recomputed, no
// table read: exp2 for the frequency, an exact-enough reduction to [-pi, pi]
// and the hardware sin/cos (3 MUFU per pair, well under the memory time; the
// accurate sincosf had a slow path with a table in global memory and a stack
// frame). Reference: backend::cpu::rope.
#include "common.cuh"

// 2 pi = ROPE_2PI_HI + ROPE_2PI_LO; HI has 8 significant bits, so k * HI is
// exact for k < 2^16 (angles up to ~4e5 rad).
#define ROPE_2PI_HI 6.28125f
#define ROPE_2PI_LO 1.9353071795864769e-3f
#define ROPE_INV_2PI 0.15915494309189535f

// sin and cos of `ang` (|ang| < ~4e5): reduced to [-pi, pi], then the hardware
// approximations (absolute error ~2^-21 there, far below a bf16 rounding).
static __device__ __forceinline__ void rope_sincos(float ang, float* s, float* c) {
  const float k = rintf(ang * ROPE_INV_2PI);
  const float r = fmaf(-k, ROPE_2PI_LO, fmaf(-k, ROPE_2PI_HI, ang));
  __sincosf(r, s, c);
}

// V pairs per thread (1, or 8 with 16-byte loads). Idx: 32-bit index
// arithmetic when the count fits (64-bit divisions dominate otherwise).
template <int V, typename Idx>
static __device__ __forceinline__ void rope_apply_idx(const RopeParams& p, float sign, Idx units) {
  const Idx half_units = (Idx)(p.head_dim / 2 / V), heads = (Idx)p.heads, seq = (Idx)p.seq;
  const int half = p.head_dim / 2;
  // theta^(-2i/hd) = exp2(i * freq_step): exact at i = 0, ~1 ulp elsewhere.
  const float freq_step = -2.0f * log2f(p.theta) / (float)p.head_dim;
  for (Idx idx = (Idx)blockIdx.x * blockDim.x + threadIdx.x; idx < units;
       idx += (Idx)gridDim.x * blockDim.x) {
    const int i0 = (int)(idx % half_units) * V;
    const Idx th = idx / half_units;
    const int h = (int)(th % heads);
    const int64_t tok = (int64_t)(th / heads);
    const float pos = (float)(int)((Idx)tok % seq);
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
#pragma unroll
    for (int v = 0; v < V; v++) {
      float s, c;
      rope_sincos(pos * exp2f((float)(i0 + v) * freq_step), &s, &c);
      s *= sign;
      const float ya = a[v] * c - b[v] * s;
      const float yb = b[v] * c + a[v] * s;
      a[v] = ya;
      b[v] = yb;
    }
    if (V == 8) {
      store_bf16x8(y + i0, a);
      store_bf16x8(y + i0 + half, b);
    } else {
      y[i0] = f2bf(a[0]);
      y[i0 + half] = f2bf(b[0]);
    }
  }
}

template <int V>
static __device__ __forceinline__ void rope_apply_v(const RopeParams& p, float sign) {
  const int64_t units = (int64_t)p.batch * p.seq * p.heads * (p.head_dim / 2 / V);
  if (units + (int64_t)gridDim.x * blockDim.x < (int64_t)0xFFFFFFFFu)
    rope_apply_idx<V, uint32_t>(p, sign, (uint32_t)units);
  else
    rope_apply_idx<V, int64_t>(p, sign, units);
}

static __device__ __forceinline__ void rope_apply(const RopeParams& p, float sign) {
  const bool vec = (p.head_dim / 2) % 8 == 0 && p.x_stride % 8 == 0 && p.out_stride % 8 == 0 &&
                   (reinterpret_cast<uintptr_t>(p.x) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.out) & 15) == 0;
  if (vec)
    rope_apply_v<8>(p, sign);
  else
    rope_apply_v<1>(p, sign);
}

extern "C" __global__ void __launch_bounds__(256) rope_fwd(const RopeParams p) { rope_apply(p, 1.0f); }
extern "C" __global__ void __launch_bounds__(256) rope_bwd(const RopeParams p) { rope_apply(p, -1.0f); }
