/* Kernel launch parameters: one POD struct per kernel, the single source of truth
 * shared by the CUDA kernels (nvcc), the CPU simulator (g++) and Rust (bindgen,
 * at build time, into src/backend/gpu/params.rs's `include!`).
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

/* y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps); one block per row. */
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

/* Deterministic scatter-add: rows grouped by token id (host-built plan), one
 * block per distinct id sums its rows in position order, then adds once. */
typedef struct EmbedBwdParams {
  const bf16* dout;        /* [rows, d] */
  const uint32_t* order;   /* [rows] row indices sorted by (id, row) */
  const uint32_t* seg_start; /* [n_segments + 1] offsets into order */
  const uint32_t* seg_id;  /* [n_segments] token id of each segment */
  float* dtable;           /* [vocab, d] += */
  int32_t n_segments;
  int32_t d;
} EmbedBwdParams;

/* ---- simulator self-tests (cuda/sim/tests/*.cu; compiled for the simulator only) ---- */

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
