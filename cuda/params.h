/* Kernel launch parameters: one POD struct per kernel, the single source of truth
 * shared by the CUDA kernels (nvcc), the CPU simulator (g++) and Rust (bindgen's
 * output, committed as src/backend/gpu/params_bindings.rs; after editing this
 * file, and before Rust uses what changed, run
 * `cargo run --manifest-path tools/regen-params/Cargo.toml`, see cuda/README.md).
 *
 * Conventions (see cuda/README.md):
 *  - The struct for kernel `foo_bar` is `FooBarParams`; the kernel is
 *    `extern "C" __global__ void foo_bar(const FooBarParams p)`.
 *  - Plain C only: fixed-width integers (int32_t / uint32_t / int64_t), float,
 *    and typed pointers to device memory (bf16, float, uint32_t, ...). No
 *    references, no templates, no default member values, no nested pointers.
 *  - Comment each pointer with its shape and, for outputs, `=` (overwrite) or
 *    `+=` (accumulate; parameter gradients use `+=`, activation gradients `=`).
 *  - Write structs as `typedef struct Name { ... } Name;` so C, C++ and bindgen
 *    all see the same name.
 */
#pragma once

#include <stdint.h>

#if defined(__CUDACC__) || defined(TMOE_SIM)
/* Device code and the simulator: the real bf16 type (cuda_bf16.h or sim/sim.h,
 * included first by common.cuh). */
typedef __nv_bfloat16 bf16;
#else
/* bindgen / plain C: 2-byte storage with the same size and alignment. */
typedef struct bf16 {
  uint16_t bits;
} bf16;
#endif

/* ---- rmsnorm (cuda/rmsnorm.cu) ---- */

/* y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), per row (threads per row: cuda/rmsnorm.cu). */
typedef struct RmsNormFwdParams {
  const bf16* x;   /* [rows, d] */
  const float* w;  /* [d] */
  bf16* y;         /* [rows, d] = */
  float* rstd;     /* [rows] = (saved for backward) */
  int32_t rows;
  int32_t d;
  float eps;
} RmsNormFwdParams;

/* dx = rstd*(w*dy - x*rstd^2*mean(x*w*dy)); dw partial sums per block (no atomics). */
typedef struct RmsNormBwdParams {
  const bf16* x;       /* [rows, d] */
  const float* w;      /* [d] */
  const float* rstd;   /* [rows] */
  const bf16* dy;      /* [rows, d] */
  bf16* dx;            /* [rows, d] = */
  float* dw_partial;   /* [gridDim.x, d] = (scratch, reduced by rmsnorm_dw_reduce) */
  int32_t rows;
  int32_t d;
} RmsNormBwdParams;

/* dw[j] += sum_b dw_partial[b, j], summed in b order (deterministic). */
typedef struct RmsNormDwReduceParams {
  const float* dw_partial; /* [n_partials, d] */
  float* dw;               /* [d] += */
  int32_t n_partials;
  int32_t d;
} RmsNormDwReduceParams;

/* ---- embedding (cuda/embed.cu) ---- */

/* out[t] = table[ids[t]] (fp32 table, bf16 activations). */
typedef struct EmbedFwdParams {
  const uint32_t* ids; /* [rows] */
  const float* table;  /* [vocab, d] */
  bf16* out;           /* [rows, d] = */
  int32_t rows;
  int32_t d;
  int32_t vocab;
  int32_t _pad;
} EmbedFwdParams;

/* embed_fwd_bf16: out[t] = table16[ids[t]], the same gather from the bf16 copy
 * of the table (weights loaded for inference keep no fp32 table). Bit for bit
 * embed_fwd's output when table16 is table rounded to nearest even. */
typedef struct EmbedFwdBf16Params {
  const uint32_t* ids; /* [rows] */
  const bf16* table;   /* [vocab, d] */
  bf16* out;           /* [rows, d] = */
  int32_t rows;
  int32_t d;
  int32_t vocab;
  int32_t _pad;
} EmbedFwdBf16Params;

