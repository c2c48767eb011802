// The SIMT simulator's view of CUDA: the built-ins a kernel uses, emulated on the
// CPU so that cuda/*.cu compile with g++ (-DTMOE_SIM) and run in `cargo test`.
// Threads of a block are cooperative fibers (runtime.cpp); warp intrinsics are
// exchanges among the warp's 32 lanes; shared memory (static and dynamic) is one
// heap allocation per array, poisoned at the start of every block.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// Static shared arrays are declared with TMOE_SHARED (common.cuh), which the
// simulator implements with TMOE_SIM_SHARED below; a bare `__shared__` (a
// static that would be zero on first use and keep its values across blocks,
// unlike a GPU's) does not compile.
#define __shared__ \
  static_assert(false, "declare static shared arrays with TMOE_SHARED(T, name, [dims]) (cuda/README.md)");
#define __constant__ static

// ---------------------------------------------------------------- vector types
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---------------------------------------------------------------- runtime hooks
namespace tmoe_sim {
// Per-fiber state the built-ins read; the runtime owns the full fiber record.
struct ThreadState {
  uint3 thread_idx;
  unsigned linear;  // x + y*bx + z*bx*by
};
struct BlockState {
  uint3 block_idx;
  uint3 block_dim;
  uint3 grid_dim;
  unsigned char* dynamic_smem;
};
extern __thread ThreadState* cur_thread;
extern __thread BlockState* cur_block;

inline unsigned char* dynamic_smem() { return cur_block->dynamic_smem; }
// The current block's copy of the static shared array declared at `site` (any
// address unique to the declaration): a heap allocation of exactly `bytes`
// (so ASan sees overruns) that every block starts with poisoned (all-ones).
void* static_smem(const void* site, size_t bytes, size_t align);

// `site` names the __syncthreads() call ("file:line"): every thread of the
// block must wait at the same one (a barrier in divergent code is an error).
void syncthreads(const char* site);
// Warp collectives (runtime.cpp). Shuffle modes: 0 idx, 1 up, 2 down, 3 xor.
uint64_t shfl(unsigned mask, uint64_t bits, int mode, int arg, int width);
unsigned ballot(unsigned mask, int pred);
void syncwarp(unsigned mask);
unsigned activemask();
void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
void ldmatrix(int n, bool trans, uint32_t* r, const void* row);
// cp.async, asynchronous as on a GPU: the source is read at issue, the 16
// bytes land in shared memory only when the issuing thread's wait covers
// their group (or it exits). A read before that sees the old bytes; a write
// by anyone to those bytes while the copy is in flight is reported as a race.
void cp_async(void* smem, const void* gmem, bool valid);
void cp_async_commit();
void cp_async_wait(int groups_left);  // < 0: wait_all (commits the open group too)
// Ends the launch with an error (used by __trap and failed device asserts).
[[noreturn]] void fail(const char* what);
}  // namespace tmoe_sim

// `TMOE_SIM_SHARED(float, buf, [2][32]);` declares `buf` as a reference to this
// block's float[2][32]: one per block, shared by its threads, as on a GPU.
#define TMOE_SIM_SHARED(T, name, dims)                                                   \
  typedef T tmoe_shared_t_##name dims;                                                   \
  static const char tmoe_shared_site_##name = 0;                                         \
  tmoe_shared_t_##name& name = *static_cast<tmoe_shared_t_##name*>(::tmoe_sim::static_smem( \
      &tmoe_shared_site_##name, sizeof(tmoe_shared_t_##name), alignof(tmoe_shared_t_##name)))

#define threadIdx (::tmoe_sim::cur_thread->thread_idx)
#define blockIdx (::tmoe_sim::cur_block->block_idx)
#define blockDim (::tmoe_sim::cur_block->block_dim)
#define gridDim (::tmoe_sim::cur_block->grid_dim)
static constexpr int warpSize = 32;

