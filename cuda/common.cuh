// Shared device helpers for every kernel in cuda/*.cu. Compiles under nvcc (the
// GPU build) and under g++ with TMOE_SIM defined (the CPU simulator, cuda/sim/):
// anything architecture-specific has both paths here, so kernels themselves
// contain no #ifdef.  See cuda/README.md for how to write a kernel.
#pragma once

#ifdef TMOE_SIM
#include "sim/sim.h"  // CUDA built-ins emulated on the CPU
#else
#include <cuda_bf16.h>
#include <stdint.h>
#endif

#include "params.h"

// ---------------------------------------------------------------- basics

#define TMOE_WARP 32
#define TMOE_FULL_MASK 0xffffffffu

// Dynamic shared memory, sized by the launch (`smem` bytes). Use this macro
// instead of a bare `extern __shared__` so that the simulator can hand each
// block an exactly-sized buffer (out-of-bounds accesses then show up under ASan).
#ifdef TMOE_SIM
#define TMOE_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::tmoe_sim::dynamic_smem())
#else
#define TMOE_DYNAMIC_SMEM(T, name) \
  extern __shared__ __align__(16) unsigned char tmoe_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(tmoe_dyn_smem_)
#endif

// Static shared memory: `TMOE_SHARED(float, s_red, [32]);` for
// `__shared__ float s_red[32];` (T may carry `__align__(16)`), one declarator per
// use. The simulator gives each array its own exactly-sized buffer that holds
// poison (NaN / 0xFF..) at the start of every block, as a GPU holds garbage,
// and that ASan bounds; a bare `__shared__` does not compile there.
#ifdef TMOE_SIM
#define TMOE_SHARED(T, name, dims) TMOE_SIM_SHARED(T, name, dims)
#else
#define TMOE_SHARED(T, name, dims) __shared__ T name dims
#endif

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------- bf16
// Do arithmetic in float; convert at loads and stores (round-to-nearest-even).

__device__ __forceinline__ float bf2f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ bf16 f2bf(float v) { return __float2bfloat16_rn(v); }

// Packs two floats into one 32-bit register of two bf16 (lo = first element),
// the operand format of mma.sync.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  memcpy(&r, &v, 4);
  return r;
}

// Vector paths: may `ptr` be read or written 16 bytes at a time?
__device__ __forceinline__ bool aligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0;
}

// 8 bf16 held in a uint4 (one 16-byte load, kept raw so that several loads can
// be in flight before any is converted) -> 8 floats.
__device__ __forceinline__ void unpack_bf16x8(const uint4 raw, float out[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// 8 consecutive bf16 (16 bytes, 16-byte aligned) <-> 8 floats.
__device__ __forceinline__ void load_bf16x8(const bf16* p, float out[8]) {
  unpack_bf16x8(*reinterpret_cast<const uint4*>(p), out);
}
__device__ __forceinline__ void store_bf16x8(bf16* p, const float in[8]) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// ---------------------------------------------------------------- reductions
// Block helpers need blockDim.x to be a multiple of 32 (whole warps).

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(TMOE_FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(TMOE_FULL_MASK, v, o));
  return v;
}

// Sum over the whole block, returned to every thread. `scratch` is 32 floats of
// shared memory; the function syncs before reusing it, so consecutive calls may
// share one scratch buffer. Every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const int n_warps = blockDim.x / TMOE_WARP;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % TMOE_WARP, warp = threadIdx.x / TMOE_WARP;
  const int n_warps = blockDim.x / TMOE_WARP;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// ---------------------------------------------------------------- tensor cores
// Fragment layouts are the PTX ISA's (g = lane/4, t = lane%4):
//   mma m16n8k16 A (16x16, row-major): a[0]=(g, 2t..2t+1) a[1]=(g+8, 2t..) a[2]=(g, 2t+8..) a[3]=(g+8, 2t+8..)
//                B (16x8, "col"):      b[0]=(k 2t..2t+1, n g) b[1]=(k 2t+8.., n g)
//                C/D (16x8 f32):       c[0..1]=(g, 2t..2t+1) c[2..3]=(g+8, 2t..2t+1)
//   ldmatrix m8n8 .b16: lanes 8i..8i+7 give the row addresses of matrix i; r[i]
//     holds row lane/4, cols 2(lane%4)..+1 of matrix i (.trans: rows 2(lane%4)..+1, col lane/4).
// The low 16 bits of a register hold the lower column (or k) index.

// D = A*B + C, bf16 inputs, fp32 accumulate. Warp-collective (all 32 lanes).
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                               const float c[4]) {
#ifdef TMOE_SIM
  ::tmoe_sim::mma_bf16_16816(d, a, b, c);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

// ldmatrix: `row` is this lane's row address in shared memory (16-byte aligned).
#ifdef TMOE_SIM
#define TMOE_LDMATRIX(N, TRANS, SUFFIX, TRANS_PTX)                                        \
  __device__ __forceinline__ void ldmatrix_x##N##SUFFIX(uint32_t r[N], const void* row) { \
    ::tmoe_sim::ldmatrix(N, TRANS, r, row);                                              \
  }
#else
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#define TMOE_LDMATRIX_ASM_1(T) \
  asm volatile("ldmatrix.sync.aligned.m8n8.x1" T ".shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a))
#define TMOE_LDMATRIX_ASM_2(T)                                                               \
  asm volatile("ldmatrix.sync.aligned.m8n8.x2" T ".shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), \
               "=r"(r[1])                                                                    \
               : "r"(a))
#define TMOE_LDMATRIX_ASM_4(T)                                                           \
  asm volatile("ldmatrix.sync.aligned.m8n8.x4" T ".shared.b16 {%0,%1,%2,%3}, [%4];\n"    \
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                          \
               : "r"(a))
#define TMOE_LDMATRIX(N, TRANS, SUFFIX, TRANS_PTX)                                        \
  __device__ __forceinline__ void ldmatrix_x##N##SUFFIX(uint32_t r[N], const void* row) { \
    const uint32_t a = smem_addr(row);                                                    \
    TMOE_LDMATRIX_ASM_##N(TRANS_PTX);                                                     \
  }
#endif
TMOE_LDMATRIX(1, false, , "")
TMOE_LDMATRIX(2, false, , "")
TMOE_LDMATRIX(4, false, , "")
TMOE_LDMATRIX(1, true, _trans, ".trans")
TMOE_LDMATRIX(2, true, _trans, ".trans")
TMOE_LDMATRIX(4, true, _trans, ".trans")

// ---------------------------------------------------------------- cp.async
// 16-byte global->shared copies that bypass registers (sm_80+). Both addresses
// must be 16-byte aligned. Asynchronous in the simulator too (sim.h): wait,
// then __syncthreads, before any thread reads or overwrites the destination.
// The commit and the waits clobber "memory" so that the compiler never moves
// a shared-memory access across them.

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
#ifdef TMOE_SIM
  ::tmoe_sim::cp_async(smem, gmem, true);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
#endif
}
// Copies 16 bytes when `valid`, else writes 16 zero bytes (gmem is not read).
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, bool valid) {
#ifdef TMOE_SIM
  ::tmoe_sim::cp_async(smem, gmem, valid);
#else
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_size));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef TMOE_SIM
  ::tmoe_sim::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef TMOE_SIM
  ::tmoe_sim::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifdef TMOE_SIM
  ::tmoe_sim::cp_async_wait(-1);
#else
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}
