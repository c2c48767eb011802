// Deliberately out of bounds, one kernel per kind of memory, and one misaligned
// vector load. Built only with TMOE_SIM_ASAN=1 (tools/sim-asan.sh), where ASan
// (UBSan's alignment check for the last) must catch each.
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

// Loads a uint4 from 4 bytes past a 256-byte aligned buffer: in bounds, but a
// GPU faults ("misaligned address") on a 16-byte load off a 16-byte boundary.
extern "C" __global__ void simt_asan_misaligned(const SimTestParams p) {
  const int t = threadIdx.x;
  if (t == 0) {
    const uint4 v = *reinterpret_cast<const uint4*>(p.in_f + 1);  // the bug
    p.out_f[0] = __uint_as_float(v.x);
  }
}