#define TMOE_SIM_STR2_(x) #x
#define TMOE_SIM_STR_(x) TMOE_SIM_STR2_(x)
#define __syncthreads() ::tmoe_sim::syncthreads(__FILE__ ":" TMOE_SIM_STR_(__LINE__))
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::tmoe_sim::syncwarp(mask); }
inline unsigned __activemask() { return ::tmoe_sim::activemask(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] inline void __trap() { ::tmoe_sim::fail("__trap() called"); }

template <class T>
inline T tmoe_sim_shfl_(unsigned mask, T v, int mode, int arg, int width) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  bits = ::tmoe_sim::shfl(mask, bits, mode, arg, width);
  T r;
  memcpy(&r, &bits, sizeof(T));
  return r;
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return tmoe_sim_shfl_(mask, v, 0, src, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return tmoe_sim_shfl_(mask, v, 1, (int)delta, width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return tmoe_sim_shfl_(mask, v, 2, (int)delta, width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return tmoe_sim_shfl_(mask, v, 3, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::tmoe_sim::ballot(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return ::tmoe_sim::ballot(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
  return ::tmoe_sim::ballot(mask, pred) == mask;  // masks naming absent lanes are errors
}

// ---------------------------------------------------------------- atomics
// Blocks run on several OS threads, so these are real CPU atomics.
#define TMOE_SIM_ATOMIC_INT(T)                                                                  \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }          \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }          \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }          \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }            \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }          \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }        \
  inline T atomicCAS(T* p, T cmp, T v) {                                                        \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);         \
    return cmp;                                                                                 \
  }                                                                                             \
  inline T atomicMax(T* p, T v) {                                                               \
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                               \
    while (old < v &&                                                                           \
           !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { \
    }                                                                                           \
    return old;                                                                                 \
  }                                                                                             \
  inline T atomicMin(T* p, T v) {                                                               \
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                               \
    while (old > v &&                                                                           \
           !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { \
    }                                                                                           \
    return old;                                                                                 \
  }
TMOE_SIM_ATOMIC_INT(int)
TMOE_SIM_ATOMIC_INT(unsigned)
TMOE_SIM_ATOMIC_INT(unsigned long long)
TMOE_SIM_ATOMIC_INT(long long)
#undef TMOE_SIM_ATOMIC_INT

template <class F, class U>
inline F tmoe_sim_atomic_float_(F* p, F v) {
  U* up = reinterpret_cast<U*>(p);
  U old = __atomic_load_n(up, __ATOMIC_SEQ_CST), want;
  F f;
  do {
    memcpy(&f, &old, sizeof(F));
    F n = f + v;
    memcpy(&want, &n, sizeof(F));
  } while (!__atomic_compare_exchange_n(up, &old, want, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return f;
}
inline float atomicAdd(float* p, float v) { return tmoe_sim_atomic_float_<float, uint32_t>(p, v); }
inline double atomicAdd(double* p, double v) { return tmoe_sim_atomic_float_<double, uint64_t>(p, v); }
inline float atomicExch(float* p, float v) {
  uint32_t b;
  memcpy(&b, &v, 4);
  b = __atomic_exchange_n(reinterpret_cast<uint32_t*>(p), b, __ATOMIC_SEQ_CST);
  memcpy(&v, &b, 4);
  return v;
}

// ---------------------------------------------------------------- math
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int __float_as_int(float x) { int r; memcpy(&r, &x, 4); return r; }
inline unsigned __float_as_uint(float x) { unsigned r; memcpy(&r, &x, 4); return r; }
inline float __int_as_float(int x) { float r; memcpy(&r, &x, 4); return r; }
inline float __uint_as_float(unsigned x) { float r; memcpy(&r, &x, 4); return r; }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
// CUDA also overloads long (int64_t on LP64 Linux) and unsigned long.
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

template <class T>
inline T __ldg(const T* p) { return *p; }

// ---------------------------------------------------------------- bf16
// Bit-exact with cuda_bf16.h: float -> bf16 rounds to nearest even, NaN -> 0x7fff.
inline uint16_t tmoe_sim_f2bf_bits_(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
inline float tmoe_sim_bf2f_(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
struct __align__(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(tmoe_sim_f2bf_bits_(f)) {}
  operator float() const { return tmoe_sim_bf2f_(__x); }
};
struct __align__(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
inline float __bfloat162float(__nv_bfloat16 v) { return tmoe_sim_bf2f_(v.__x); }
inline __nv_bfloat16 __float2bfloat16(float f) { __nv_bfloat16 r; r.__x = tmoe_sim_f2bf_bits_(f); return r; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16(a), __float2bfloat16(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 v) {
  return {__bfloat162float(v.x), __bfloat162float(v.y)};
}
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 v) { return v.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { __nv_bfloat16 r; r.__x = b; return r; }
