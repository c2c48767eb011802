// Causal attention with a key padding mask, FlashAttention-2 style, on tensor
// cores (mma.sync m16n8k16 bf16 -> fp32, ldmatrix, cp.async). Reference:
// backend::cpu::attention (query i sees key j when j <= i and mask[b, j] != 0;
// a query that sees no key outputs zeros and gets zero gradients; scale
// 1/sqrt(hd)).
//
// Layout: token rows. Element (b, s, h, d) of X is X[(b*seq + s)*ld_x + h*hd + d],
// so Q, K and V can be the three column blocks of the fused QKV projection
// ([B*S, 3*H*hd], ld 3*H*hd) and O the [B*S, H*hd] input of the output
// projection: no transposes. Rows must be 16-byte aligned (ld % 8 == 0).
// head_dim 32 and 64, one named kernel per head_dim (templates inside).
//
// Kernels (all: grid.y = B*H, blockDim = 32 * warps, dynamic shared memory):
//   attn_fwd_hd{32,64}      O, stats.  grid.x = ceil(S/128), 8 warps, 16 query
//                           rows per warp; loops over key blocks of 64 up to the
//                           causal limit; online softmax in the exp2 domain.
//                           stats [B*H, S] of float2 (m, 1/l): the row's max
//                           scaled score in log2 units, t = s * scale * log2 e,
//                           and 1/l, l = sum 2^(t - m); (-inf, 0) for a row that
//                           sees no key.
//   attn_bwd_dq_hd{32,64}   delta = rowsum(dO*O) (fp32, written for the next
//                           kernel) and dQ. grid.x = ceil(S/64), 4 warps x 16
//                           query rows; loops over key blocks, recomputing
//                           P = 2^(t - m) / l and dP = dO V^T.
//   attn_bwd_dkdv_hd{32,64} dK, dV. grid.x = ceil(S/64), 4 warps x 16 keys;
//                           loops over query blocks of 64 from the causal start
//                           (double-buffered), each in two chunks of 32 queries
//                           (S^T and dP^T tiles of 16 x 32 per warp).
// Row statistics: m and l stay apart. The logsumexp lse2 = m + log2(l) in
// fp32 drops log2(l) once |m| is large (off by up to 0.5 at |m| ~ 1e7; at 1e30
// entirely: a row of l equal scores got P = 1 each instead of 1/l), and a
// fused fma(s, scale*log2e, -lse2) is off by t's own rounding error (inf or 0
// at 1e30). So every kernel rounds t the same way (att_log2, __fmul_rn) and the
// backward takes 2^(t - m) * (1/l): exact for the row's maximum and for ties at
// any magnitude (tests/kernel_attention.rs, scores of 1e4 to 1e30 in log2
// units). m is kept in log2 units: no natural-log round trip (lse * ln 2 in
// the forward, * log2 e in the backward, two roundings for nothing).
//
// Determinism: every output element is owned by one warp that sums in a fixed
// order (key blocks ascending for O and dQ, query blocks ascending for dK and
// dV): no atomics. dQ gets its own pass (recomputing S and dP, 7 matmul units of
// work for the backward instead of 5) rather than per-key-block partials: it
// needs no scratch (partials would be ceil(S/64) fp32 copies of dQ) and no
// reduction kernel, and it keeps both passes free of cross-warp sums.
//
// Fragment layouts (PTX ISA 9.7.13.4.8 "Matrix Fragments for mma.m16n8k16",
// 9.7.13.4.15 ldmatrix; summary in common.cuh): the C fragment of S = Q K^T for
// two adjacent n-tiles (16 keys) is, register for register, the A fragment of the
// next product P V (the FlashAttention-2 register reuse), after packing to bf16.
// Operands stored [n][k] (K for Q K^T) load with ldmatrix; operands stored
// [k][n] (V for P V) load with ldmatrix.trans.
//
// Shared memory tiles are row-major with rows of HD + 8 bf16 (144 B at hd 64,
// 80 B at hd 32): the 8 row addresses of every ldmatrix phase and the 16-byte
// cp.async writes then fall in 8 distinct 16-byte bank groups (no conflicts),
// at 12.5 % / 25 % extra space. Sizes (hd 64 / 32): fwd 54 / 30 KiB, dq 63 /
// 35 KiB, dkdv 55 / 31 KiB.
//
// Limits: one CTA per (query block, b*h) or (key block, b*h). Registers
// (ptxas, sm_90a, hd 64 / 32): fwd 127 / 79 (launch bound: 2 CTAs of 256
// threads per SM; Q fragments are re-read from smem per key block, keeping them
// in registers spilled), dq 157 / 127, dkdv 168 / 124, no spills (dkdv keeps
// m and 1/l in two scalar smem arrays: as one float2 array it took 175,
// 2 CTAs per SM instead of 3); the backward
// keeps 4 warps per CTA (dQ, or dK + dV, accumulators plus two score tiles per
// warp). Blocks wholly below the diagonal with every key visible skip the
// per-element mask (`full`). Key blocks that are fully masked or past the
// causal limit are skipped per warp (no MMA) but still loaded; the query blocks
// of a fully masked key block are not visited at all.
#include "common.cuh"