/* Deterministic scatter-add, no host plan (cuda/embed.cu), O(rows) work:
 * rows are cut into tiles of EMBED_TILE; embed_bwd_tile groups a tile's rows by
 * id on the device; each distinct id of a tile is an "entry" e = tile*EMBED_TILE
 * + group: a single dout row (entry_row) or, for an id repeated in the tile, one
 * fp32 partial row; it counts each id's entries. embed_bwd_alloc and
 * embed_bwd_scatter gather each id's entries into one segment (integer atomics:
 * the segment's order varies, its content does not); embed_bwd_reduce sorts a
 * segment (entry index = tile order) and adds the entries in that order. */
#define EMBED_TILE 256
typedef struct EmbedBwdTileParams {
  const uint32_t* ids;   /* [rows]; ids >= vocab contribute nothing */
  const bf16* dout;      /* [rows, d] */
  float* partial;        /* [n_tiles * EMBED_TILE, d] = (group g of tile k at row k*TILE+g; repeated ids only) */
  uint32_t* tile_ids;    /* [n_tiles * EMBED_TILE] = distinct ids of each tile, ascending */
  uint32_t* entry_row;   /* [n_tiles * EMBED_TILE] = the entry's dout row, 0xFFFFFFFF: its partial row */
  uint32_t* n_groups;    /* [n_tiles] = distinct ids per tile */
  uint32_t* id_count;    /* [vocab] += entries per id (all zero on entry) */
  uint32_t* entry_slot;  /* [n_tiles * EMBED_TILE] = entry's index in its id's segment */
  uint32_t* cursor;      /* [1] = 0 (segment allocator, reset here) */
  int32_t rows;
  int32_t d;
  int32_t vocab;
  int32_t _pad;
} EmbedBwdTileParams;

/* One thread per entry; the id's slot-0 entry allocates the id's segment. */
typedef struct EmbedBwdAllocParams {
  const uint32_t* tile_ids;
  const uint32_t* n_groups;
  const uint32_t* entry_slot;
  const uint32_t* id_count;
  uint32_t* id_base;     /* [vocab] = segment start of each present id */
  uint32_t* entry_len;   /* [n_tiles * EMBED_TILE] = segment length (slot-0 entries only) */
  uint32_t* cursor;      /* [1] += */
  int32_t n_entries;     /* n_tiles * EMBED_TILE */
  int32_t _pad;
} EmbedBwdAllocParams;

/* One thread per entry: segment[id_base[id] + slot] = entry; resets id_count. */
typedef struct EmbedBwdScatterParams {
  const uint32_t* tile_ids;
  const uint32_t* n_groups;
  const uint32_t* entry_slot;
  const uint32_t* id_base;
  uint32_t* id_count;    /* [vocab] = 0 again for the next call */
  uint32_t* segment;     /* [n_tiles * EMBED_TILE] = entry indices grouped by id */
  int32_t n_entries;
  int32_t _pad;
} EmbedBwdScatterParams;

typedef struct EmbedBwdReduceParams {
  const bf16* dout;         /* [rows, d] (entries of one row) */
  const float* partial;     /* as written by embed_bwd_tile (entries of several rows) */
  const uint32_t* entry_row;
  const uint32_t* tile_ids;
  const uint32_t* n_groups;
  const uint32_t* entry_slot;
  const uint32_t* entry_len;
  const uint32_t* id_base;
  const uint32_t* segment;
  float* dtable;            /* [vocab, d] += */
  int32_t sort_len;         /* power of two >= n_tiles (dynamic smem, u32) */
  int32_t d;
} EmbedBwdReduceParams;

/* ---- simulator self-tests (cuda/sim/tests/; built for the GPU too, so that a GPU run confirms the simulator) ---- */

typedef struct SimTestParams {
  const float* in_f;  /* generic inputs, meaning per test kernel */
  const uint32_t* in_u;
  float* out_f;
  uint32_t* out_u;
  int32_t n;
  int32_t mode;
} SimTestParams;

/* The `kernels` helper appends its structs below this line (keep it last). */
// ---- kernels below ----

/* Limits of the MoE kernels (per-expert shared-memory tables). */
#define MOE_MAX_EXPERTS 64
#define MOE_MAX_K 8

