// Simulator self-tests, warp level: shuffles, votes, __syncwarp with partial
// masks. Also compiled for the GPU. One warp-sized record of 8 outputs per thread.
#include "common.cuh"

extern "C" __global__ void simt_shuffles(const SimTestParams p) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned v = threadIdx.x * 10 + 1;
  unsigned* o = p.out_u + threadIdx.x * 8;
  o[0] = __shfl_sync(TMOE_FULL_MASK, v, (lane + 3) % 32);
  o[1] = __shfl_up_sync(TMOE_FULL_MASK, v, 1);
  o[2] = __shfl_down_sync(TMOE_FULL_MASK, v, 2);
  o[3] = __shfl_xor_sync(TMOE_FULL_MASK, v, 5);
  o[4] = __shfl_sync(TMOE_FULL_MASK, v, 2, 8);       // lane 2 of each group of 8
  o[5] = __shfl_down_sync(TMOE_FULL_MASK, v, 3, 16);  // within halves
  o[6] = __shfl_up_sync(TMOE_FULL_MASK, v, 4, 8);
  // A float through a shuffle, and a reduction.
  o[7] = (unsigned)warp_sum((float)lane);
}

extern "C" __global__ void simt_votes(const SimTestParams p) {
  const unsigned lane = threadIdx.x % 32;
  unsigned* o = p.out_u + threadIdx.x * 8;
  o[0] = __ballot_sync(TMOE_FULL_MASK, lane % 3 == 0);
  o[1] = __any_sync(TMOE_FULL_MASK, lane == 7);
  o[2] = __any_sync(TMOE_FULL_MASK, lane == 99);
  o[3] = __all_sync(TMOE_FULL_MASK, lane < 32);
  o[4] = __all_sync(TMOE_FULL_MASK, lane < 31);
  // Two halves shuffle independently under their own masks (divergent, legal).
  if (lane < 16) {
    o[5] = __shfl_xor_sync(0x0000ffffu, lane, 1);
    __syncwarp(0x0000ffffu);
  } else {
    o[5] = __shfl_xor_sync(0xffff0000u, lane, 2);
    __syncwarp(0xffff0000u);
  }
  __syncwarp();
  o[6] = __ballot_sync(0x0000ffffu | 0xffff0000u, o[5] > lane);
  o[7] = 0;
}