#define ATT_LOG2E 1.4426950408889634f
#define ATT_BN 64  // keys per block (fwd, dq) = keys per CTA (dkdv)
#define ATT_BQ 64  // queries per block in the backward

// ---------------------------------------------------------------- tiles

template <int HD>
struct AttDims {
  static constexpr int LDS = HD + 8;  // smem row stride (elements)
  static constexpr int KS = HD / 16;  // k-steps over head_dim
  static constexpr int HT = HD / 8;   // n-tiles over head_dim
};

// cp.async a [ROWS x HD] tile of token rows row0.. (rows past `seq` become
// zeros) into smem with row stride HD + 8. `g` points at (token 0 of the
// sequence, this head); the whole block takes part.
template <int HD, int ROWS>
static __device__ __forceinline__ void att_load_tile(bf16* s, const bf16* g, int ld, int row0,
                                                     int seq) {
  constexpr int CH = HD / 8;
  for (int i = threadIdx.x; i < ROWS * CH; i += blockDim.x) {
    const int r = i / CH, c = i % CH;
    const bool ok = row0 + r < seq;
    const bf16* src = ok ? g + (int64_t)(row0 + r) * ld + c * 8 : g;
    cp_async_16_zfill(s + r * AttDims<HD>::LDS + c * 8, src, ok);
  }
}

// A fragment: rows r0..r0+15, columns k0..k0+15 of a row-major tile.
template <int LDS>
static __device__ __forceinline__ void att_frag_a(uint32_t a[4], const bf16* s, int r0, int k0) {
  const int l = threadIdx.x % 32;
  ldmatrix_x4(a, s + (r0 + l % 16) * LDS + k0 + (l / 16) * 8);
}
// B fragments of two n-tiles (n0, n0 + 8) for k-step k0 from a tile stored
// [n][k]: b[0..1] for n0, b[2..3] for n0 + 8.
template <int LDS>
static __device__ __forceinline__ void att_frag_b_nk(uint32_t b[4], const bf16* s, int n0, int k0) {
  const int l = threadIdx.x % 32, mi = l / 8;
  ldmatrix_x4(b, s + (n0 + l % 8 + (mi / 2) * 8) * LDS + k0 + (mi % 2) * 8);
}
// The same from a tile stored [k][n] (transposed on the way: ldmatrix.trans).
template <int LDS>
static __device__ __forceinline__ void att_frag_b_kn(uint32_t b[4], const bf16* s, int k0, int n0) {
  const int l = threadIdx.x % 32, mi = l / 8;
  ldmatrix_x4_trans(b, s + (k0 + l % 8 + (mi % 2) * 8) * LDS + n0 + (mi / 2) * 8);
}

// acc[NT][4] += A * B^T, A = rows r0..r0+15 of the smem tile sa (ldmatrix per
// k-step), B = [NT*8 rows][HD] in smem.
template <int HD, int NT>
static __device__ __forceinline__ void att_mma_abt_s(float acc[][4], const bf16* sa, int r0,
                                                     const bf16* sb) {
#pragma unroll
  for (int ks = 0; ks < AttDims<HD>::KS; ks++) {
    uint32_t a[4];
    att_frag_a<AttDims<HD>::LDS>(a, sa, r0, ks * 16);
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      uint32_t b[4];
      att_frag_b_nk<AttDims<HD>::LDS>(b, sb, np * 16, ks * 16);
      mma_bf16_16816(acc[2 * np], a, b, acc[2 * np]);
      mma_bf16_16816(acc[2 * np + 1], a, b + 2, acc[2 * np + 1]);
    }
  }
}

