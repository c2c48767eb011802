// Kernels that break CUDA's rules on purpose: the simulator must report each
// as a launch error instead of hanging. Simulator-only (never built by nvcc).
#include "common.cuh"

// Half the block returns before a barrier the other half waits at.
extern "C" __global__ void simt_err_divergent_barrier(const SimTestParams p) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  p.out_f[threadIdx.x] = 1.f;
}

// Lanes 0-15 wait at __syncthreads, lanes 16-31 at a full-warp shuffle.
extern "C" __global__ void simt_err_deadlock(const SimTestParams p) {
  if (threadIdx.x % 32 < 16) {
    __syncthreads();
  } else {
    p.out_f[threadIdx.x] = __shfl_sync(TMOE_FULL_MASK, 1.f, 0);
  }
}

// A full-mask shuffle in a block of 48 threads: lanes 16-31 of warp 1 do not exist.
extern "C" __global__ void simt_err_partial_warp(const SimTestParams p) {
  p.out_f[threadIdx.x] = warp_sum(1.f);
}

extern "C" __global__ void simt_err_trap(const SimTestParams p) {
  if (threadIdx.x == 5) __trap();
  p.out_f[threadIdx.x] = 1.f;
}

// Each thread writes its slot of shared memory and reads its neighbour's;
// mode 0 omits the __syncthreads in between (a race), mode 1 has it. The
// race gives a stale read in the ascending thread schedule (the neighbour has
// not run yet) or in the reversed one, never in both: running kernels under
// both schedules exposes such a missing barrier.
extern "C" __global__ void simt_err_missing_barrier(const SimTestParams p) {
  TMOE_SHARED(float, slot, [1024]);
  const unsigned t = threadIdx.x;
  slot[t] = (float)(t + 1);
  if (p.mode == 1) __syncthreads();
  p.out_f[t] = slot[(t + 1) % blockDim.x];
}

// Reads dynamic shared memory that no thread wrote: the simulator's poison.
extern "C" __global__ void simt_err_uninit_smem(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  p.out_f[threadIdx.x] = buf[threadIdx.x];
}

// Reads static shared arrays before any thread of the block writes them, then
// writes them: every block's read must see the simulator's poison (NaN,
// 0xFFFFFFFF), never zeros or what an earlier block or launch left there, as
// a GPU's shared memory holds garbage.
extern "C" __global__ void simt_err_uninit_static_smem(const SimTestParams p) {
  TMOE_SHARED(float, vals, [256]);
  TMOE_SHARED(uint32_t, idx, [256]);
  const unsigned t = threadIdx.x, o = blockIdx.x * blockDim.x + t;
  p.out_f[o] = vals[t];
  p.out_u[o] = idx[t];
  __syncthreads();
  vals[t] = 1.f;
  idx[t] = 0;
}

// cp.async from global to a shared address 8 bytes off 16: a misaligned-address
// fault on a GPU, an error in the simulator.
extern "C" __global__ void simt_err_cp_async_misaligned(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  cp_async_16(buf + 2, p.in_f);
  cp_async_wait_all();
}

// Each thread copies 4 floats of in_f into its 16-byte slot, then reads its own
// slot (mode 0: before waiting, so it sees the old bytes, the poison; mode 1:
// after cp_async_wait_all, so it sees the copy) into out_f.
extern "C" __global__ void simt_err_cp_async_read_early(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const unsigned t = threadIdx.x;
  cp_async_16(buf + 4 * t, p.in_f + 4 * t);
  cp_async_commit();
  if (p.mode == 1) cp_async_wait_all();
  for (int i = 0; i < 4; i++) p.out_f[4 * t + i] = buf[4 * t + i];
  cp_async_wait_all();
}

// Each thread copies into its slot, meets the others at a barrier, then zeroes
// its neighbour's slot: mode 0 waits for its copy only after that (the
// neighbour's copy may still be in flight and land after the zeros or before:
// a race), mode 1 waits before the barrier (the zeros win).
extern "C" __global__ void simt_err_cp_async_race(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const unsigned t = threadIdx.x, nb = (t + 1) % blockDim.x;
  cp_async_16(buf + 4 * t, p.in_f + 4 * t);
  cp_async_commit();
  if (p.mode == 1) cp_async_wait_all();
  __syncthreads();
  for (int i = 0; i < 4; i++) buf[4 * nb + i] = 0.f;
  cp_async_wait_all();
  __syncthreads();
  for (int i = 0; i < 4; i++) p.out_f[4 * t + i] = buf[4 * t + i];
}

