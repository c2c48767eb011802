// Global L2 norm of the gradient arena (all tensors, contiguous; see adamw.cu),
// deterministic: two passes with a fixed partition and fixed reduction order,
// no float atomics.
//   grad_norm_partial: block b sums g^2 over its contiguous slice
//                      [b*per, (b+1)*per), per = ceil(n / gridDim.x) -> partials[b]
//   grad_norm_final:   one block sums the partials in double -> out[0] = sqrt(sum)
// Reference: backend::cpu::grad_norm (f64 accumulation).
#include "common.cuh"

extern "C" __global__ void grad_norm_partial(const GradNormPartialParams p) {
    __shared__ float s_red[32];
    const int64_t per = (p.n + p.n_partials - 1) / p.n_partials;
    const int64_t begin = (int64_t)blockIdx.x * per;
    const int64_t end = begin + per < p.n ? begin + per : p.n;
    float acc = 0.0f;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += p.grad[i] * p.grad[i];
    acc = block_sum(acc, s_red);
    if (threadIdx.x == 0) p.partials[blockIdx.x] = acc;
}

extern "C" __global__ void grad_norm_final(const GradNormFinalParams p) {
    __shared__ double s_d[1024];
    double acc = 0.0;
    for (int i = threadIdx.x; i < p.n_partials; i += blockDim.x) acc += (double)p.partials[i];
    s_d[threadIdx.x] = acc;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {  // blockDim: a power of two <= 1024
        if (threadIdx.x < h) s_d[threadIdx.x] += s_d[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) p.out[0] = (float)sqrt(s_d[0]);
}