// acc[NT][4] += A (16 x HD, fragments af) * B^T where B is [NT*8 rows][HD] in smem.
template <int HD, int NT>
static __device__ __forceinline__ void att_mma_abt(float acc[][4], const uint32_t af[][4],
                                                   const bf16* sb) {
#pragma unroll
  for (int ks = 0; ks < AttDims<HD>::KS; ks++)
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      uint32_t b[4];
      att_frag_b_nk<AttDims<HD>::LDS>(b, sb, np * 16, ks * 16);
      mma_bf16_16816(acc[2 * np], af[ks], b, acc[2 * np]);
      mma_bf16_16816(acc[2 * np + 1], af[ks], b + 2, acc[2 * np + 1]);
    }
}

// acc[HT][4] += P (16 x 8*NT, the C fragments p) * B where B is [8*NT][HD] in smem.
template <int HD, int NT>
static __device__ __forceinline__ void att_mma_pb(float acc[][4], const float p[][4],
                                                  const bf16* sb) {
#pragma unroll
  for (int kk = 0; kk < NT / 2; kk++) {
    const uint32_t a[4] = {pack_bf16x2(p[2 * kk][0], p[2 * kk][1]),
                           pack_bf16x2(p[2 * kk][2], p[2 * kk][3]),
                           pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                           pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int np = 0; np < AttDims<HD>::HT / 2; np++) {
      uint32_t b[4];
      att_frag_b_kn<AttDims<HD>::LDS>(b, sb, kk * 16, np * 16);
      mma_bf16_16816(acc[2 * np], a, b, acc[2 * np]);
      mma_bf16_16816(acc[2 * np + 1], a, b + 2, acc[2 * np + 1]);
    }
  }
}

// Writes a warp's 16 x HD fp32 accumulator (times `mul`) as bf16 rows row0..
// (those < seq) of global `g`: staged through the warp's own 16 rows of the
// smem tile `s` (rows nobody else reads), then 16-byte stores.
template <int HD>
static __device__ __forceinline__ void att_store_rows(const float acc[][4], float mul0, float mul1,
                                                      bf16* s, bf16* g, int ld, int row0,
                                                      int seq) {
  constexpr int LDS = AttDims<HD>::LDS, CH = HD / 8;
  const int lane = threadIdx.x % 32, gr = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < AttDims<HD>::HT; nt++) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(acc[nt][0] * mul0, acc[nt][1] * mul0);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(acc[nt][2] * mul1, acc[nt][3] * mul1);
    memcpy(s + gr * LDS + nt * 8 + 2 * t, &lo, 4);
    memcpy(s + (gr + 8) * LDS + nt * 8 + 2 * t, &hi, 4);
  }
  __syncwarp();
  for (int i = lane; i < 16 * CH; i += 32) {
    const int r = i / CH, c = i % CH;
    if (row0 + r < seq)
      *reinterpret_cast<uint4*>(g + (int64_t)(row0 + r) * ld + c * 8) =
          *reinterpret_cast<const uint4*>(s + r * LDS + c * 8);
  }
}

// Visibility of keys k0.. to the block's threads: 1 when key < seq and unmasked.
static __device__ __forceinline__ void att_load_kvalid(uint8_t* kv, const uint8_t* mask, int k0,
                                                       int seq) {
  for (int i = threadIdx.x; i < ATT_BN; i += blockDim.x)
    kv[i] = (k0 + i < seq && mask[k0 + i] != 0) ? 1 : 0;
}

// Does any of the 64 keys of `kv` count? (warp-collective, same answer on all lanes)
static __device__ __forceinline__ bool att_any_key(const uint8_t* kv) {
  const int lane = threadIdx.x % 32;
  return __any_sync(TMOE_FULL_MASK, (kv[lane] | kv[lane + 32]) != 0);
}