/* ---- rope (cuda/rope.cu): kernels rope_fwd and rope_bwd share these params ---- */

/* Half-split RoPE on [B, S, H, hd]; rope_bwd rotates by -angle. In place allowed. */
typedef struct RopeParams {
  const bf16* x;      /* [B*S tokens, x_stride] (H*hd used per token); dy for rope_bwd */
  bf16* out;          /* [B*S tokens, out_stride] =; dx for rope_bwd */
  int32_t batch;
  int32_t seq;
  int32_t heads;
  int32_t head_dim;   /* even */
  int64_t x_stride;   /* elements between consecutive tokens (>= H*hd) */
  int64_t out_stride;
  float theta;        /* 10000 */
  int32_t _pad;
} RopeParams;

/* ---- swiglu (cuda/swiglu.cu) ---- */

/* out = silu(gate) * up, rows may be strided (fused gate|up GEMM output). */
typedef struct SwigluFwdParams {
  const bf16* gate;   /* [rows, ld_gate] */
  const bf16* up;     /* [rows, ld_up] */
  bf16* out;          /* [rows, ld_out] = */
  int32_t rows;
  int32_t cols;
  int32_t ld_gate;
  int32_t ld_up;
  int32_t ld_out;
  int32_t _pad;
} SwigluFwdParams;

typedef struct SwigluBwdParams {
  const bf16* gate;   /* [rows, ld_gate] */
  const bf16* up;     /* [rows, ld_up] */
  const bf16* dout;   /* [rows, ld_dout] */
  bf16* dgate;        /* [rows, ld_dgate] = (may alias gate) */
  bf16* dup;          /* [rows, ld_dup] = (may alias up) */
  int32_t rows;
  int32_t cols;
  int32_t ld_gate;
  int32_t ld_up;
  int32_t ld_dout;
  int32_t ld_dgate;
  int32_t ld_dup;
  int32_t _pad;
} SwigluBwdParams;

/* ---- router + load balancing (cuda/moe_route.cu) ---- */

/* The formulas are in cuda/moe_route.cu's header. `valid` ([T], 1 = real
 * token, 0 = [PAD]; nullable = all real) confines the aux loss's statistics
 * (counts, Load_e, Prob_e, its gradient) to the real tokens; T there is the
 * number of real tokens, sum(counts) / k. Padded positions are still routed. */

/* softmax over N, top-k (ties -> lower index, descending), counts += via atomics. */
typedef struct RouterFwdParams {
  const float* logits;  /* [T, N] */
  float* probs;         /* [T, N] = */
  uint32_t* topk_idx;   /* [T, k] = */
  float* topk_w;        /* [T, k] = kept probs */
  uint32_t* counts;     /* [N] += slots of real tokens (zero it first); nullable */
  const uint8_t* valid; /* [T]; nullable */
  int32_t tokens;
  int32_t n_experts;    /* <= MOE_MAX_EXPERTS */
  int32_t k;            /* <= MOE_MAX_K, <= n_experts */
  int32_t _pad;
} RouterFwdParams;

/* Pass 1 of the aux loss: partials[block] (grid fixed by the shape). */
typedef struct LbLossPartialParams {
  const float* probs;     /* [T, N] */
  const uint32_t* counts; /* [N] router_fwd's, with the same valid */
  const uint8_t* valid;   /* [T]; nullable */
  float* partials;        /* [gridDim.x] = */
  int32_t tokens;
  int32_t n_experts;
} LbLossPartialParams;

/* Pass 2, one block: loss = the aux loss (T from sum(counts) / k). */
typedef struct LbLossFwdParams {
  const float* partials;  /* [n_partials] from lb_loss_partial */
  const uint32_t* counts; /* [N] as in pass 1 */
  float* loss;            /* [1] = */
  int32_t n_partials;
  int32_t n_experts;
  int32_t k;
  int32_t _pad;
} LbLossFwdParams;

