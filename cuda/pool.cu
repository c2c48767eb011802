// Masked mean pooling over the sequence (fine-tuning head input).
//   fwd: out[b, c] = sum_s mask[b, s] * x[b, s, c] / n_b,  n_b = sum_s mask[b, s]
//   bwd: dx[b, s, c] = mask[b, s] * dout[b, c] / n_b   (written, =)
// A row with no valid token pools to 0 (and gets zero gradient).
// bf16 x/out, fp32 sums in a fixed order. Reference: backend::cpu::pool.
#include "common.cuh"

#define POOL_TILE 64       // fwd: columns per block
#define POOL_UNROLL 4      // fwd: rows loaded per thread before they are added
#define POOL_BWD_ROWS 32   // bwd: sequence positions per block
#define POOL_BWD_UNROLL 4  // bwd: items loaded (dout) per thread before they are stored
#define POOL_SMEM_SEQ 4096 // fwd: masks of up to this many positions are staged in shared memory


// n_b, computed by the whole block (cheap next to the d-wide work). With
// `stage`, also copies the mask row there (the block_sum's barriers publish it).
static __device__ float count_valid(const uint8_t* mask, int seq, float* s_red, uint8_t* stage) {
  float c = 0.0f;
  for (int s = threadIdx.x; s < seq; s += blockDim.x) {
    const uint8_t m = mask[s];
    if (stage) stage[s] = m;
    c += m ? 1.0f : 0.0f;
  }
  return block_sum(c, s_red);
}

// grid (ceil(d / 64), batch), 256 threads. The block's 64 columns are read by
// groups of 8 lanes x 8 columns (16-byte loads, a 128-byte row segment per
// group; when d % 8 == 0 and x is aligned) or 64 lanes x 1 column (scalar),
// so the block has 32 (or 4) "slots" that walk the sequence interleaved
// (slot q: s = q, q + slots, ...), skipping masked positions and keeping
// POOL_UNROLL rows in flight (the mask row is staged in shared memory first, so
// that the x loads do not wait on mask loads). Slots add in ascending s, then the block adds
// the slots in slot order (shared memory): deterministic. Bytes: 2 per valid
// element of x; 12 x batch blocks of short work, one wave.
extern "C" __global__ void __launch_bounds__(256) pool_mean_fwd(const PoolMeanFwdParams p) {
  TMOE_SHARED(float, s_red, [32]);
  TMOE_SHARED(float, part, [256 * 8]);  // slots * POOL_TILE = blockDim * width
  TMOE_SHARED(uint8_t, s_mask, [POOL_SMEM_SEQ]);
  const int b = blockIdx.y;
  const bool staged = p.seq <= POOL_SMEM_SEQ;
  const float n = count_valid(p.mask + (int64_t)b * p.seq, p.seq, s_red, staged ? s_mask : nullptr);
  const uint8_t* mask = staged ? s_mask : p.mask + (int64_t)b * p.seq;
  const float inv = n > 0.0f ? 1.0f / n : 0.0f;

  const bool vec = p.d % 8 == 0 && aligned16(p.x);
  const int width = vec ? 8 : 1;
  const int lanes = POOL_TILE / width;  // threads per row segment
  const int slots = blockDim.x / lanes;
  const int lane = threadIdx.x % lanes, slot = threadIdx.x / lanes;
  const int c = blockIdx.x * POOL_TILE + lane * width;
  const bf16* x = p.x + (int64_t)b * p.seq * p.d + c;

  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (c < p.d) {
    for (int s0 = slot; s0 < p.seq; s0 += slots * POOL_UNROLL) {
      bool on[POOL_UNROLL];
#pragma unroll
      for (int k = 0; k < POOL_UNROLL; k++) {
        const int s = s0 + k * slots;
        on[k] = s < p.seq && mask[s] != 0;
      }
      if (vec) {
        uint4 raw[POOL_UNROLL];
#pragma unroll
        for (int k = 0; k < POOL_UNROLL; k++)
          if (on[k]) raw[k] = *reinterpret_cast<const uint4*>(x + (int64_t)(s0 + k * slots) * p.d);
#pragma unroll
        for (int k = 0; k < POOL_UNROLL; k++) {
          if (!on[k]) continue;
          const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw[k]);
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const float2 f = __bfloat1622float2(h[e]);
            acc[2 * e] += f.x;
            acc[2 * e + 1] += f.y;
          }
        }
      } else {
        float v[POOL_UNROLL];
#pragma unroll
        for (int k = 0; k < POOL_UNROLL; k++)
          v[k] = on[k] ? bf2f(x[(int64_t)(s0 + k * slots) * p.d]) : 0.0f;
#pragma unroll
        for (int k = 0; k < POOL_UNROLL; k++)
          if (on[k]) acc[0] += v[k];
      }
    }
  }
  float* mine = part + slot * POOL_TILE + lane * width;
  if (vec) {
#pragma unroll
    for (int e = 0; e < 8; e++) mine[e] = acc[e];
  } else {
    mine[0] = acc[0];
  }
  __syncthreads();
  const int col = blockIdx.x * POOL_TILE + threadIdx.x;
  if (threadIdx.x < POOL_TILE && col < p.d) {
    float sum = 0.0f;
    for (int q = 0; q < slots; q++) sum += part[q * POOL_TILE + threadIdx.x];
    p.out[(int64_t)b * p.d + col] = f2bf(sum * inv);
  }
}