// The GEMM's pipeline pattern: two groups in flight, wait_group<1> lands the
// older only. Thread t copies slot A (group 0) and slot B (group 1), waits
// with wait_group<1> and reads both: A holds the copy, B still the poison.
extern "C" __global__ void simt_err_cp_async_groups(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const unsigned t = threadIdx.x, n = blockDim.x;
  cp_async_16(buf + 4 * t, p.in_f + 4 * t);
  cp_async_commit();
  cp_async_16(buf + 4 * (n + t), p.in_f + 4 * t);
  cp_async_commit();
  cp_async_wait<1>();
  p.out_f[2 * t] = buf[4 * t];
  p.out_f[2 * t + 1] = buf[4 * (n + t)];
  cp_async_wait<0>();
}

// Declares at most 64 threads a block; a launch of more must fail as on a GPU.
extern "C" __global__ void __launch_bounds__(64) simt_err_launch_bounds(const SimTestParams p) {
  p.out_f[threadIdx.x] = 1.f;
}

// A race between warps that only shows when one warp runs ahead of another by
// several warp-collective steps (as real warps do; a GEMM warp's k loop is a
// string of mma/ldmatrix collectives). Every thread reads the other warp's
// slot, does a few shuffles (stand-ins for that loop), then overwrites its own
// slot: mode 0 without a __syncthreads in between (the other warp may not have
// read it yet), mode 1 with it. out_f[t] is what thread t read.
extern "C" __global__ void simt_err_warp_skew_race(const SimTestParams p) {
  TMOE_SHARED(float, slot, [1024]);
  const unsigned t = threadIdx.x, n = blockDim.x;
  slot[t] = (float)(t + 1);
  __syncthreads();
  float v = slot[(t + 32) % n];
  for (int i = 0; i < 4; i++) v += 0.f * warp_sum(v);
  if (p.mode == 1) __syncthreads();
  slot[t] = -1.f;
  p.out_f[t] = v;
}

// Warps 0 and 1 wait at two different __syncthreads() calls: a barrier in
// divergent code (undefined on a GPU), even though each thread calls one.
extern "C" __global__ void simt_err_barrier_sites(const SimTestParams p) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  p.out_f[threadIdx.x] = 1.f;
}

// Half-warp shuffles (masks 0x0000ffff and 0xffff0000), but lanes 0-15 read
// lane 20, which their mask leaves out: undefined on a GPU.
extern "C" __global__ void simt_err_shfl_outside_mask(const SimTestParams p) {
  const unsigned lane = threadIdx.x % 32;
  const float v = (float)lane;
  float r;
  if (lane < 16) r = __shfl_sync(0x0000ffffu, v, 20);
  else r = __shfl_sync(0xffff0000u, v, 16);
  p.out_f[threadIdx.x] = r;
}

// Shared-memory operands given global addresses (or the reverse): mode 0
// ldmatrix from global memory, 1 cp.async into global memory, 2 cp.async from
// shared memory, 3 a static shared array declared past the 227 KiB a block
// may have (with the launch's dynamic bytes). On a GPU each is garbage, a
// fault or a refused launch.
extern "C" __global__ void simt_err_not_shared(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const unsigned t = threadIdx.x;
  if (p.mode == 0) {
    uint32_t r[4];
    ldmatrix_x4(r, p.in_f + 4 * t);
    p.out_f[t] = (float)r[0];
  } else if (p.mode == 1) {
    cp_async_16(p.out_f + 4 * t, p.in_f + 4 * t);
    cp_async_wait_all();
  } else if (p.mode == 2) {
    buf[4 * t] = 1.f;
    cp_async_16(buf + 4 * (32 + t), buf + 4 * t);
    cp_async_wait_all();
  } else {
    TMOE_SHARED(float, big, [16 * 1024]);
    big[t] = 1.f;
    p.out_f[t] = big[t];
  }
}