// Are all 64 keys of `kv` visible? (warp-collective)
static __device__ __forceinline__ bool att_all_keys(const uint8_t* kv) {
  const int lane = threadIdx.x % 32;
  return __all_sync(TMOE_FULL_MASK, (kv[lane] & kv[lane + 32]) != 0);
}

static __device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(TMOE_FULL_MASK, v, 1);
  return v + __shfl_xor_sync(TMOE_FULL_MASK, v, 2);
}
static __device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(TMOE_FULL_MASK, v, 1));
  return fmaxf(v, __shfl_xor_sync(TMOE_FULL_MASK, v, 2));
}

// A score in log2 units, t = s * scale * log2 e, rounded once and never fused
// into the subtraction that follows (__fmul_rn): the forward and both backward
// kernels see the same t, so the row's maximum gives t - m = 0 exactly and
// equal scores equal terms, whatever the scores' magnitude (a fused
// fma(s, sl2, -m) is off by t's rounding error, 2^75 at |t| ~ 1e30).
static __device__ __forceinline__ float att_log2(float s, float sl2) { return __fmul_rn(s, sl2); }

// P of one visible score from the forward's row statistics (m, 1/l):
// 2^(t - m) / l. Not 2^(t - lse2): lse2 = m + log2(l) loses log2(l) to
// rounding once |m| is large (off by up to 0.5 at |m| ~ 1e7; at 1e30 every P
// of an all-equal row came out 1 instead of 1/l).
static __device__ __forceinline__ float att_prob(float s, float sl2, float m, float inv_l) {
  return exp2f(att_log2(s, sl2) - m) * inv_l;
}

// The forward's (m, 1/l) of query row i < seq; (-inf, 0) for a row that sees
// no key (its P comes out NaN and is masked to 0 by the caller). 1/l, not l:
// the forward's own normaliser, and no division in the backward (IEEE 1/x
// carries a slow-path call that made attn_bwd_dkdv_hd64 spill).
static __device__ __forceinline__ float2 att_row_stats(const float* stats, int64_t i) {
  return reinterpret_cast<const float2*>(stats)[i];
}

// ---------------------------------------------------------------- forward

#define ATT_FWD_WARPS 8
#define ATT_FWD_BM (16 * ATT_FWD_WARPS)