// grid (ceil(seq / 32), batch), 256 threads: the block counts n_b once (and
// keeps its 32 mask bytes in shared memory), then writes its 32 positions x d
// of dx as one flat walk over 16-byte items (8 columns; dout's row is an L1
// hit) or single elements (d % 8 != 0 or a misaligned pointer), loading
// POOL_BWD_UNROLL items before storing them. Bytes: 2 per element of dx
// (written); dout is tiny.
extern "C" __global__ void __launch_bounds__(256) pool_mean_bwd(const PoolMeanBwdParams p) {
  TMOE_SHARED(float, s_red, [32]);
  TMOE_SHARED(uint8_t, s_on, [POOL_BWD_ROWS]);
  const int b = blockIdx.y;
  const uint8_t* mask = p.mask + (int64_t)b * p.seq;
  const int s0 = blockIdx.x * POOL_BWD_ROWS;
  const int n_rows = min(POOL_BWD_ROWS, p.seq - s0);
  if (threadIdx.x < n_rows) s_on[threadIdx.x] = mask[s0 + threadIdx.x];
  const float n = count_valid(mask, p.seq, s_red, nullptr);  // its barriers publish s_on
  const float inv = n > 0.0f ? 1.0f / n : 0.0f;

  const bf16* dout = p.dout + (int64_t)b * p.d;
  bf16* dx = p.dx + ((int64_t)b * p.seq + s0) * p.d;
  const int step = blockDim.x * POOL_BWD_UNROLL;
  if (p.d % 8 == 0 && aligned16(p.dout) && aligned16(p.dx)) {
    const int per_row = p.d / 8, items = n_rows * per_row;
    for (int i0 = threadIdx.x; i0 < items; i0 += step) {
      float v[POOL_BWD_UNROLL][8];
#pragma unroll
      for (int k = 0; k < POOL_BWD_UNROLL; k++) {
        const int i = i0 + k * blockDim.x;
        if (i < items) {
          const int r = i / per_row;
          load_bf16x8(dout + (i - r * per_row) * 8, v[k]);
          const bool on = s_on[r] != 0;
#pragma unroll
          for (int e = 0; e < 8; e++) v[k][e] = on ? v[k][e] * inv : 0.0f;
        }
      }
#pragma unroll
      for (int k = 0; k < POOL_BWD_UNROLL; k++) {
        const int i = i0 + k * blockDim.x;
        if (i < items) {
          const int r = i / per_row;
          store_bf16x8(dx + (int64_t)r * p.d + (i - r * per_row) * 8, v[k]);
        }
      }
    }
  } else {
    for (int i = threadIdx.x; i < n_rows * p.d; i += blockDim.x) {
      const int r = i / p.d, c = i - r * p.d;
      dx[(int64_t)r * p.d + c] = f2bf(s_on[r] ? bf2f(dout[c]) * inv : 0.0f);
    }
  }
}
