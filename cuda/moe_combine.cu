// MoE combine (the inverse of the permutation) and its backward.
//
// moe_combine_fwd, one block per token t:
//   out[t] = resid[t] + g[t] * S[t] + sum_j w[t,j] * Y[slot_pos[t*k + j]]
//   summed in that order with j ascending (deterministic, no atomics). Every
//   input but Y and slot_pos is optional (nullptr: resid/S terms dropped, g = 1,
//   w = 1), so the same kernel is the un-permute sum dX[t] = sum_j dXp[pos].
//   Reference: backend::cpu::moe_permute::combine.
// moe_combine_bwd_rows, one block per padded row r (slot = sorted_slot[r]):
//   dY[r] = w[slot] * dout[slot / k]  (zero rows for padding, so the
//   expert-weight GEMMs see no garbage), dtopk_w[slot] = <dout[t], Y[r]>.
// moe_combine_bwd_tokens, one block per token:
//   dS[t] = g[t] * dout[t], dg[t] = <dout[t], S[t]> (grad w.r.t. the gate after
//   its sigmoid). d resid = dout: the caller reuses the buffer.
// bf16 tensors, fp32 gates/weights/accumulators.
#include "common.cuh"

#define MOE_NONE 0xFFFFFFFFu

extern "C" __global__ void moe_combine_fwd(const MoeCombineFwdParams p) {
    for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
        const float g = p.shared_gate ? p.shared_gate[t] : 1.0f;
        const uint32_t* pos = p.slot_pos + t * p.k;
        const float* w = p.topk_w ? p.topk_w + t * p.k : nullptr;
        for (int c = threadIdx.x; c < p.d; c += blockDim.x) {
            const int64_t tc = t * p.d + c;
            float acc = p.resid ? bf2f(p.resid[tc]) : 0.0f;
            if (p.shared_out) acc += g * bf2f(p.shared_out[tc]);
            for (int j = 0; j < p.k; j++) {
                const float y = bf2f(p.y_rows[(int64_t)pos[j] * p.d + c]);
                acc += (w ? w[j] : 1.0f) * y;
            }
            p.out[tc] = f2bf(acc);
        }
    }
}

extern "C" __global__ void moe_combine_bwd_rows(const MoeCombineBwdRowsParams p) {
    __shared__ float s_red[32];
    for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const uint32_t slot = p.sorted_slot[r];
        bf16* dy = p.dy_rows + r * p.d;
        if (slot == MOE_NONE) {
            for (int c = threadIdx.x; c < p.d; c += blockDim.x) dy[c] = f2bf(0.0f);
            continue;  // uniform across the block
        }
        const bf16* dout = p.dout + (int64_t)(slot / p.k) * p.d;
        const bf16* y = p.y_rows + r * p.d;
        const float w = p.topk_w ? p.topk_w[slot] : 1.0f;
        float dot = 0.0f;
        for (int c = threadIdx.x; c < p.d; c += blockDim.x) {
            const float go = bf2f(dout[c]);
            if (p.dtopk_w) dot += go * bf2f(y[c]);
            dy[c] = f2bf(w * go);  // after reading y: dy may alias y
        }
        if (p.dtopk_w) {
            dot = block_sum(dot, s_red);
            if (threadIdx.x == 0) p.dtopk_w[slot] = dot;
        }
    }
}

extern "C" __global__ void moe_combine_bwd_tokens(const MoeCombineBwdTokensParams p) {
    __shared__ float s_red[32];
    for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
        const float g = p.shared_gate ? p.shared_gate[t] : 1.0f;
        const bf16* dout = p.dout + t * p.d;
        const bf16* s = p.shared_out + t * p.d;
        bf16* ds = p.dshared_out + t * p.d;
        float dot = 0.0f;
        for (int c = threadIdx.x; c < p.d; c += blockDim.x) {
            const float go = bf2f(dout[c]);
            dot += go * bf2f(s[c]);
            ds[c] = f2bf(g * go);
        }
        if (p.dshared_gate) {
            dot = block_sum(dot, s_red);
            if (threadIdx.x == 0) p.dshared_gate[t] = dot;
        }
    }
}