template <int HD>
static __device__ __forceinline__ void attn_fwd_body(const AttnFwdParams& p) {
  typedef AttDims<HD> D;
  constexpr int BM = ATT_FWD_BM, BN = ATT_BN, NT = BN / 8, LDS = D::LDS;
  TMOE_DYNAMIC_SMEM(bf16, smem);
  bf16* sQ = smem;               // [BM][LDS]; at the end, O staging
  bf16* sK = sQ + BM * LDS;      // [2][BN][LDS]
  bf16* sV = sK + 2 * BN * LDS;  // [2][BN][LDS]
  TMOE_SHARED(uint8_t, kvalid, [2][BN]);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int seq = p.seq, bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  // Last query block first: causal work grows with the block index, so the
  // longest CTAs start in the first wave and the short ones fill the tail.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BM, wq0 = q0 + warp * 16;
  const int64_t tok0 = (int64_t)b * seq;
  const bf16* gq = p.q + tok0 * p.ld_q + h * HD;
  const bf16* gk = p.k + tok0 * p.ld_k + h * HD;
  const bf16* gv = p.v + tok0 * p.ld_v + h * HD;
  const uint8_t* mask = p.mask + tok0;
  const int nkb = ceil_div(min(seq, q0 + BM), BN);  // causal limit
  const float sl2 = p.scale * ATT_LOG2E;

  att_load_tile<HD, BM>(sQ, gq, p.ld_q, q0, seq);
  att_load_tile<HD, BN>(sK, gk, p.ld_k, 0, seq);
  att_load_tile<HD, BN>(sV, gv, p.ld_v, 0, seq);
  att_load_kvalid(kvalid[0], mask, 0, seq);
  cp_async_commit();

  float o[D::HT][4];
#pragma unroll
  for (int i = 0; i < D::HT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g, g+8 (log2 domain)

  for (int kb = 0; kb < nkb; kb++) {
    cp_async_wait<0>();
    __syncthreads();  // tile kb landed; every warp is done with tile kb-1
    const int nb = (kb + 1) & 1;
    if (kb + 1 < nkb) {
      att_load_tile<HD, BN>(sK + nb * BN * LDS, gk, p.ld_k, (kb + 1) * BN, seq);
      att_load_tile<HD, BN>(sV + nb * BN * LDS, gv, p.ld_v, (kb + 1) * BN, seq);
      att_load_kvalid(kvalid[nb], mask, (kb + 1) * BN, seq);
    }
    cp_async_commit();

    const int k0 = kb * BN;
    const uint8_t* kv = kvalid[kb & 1];
    // Skip (per warp) key blocks after the warp's last row or fully masked.
    if (k0 > wq0 + 15 || !att_any_key(kv)) continue;
    const bf16* cK = sK + (kb & 1) * BN * LDS;
    const bf16* cV = sV + (kb & 1) * BN * LDS;

    // Every key of the block visible to every row of the warp: no masking.
    const bool full = k0 + BN - 1 <= wq0 && att_all_keys(kv);

    float s[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
    att_mma_abt_s<HD, NT>(s, sQ, warp * 16, cK);

    // Scale into the log2 domain, mask, running max.
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[nt][e] = att_log2(s[nt][e], sl2);
    if (!full)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int jl = nt * 8 + 2 * t + (e & 1), i = wq0 + g + 8 * (e >> 1);
          if (!(kv[jl] && k0 + jl <= i)) s[nt][e] = -INFINITY;
        }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
    float mref[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mx[r] = quad_max(mx[r]);
      mref[r] = mx[r] == -INFINITY ? 0.f : mx[r];  // no visible key yet: p = 0, no NaN
      const float alpha = exp2f(m[r] - mref[r]);
      m[r] = mx[r];
      l[r] *= alpha;
#pragma unroll
      for (int i = 0; i < D::HT; i++) {
        o[i][2 * r] *= alpha;
        o[i][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[nt][e] = exp2f(s[nt][e] - mref[e >> 1]);
        l[e >> 1] += s[nt][e];  // this thread's part of the row sum
      }
    att_mma_pb<HD, NT>(o, s, cV);
  }
  cp_async_wait_all();

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] = quad_sum(l[r]);
    inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  }
  att_store_rows<HD>(o, inv[0], inv[1], sQ + warp * 16 * LDS, p.o + tok0 * p.ld_o + h * HD,
                     p.ld_o, wq0, seq);
  // Row statistics for the backward, m and 1/l apart: (m, 1/l), or (-inf, 0)
  // for a row that saw no key.
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int i = wq0 + g + 8 * r;
      if (i < seq)
        reinterpret_cast<float2*>(p.stats)[(int64_t)bh * seq + i] = make_float2(m[r], inv[r]);
    }
}

extern "C" __global__ void __launch_bounds__(256, 2) attn_fwd_hd64(const AttnFwdParams p) { attn_fwd_body<64>(p); }
extern "C" __global__ void __launch_bounds__(256) attn_fwd_hd32(const AttnFwdParams p) { attn_fwd_body<32>(p); }

// ---------------------------------------------------------------- backward: delta and dQ

#define ATT_BWD_WARPS 4