/* dlogits = softmax_bwd(probs, scatter(dtopk_w) + lb_dloss * dLb/dprobs). */
typedef struct RouterBwdParams {
  const float* probs;       /* [T, N] */
  const uint32_t* topk_idx; /* [T, k] */
  const float* dtopk_w;     /* [T, k]; nullable (aux loss only) */
  const uint32_t* counts;   /* [N] router_fwd's, with the same valid */
  const uint8_t* valid;     /* [T]; nullable */
  float* dlogits;           /* [T, N] = */
  float lb_dloss;           /* d total / d lb_loss (lambda_aux / layers); 0 to skip */
  int32_t tokens;
  int32_t n_experts;
  int32_t k;
} RouterBwdParams;

/* ---- MoE permutation (cuda/moe_permute.cu) ---- */

/* Slots per thread of the plan kernels: a block sorts a chunk of
 * blockDim.x * MOE_PLAN_ROUNDS slots (whole warps, at most 32 of them). */
#define MOE_PLAN_ROUNDS 4

/* Pass 1 of the plan: per-chunk expert histogram (ids >= N are not counted). */
typedef struct MoePermuteCountParams {
  const uint32_t* topk_idx;  /* [T, k] */
  uint32_t* block_hist;      /* [chunks, N] = */
  int32_t tokens;
  int32_t n_experts;         /* <= MOE_MAX_EXPERTS */
  int32_t k;
  int32_t _pad;
} MoePermuteCountParams;

/* Pass 2: stable counting sort of the T*k slots by expert, segments padded to
 * `tile`; one chunk per block, same block size as pass 1. 0xFFFFFFFF marks
 * padding rows / tiles past the end. */
typedef struct MoePermutePlanParams {
  const uint32_t* topk_idx;   /* [T, k] */
  const uint32_t* block_hist; /* [chunks, N] from moe_permute_count */
  uint32_t* counts;           /* [N] = */
  uint32_t* expert_offset;    /* [N + 1] = padded offsets */
  uint32_t* total_rows;       /* [1] = expert_offset[N] */
  uint32_t* sorted_slot;      /* [max_rows] = slot t*k+j per padded row */
  uint32_t* tile_expert;      /* [max_rows / tile] = */
  uint32_t* slot_pos;         /* [T*k] = padded row of each slot */
  int32_t tokens;
  int32_t n_experts;          /* <= MOE_MAX_EXPERTS */
  int32_t k;
  int32_t tile;
  int32_t max_rows;           /* >= worst case, a multiple of tile (moe_max_rows) */
  int32_t n_chunks;           /* = gridDim.x = ceil(T*k / (blockDim.x * MOE_PLAN_ROUNDS)) */
} MoePermutePlanParams;

/* xp[r] = x[sorted_slot[r] / k], zero rows for padding. */
typedef struct MoeGatherParams {
  const bf16* x;               /* [T, d] */
  const uint32_t* sorted_slot; /* [rows] */
  bf16* out;                   /* [rows, d] = */
  int32_t rows;
  int32_t d;
  int32_t k;
  int32_t _pad;
} MoeGatherParams;

/* ---- MoE combine (cuda/moe_combine.cu) ---- */

/* out[t] = resid[t] + g[t]*S[t] + sum_j w[t,j]*Y[slot_pos[t*k+j]] (j ascending).
 * resid, shared_out: nullable (term dropped); shared_gate, topk_w: nullable (= 1). */
typedef struct MoeCombineFwdParams {
  const bf16* resid;        /* [T, d] */
  const bf16* shared_out;   /* [T, d] */
  const float* shared_gate; /* [T] (sigmoid applied) */
  const bf16* y_rows;       /* [rows, d] */
  const float* topk_w;      /* [T, k] */
  const uint32_t* slot_pos; /* [T*k] */
  bf16* out;                /* [T, d] = */
  int32_t tokens;
  int32_t k;
  int32_t d;
  int32_t _pad;
} MoeCombineFwdParams;

