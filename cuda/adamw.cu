// Multi-tensor AdamW: one launch updates every parameter tensor.
//
// As in llm.c, parameters, gradients and both moments each live in one flat
// fp32 arena; tensor i occupies [tensor_offset[i], tensor_offset[i+1]) and has
// its own learning rate (layer-wise lr decay) and weight decay. Each tensor is
// cut into chunks of chunk_elems; chunk_start[i] is the first chunk of tensor i
// (chunk_start[n_tensors] = total chunks = grid size), so block b finds its
// tensor by binary search and never straddles two tensors. Per step only the
// by-value fields change (step, lr_scale from the schedule).
//
//   g  = grad * clip,  clip = max_grad_norm / (norm + 1e-6) when norm > max_grad_norm
//        (torch's clip_grad_norm_ and the CPU engine's factor, src/train/optim.rs,
//        both in double) (norm, a double, read on the device from grad_norm_final:
//        no host sync; a norm that is not finite leaves every arena untouched)
//   m  = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   p -= lr * ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)
// fp32 master weights, grads and moments; optionally writes a bf16 copy of the
// updated weights for the forward GEMMs. Reference: backend::cpu::adamw::step.
#include "common.cuh"

// Largest i with chunk_start[i] <= b.
__device__ __forceinline__ int tensor_of_chunk(const uint32_t* chunk_start, int n_tensors, uint32_t b) {
    int lo = 0, hi = n_tensors - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (chunk_start[mid] <= b) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static __device__ __forceinline__ bool aligned(const void* ptr, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(ptr) & (bytes - 1)) == 0;
}

struct AdamwScalars {
  float clip, lr, wd, bc1, bc2;
};

// The update of one element, in registers.
static __device__ __forceinline__ void adamw_elem(const AdamwStepParams& p, const AdamwScalars& k,
                                                  float g, float& m, float& v, float& w) {
  g *= k.clip;
  m = p.beta1 * m + (1.0f - p.beta1) * g;
  v = p.beta2 * v + (1.0f - p.beta2) * g * g;
  w -= k.lr * ((m / k.bc1) / (sqrtf(v / k.bc2) + p.eps) + k.wd * w);
}

// One element in memory (the scalar head / tail and the misaligned fallback).
static __device__ __forceinline__ void adamw_one(const AdamwStepParams& p, const AdamwScalars& k,
                                                 int64_t i) {
  float m = p.m[i], v = p.v[i], w = p.param[i];
  adamw_elem(p, k, p.grad[i], m, v, w);
  p.m[i] = m;
  p.v[i] = v;
  p.param[i] = w;
  if (p.param_bf16) p.param_bf16[i] = f2bf(w);
}

#define ADAMW_UNROLL 2  // float4 groups per thread and trip, all loaded before use

// One block per chunk of one tensor (256 threads; chunk_elems = 8192 from the
// wrapper: 8 float4 per thread, in trips of ADAMW_UNROLL whose loads are all
// issued first). Memory-bound: 30 bytes per element (param, m, v read and
// written, grad read, bf16 copy written). Tensor offsets in the arena need not
// be multiples of 4, so a chunk is a scalar head up to the first index that is
// a multiple of 4, a float4 body (16-byte accesses on all four arenas, 8-byte
// bf16 stores), and a scalar tail; arenas whose base is not 16-byte aligned
// (8 for the bf16 copy) take the scalar path throughout.
extern "C" __global__ void __launch_bounds__(256) adamw_step(const AdamwStepParams p) {
  const uint32_t b = blockIdx.x;
  const int ti = tensor_of_chunk(p.chunk_start, p.n_tensors, b);
  const int64_t t_end = p.tensor_offset[ti + 1];
  const int64_t begin = p.tensor_offset[ti] + (int64_t)(b - p.chunk_start[ti]) * p.chunk_elems;
  const int64_t end = begin + p.chunk_elems < t_end ? begin + p.chunk_elems : t_end;
  AdamwScalars k;
  k.clip = 1.0f;
  if (p.grad_norm) {
    const double norm = p.grad_norm[0];
    // A norm that is not finite (NaN or infinite gradients) updates nothing:
    // weights, moments and the bf16 copy stay as they were, as on the CPU
    // engine, which refuses such a step before AdamW (src/train/step.rs).
    if (!(norm <= 1.7976931348623157e+308)) return;
    // In double, as the CPU engine's clip_scale (src/train/optim.rs): the norm
    // of finite float gradients may pass FLT_MAX; the factor is a float again.
    if (norm > (double)p.max_grad_norm) k.clip = (float)((double)p.max_grad_norm / (norm + 1e-6));
  }
  k.lr = p.tensor_lr[ti] * p.lr_scale;
  k.wd = p.tensor_wd[ti];
  // In double, as PyTorch and the CPU reference (src/backend/cpu/adamw.rs
  // bias_correction): in float, 1 - 0.999^2 cancels to 2e-5 relative error.
  k.bc1 = (float)(1.0 - pow((double)p.beta1, (double)p.step));
  k.bc2 = (float)(1.0 - pow((double)p.beta2, (double)p.step));

  const bool vec = aligned(p.param, 16) && aligned(p.grad, 16) && aligned(p.m, 16) &&
                   aligned(p.v, 16) && aligned(p.param_bf16, 8);
  // Body [a, e): multiples of 4; everything else is scalar.
  const int64_t a = vec ? (begin + 3) / 4 * 4 : end;
  const int64_t a_c = a < end ? a : end;
  const int64_t e = a_c + (end - a_c) / 4 * 4;
  for (int64_t i = begin + threadIdx.x; i < a_c; i += blockDim.x) adamw_one(p, k, i);
  for (int64_t i = e + threadIdx.x; i < end; i += blockDim.x) adamw_one(p, k, i);

  const int64_t q0 = a_c / 4, q1 = e / 4;  // float4 indices
  const float4* grad4 = reinterpret_cast<const float4*>(p.grad);
  float4* param4 = reinterpret_cast<float4*>(p.param);
  float4* m4 = reinterpret_cast<float4*>(p.m);
  float4* v4 = reinterpret_cast<float4*>(p.v);
  for (int64_t q = q0 + threadIdx.x; q < q1; q += blockDim.x * ADAMW_UNROLL) {
    float4 g[ADAMW_UNROLL], m[ADAMW_UNROLL], v[ADAMW_UNROLL], w[ADAMW_UNROLL];
#pragma unroll
    for (int u = 0; u < ADAMW_UNROLL; u++) {
      const int64_t qi = q + u * blockDim.x;
      if (qi < q1) {
        g[u] = grad4[qi];
        m[u] = m4[qi];
        v[u] = v4[qi];
        w[u] = param4[qi];
      }
    }
#pragma unroll
    for (int u = 0; u < ADAMW_UNROLL; u++) {
      const int64_t qi = q + u * blockDim.x;
      if (qi < q1) {
        adamw_elem(p, k, g[u].x, m[u].x, v[u].x, w[u].x);
        adamw_elem(p, k, g[u].y, m[u].y, v[u].y, w[u].y);
        adamw_elem(p, k, g[u].z, m[u].z, v[u].z, w[u].z);
        adamw_elem(p, k, g[u].w, m[u].w, v[u].w, w[u].w);
        m4[qi] = m[u];
        v4[qi] = v[u];
        param4[qi] = w[u];
        if (p.param_bf16) {
          uint2 raw;
          raw.x = pack_bf16x2(w[u].x, w[u].y);
          raw.y = pack_bf16x2(w[u].z, w[u].w);
          reinterpret_cast<uint2*>(p.param_bf16)[qi] = raw;
        }
      }
    }
  }
}
