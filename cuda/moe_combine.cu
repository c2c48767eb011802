// MoE combine (the inverse of the permutation) and its backward.
//
// moe_combine_fwd, per token t:
//   out[t] = resid[t] + g[t] * S[t] + sum_j w[t,j] * Y[slot_pos[t*k + j]]
//   summed in that order with j ascending (deterministic, no atomics). Every
//   input but Y and slot_pos is optional (nullptr: resid/S terms dropped, g = 1,
//   w = 1), so the same kernel is the un-permute sum dX[t] = sum_j dXp[pos].
//   Reference: backend::cpu::moe_permute::combine.
// moe_combine_bwd_rows, per padded row r (slot = sorted_slot[r]):
//   dY[r] = w[slot] * dout[slot / k]  (zero rows for padding, so the
//   expert-weight GEMMs see no garbage), dtopk_w[slot] = <dout[t], Y[r]>.
// moe_combine_bwd_tokens, per token:
//   dS[t] = g[t] * dout[t], dg[t] = <dout[t], S[t]> (grad w.r.t. the gate after
//   its sigmoid). d resid = dout: the caller reuses the buffer.
// bf16 tensors, fp32 gates/weights/accumulators.
//
// Launch shape (all three): one warp per row, 256-thread blocks (8 rows each),
// grid-stride over rows. Pure streaming, memory bound (fwd: (3 + k) * 2 bytes
// per element; bwd_rows: 6; bwd_tokens: 6). Lane l owns the 8-element vectors
// l, l + 32, ... of its row (16-byte loads and stores; d = 768 is 96 vectors:
// 3 per lane, no idle lane), and issues the loads of ROW_UNROLL of them
// (per input) before using any, so a warp has several KB in flight without a barrier per row.
// Dot products: per-lane fp32 partials in vector order, then a warp_sum (a
// fixed tree): deterministic. Scalar path (lane-strided elements, same
// structure) when d % 8 != 0 or a pointer is not 16-byte aligned.
#include "common.cuh"

#define MOE_NONE 0xFFFFFFFFu
#define ROW_UNROLL 3  // d = 768: 96 vectors, one pass of 3 per lane

