// Flat elementwise bf16 kernels, fp32 math, one bf16 rounding per output.
//   add_fwd:  out = a + b             (residual add; out may alias a or b).
//             Backward is the identity (da = db = dout): no kernel, the caller
//             passes dout on to both branches (or accumulates it).
//   gelu_fwd: y = 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi)
//   gelu_bwd: dx = dy * 0.5 ((1 + th) + x (1 - th^2) c (1 + 3*0.044715 x^2))   (=)
//             (the tanh approximation of backend::cpu::act::{gelu_fwd, gelu_bwd};
//             classifier head). y may alias x; dx may alias x or dy.
//
// Launch (swiglu.cu's shape): a 1-D grid-stride walk over n elements taken as
// "items" of 8 (one 16-byte access per tensor when n % 8 == 0 and every pointer
// is 16-byte aligned; single elements otherwise). Each thread handles UNROLL
// items per trip, blockDim apart (coalesced), and issues all their loads before
// the first store (bytes in flight; also what makes the aliasing safe: each
// element is read and written by one thread). Purely memory-bound: add 6 bytes
// per element, gelu_fwd 4, gelu_bwd 6. No shared memory, no barriers.
#include "common.cuh"

#define EW_UNROLL 4

#define EW_ADD 0
#define EW_GELU_FWD 1
#define EW_GELU_BWD 2

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

// W consecutive bf16: W = 8 is one 16-byte access, W = 1 one element.
template <int W>
struct EwPack;
template <>
struct EwPack<8> {
  uint4 raw;
  __device__ __forceinline__ void load(const bf16* ptr) { raw = *reinterpret_cast<const uint4*>(ptr); }
  __device__ __forceinline__ void unpack(float out[8]) const { unpack_bf16x8(raw, out); }
  static __device__ __forceinline__ void store(bf16* ptr, const float in[8]) { store_bf16x8(ptr, in); }
};
template <>
struct EwPack<1> {
  bf16 raw;
  __device__ __forceinline__ void load(const bf16* ptr) { raw = *ptr; }
  __device__ __forceinline__ void unpack(float out[1]) const { out[0] = bf2f(raw); }
  static __device__ __forceinline__ void store(bf16* ptr, const float in[1]) { *ptr = f2bf(in[0]); }
};

// One output from the inputs u (a / x) and v (b / dy; unused by gelu_fwd).
template <int OP>
static __device__ __forceinline__ float ew_apply(float u, float v) {
  if (OP == EW_ADD) return u + v;
  const float th = tanhf(GELU_C * (u + GELU_A * u * u * u));
  if (OP == EW_GELU_FWD) return 0.5f * u * (1.0f + th);
  const float dth = (1.0f - th * th) * GELU_C * (1.0f + 3.0f * GELU_A * u * u);
  return v * 0.5f * ((1.0f + th) + u * dth);
}

// out[i] = op(u[i], v[i]) over n elements in items of W (v is read when OP != EW_GELU_FWD).
template <int OP, int W, int U>
static __device__ __forceinline__ void ew_walk(const bf16* u, const bf16* v, bf16* out, int n) {
  const uint32_t items = (uint32_t)n / W;
  const uint32_t step = gridDim.x * blockDim.x * U;
  for (uint32_t i0 = blockIdx.x * blockDim.x * U + threadIdx.x; i0 < items; i0 += step) {
    EwPack<W> pu[U], pv[U];
#pragma unroll
    for (int k = 0; k < U; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < items) {
        pu[k].load(u + (size_t)i * W);
        if (OP != EW_GELU_FWD) pv[k].load(v + (size_t)i * W);
      }
    }
#pragma unroll
    for (int k = 0; k < U; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < items) {
        float uv[W], vv[W] = {}, o[W];
        pu[k].unpack(uv);
        if (OP != EW_GELU_FWD) pv[k].unpack(vv);
#pragma unroll
        for (int e = 0; e < W; e++) o[e] = ew_apply<OP>(uv[e], vv[e]);
        EwPack<W>::store(out + (size_t)i * W, o);
      }
    }
  }
}

template <int OP>
static __device__ __forceinline__ void ew_run(const bf16* u, const bf16* v, bf16* out, int n) {
  const bool vec = n % 8 == 0 && aligned16(u) && (OP == EW_GELU_FWD || aligned16(v)) && aligned16(out);
  if (vec) ew_walk<OP, 8, EW_UNROLL>(u, v, out, n);
  else ew_walk<OP, 1, EW_UNROLL>(u, v, out, n);
}

extern "C" __global__ void __launch_bounds__(256) add_fwd(const AddFwdParams p) {
  ew_run<EW_ADD>(p.a, p.b, p.out, p.n);
}

extern "C" __global__ void __launch_bounds__(256) gelu_fwd(const GeluFwdParams p) {
  ew_run<EW_GELU_FWD>(p.x, p.x, p.y, p.n);
}

extern "C" __global__ void __launch_bounds__(256) gelu_bwd(const GeluBwdParams p) {
  ew_run<EW_GELU_BWD>(p.x, p.dy, p.dx, p.n);
}
