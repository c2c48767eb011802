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
