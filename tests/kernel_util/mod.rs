//! Shared helpers of the kernel tests (tests/kernel_*.rs): seeded inputs,
//! bf16 conversions, and the one-bf16-rounding tolerance.
#![allow(dead_code)]

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
