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
//   g  = grad * clip,  clip = max_grad_norm / norm when norm > max_grad_norm
//        (norm read on the device from grad_norm_final: no host sync)
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

extern "C" __global__ void adamw_step(const AdamwStepParams p) {
    const uint32_t b = blockIdx.x;
    const int ti = tensor_of_chunk(p.chunk_start, p.n_tensors, b);
    const int64_t t_end = p.tensor_offset[ti + 1];
    const int64_t begin = p.tensor_offset[ti] + (int64_t)(b - p.chunk_start[ti]) * p.chunk_elems;
    const int64_t end = begin + p.chunk_elems < t_end ? begin + p.chunk_elems : t_end;
    float clip = 1.0f;
    if (p.grad_norm) {
        const float norm = p.grad_norm[0];
        if (norm > p.max_grad_norm) clip = p.max_grad_norm / norm;
    }
    const float lr = p.tensor_lr[ti] * p.lr_scale;
    const float wd = p.tensor_wd[ti];
    const float bc1 = 1.0f - powf(p.beta1, (float)p.step);
    const float bc2 = 1.0f - powf(p.beta2, (float)p.step);
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float g = p.grad[i] * clip;
        const float m = p.beta1 * p.m[i] + (1.0f - p.beta1) * g;
        const float v = p.beta2 * p.v[i] + (1.0f - p.beta2) * g * g;
        p.m[i] = m;
        p.v[i] = v;
        float w = p.param[i];
        w -= lr * ((m / bc1) / (sqrtf(v / bc2) + p.eps) + wd * w);
        p.param[i] = w;
        if (p.param_bf16) p.param_bf16[i] = f2bf(w);
    }
}