/* Per padded row r: dY[r] = w[slot]*dout[slot/k] (0 for padding), dtopk_w[slot] = <dout, Y[r]>. */
typedef struct MoeCombineBwdRowsParams {
  const bf16* dout;            /* [T, d] */
  const bf16* y_rows;          /* [rows, d] */
  const float* topk_w;         /* [T, k]; nullable (= 1) */
  const uint32_t* sorted_slot; /* [rows] */
  bf16* dy_rows;               /* [rows, d] = (may alias y_rows) */
  float* dtopk_w;              /* [T, k] =; nullable */
  int32_t rows;
  int32_t k;
  int32_t d;
  int32_t _pad;
} MoeCombineBwdRowsParams;

/* Per token: dS = g*dout, dg = <dout, S> (grad of the gate after its sigmoid). */
typedef struct MoeCombineBwdTokensParams {
  const bf16* dout;         /* [T, d] */
  const bf16* shared_out;   /* [T, d] */
  const float* shared_gate; /* [T]; nullable (= 1) */
  bf16* dshared_out;        /* [T, d] = */
  float* dshared_gate;      /* [T] =; nullable */
  int32_t tokens;
  int32_t d;
} MoeCombineBwdTokensParams;

/* ---- softmax cross-entropy (cuda/xent.cu) ---- */

/* One block per row: losses[t] = lse - x[target]; when dlogits != NULL also
 * dlogits = grad_scale * (softmax - onehot) (may alias logits). */
typedef struct XentFwdBwdParams {
  const bf16* logits;       /* [T, ld] (first vocab columns used) */
  bf16* dlogits;            /* [T, ld] =; nullable */
  const uint32_t* targets;  /* [T] */
  float* losses;            /* [T] = (0 for ignored rows) */
  int64_t ld;
  int32_t tokens;
  int32_t vocab;
  uint32_t ignore_index;
  float grad_scale;         /* dloss / n_valid */
} XentFwdBwdParams;

/* loss = mean of losses over rows whose target != ignore_index (0 if none). */
typedef struct XentMeanParams {
  const float* losses;      /* [T] */
  const uint32_t* targets;  /* [T] */
  float* loss;              /* [1] = */
  int32_t tokens;
  uint32_t ignore_index;
} XentMeanParams;

/* ---- masked mean pooling (cuda/pool.cu) ---- */

typedef struct PoolMeanFwdParams {
  const bf16* x;        /* [B, S, d] */
  const uint8_t* mask;  /* [B, S] 1 = valid */
  bf16* out;            /* [B, d] = */
  int32_t batch;
  int32_t seq;
  int32_t d;
  int32_t _pad;
} PoolMeanFwdParams;

typedef struct PoolMeanBwdParams {
  const bf16* dout;     /* [B, d] */
  const uint8_t* mask;  /* [B, S] */
  bf16* dx;             /* [B, S, d] = */
  int32_t batch;
  int32_t seq;
  int32_t d;
  int32_t _pad;
} PoolMeanBwdParams;

/* ---- optimizer (cuda/adamw.cu, cuda/grad_norm.cu) ---- */

/* Multi-tensor AdamW over flat fp32 arenas; tensor i = [tensor_offset[i], tensor_offset[i+1]). */
typedef struct AdamwStepParams {
  float* param;                 /* [n] updated in place (fp32 master) */
  const float* grad;            /* [n] */
  float* m;                     /* [n] */
  float* v;                     /* [n] */
  bf16* param_bf16;             /* [n] = copy of the new weights; nullable */
  const int64_t* tensor_offset; /* [n_tensors + 1] */
  const uint32_t* chunk_start;  /* [n_tensors + 1] first chunk (block) of each tensor */
  const float* tensor_lr;       /* [n_tensors] base lr (layer-wise decay applied) */
  const float* tensor_wd;       /* [n_tensors] */
  const double* grad_norm;      /* [1] global norm for clipping (grad_norm_final); nullable */
  int32_t n_tensors;
  int32_t chunk_elems;
  float lr_scale;               /* schedule multiplier */
  float beta1;
  float beta2;
  float eps;
  float max_grad_norm;
  int32_t step;                 /* 1-based */
} AdamwStepParams;

/* Global L2 norm of grad[0..n): block b sums g^2 over its contiguous slice.
 * Sums and the norm are double: a float sum of squares overflows once an
 * element passes ~1.8e19, and the norm itself may pass FLT_MAX (the CPU
 * engine's, in f64, does neither). */
