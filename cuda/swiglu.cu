// SwiGLU activation: out = silu(gate) * up, silu(g) = g * sigmoid(g).
// Backward (recomputes the activation, MegaBlocks-style):
//   dup = dout * silu(g),  dgate = dout * up * s * (1 + g * (1 - s)),  s = sigmoid(g)
// Rows may be strided (gate and up can be the two halves of one fused GEMM
// output). bf16 in/out, fp32 math. Reference: backend::cpu::swiglu.
//
// One block per group of rows, threads stride over the columns.
#include "common.cuh"

static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

extern "C" __global__ void swiglu_fwd(const SwigluFwdParams p) {
    for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const bf16* g = p.gate + r * p.ld_gate;
        const bf16* u = p.up + r * p.ld_up;
        bf16* o = p.out + r * p.ld_out;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
            const float gv = bf2f(g[c]);
            o[c] = f2bf(gv * sigmoidf_(gv) * bf2f(u[c]));
        }
    }
}

extern "C" __global__ void swiglu_bwd(const SwigluBwdParams p) {
    for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const bf16* g = p.gate + r * p.ld_gate;
        const bf16* u = p.up + r * p.ld_up;
        const bf16* d = p.dout + r * p.ld_dout;
        bf16* dg = p.dgate + r * p.ld_dgate;
        bf16* du = p.dup + r * p.ld_dup;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
            const float gv = bf2f(g[c]);
            const float uv = bf2f(u[c]);
            const float dv = bf2f(d[c]);
            const float s = sigmoidf_(gv);
            // Read everything before writing: dgate/dup may alias gate/up.
            dg[c] = f2bf(dv * uv * s * (1.0f + gv * (1.0f - s)));
            du[c] = f2bf(dv * gv * s);
        }
    }
}