// 8 floats -> 8 bf16 (RNE) in one 16-byte store, built as a uint4 of packed
// pairs (through a bf16 array, nvcc sometimes splits the store into 4 x 32 bits).
static __device__ __forceinline__ void store8(bf16* row, int v, const float in[8]) {
  reinterpret_cast<uint4*>(row)[v] = make_uint4(pack_bf16x2(in[0], in[1]), pack_bf16x2(in[2], in[3]),
                                                pack_bf16x2(in[4], in[5]), pack_bf16x2(in[6], in[7]));
}
static __device__ __forceinline__ uint4 ldg16(const bf16* row, int v) {
  return reinterpret_cast<const uint4*>(row)[v];
}
// Global warp index and count (grid-stride over rows).
static __device__ __forceinline__ int64_t warp_id() {
  return (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
}
static __device__ __forceinline__ int64_t warp_count() { return (int64_t)gridDim.x * (blockDim.x >> 5); }

extern "C" __global__ void __launch_bounds__(256) moe_combine_fwd(const MoeCombineFwdParams p) {
  const int lane = threadIdx.x & 31, d = p.d, k = p.k;
  const bool vec = d % 8 == 0 && aligned16(p.resid) && aligned16(p.shared_out) && aligned16(p.y_rows) &&
                   aligned16(p.out);
  for (int64_t t = warp_id(); t < p.tokens; t += warp_count()) {
    const float g = p.shared_gate ? p.shared_gate[t] : 1.0f;
    // Lane j < k holds slot_pos / topk_w of expert choice j; shuffled out below.
    const uint32_t my_pos = lane < k ? p.slot_pos[t * k + lane] : 0u;
    const float my_w = lane < k && p.topk_w ? p.topk_w[t * k + lane] : 1.0f;
    const bf16* resid = p.resid ? p.resid + t * d : nullptr;
    const bf16* sh = p.shared_out ? p.shared_out + t * d : nullptr;
    bf16* out = p.out + t * d;
    if (vec) {
      const int nv = d / 8;
      for (int v0 = lane; v0 - lane < nv; v0 += 32 * ROW_UNROLL) {  // same trip count on every lane
        // resid, S and the first expert row are loaded together (k >= 1).
        const bf16* y0 = p.y_rows + (int64_t)__shfl_sync(TMOE_FULL_MASK, my_pos, 0) * d;
        const float w0 = __shfl_sync(TMOE_FULL_MASK, my_w, 0);
        uint4 ra[ROW_UNROLL], sa[ROW_UNROLL], ya[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          const int c = v0 + 32 * u;
          ra[u] = sa[u] = ya[u] = make_uint4(0u, 0u, 0u, 0u);
          if (c < nv && resid) ra[u] = ldg16(resid, c);
          if (c < nv && sh) sa[u] = ldg16(sh, c);
          if (c < nv) ya[u] = ldg16(y0, c);
        }
        float acc[ROW_UNROLL][8];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          float a[8], b[8], y[8];
          unpack_bf16x8(ra[u], a);
          unpack_bf16x8(sa[u], b);
          unpack_bf16x8(ya[u], y);
#pragma unroll
          for (int i = 0; i < 8; i++) {
            acc[u][i] = a[i] + g * b[i];
            acc[u][i] += w0 * y[i];
          }
        }
        for (int j = 1; j < k; j++) {
          const bf16* y = p.y_rows + (int64_t)__shfl_sync(TMOE_FULL_MASK, my_pos, j) * d;
          const float wj = __shfl_sync(TMOE_FULL_MASK, my_w, j);
#pragma unroll
          for (int u = 0; u < ROW_UNROLL; u++)
            ya[u] = v0 + 32 * u < nv ? ldg16(y, v0 + 32 * u) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
          for (int u = 0; u < ROW_UNROLL; u++) {
            float b[8];
            unpack_bf16x8(ya[u], b);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[u][i] += wj * b[i];
          }
        }
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++)
          if (v0 + 32 * u < nv) store8(out, v0 + 32 * u, acc[u]);
      }
    } else {
      for (int c0 = 0; c0 < d; c0 += 32) {  // uniform trip count: the shuffles need every lane
        const int c = c0 + lane;
        float acc = resid && c < d ? bf2f(resid[c]) : 0.0f;
        if (sh && c < d) acc += g * bf2f(sh[c]);
        for (int j = 0; j < k; j++) {
          const int64_t row = __shfl_sync(TMOE_FULL_MASK, my_pos, j);
          const float wj = __shfl_sync(TMOE_FULL_MASK, my_w, j);
          if (c < d) acc += wj * bf2f(p.y_rows[row * d + c]);
        }
        if (c < d) out[c] = f2bf(acc);
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) moe_combine_bwd_rows(const MoeCombineBwdRowsParams p) {
  const int lane = threadIdx.x & 31, d = p.d;
  const bool vec = d % 8 == 0 && aligned16(p.dout) && aligned16(p.y_rows) && aligned16(p.dy_rows);
  for (int64_t r = warp_id(); r < p.rows; r += warp_count()) {
    const uint32_t slot = p.sorted_slot[r];  // uniform across the warp
    bf16* dy = p.dy_rows + r * d;
    const bool pad = slot == MOE_NONE;
    const bf16* dout = pad ? nullptr : p.dout + (int64_t)(slot / p.k) * d;
    const bf16* y = p.y_rows + r * d;
    // Y is read whether or not the row is padding (it is allocated for all
    // max_rows): its loads then need not wait for sorted_slot.
    const bool want_dot = p.dtopk_w != nullptr;
    const float w = pad ? 0.0f : p.topk_w ? p.topk_w[slot] : 1.0f;
    float dot = 0.0f;
    if (vec) {
      const int nv = d / 8;
      for (int v0 = lane; v0 - lane < nv; v0 += 32 * ROW_UNROLL) {  // same trip count on every lane
        uint4 ga[ROW_UNROLL], ya[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          const int c = v0 + 32 * u;
          ga[u] = ya[u] = make_uint4(0u, 0u, 0u, 0u);
          if (c < nv && dout) ga[u] = ldg16(dout, c);
          if (c < nv && want_dot) ya[u] = ldg16(y, c);
        }
        // All of this lane's y vectors are read before dy (which may alias y) is written.
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          float go[8], yv[8];
          unpack_bf16x8(ga[u], go);
          unpack_bf16x8(ya[u], yv);
#pragma unroll
          for (int i = 0; i < 8; i++) {
            dot += go[i] * yv[i];
            go[i] *= w;
          }
          if (v0 + 32 * u < nv) store8(dy, v0 + 32 * u, go);
        }
      }
    } else {
      for (int c = lane; c < d; c += 32) {
        const float go = dout ? bf2f(dout[c]) : 0.0f;
        if (want_dot) dot += go * bf2f(y[c]);
        dy[c] = f2bf(w * go);  // after reading y: dy may alias y
      }
    }
    if (want_dot) {  // uniform across the warp
      dot = warp_sum(dot);
      if (lane == 0 && !pad) p.dtopk_w[slot] = dot;
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) moe_combine_bwd_tokens(const MoeCombineBwdTokensParams p) {
  const int lane = threadIdx.x & 31, d = p.d;
  const bool vec = d % 8 == 0 && aligned16(p.dout) && aligned16(p.shared_out) && aligned16(p.dshared_out);
  for (int64_t t = warp_id(); t < p.tokens; t += warp_count()) {
    const float g = p.shared_gate ? p.shared_gate[t] : 1.0f;
    const bf16* dout = p.dout + t * d;
    const bf16* s = p.shared_out + t * d;
    bf16* ds = p.dshared_out + t * d;
    const bool want_dot = p.dshared_gate != nullptr;
    float dot = 0.0f;
    if (vec) {
      const int nv = d / 8;
      for (int v0 = lane; v0 - lane < nv; v0 += 32 * ROW_UNROLL) {  // same trip count on every lane
        uint4 ga[ROW_UNROLL], sa[ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          const int c = v0 + 32 * u;
          ga[u] = sa[u] = make_uint4(0u, 0u, 0u, 0u);
          if (c < nv) ga[u] = ldg16(dout, c);
          if (c < nv && want_dot) sa[u] = ldg16(s, c);
        }
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; u++) {
          float go[8], sv[8];
          unpack_bf16x8(ga[u], go);
          unpack_bf16x8(sa[u], sv);
#pragma unroll
          for (int i = 0; i < 8; i++) {
            dot += go[i] * sv[i];
            go[i] *= g;
          }
          if (v0 + 32 * u < nv) store8(ds, v0 + 32 * u, go);
        }
      }
    } else {
      for (int c = lane; c < d; c += 32) {
        const float go = bf2f(dout[c]);
        if (want_dot) dot += go * bf2f(s[c]);
        ds[c] = f2bf(g * go);
      }
    }
    if (want_dot) {
      dot = warp_sum(dot);
      if (lane == 0) p.dshared_gate[t] = dot;
    }
  }
}