// Vector accesses off their alignment (a misaligned-address fault on a GPU):
// mode 0 a uint4 load 8 bytes past a 16-byte boundary (load_bf16x8 on a view
// that starts mid-chunk), 1 a float2 store 4 bytes off, 2 a __nv_bfloat162
// load at an odd bf16 index; 3 the same three aligned (no error).
extern "C" __global__ void simt_err_misaligned_vector(const SimTestParams p) {
  if (threadIdx.x != 0) return;
  const int off = p.mode == 3 ? 0 : 1;
  if (p.mode == 0 || p.mode == 3) {
    float v[8];
    load_bf16x8(reinterpret_cast<const bf16*>(p.in_f) + 4 * off, v);
    p.out_f[0] = v[0];
  }
  if (p.mode == 1 || p.mode == 3) *reinterpret_cast<float2*>(p.out_f + off) = make_float2(1.f, 2.f);
  if (p.mode == 2 || p.mode == 3) {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(reinterpret_cast<const bf16*>(p.in_f) + off);
    p.out_f[4] = __low2float(h);
  }
}

// Reads shared memory the block did not write where one poison passes for a
// right value: idx[32..64) is never written but meant to be 0xFFFFFFFF
// ("none", the simulator's 0xFF poison), and vals[32..64) is never written
// but only feeds an fmaxf (where a NaN poison vanishes). out_u[t]: 1 when
// idx[t] is "none" else idx[t]+2 (mode 1 writes the "none" entries: right);
// out_f[0]: the max of vals (mode 1 writes -inf there).
extern "C" __global__ void simt_err_uninit_sentinel(const SimTestParams p) {
  TMOE_SHARED(uint32_t, idx, [64]);
  TMOE_SHARED(float, vals, [64]);
  const unsigned t = threadIdx.x;
  if (t < 32) {
    idx[t] = t;
    vals[t] = (float)t;
  } else if (p.mode == 1) {
    idx[t] = 0xFFFFFFFFu;
    vals[t] = -INFINITY;
  }
  __syncthreads();
  p.out_u[t] = idx[t] == 0xFFFFFFFFu ? 1u : idx[t] + 2u;
  if (t == 0) {
    float m = -INFINITY;
    for (int i = 0; i < 64; i++) m = fmaxf(m, vals[i]);
    p.out_f[0] = m;
  }
}

// Each thread copies its 16 bytes of out_f into shared memory with cp.async,
// then overwrites them in global memory: mode 0 before waiting (the GPU may
// read the source before or after the write: a race), mode 1 after. out_f
// then gets what landed (mode 1: the old values, each + 1).
extern "C" __global__ void simt_err_cp_async_source_race(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const unsigned t = threadIdx.x;
  cp_async_16(buf + 4 * t, p.out_f + 4 * t);
  cp_async_commit();
  if (p.mode == 1) cp_async_wait_all();
  for (int i = 0; i < 4; i++) p.out_f[4 * t + i] = -1.f;
  cp_async_wait_all();
  for (int i = 0; i < 4; i++) p.out_f[4 * t + i] = buf[4 * t + i] + 1.f;
}

// Reads past the end of shared memory (a launch that asked for fewer dynamic
// bytes than the kernel uses, or an index off by a row): mode 0 reads
// dynamic shared memory p.n floats further on, mode 1 a static array of 32
// floats at index t + p.n. out_f[t] gets the value.
extern "C" __global__ void simt_err_smem_overrun(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  TMOE_SHARED(float, fixed, [32]);
  const unsigned t = threadIdx.x;
  if (p.mode == 0) {
    buf[t] = 1.f;
    __syncthreads();
    p.out_f[t] = buf[t + p.n];
  } else {
    fixed[t] = 1.f;
    __syncthreads();
    p.out_f[t] = fixed[t + p.n];
  }
}

// mma.sync needs all 32 lanes: lanes 16-31 exit first (mode 0) or skip the
// mma in a branch (mode 1) while lanes 0-15 issue it.
extern "C" __global__ void simt_err_mma_partial_warp(const SimTestParams p) {
  const unsigned lane = threadIdx.x % 32;
  if (lane >= 16) {
    if (p.mode == 0) return;
    p.out_f[threadIdx.x] = 0.f;
    __syncwarp();
    return;
  }
  const uint32_t a[4] = {0u, 0u, 0u, 0u}, b[2] = {0u, 0u};
  float d[4];
  const float c[4] = {1.f, 1.f, 1.f, 1.f};
  mma_bf16_16816(d, a, b, c);
  p.out_f[threadIdx.x] = d[0];
}