template <int HD>
static __device__ __forceinline__ void attn_bwd_dq_body(const AttnBwdParams& p) {
  typedef AttDims<HD> D;
  constexpr int BM = ATT_BQ, BN = ATT_BN, NT = BN / 8, LDS = D::LDS;
  TMOE_DYNAMIC_SMEM(bf16, smem);
  bf16* sQ = smem;               // [BM][LDS]; at the end, dQ staging
  bf16* sdO = sQ + BM * LDS;     // [BM][LDS]
  bf16* sO = sdO + BM * LDS;     // [BM][LDS]
  bf16* sK = sO + BM * LDS;      // [2][BN][LDS]
  bf16* sV = sK + 2 * BN * LDS;  // [2][BN][LDS]
  TMOE_SHARED(uint8_t, kvalid, [2][BN]);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int seq = p.seq, bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  // Last query block first: causal work grows with the block index, so the
  // longest CTAs start in the first wave and the short ones fill the tail.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BM, wq0 = q0 + warp * 16;
  const int64_t tok0 = (int64_t)b * seq;
  const bf16* gk = p.k + tok0 * p.ld_k + h * HD;
  const bf16* gv = p.v + tok0 * p.ld_v + h * HD;
  const uint8_t* mask = p.mask + tok0;
  const int nkb = ceil_div(min(seq, q0 + BM), BN);
  const float sl2 = p.scale * ATT_LOG2E;

  att_load_tile<HD, BM>(sQ, p.q + tok0 * p.ld_q + h * HD, p.ld_q, q0, seq);
  att_load_tile<HD, BM>(sdO, p.dout + tok0 * p.ld_do + h * HD, p.ld_do, q0, seq);
  att_load_tile<HD, BM>(sO, p.o + tok0 * p.ld_o + h * HD, p.ld_o, q0, seq);
  att_load_tile<HD, BN>(sK, gk, p.ld_k, 0, seq);
  att_load_tile<HD, BN>(sV, gv, p.ld_v, 0, seq);
  att_load_kvalid(kvalid[0], mask, 0, seq);
  cp_async_commit();

  uint32_t qf[D::KS][4], dof[D::KS][4];
  float dq[D::HT][4];
#pragma unroll
  for (int i = 0; i < D::HT; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  float mrow[2], inv_l[2], delta[2];  // rows g, g+8: row max (log2 units), 1/l, rowsum(dO*O)

  for (int kb = 0; kb < nkb; kb++) {
    cp_async_wait<0>();
    __syncthreads();
    const int nb = (kb + 1) & 1;
    if (kb + 1 < nkb) {
      att_load_tile<HD, BN>(sK + nb * BN * LDS, gk, p.ld_k, (kb + 1) * BN, seq);
      att_load_tile<HD, BN>(sV + nb * BN * LDS, gv, p.ld_v, (kb + 1) * BN, seq);
      att_load_kvalid(kvalid[nb], mask, (kb + 1) * BN, seq);
    }
    cp_async_commit();
    if (kb == 0) {
#pragma unroll
      for (int ks = 0; ks < D::KS; ks++) {
        att_frag_a<LDS>(qf[ks], sQ, warp * 16, ks * 16);
        att_frag_a<LDS>(dof[ks], sdO, warp * 16, ks * 16);
      }
      // delta: lanes 2r, 2r+1 take halves of row r of the warp's 16 rows.
      const int rr = lane / 2, c0 = (lane % 2) * (HD / 2);
      const bf16* orow = sO + (warp * 16 + rr) * LDS + c0;
      const bf16* drow = sdO + (warp * 16 + rr) * LDS + c0;
      float d = 0.f;
#pragma unroll
      for (int c = 0; c < HD / 2; c++) d = fmaf(bf2f(orow[c]), bf2f(drow[c]), d);
      d += __shfl_xor_sync(TMOE_FULL_MASK, d, 1);
      if (lane % 2 == 0 && wq0 + rr < seq) p.delta[(int64_t)bh * seq + wq0 + rr] = d;
#pragma unroll
      for (int r = 0; r < 2; r++) {
        delta[r] = __shfl_sync(TMOE_FULL_MASK, d, 2 * (g + 8 * r));
        const int i = wq0 + g + 8 * r;
        const float2 ml = i < seq ? att_row_stats(p.stats, (int64_t)bh * seq + i) : make_float2(0.f, 0.f);
        mrow[r] = ml.x;
        inv_l[r] = ml.y;
      }
    }

    const int k0 = kb * BN;
    const uint8_t* kv = kvalid[kb & 1];
    if (k0 > wq0 + 15 || !att_any_key(kv)) continue;
    const bool full = k0 + BN - 1 <= wq0 && att_all_keys(kv);
    const bf16* cK = sK + (kb & 1) * BN * LDS;
    const bf16* cV = sV + (kb & 1) * BN * LDS;

    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.f;
    att_mma_abt<HD, NT>(s, qf, cK);
    att_mma_abt<HD, NT>(dp, dof, cV);
    // dS = P * (dP - delta), P = 2^(t - m) / l where visible, else 0.
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int jl = nt * 8 + 2 * t + (e & 1), r = e >> 1, i = wq0 + g + 8 * r;
        float pr = att_prob(s[nt][e], sl2, mrow[r], inv_l[r]);
        if (!full && !(kv[jl] && k0 + jl <= i)) pr = 0.f;  // (also an empty row's NaN)
        s[nt][e] = pr * (dp[nt][e] - delta[r]);
      }
    att_mma_pb<HD, NT>(dq, s, cK);
  }
  cp_async_wait_all();
  att_store_rows<HD>(dq, p.scale, p.scale, sQ + warp * 16 * LDS, p.dq + tok0 * p.ld_dq + h * HD,
                     p.ld_dq, wq0, seq);
}

