// Simulator self-tests, block level: barriers, static and dynamic shared memory,
// atomics. Also compiled for the GPU, so a GPU run checks the simulator.
#include "common.cuh"

// Rounds of "write my slot, barrier, read my neighbour's, barrier": any missing
// or misordered barrier shows up as a wrong sum. out_f[tid] = final value.
extern "C" __global__ void simt_barrier(const SimTestParams p) {
  TMOE_SHARED(float, ring, [1024]);
  const int t = threadIdx.x, n = blockDim.x;
  float v = p.in_f[t];
  for (int round = 0; round < p.mode; round++) {
    ring[t] = v;
    __syncthreads();
    v = v + ring[(t + 1) % n];
    __syncthreads();
  }
  p.out_f[blockIdx.x * n + t] = v;
}

// Dynamic shared memory: reverse each block's slice of in_f through smem.
extern "C" __global__ void simt_dyn_smem(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
  buf[t] = p.in_f[base + t];
  __syncthreads();
  p.out_f[base + t] = buf[n - 1 - t];
}

// block_sum / block_max from common.cuh, twice with one scratch buffer.
extern "C" __global__ void simt_block_reduce(const SimTestParams p) {
  TMOE_SHARED(float, scratch, [32]);
  const float v = p.in_f[blockIdx.x * blockDim.x + threadIdx.x];
  const float s = block_sum(v, scratch);
  const float m = block_max(v, scratch);
  if (threadIdx.x == 0) {
    p.out_f[2 * blockIdx.x] = s;
    p.out_f[2 * blockIdx.x + 1] = m;
  }
}

// Atomics across blocks. out_u: [0] add count, [1] max of in_u, [2] CAS-loop
// count, [3] exch (any thread id), [4] sub; out_f[0] float sum of in_f.
extern "C" __global__ void simt_atomics(const SimTestParams p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.n) return;
  atomicAdd(&p.out_u[0], 1u);
  atomicMax(&p.out_u[1], p.in_u[i]);
  unsigned old = p.out_u[2], seen;
  do {
    seen = old;
    old = atomicCAS(&p.out_u[2], seen, seen + 1);
  } while (old != seen);
  atomicExch(&p.out_u[3], (unsigned)i);
  atomicSub(&p.out_u[4], 2u);
  atomicAdd(&p.out_f[0], p.in_f[i]);
}

// bf16 conversions: out_f[i] = bf16(in_f[i]) as float; out_u[i] = raw bits.
extern "C" __global__ void simt_bf16(const SimTestParams p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.n) return;
  const bf16 b = f2bf(p.in_f[i]);
  p.out_f[i] = bf2f(b);
  p.out_u[i] = __bfloat16_as_ushort(b);
}
