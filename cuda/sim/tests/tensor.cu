// Simulator self-tests, tensor-core wrappers. Also compiled for the GPU, where
// the same tests confirm the simulator's fragment layouts.
#include "common.cuh"

// ldmatrix: smem holds 4 8x8 matrices of u16 (in_u's low 16 bits, matrix i at
// offset 64i, row-major). Lane l points at row l%8 of matrix l/8. mode:
// 1/2/4 = x1/x2/x4, +8 = .trans. out_u[l*4 + i] = register i of lane l.
extern "C" __global__ void simt_ldmatrix(const SimTestParams p) {
  TMOE_SHARED(__align__(16) uint16_t, m, [256]);
  const int l = threadIdx.x;
  for (int i = l; i < 256; i += 32) m[i] = (uint16_t)p.in_u[i];
  __syncwarp();
  uint32_t r[4] = {0, 0, 0, 0};
  const uint16_t* row = &m[(l / 8) * 64 + (l % 8) * 8];
  switch (p.mode) {
    case 1: ldmatrix_x1(r, row); break;
    case 2: ldmatrix_x2(r, row); break;
    case 4: ldmatrix_x4(r, row); break;
    case 9: ldmatrix_x1_trans(r, row); break;
    case 10: ldmatrix_x2_trans(r, row); break;
    case 12: ldmatrix_x4_trans(r, row); break;
  }
  for (int i = 0; i < 4; i++) p.out_u[l * 4 + i] = r[i];
}

// D[16x8] = A[16x16] * B[16x8] + C, A/B given as floats (rounded to bf16 here),
// all row-major in in_f: A at 0, B at 256, C at 384. out_f = D row-major.
// mode 0: fragments gathered by hand from the PTX layout; mode 1: through
// shared memory with ldmatrix (A: x4, B: x2.trans), the usual GEMM path.
extern "C" __global__ void simt_mma(const SimTestParams p) {
  TMOE_SHARED(__align__(16) bf16, As, [16 * 16]);
  TMOE_SHARED(__align__(16) bf16, Bs, [16 * 8]);
  const int l = threadIdx.x, g = l / 4, t = l % 4;
  const float* A = p.in_f;
  const float* B = p.in_f + 256;
  const float* C = p.in_f + 384;
  uint32_t a[4], b[2];
  if (p.mode == 0) {
    a[0] = pack_bf16x2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    a[1] = pack_bf16x2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    a[2] = pack_bf16x2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    a[3] = pack_bf16x2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    b[0] = pack_bf16x2(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
    b[1] = pack_bf16x2(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  } else {
    for (int i = l; i < 256; i += 32) As[i] = f2bf(A[i]);
    for (int i = l; i < 128; i += 32) Bs[i] = f2bf(B[i]);
    __syncwarp();
    ldmatrix_x4(a, &As[(l % 16) * 16 + (l / 16) * 8]);
    ldmatrix_x2_trans(b, &Bs[(l % 16) * 8]);
  }
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                      C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  mma_bf16_16816(d, a, b, c);
  p.out_f[g * 8 + 2 * t] = d[0];
  p.out_f[g * 8 + 2 * t + 1] = d[1];
  p.out_f[(g + 8) * 8 + 2 * t] = d[2];
  p.out_f[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// cp.async: copy in_f to out_f through shared memory, 16 bytes per thread,
// the second half zero-filled. n floats, n % 4 == 0, one block.
extern "C" __global__ void simt_cp_async(const SimTestParams p) {
  TMOE_SHARED(__align__(16) float, s, [1024]);
  const int i = threadIdx.x * 4;
  if (i < p.n) cp_async_16_zfill(&s[i], &p.in_f[i], i < p.n / 2);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  if (i < p.n)
    for (int k = 0; k < 4; k++) p.out_f[i + k] = s[i + k];
}