typedef struct GradNormPartialParams {
  const float* grad;  /* [n] */
  double* partials;   /* [n_partials] = (scratch) */
  int64_t n;
  int32_t n_partials; /* grid of grad_norm_partial */
  int32_t _pad;
} GradNormPartialParams;

typedef struct GradNormFinalParams {
  const double* partials; /* [n_partials] from grad_norm_partial */
  double* out;            /* [1] = norm */
  int32_t n_partials;
  int32_t _pad;
} GradNormFinalParams;

/* ---- GEMM (cuda/gemm.cu, tile core cuda/gemm_tile.cuh) ---- */

/* Reduction step of every GEMM kernel and pipeline depth (shared memory per
 * block = GEMM_STAGES * (BM + BN) * GEMM_BK * 2 bytes). */
#define GEMM_BK 32
#define GEMM_STAGES 3

/* One struct for the three products (kernel gemm_<op>[_small]):
 *   nt: C[M,N] = A[M,K] . B[N,K]^T (+ bias)   bf16 out  (linear forward, W[out,in])
 *   nn: C[M,N] = A[M,K] . B[K,N]              bf16 out  (linear dX = dY . W)
 *   tn: C[M,N] (+)= A[K,M]^T . B[K,N]         fp32 out  (linear dW += dY^T . X)
 * Row strides lda/ldb/ldc in elements (views of fused tensors). vec = 1: the
 * 16-byte cp.async path (host checked: contiguous extents, strides and pointers
 * multiples of 8 elements / 16 bytes); vec = 0: scalar loads, any shape.
 * Variants:
 *   gemm_nt_swiglu[_small]: B = [gate rows; up rows] (N = 2F rows), C = H[M, F] =
 *     silu(gate) * up (bf16), optionally the pre-activations c_pre[M, 2F] too.
 *   gemm_tn_grouped[_small]: per expert e = blockIdx.z / group_splits, the
 *     reduction rows [seg_offset[e], seg_offset[e+1]) (split group_splits ways),
 *     C at c_f32 + e * c_expert_stride; B row r = b row gather[r] / gather_div. */
typedef struct GemmParams {
  const bf16* a;               /* nt/nn: [M, K]; tn: [K, M] */
  const bf16* b;               /* nt: [N, K]; nn/tn: [K, N]; expert e at b + e * b_expert_stride */
  bf16* c_bf16;                /* nt/nn: [M, N] = (swiglu: H [M, N/2] =) */
  float* c_f32;                /* tn: [M, N] = or += (accumulate) */
  const float* bias;           /* nt/nn: [N] added in the epilogue; nullable */
  float* workspace;            /* tn with gridDim.z > 1: [gridDim.z, M, N] = per-split partials */
  const uint32_t* tile_expert; /* grouped nt/nn: [M / plan_tile] expert of each plan tile, 0xFFFFFFFF = skip; NULL = dense */
  const uint32_t* gather;      /* nt/nn: A row r = a row gather[r] / gather_div; tn grouped: B row r likewise; 0xFFFFFFFF = zero row; NULL = row r */
  const uint32_t* seg_offset;  /* tn grouped: [experts + 1] row offsets of the expert segments (the plan's expert_offset) */
  bf16* c_pre;                 /* nt swiglu: [M, N] = gate|up pre-activations (bf16, the values H is computed from); nullable */
  int64_t b_expert_stride;     /* elements between consecutive experts' B */
  int64_t c_expert_stride;     /* tn grouped: elements between consecutive experts' C */
  int32_t m;
  int32_t n;
  int32_t k;
  int32_t lda;
  int32_t ldb;
  int32_t ldc;
  int32_t k_split;             /* tn: reduction rows per blockIdx.z (multiple of GEMM_BK) */
  int32_t gather_div;
  int32_t accumulate;          /* tn without split: 1 = C += */
  int32_t vec;
  int32_t plan_tile;           /* grouped: rows per tile_expert entry, a multiple of BM */
  int32_t group_splits;        /* tn grouped: splits per expert (blockIdx.z = e * group_splits + s) */
  int32_t ld_pre;              /* nt swiglu: row stride of c_pre */
  int32_t _pad;
} GemmParams;

