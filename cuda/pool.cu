// Masked mean pooling over the sequence (fine-tuning head input).
//   fwd: out[b, c] = sum_s mask[b, s] * x[b, s, c] / n_b,  n_b = sum_s mask[b, s]
//   bwd: dx[b, s, c] = mask[b, s] * dout[b, c] / n_b   (written, =)
// A row with no valid token pools to 0 (and gets zero gradient).
// bf16 x/out, fp32 sums in ascending s. Reference: backend::cpu::pool.
#include "common.cuh"

// n_b, computed by the whole block (cheap next to the d-wide work).
static __device__ float count_valid(const uint8_t* mask, int seq, float* s_red) {
    float c = 0.0f;
    for (int s = threadIdx.x; s < seq; s += blockDim.x) c += mask[s] ? 1.0f : 0.0f;
    return block_sum(c, s_red);
}

// grid: (column blocks, batch)
extern "C" __global__ void pool_mean_fwd(const PoolMeanFwdParams p) {
    __shared__ float s_red[32];
    const int b = blockIdx.y;
    const uint8_t* mask = p.mask + (int64_t)b * p.seq;
    const float n = count_valid(mask, p.seq, s_red);
    const float inv = n > 0.0f ? 1.0f / n : 0.0f;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.d) return;
    const bf16* x = p.x + (int64_t)b * p.seq * p.d + c;
    float acc = 0.0f;
    for (int s = 0; s < p.seq; s++)
        if (mask[s]) acc += bf2f(x[(int64_t)s * p.d]);
    p.out[(int64_t)b * p.d + c] = f2bf(acc * inv);
}

// grid: (rows b*S + s, grid-strided); block threads over the columns
extern "C" __global__ void pool_mean_bwd(const PoolMeanBwdParams p) {
    __shared__ float s_red[32];
    const int64_t rows = (int64_t)p.batch * p.seq;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t b = r / p.seq;
        const uint8_t* mask = p.mask + b * p.seq;
        const float n = count_valid(mask, p.seq, s_red);
        const float scale = (mask[r - b * p.seq] && n > 0.0f) ? 1.0f / n : 0.0f;
        const bf16* dout = p.dout + b * p.d;
        bf16* dx = p.dx + r * p.d;
        for (int c = threadIdx.x; c < p.d; c += blockDim.x)
            dx[c] = f2bf(scale * bf2f(dout[c]));
    }
}
