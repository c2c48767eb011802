// Deliberately out of bounds: reads one element past the end of in_f. Built
// only with TMOE_SIM_ASAN=1 (tools/sim-asan.sh), where ASan must catch it.
#include "common.cuh"

extern "C" __global__ void simt_asan_oob(const SimTestParams p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= p.n) p.out_f[0] += p.in_f[i];  // `<=`: the bug
}
