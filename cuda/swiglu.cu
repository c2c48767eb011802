// SwiGLU activation: out = silu(gate) * up, silu(g) = g * sigmoid(g).
// Backward (recomputes the activation, MegaBlocks-style):
//   dup = dout * silu(g),  dgate = dout * up * s * (1 + g * (1 - s)),  s = sigmoid(g)
// Rows may be strided (gate and up can be the two halves of one fused GEMM
// output). bf16 in/out, fp32 math. Reference: backend::cpu::swiglu.
//
// Launch: a 1-D grid-stride loop over the [rows, cols] elements taken as
// "items" (8 consecutive columns of one row, one 16-byte access per tensor, when
// cols, every row stride and every pointer allow it; single elements otherwise).
// Each thread handles UNROLL items per trip, blockDim apart (coalesced), and
// issues all of their loads before the first store: purely memory-bound
// (fwd 6 bytes per element, bwd 10), so what matters is 16-byte accesses and
// bytes in flight. The loads-before-stores order also makes dgate/dup aliasing
// gate/up (in place) safe: each element is read and written by one thread.
#include "common.cuh"

#define SWIGLU_FWD_UNROLL 4
#define SWIGLU_BWD_UNROLL 2

static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// A matrix may use the 16-byte path when its start and its row stride are 16-byte aligned.
static __device__ __forceinline__ bool vec_ok(const void* ptr, int ld) {
  return aligned16(ptr) && ld % 8 == 0;
}

// Item i of a [rows, per_row items] walk: element offset of its first column
// (32-bit: the wrapper checks that every view spans fewer than 2^31 elements).
static __device__ __forceinline__ uint32_t item_offset(uint32_t i, uint32_t per_row, int width,
                                                       int ld) {
  const uint32_t r = i / per_row;
  return r * (uint32_t)ld + (i - r * per_row) * width;
}

// W consecutive bf16 of one row: W = 8 is one 16-byte access, W = 1 one element.
template <int W>
struct Pack;
template <>
struct Pack<8> {
  uint4 raw;
  __device__ __forceinline__ void load(const bf16* ptr) { raw = *reinterpret_cast<const uint4*>(ptr); }
  __device__ __forceinline__ void unpack(float out[8]) const { unpack_bf16x8(raw, out); }
  static __device__ __forceinline__ void store(bf16* ptr, const float in[8]) { store_bf16x8(ptr, in); }
};
template <>
struct Pack<1> {
  bf16 raw;
  __device__ __forceinline__ void load(const bf16* ptr) { raw = *ptr; }
  __device__ __forceinline__ void unpack(float out[1]) const { out[0] = bf2f(raw); }
  static __device__ __forceinline__ void store(bf16* ptr, const float in[1]) { *ptr = f2bf(in[0]); }
};

// The grid-stride walk over items of W columns (U items per thread and trip).
template <int W, int U>
static __device__ __forceinline__ void fwd_walk(const SwigluFwdParams& p) {
  const uint32_t per_row = p.cols / W;
  const uint32_t n = (uint32_t)p.rows * per_row;
  const uint32_t step = gridDim.x * blockDim.x * U;
  for (uint32_t i0 = blockIdx.x * blockDim.x * U + threadIdx.x; i0 < n; i0 += step) {
    Pack<W> g[U], u[U];
#pragma unroll
    for (int k = 0; k < U; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < n) {
        g[k].load(p.gate + item_offset(i, per_row, W, p.ld_gate));
        u[k].load(p.up + item_offset(i, per_row, W, p.ld_up));
      }
    }
#pragma unroll
    for (int k = 0; k < U; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < n) {
        float gv[W], uv[W], o[W];
        g[k].unpack(gv);
        u[k].unpack(uv);
#pragma unroll
        for (int e = 0; e < W; e++) o[e] = gv[e] * sigmoidf_(gv[e]) * uv[e];
        Pack<W>::store(p.out + item_offset(i, per_row, W, p.ld_out), o);
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) swiglu_fwd(const SwigluFwdParams p) {
  const bool vec = p.cols % 8 == 0 && vec_ok(p.gate, p.ld_gate) && vec_ok(p.up, p.ld_up) &&
                   vec_ok(p.out, p.ld_out);
  if (vec) fwd_walk<8, SWIGLU_FWD_UNROLL>(p);
  else fwd_walk<1, SWIGLU_FWD_UNROLL>(p);
}

// dgate, dup of one element (both read before either is written by the caller).
static __device__ __forceinline__ void bwd1(float g, float u, float d, float* dg, float* du) {
  const float s = sigmoidf_(g);
  *dg = d * u * s * (1.0f + g * (1.0f - s));
  *du = d * g * s;
}

template <int W, int U>
static __device__ __forceinline__ void bwd_walk(const SwigluBwdParams& p) {
  const uint32_t per_row = p.cols / W;
  const uint32_t n = (uint32_t)p.rows * per_row;
  const uint32_t step = gridDim.x * blockDim.x * U;
  for (uint32_t i0 = blockIdx.x * blockDim.x * U + threadIdx.x; i0 < n; i0 += step) {
    Pack<W> g[U], u[U], d[U];
#pragma unroll
    for (int k = 0; k < U; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < n) {
        g[k].load(p.gate + item_offset(i, per_row, W, p.ld_gate));
        u[k].load(p.up + item_offset(i, per_row, W, p.ld_up));
        d[k].load(p.dout + item_offset(i, per_row, W, p.ld_dout));
      }
    }
#pragma unroll
    for (int k = 0; k < U; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < n) {
        float gv[W], uv[W], dv[W], dg[W], du[W];
        g[k].unpack(gv);
        u[k].unpack(uv);
        d[k].unpack(dv);
#pragma unroll
        for (int e = 0; e < W; e++) bwd1(gv[e], uv[e], dv[e], &dg[e], &du[e]);
        Pack<W>::store(p.dgate + item_offset(i, per_row, W, p.ld_dgate), dg);
        Pack<W>::store(p.dup + item_offset(i, per_row, W, p.ld_dup), du);
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) swiglu_bwd(const SwigluBwdParams p) {
  const bool vec = p.cols % 8 == 0 && vec_ok(p.gate, p.ld_gate) && vec_ok(p.up, p.ld_up) &&
                   vec_ok(p.dout, p.ld_dout) && vec_ok(p.dgate, p.ld_dgate) && vec_ok(p.dup, p.ld_dup);
  if (vec) bwd_walk<8, SWIGLU_BWD_UNROLL>(p);
  else bwd_walk<1, SWIGLU_BWD_UNROLL>(p);
}
