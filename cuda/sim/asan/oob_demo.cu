// Deliberately out of bounds, one kernel per kind of memory. Built only with
// TMOE_SIM_ASAN=1 (tools/sim-asan.sh), where ASan must catch each.
#include "common.cuh"

// Reads one element past the end of in_f (global memory).
extern "C" __global__ void simt_asan_oob(const SimTestParams p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= p.n) p.out_f[0] += p.in_f[i];  // `<=`: the bug
}

// Writes one element past the end of a static shared array of p.n = 64 floats.
extern "C" __global__ void simt_asan_static_smem_oob(const SimTestParams p) {
  TMOE_SHARED(float, buf, [64]);
  const int t = threadIdx.x;
  if (t <= p.n) buf[t] = (float)t;  // `<=`: the bug
  __syncthreads();
  if (t < p.n) p.out_f[t] = buf[t];
}

// Writes one element past the end of dynamic shared memory sized for p.n floats.
extern "C" __global__ void simt_asan_dyn_smem_oob(const SimTestParams p) {
  TMOE_DYNAMIC_SMEM(float, buf);
  const int t = threadIdx.x;
  if (t <= p.n) buf[t] = (float)t;  // `<=`: the bug
  __syncthreads();
  if (t < p.n) p.out_f[t] = buf[t];
}
