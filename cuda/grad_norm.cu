// Global L2 norm of the gradient arena (all tensors, contiguous; see adamw.cu),
// deterministic: two passes with a fixed partition and fixed reduction order,
// no float atomics.
//   grad_norm_partial: block b sums g^2 over its contiguous slice
//                      [b*per, (b+1)*per), per = ceil(n / gridDim.x) -> partials[b]
//   grad_norm_final:   one block sums the partials -> out[0] = sqrt(sum)
// Everything after the load is double, as the reference: a float square
// overflows once |g| passes ~1.8e19 (and a float sum soon after), and the norm
// of finite float gradients may itself pass FLT_MAX (two of 3e38: 4.2e38).
// The CPU engine clips such a step and trains on; in float the GPU called it
// diverged. The kernel is memory bound: the double arithmetic costs nothing.
// Reference: backend::cpu::grad_norm, train::optim::global_grad_norm (f64).
#include "common.cuh"

// Slices are rounded up to a multiple of 4 elements so that, when the arena is
// 16-byte aligned, every slice is a float4 walk (4 loads in flight per thread;
// the last slice's tail is scalar). Blocks past the end write 0.
#define GRAD_NORM_UNROLL 4

static __device__ __forceinline__ double sq(float x) { return (double)x * (double)x; }  // exact

// Block sum in double, to thread 0 (warps by shuffles, then warp 0 over the warps).
static __device__ __forceinline__ double block_sum_d(double v, double* scratch) {
    const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(TMOE_FULL_MASK, v, o);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / TMOE_WARP) ? scratch[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(TMOE_FULL_MASK, v, o);
    return v;
}

extern "C" __global__ void __launch_bounds__(256) grad_norm_partial(const GradNormPartialParams p) {
    TMOE_SHARED(double, s_red, [32]);
    const int64_t per = ((p.n + p.n_partials - 1) / p.n_partials + 3) / 4 * 4;
    const int64_t begin = min((int64_t)blockIdx.x * per, p.n);
    const int64_t end = begin + per < p.n ? begin + per : p.n;
    double acc = 0.0;
    int64_t i = begin + threadIdx.x;
    if ((reinterpret_cast<uintptr_t>(p.grad) & 15) == 0) {
        const float4* g4 = reinterpret_cast<const float4*>(p.grad + begin);
        const int64_t n4 = (end - begin) / 4;
        for (int64_t j = threadIdx.x; j < n4; j += (int64_t)blockDim.x * GRAD_NORM_UNROLL) {
            float4 v[GRAD_NORM_UNROLL];
#pragma unroll
            for (int k = 0; k < GRAD_NORM_UNROLL; k++) {
                const int64_t jj = j + (int64_t)k * blockDim.x;
                v[k] = jj < n4 ? g4[jj] : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int k = 0; k < GRAD_NORM_UNROLL; k++)
                acc += sq(v[k].x) + sq(v[k].y) + sq(v[k].z) + sq(v[k].w);
        }
        i = begin + n4 * 4 + threadIdx.x;  // scalar tail (< 4 elements)
    }
    for (; i < end; i += blockDim.x) acc += sq(p.grad[i]);
    acc = block_sum_d(acc, s_red);
    if (threadIdx.x == 0) p.partials[blockIdx.x] = acc;
}

extern "C" __global__ void __launch_bounds__(1024) grad_norm_final(const GradNormFinalParams p) {
    TMOE_SHARED(double, s_d, [1024]);
    double acc = 0.0;
    for (int i = threadIdx.x; i < p.n_partials; i += blockDim.x) acc += p.partials[i];
    s_d[threadIdx.x] = acc;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {  // blockDim: a power of two <= 1024
        if (threadIdx.x < h) s_d[threadIdx.x] += s_d[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) p.out[0] = sqrt(s_d[0]);
}
