// Token embedding forward and backward.
//   out[t] = table[ids[t]]                     (fp32 table -> bf16 activations)
//   dtable[id] += sum of dout[t] over t with ids[t] == id   (deterministic)
// Reference: backend/cpu/embedding.rs.
#include "common.cuh"

// One warp per row; ids outside the table give a zero row.
extern "C" __global__ void __launch_bounds__(256) embed_fwd(const EmbedFwdParams p) {
  const int lane = threadIdx.x % TMOE_WARP;
  const int row = blockIdx.x * (blockDim.x / TMOE_WARP) + threadIdx.x / TMOE_WARP;
  if (row >= p.rows) return;
  const uint32_t id = p.ids[row];
  bf16* out = p.out + (size_t)row * p.d;
  if (id >= (uint32_t)p.vocab) {
    for (int j = lane; j < p.d; j += TMOE_WARP) out[j] = f2bf(0.f);
    return;
  }
  const float* src = p.table + (size_t)id * p.d;
  if (p.d % 8 == 0) {
    for (int j = lane * 8; j < p.d; j += TMOE_WARP * 8) {
      const float4 a = *reinterpret_cast<const float4*>(src + j);
      const float4 b = *reinterpret_cast<const float4*>(src + j + 4);
      const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
      store_bf16x8(out + j, v);
    }
  } else {
    for (int j = lane; j < p.d; j += TMOE_WARP) out[j] = f2bf(src[j]);
  }
}

// One block per distinct token id (segment of the host-sorted plan): sums its
// rows in row order, then adds once to the table row. No atomics, so the result
// is bit-identical run to run.
extern "C" __global__ void __launch_bounds__(256) embed_bwd(const EmbedBwdParams p) {
  const int seg = blockIdx.x;
  const uint32_t begin = p.seg_start[seg], end = p.seg_start[seg + 1];
  float* dst = p.dtable + (size_t)p.seg_id[seg] * p.d;
  for (int j = threadIdx.x; j < p.d; j += blockDim.x) {
    float acc = 0.f;
    for (uint32_t i = begin; i < end; i++) acc += bf2f(p.dout[(size_t)p.order[i] * p.d + j]);
    dst[j] += acc;
  }
}
