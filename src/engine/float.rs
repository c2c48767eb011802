//! The scalar type the CPU reference ops are generic over: f32 for training,
//! f64 for gradient checks against finite differences.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + Default
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    fn sqrt(self) -> Self;
    /// e^x: [`exp_f32`] (branch-free polynomial, vectorisable) for f32, libm for
    /// f64 (gradient checks stay exact).
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn neg_infinity() -> Self;
}

macro_rules! impl_float {
    ($t:ty, $exp:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
        }
    };
}
impl_float!(f32, exp_f32);
impl_float!(f64, f64::exp);

/// e^x for f32 (Cephes' expf): x = n·ln2 + r with |r| <= ln2/2 (ln 2 split in
/// two parts for exactness), e^r by a degree-6 polynomial, 2^n written into the
/// exponent bits. No branches or libm call, so loops over it vectorise; about
/// 1e-7 relative error on [-87.3, 88.3] (tested < 1e-6 against f64), 0 below,
/// +inf above (the engine only takes e^x of x <= 0: softmax, sigmoid).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' published constants, kept verbatim
pub fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.33654;
    const HI: f32 = 88.3762626647949;
    // Adding 1.5·2^23 rounds to an integer in the low mantissa bits (no SSE4.1 round needed).
    const SHIFTER: f32 = 12582912.0;
    let xc = x.clamp(LO, HI);
    let t = xc * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = xc - n * 0.693359375 - n * -2.12194440e-4;
    let p = ((((1.9875691500e-4 * r + 1.3981999507e-3) * r + 8.3334519073e-3) * r
        + 4.1665795894e-2)
        * r
        + 1.6666665459e-1)
        * r
        + 5.0000001201e-1;
    let er = p * r * r + r + 1.0;
    // n sits in the low bits of t; 2^n = (n + 127) << 23.
    let pow2n = f32::from_bits(
        (t.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32 + 127).wrapping_shl(23) as u32,
    );
    let y = er * pow2n;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// Sum in eight interleaved partial sums: a fixed order (deterministic) that
/// the compiler turns into vector adds, where a plain `sum()` runs one add at a time.
#[inline]
pub fn sum_lanes<F: Float>(x: &[F]) -> F {
    let mut acc = [F::ZERO; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = F::ZERO;
    for &a in acc.iter().chain(tail) {
        s += a;
    }
    s
}

/// `Σ a[i]·b[i]` in eight interleaved partial sums, like [`sum_lanes`]
/// (the same bits on every CPU; a plain fold is one dependent add per element).
#[inline]
pub fn dot_lanes<F: Float>(a: &[F], b: &[F]) -> F {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [F::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ca.remainder().iter().zip(cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = F::ZERO;
    for a in acc {
        s += a;
    }
    for (&x, &y) in tail {
        s += x * y;
    }
    s
}

/// Largest element (-inf for none), in eight lanes like [`sum_lanes`].
#[inline]
pub fn max_lanes<F: Float>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = F::neg_infinity();
    for &a in acc.iter().chain(tail) {
        m = if a > m { a } else { m };
    }
    m
}

/// Logistic sigmoid, finite for large |x| and branch-free (vectorises):
/// `1/(1+e^-x)` for x >= 0, `e^x/(1+e^x)` below.
#[inline]
pub fn sigmoid<F: Float>(x: F) -> F {
    let e = (-x.abs()).exp();
    let inv = F::ONE / (F::ONE + e);
    if x >= F::ZERO { inv } else { e * inv }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_1e6_relative_of_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.3 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
            x += 0.001237;
        }
        assert!(worst < 1e-6, "max relative error {worst:e}");
        // Near zero, where softmax and silu live, it is as good as libm.
        for i in -2000..2000 {
            let x = i as f32 * 1e-3;
            let rel = ((exp_f32(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            assert!(rel < 3e-7, "x={x}: {rel:e}");
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn lane_sum_and_max() {
        let x: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect();
        assert_eq!(sum_lanes(&x), x.iter().sum::<f64>());
        assert_eq!(max_lanes(&x), 50.0);
        assert_eq!(max_lanes::<f32>(&[]), f32::NEG_INFINITY);
        // Integers in f64: exact whatever the order, tail (37 = 4·8 + 5) included.
        let y: Vec<f64> = (0..37).map(|i| (i % 5) as f64 - 2.0).collect();
        let want: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(dot_lanes(&x, &y), want);
        assert_eq!(dot_lanes::<f32>(&[], &[]), 0.0);
    }

    #[test]
    fn sigmoid_is_accurate_in_both_tails() {
        for x in [-30.0f32, -5.0, -1e-3, 0.0, 2.0, 30.0] {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid(x) as f64;
            assert!((got - want).abs() <= 1e-6 * want, "x={x}: {got} vs {want}");
        }
    }
}