/* Fixed-order split-K sum: C[M,N] (+)= sum over s ascending of workspace[s].
 * Grouped (seg_offset set): for each of `experts` experts, C_e (at c + e *
 * c_expert_stride) (+)= the partials of its non-empty splits (the rule of
 * gemm_tn_grouped); an expert with no rows gets 0 (or keeps C, accumulating). */
typedef struct GemmSplitkReduceParams {
  const float* workspace;     /* [experts, splits, M, N] */
  float* c;                   /* [M, N] row stride ldc, = or += (accumulate) */
  const uint32_t* seg_offset; /* grouped: [experts + 1]; NULL = dense (every split non-empty) */
  int64_t c_expert_stride;
  int32_t m;
  int32_t n;
  int32_t ldc;
  int32_t splits;
  int32_t accumulate;
  int32_t experts;
} GemmSplitkReduceParams;

/* ---- attention (cuda/attention.cu) ---- */

/* Causal attention with a key padding mask. Token-row layout: element
   (b, s, h, d) of X at X[(b*seq + s)*ld_x + h*head_dim + d] (Q, K, V may be the
   column blocks of the fused QKV projection). ld % 8 == 0, 16-byte aligned. */
typedef struct AttnFwdParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const uint8_t* mask; /* [B, S] nonzero = key visible */
  bf16* o;             /* token rows, = */
  float* stats;        /* [B, H, S, 2] = (m, 1/l) per query row: m the max of the visible
                          scaled scores in log2 units (t = score * scale * log2 e), l = sum
                          2^(t - m) over them (logsumexp = (m + log2 l) ln 2); (-inf, 0): no
                          key. Kept apart: m + log2 l in fp32 loses log2 l at large |m| */
  int32_t ld_q;
  int32_t ld_k;
  int32_t ld_v;
  int32_t ld_o;
  int32_t batch;
  int32_t seq;
  int32_t heads;
  int32_t head_dim;
  float scale;         /* 1/sqrt(head_dim) */
  int32_t _pad;
} AttnFwdParams;

/* Backward: attn_bwd_dq (writes delta, dq) then attn_bwd_dkdv (reads delta). */
typedef struct AttnBwdParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* o;       /* forward output */
  const bf16* dout;
  const uint8_t* mask; /* [B, S] */
  const float* stats;  /* [B, H, S, 2] (m, 1/l) from attn_fwd */
  float* delta;        /* [B, H, S] = rowsum(dO*O) (scratch, attn_bwd_dq -> attn_bwd_dkdv) */
  bf16* dq;            /* token rows, = */
  bf16* dk;            /* token rows, = */
  bf16* dv;            /* token rows, = */
  int32_t ld_q;
  int32_t ld_k;
  int32_t ld_v;
  int32_t ld_o;
  int32_t ld_do;
  int32_t ld_dq;
  int32_t ld_dk;
  int32_t ld_dv;
  int32_t batch;
  int32_t seq;
  int32_t heads;
  int32_t head_dim;
  float scale;
  int32_t _pad;
} AttnBwdParams;

/* ---- elementwise (cuda/elementwise.cu) ---- */

/* Residual add: out = a + b (fp32 math, one rounding); out may be a or b. */
typedef struct AddFwdParams {
  const bf16* a;      /* [n] */
  const bf16* b;      /* [n] */
  bf16* out;          /* [n] = */
  int32_t n;
  int32_t _pad;
} AddFwdParams;

/* GELU, tanh approximation (backend::cpu::act::gelu_fwd); y may be x. */
typedef struct GeluFwdParams {
  const bf16* x;      /* [n] */
  bf16* y;            /* [n] = */
  int32_t n;
  int32_t _pad;
} GeluFwdParams;

/* dx = dy * gelu'(x) (backend::cpu::act::gelu_bwd); dx may be x or dy. */
typedef struct GeluBwdParams {
  const bf16* x;      /* [n] forward input */
  const bf16* dy;     /* [n] */
  bf16* dx;           /* [n] = */
  int32_t n;
  int32_t _pad;
} GeluBwdParams;

