// Casts. cast_f32_bf16: out[i] = bf16(in[i]), round to nearest even, bit for
// bit half::bf16::from_f32 (the host conversion it replaces when the GPU
// engine refreshes its bf16 weight copy): NaN keeps its sign and the upper
// payload bits with the quiet bit set (cvt.rn.bf16.f32 would return the
// canonical NaN), subnormals are rounded, not flushed; done on the integer
// bits so that both builds agree exactly.
//
// Launch: elementwise.cu's grid-stride walk over 8-element items (two float4
// loads, one 16-byte store) when both pointers are 16-byte aligned; block 0
// converts the last n % 8 elements one by one. Element by element otherwise.
// UNROLL items per thread and trip, all loads before the first store. 6 bytes
// per element.
#include "common.cuh"

#define CAST_UNROLL 4

static __device__ __forceinline__ uint32_t f32_bf16_bits(float x) {
  const uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

extern "C" __global__ void __launch_bounds__(256) cast_f32_bf16(const CastF32Bf16Params p) {
  const bool vec = aligned16(p.in) && aligned16(p.out);
  const uint32_t n = (uint32_t)p.n;
  const uint32_t step = gridDim.x * blockDim.x * CAST_UNROLL;
  if (vec) {
    const uint32_t items = n / 8;
    for (uint32_t i0 = blockIdx.x * blockDim.x * CAST_UNROLL + threadIdx.x; i0 < items; i0 += step) {
      float4 a[CAST_UNROLL], b[CAST_UNROLL];
#pragma unroll
      for (int k = 0; k < CAST_UNROLL; k++) {
        const uint32_t i = i0 + k * blockDim.x;
        if (i < items) {
          a[k] = reinterpret_cast<const float4*>(p.in)[2 * (size_t)i];
          b[k] = reinterpret_cast<const float4*>(p.in)[2 * (size_t)i + 1];
        }
      }
#pragma unroll
      for (int k = 0; k < CAST_UNROLL; k++) {
        const uint32_t i = i0 + k * blockDim.x;
        if (i < items) {
          uint4 o;
          o.x = f32_bf16_bits(a[k].x) | (f32_bf16_bits(a[k].y) << 16);
          o.y = f32_bf16_bits(a[k].z) | (f32_bf16_bits(a[k].w) << 16);
          o.z = f32_bf16_bits(b[k].x) | (f32_bf16_bits(b[k].y) << 16);
          o.w = f32_bf16_bits(b[k].z) | (f32_bf16_bits(b[k].w) << 16);
          reinterpret_cast<uint4*>(p.out)[i] = o;
        }
      }
    }
    const uint32_t tail = items * 8 + threadIdx.x;
    if (blockIdx.x == 0 && tail < n) p.out[tail] = __ushort_as_bfloat16((unsigned short)f32_bf16_bits(p.in[tail]));
    return;
  }
  for (uint32_t i0 = blockIdx.x * blockDim.x * CAST_UNROLL + threadIdx.x; i0 < n; i0 += step) {
    float v[CAST_UNROLL];
#pragma unroll
    for (int k = 0; k < CAST_UNROLL; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < n) v[k] = p.in[i];
    }
#pragma unroll
    for (int k = 0; k < CAST_UNROLL; k++) {
      const uint32_t i = i0 + k * blockDim.x;
      if (i < n) p.out[i] = __ushort_as_bfloat16((unsigned short)f32_bf16_bits(v[k]));
    }
  }
}
