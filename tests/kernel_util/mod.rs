//! Shared helpers of the kernel and simulator tests (tests/kernel_*.rs,
//! tests/sim_*.rs): seeded inputs, bf16 conversions, the one-bf16-rounding
//! tolerance, and launching a simulator self-test kernel (cuda/sim/tests,
//! cuda/sim/errors) with its generic SimTestParams.
#![allow(dead_code)]

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use traffic_moe::backend::gpu::params::SimTestParams;
use traffic_moe::backend::gpu::{Buf, Executor, GpuError, Launch};

/// 2^-7: one bf16 rounding (half an ulp is 2^-8; this leaves room for fp32 math).
pub const BF16_RTOL: f64 = 1.0 / 128.0;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
/// Uniform in [-scale, scale).
pub fn uniform(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}
pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}
/// bf16 inputs and the same values in f64 for the reference.
pub fn bf16_input(rng: &mut StdRng, n: usize, scale: f32) -> (Vec<bf16>, Vec<f64>) {
    let b = to_bf16(&uniform(rng, n, scale));
    let f = bf_f64(&b);
    (b, f)
}
pub fn bf_f64(v: &[bf16]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}
pub fn f64s<T: Copy + Into<f64>>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

/// bf16 round trip of one value, in f64.
pub fn bf(x: f32) -> f64 {
    bf16::from_f32(x).to_f64()
}

pub struct Io {
    pub in_f: Buf<f32>,
    pub in_u: Buf<u32>,
    pub out_f: Buf<f32>,
    pub out_u: Buf<u32>,
}

impl Io {
    pub fn new(ex: &Executor, in_f: &[f32], in_u: &[u32], out_f: usize, out_u: usize) -> Io {
        Io {
            in_f: ex.upload(in_f).unwrap(),
            in_u: ex.upload(in_u).unwrap(),
            out_f: ex.alloc_zeroed(out_f).unwrap(),
            out_u: ex.alloc_zeroed(out_u).unwrap(),
        }
    }
    pub fn params(&self, n: i32, mode: i32) -> SimTestParams {
        SimTestParams {
            in_f: self.in_f.cptr(),
            in_u: self.in_u.cptr(),
            out_f: self.out_f.mptr(),
            out_u: self.out_u.mptr(),
            n,
            mode,
        }
    }
}

pub fn launch(
    ex: &Executor,
    kernel: &'static str,
    grid: u32,
    block: u32,
    smem: u32,
    p: SimTestParams,
) -> Result<(), GpuError> {
    ex.launch(&Launch::linear(kernel, grid, block, p).with_smem(smem))?;
    ex.synchronize()
}