/* ---- rowdot (cuda/rowdot.cu) ---- */

/* out[t, j] = sum_c z[t, c] * w[j, c], optionally sigmoid(.) (router logits,
   shared-expert gate). J = cols of out (<= 64 by the wrapper's check). */
typedef struct RowdotFwdParams {
  const bf16* z;      /* [rows, d] */
  const float* w;     /* [J, d] */
  float* out;         /* [rows, J] = */
  int32_t rows;
  int32_t d;
  int32_t j;
  int32_t sigmoid;    /* nonzero: out = sigmoid(dot) */
} RowdotFwdParams;

/* dz[t, c] (= or +=) sum_j dl[t, j] * w[j, c]; bf16 out, one rounding
   (accumulate: old dz + the fp32 sum). dl[t, j] = dout[t, j] when y is NULL
   (dout: gradient of the logits), dout * y * (1 - y) when y is the forward's
   sigmoid output (dout: gradient of that output): the kernel applies it. */
typedef struct RowdotBwdDzParams {
  const float* dout;  /* [rows, J] */
  const float* y;     /* [rows, J] sigmoid output, or NULL */
  const float* w;     /* [J, d] */
  bf16* dz;           /* [rows, d] = or += */
  int32_t rows;
  int32_t d;
  int32_t j;
  int32_t accumulate;
} RowdotBwdDzParams;

/* Per-block partials of dw[j, c] = sum_t dout[t, j] * z[t, c]; block (x, y, z)
   = (column slab, row range y, j chunk z) writes dw_partial[y][j][c]; then
   rmsnorm_dw_reduce over the flat [J*d] rows adds them in block order.
   dout / y as in RowdotBwdDzParams. */
typedef struct RowdotBwdDwParams {
  const float* dout;  /* [rows, J] */
  const float* y;     /* [rows, J] sigmoid output, or NULL */
  const bf16* z;      /* [rows, d] */
  float* dw_partial;  /* [gridDim.y, J, d] = */
  int32_t rows;
  int32_t d;
  int32_t j;
  int32_t rows_per_block;
} RowdotBwdDwParams;

/* ---- bias_grad (cuda/bias_grad.cu) ---- */

/* Column sums of dy over one split of its rows. Block (x, y) = (column slab x:
   block_items items of `width` columns, rows [y * rows_per_split, +rows_per_split))
   writes out[y, c] for its columns: = (out is the [splits, n] scratch that
   bias_grad_reduce sums), or, with one split, out is db itself (+)=.
   width 8: 16-byte loads (n and ld multiples of 8, dy 16-byte aligned);
   width 1: one element per load. blockDim.x = 256, block_items a power of two <= 32. */
typedef struct BiasGradPartialParams {
  const bf16* dy;        /* [rows, ld] (the first n columns of each row) */
  float* out;            /* [gridDim.y, n] = , or db [n] = / += when gridDim.y == 1 */
  int32_t rows;
  int32_t n;
  int32_t ld;            /* row stride of dy in elements, >= n */
  int32_t rows_per_split;
  int32_t width;         /* 8 or 1 */
  int32_t block_items;
  int32_t accumulate;    /* nonzero: out += */
  int32_t _pad;
} BiasGradPartialParams;

/* db[c] (= or +=) sum_s partial[s, c], s ascending in a fixed tree (deterministic
   for a given splits). */
typedef struct BiasGradReduceParams {
  const float* partial;  /* [splits, n] */
  float* db;             /* [n] = or += */
  int32_t splits;
  int32_t n;
  int32_t accumulate;
  int32_t _pad;
} BiasGradReduceParams;

/* ---- cast (cuda/cast.cu) ---- */

/* out = bf16(in), round to nearest even; NaN keeps its sign and upper payload
   with the quiet bit set (bit for bit half::bf16::from_f32). */
typedef struct CastF32Bf16Params {
  const float* in;       /* [n] */
  bf16* out;             /* [n] = */
  int32_t n;
  int32_t _pad;
} CastF32Bf16Params;
