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
// table read: the frequency and pos * freq mod 2 pi in double (one exp2 per
// thread item, then a product per pair: float's ~1e-7 relative error in the
// frequency, times positions in the tens of thousands, turned angles by up to
// 1e-2 rad, outputs off by more than a bf16 rounding past ~4k positions),
// and the hardware sin/cos of the reduced float angle (2 MUFU per pair; the
// accurate sincosf had a slow path with a table in global memory and a stack
// frame). Reference: backend::cpu::rope (f64 angles).
#include "common.cuh"

#define ROPE_2PI 6.283185307179586
#define ROPE_INV_2PI 0.15915494309189535

// sin and cos of the angle `ang` (radians, double): reduced to [-pi, pi] in
// double (positions below 2^31: error below 1e-6), then the hardware approximations
// in float (absolute error ~2^-21 on [-pi, pi], far below a bf16 rounding).
static __device__ __forceinline__ void rope_sincos(double ang, float* s, float* c) {
  const double k = rint(ang * ROPE_INV_2PI);
  __sincosf((float)fma(-k, ROPE_2PI, ang), s, c);
}

// V pairs per thread (1, or 8 with 16-byte loads). Idx: 32-bit index
// arithmetic when the count fits (64-bit divisions dominate otherwise).
template <int V, typename Idx>
static __device__ __forceinline__ void rope_apply_idx(const RopeParams& p, float sign, Idx units) {
  const Idx half_units = (Idx)(p.head_dim / 2 / V), heads = (Idx)p.heads, seq = (Idx)p.seq;
  const int half = p.head_dim / 2;
  // theta^(-2i/hd) = 2^(i * freq_step); pair i + 1's is pair i's times `ratio`.
  const double freq_step = -2.0 * log2((double)p.theta) / (double)p.head_dim;
  const double ratio = exp2(freq_step);
  for (Idx idx = (Idx)blockIdx.x * blockDim.x + threadIdx.x; idx < units;
       idx += (Idx)gridDim.x * blockDim.x) {
    const int i0 = (int)(idx % half_units) * V;
    const Idx th = idx / half_units;
    const int h = (int)(th % heads);
    const int64_t tok = (int64_t)(th / heads);
    const double pos = (double)(int)((Idx)tok % seq);
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
    double freq = exp2((double)i0 * freq_step);
#pragma unroll
    for (int v = 0; v < V; v++) {
      float s, c;
      rope_sincos(pos * freq, &s, &c);
      freq *= ratio;
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