// ---------------------------------------------------------------- backward: dK and dV

template <int HD>
static __device__ __forceinline__ void attn_bwd_dkdv_body(const AttnBwdParams& p) {
  typedef AttDims<HD> D;
  constexpr int BM = ATT_BQ, BN = ATT_BN, QC = 32, NT = QC / 8, LDS = D::LDS;
  TMOE_DYNAMIC_SMEM(bf16, smem);
  bf16* sK = smem;                // [BN][LDS]; at the end, dK staging
  bf16* sV = sK + BN * LDS;       // [BN][LDS]; at the end, dV staging
  bf16* sQ = sV + BN * LDS;       // [2][BM][LDS]
  bf16* sdO = sQ + 2 * BM * LDS;  // [2][BM][LDS]
  TMOE_SHARED(uint8_t, kvalid, [BN]);
  TMOE_SHARED(float, s_m, [2][BM]);    // row max (log2 units) per query
  TMOE_SHARED(float, s_inv, [2][BM]);  // 1/l per query
  TMOE_SHARED(float, s_delta, [2][BM]);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int seq = p.seq, bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  // Key block 0 (the most query blocks) first: the longest CTAs start early.
  const int k0 = blockIdx.x * BN, wk = warp * 16;  // block's first key; warp's first key (local)
  const int64_t tok0 = (int64_t)b * seq;
  const bf16* gq = p.q + tok0 * p.ld_q + h * HD;
  const bf16* gdo = p.dout + tok0 * p.ld_do + h * HD;
  const float* stats = p.stats + 2 * (int64_t)bh * seq;
  const float* dlt = p.delta + (int64_t)bh * seq;
  const float sl2 = p.scale * ATT_LOG2E;

  // Query block qb into buffer `buf`: Q, dO (cp.async), (m, 1/l), delta.
  auto load_q = [&](int qb, int buf) {
    att_load_tile<HD, BM>(sQ + buf * BM * LDS, gq, p.ld_q, qb * BM, seq);
    att_load_tile<HD, BM>(sdO + buf * BM * LDS, gdo, p.ld_do, qb * BM, seq);
    for (int i = threadIdx.x; i < BM; i += blockDim.x) {
      const int q = qb * BM + i;
      const float2 ml = q < seq ? att_row_stats(stats, q) : make_float2(0.f, 0.f);
      s_m[buf][i] = ml.x;
      s_inv[buf][i] = ml.y;
      s_delta[buf][i] = q < seq ? dlt[q] : 0.f;
    }
  };
  const int qbeg = k0 / BM, nqb = ceil_div(seq, BM);
  att_load_tile<HD, BN>(sK, p.k + tok0 * p.ld_k + h * HD, p.ld_k, k0, seq);
  att_load_tile<HD, BN>(sV, p.v + tok0 * p.ld_v + h * HD, p.ld_v, k0, seq);
  att_load_kvalid(kvalid, p.mask + tok0, k0, seq);
  load_q(qbeg, 0);
  cp_async_commit();
  __syncthreads();  // kvalid visible: a fully masked key block has dK = dV = 0
  bool any = false;
  for (int i = 0; i < BN; i++) any |= kvalid[i] != 0;
  const int qend = any ? nqb : qbeg;
  // The warp's own 16 keys: all masked -> nothing to do (it still joins the barriers).
  const bool warp_any = __any_sync(TMOE_FULL_MASK, lane < 16 && kvalid[wk + lane % 16]);
  const bool warp_all = __all_sync(TMOE_FULL_MASK, lane >= 16 || kvalid[wk + lane % 16]);

  float dk[D::HT][4], dv[D::HT][4];
#pragma unroll
  for (int i = 0; i < D::HT; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.f;

  for (int qb = qbeg; qb < qend; qb++) {
    cp_async_wait<0>();
    __syncthreads();
    const int cb = (qb - qbeg) & 1;
    if (qb + 1 < qend) load_q(qb + 1, cb ^ 1);
    cp_async_commit();
    const int q0 = qb * BM;
    if (!warp_any) continue;

    // Chunks of QC queries (two accumulator tiles of 16 x QC per warp).
#pragma unroll 1
    for (int qc = 0; qc < BM; qc += QC) {
      if (k0 + wk > q0 + qc + QC - 1) continue;  // causal: the chunk sees none of these keys
      // Every query of the chunk (all < seq) sees every key of the warp: no masking.
      const bool full = warp_all && k0 + wk + 15 <= q0 + qc && q0 + qc + QC <= seq;
      const bf16* cQ = sQ + cb * BM * LDS + qc * LDS;
      const bf16* cdO = sdO + cb * BM * LDS + qc * LDS;
      // S^T (16 keys x QC queries) = K_w Q^T and dP^T = V_w dO^T.
      float st[NT][4], dpt[NT][4];
#pragma unroll
      for (int i = 0; i < NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D::KS; ks++) {
        uint32_t ka[4], va[4];
        att_frag_a<LDS>(ka, sK, wk, ks * 16);
        att_frag_a<LDS>(va, sV, wk, ks * 16);
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
          uint32_t bq[4], bo[4];
          att_frag_b_nk<LDS>(bq, cQ, np * 16, ks * 16);
          att_frag_b_nk<LDS>(bo, cdO, np * 16, ks * 16);
          mma_bf16_16816(st[2 * np], ka, bq, st[2 * np]);
          mma_bf16_16816(st[2 * np + 1], ka, bq + 2, st[2 * np + 1]);
          mma_bf16_16816(dpt[2 * np], va, bo, dpt[2 * np]);
          mma_bf16_16816(dpt[2 * np + 1], va, bo + 2, dpt[2 * np + 1]);
        }
      }
      // P^T where visible (key <= query < seq, key unmasked); dS^T = P^T (dP^T - delta).
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int jl = wk + g + 8 * (e >> 1), ql = qc + nt * 8 + 2 * t + (e & 1);
          const int q = q0 + ql;
          float pr = att_prob(st[nt][e], sl2, s_m[cb][ql], s_inv[cb][ql]);
          if (!full && !(kvalid[jl] && k0 + jl <= q && q < seq)) pr = 0.f;
          st[nt][e] = pr;
          dpt[nt][e] = pr * (dpt[nt][e] - s_delta[cb][ql]);
        }
      att_mma_pb<HD, NT>(dv, st, cdO);  // dV += P^T dO
      att_mma_pb<HD, NT>(dk, dpt, cQ);  // dK += dS^T Q
    }
  }
  // Every thread's copies have landed before any warp stages dK/dV over sK/sV:
  // with a fully masked key block the loop above never ran, and another warp's
  // prologue copies into these rows could still be in flight.
  cp_async_wait_all();
  __syncthreads();
  const int64_t off = tok0;
  att_store_rows<HD>(dk, p.scale, p.scale, sK + wk * LDS, p.dk + off * p.ld_dk + h * HD, p.ld_dk,
                     k0 + wk, seq);
  att_store_rows<HD>(dv, 1.f, 1.f, sV + wk * LDS, p.dv + off * p.ld_dv + h * HD, p.ld_dv, k0 + wk,
                     seq);
}

extern "C" __global__ void __launch_bounds__(128) attn_bwd_dq_hd64(const AttnBwdParams p) { attn_bwd_dq_body<64>(p); }
extern "C" __global__ void __launch_bounds__(128) attn_bwd_dq_hd32(const AttnBwdParams p) { attn_bwd_dq_body<32>(p); }
extern "C" __global__ void __launch_bounds__(128) attn_bwd_dkdv_hd64(const AttnBwdParams p) { attn_bwd_dkdv_body<64>(p); }
extern "C" __global__ void __launch_bounds__(128) attn_bwd_dkdv_hd32(const AttnBwdParams p) { attn_bwd_dkdv_body<32>(p); }
