//! AdamW update (decoupled weight decay, bias-corrected moments).

/// One step on a parameter slice with the gradient times `grad_scale`
/// (global-norm clipping's factor, 1 when the norm is within bounds, as
/// cuda/adamw.cu's `clip`), rounded to f32 as a separate scaling pass would
/// store it; `step` is 1-based. Elementwise, with no fused multiply-adds:
/// the 16-lane AVX-512 build (chosen at run time) and the plain one give the
/// same bits.
#[allow(clippy::too_many_arguments)]
pub fn step(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: u32,
    grad_scale: f32,
) {
    let h = Hyper::new(lr, beta1, beta2, eps, weight_decay, step, grad_scale);
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { step_avx512(p, g, m, v, &h) };
        return;
    }
    step_loop(p, g, m, v, &h);
}

/// A step's constants (`bc1`, `bc2`: the bias corrections; `grad_scale`:
/// the clipping factor, 1 when the norm is within bounds).
struct Hyper {
    lr: f32,
    grad_scale: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
}

impl Hyper {
    fn new(
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        step: u32,
        grad_scale: f32,
    ) -> Hyper {
        Hyper {
            lr,
            grad_scale,
            beta1,
            beta2,
            eps,
            weight_decay,
            bc1: bias_correction(beta1, step),
            bc2: bias_correction(beta2, step),
        }
    }
}

/// `1 - beta^step`, computed in f64 as PyTorch's AdamW does (Python
/// floats) and rounded once: in f32, `1 - 0.999^2` cancels to a relative
/// error of 2e-5, which moved the first steps' updates by up to 7e-6
/// (tools/train_reference.py). cuda/adamw.cu computes it the same way.
pub fn bias_correction(beta: f32, step: u32) -> f32 {
    (1.0 - (beta as f64).powi(step as i32)) as f32
}

#[inline(always)]
fn step_loop(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper) {
    assert!(
        g.len() == p.len() && m.len() == p.len() && v.len() == p.len(),
        "adamw: parameter, gradient and moments differ in length"
    );
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
        let g = g * h.grad_scale;
        *m = h.beta1 * *m + (1.0 - h.beta1) * g;
        *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
        let mh = *m / h.bc1;
        let vh = *v / h.bc2;
        *p -= h.lr * (mh / (vh.sqrt() + h.eps) + h.weight_decay * *p);
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn step_avx512(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper) {
    step_loop(p, g, m, v, h);
}

/// Global L2 norm of several gradient slices (f64 accumulation).
pub fn grad_norm(grads: &[&[f32]]) -> f32 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt() as f32
}

/// `sum x²` in f64, in eight interleaved partial sums (lane `i % 8`) added
/// pairwise at the end: a fixed order, so the same bits on every run and
/// CPU, and 8 f64 lanes wide instead of one dependent add per value (the
/// global gradient norm of the small config's 64 M parameters).
pub fn sum_squares(x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { sum_squares_avx512(x) };
    }
    sum_squares_loop(x)
}

#[inline(always)]
fn sum_squares_loop(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v as f64 * v as f64;
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += v as f64 * v as f64;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_squares_avx512(x: &[f32]) -> f64 {
    sum_squares_loop(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_in_gradient_sign() {
        let mut p = [1.0f32, -2.0];
        let g = [0.5f32, -3.0];
        let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
        step(
            &mut p, &g, &mut m, &mut v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1, 1.0,
        );
        // bias-corrected first step is lr * sign(g)
        assert!((p[0] - 0.9).abs() < 1e-5 && (p[1] + 1.9).abs() < 1e-5);
        let mut q = [1.0f32];
        step(
            &mut q,
            &[0.0],
            &mut [0.0],
            &mut [0.0],
            0.1,
            0.9,
            0.999,
            1e-8,
            0.5,
            1,
            1.0,
        );
        assert!((q[0] - 0.95).abs() < 1e-6, "decoupled decay");
        assert!((grad_norm(&[&[3.0], &[4.0]]) - 5.0).abs() < 1e-6);
    }

    /// The dispatched step against the plain loop, bit for bit, over a
    /// length with a tail and values of every sign and scale.
    #[test]
    fn dispatched_step_matches_the_plain_loop_bit_for_bit() {
        let n = 1037;
        let val = |i: usize, s: f32| ((i * 7919 % 2003) as f32 - 1001.0) * s;
        let g: Vec<f32> = (0..n).map(|i| val(i, 1e-3)).collect();
        let p0: Vec<f32> = (0..n).map(|i| val(i + 5, 2e-3)).collect();
        let m0: Vec<f32> = (0..n).map(|i| val(i + 9, 1e-4)).collect();
        let v0: Vec<f32> = (0..n).map(|i| val(i + 13, 1e-6).abs()).collect();
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        // black_box: the same run-time powi on both sides (a constant-folded
        // one may round differently).
        let k = std::hint::black_box(7);
        step(
            &mut p, &g, &mut m, &mut v, 1e-3, 0.9, 0.999, 1e-8, 0.01, k, 1.0,
        );
        let (mut pw, mut mw, mut vw) = (p0.clone(), m0, v0);
        let h = Hyper::new(1e-3, 0.9, 0.999, 1e-8, 0.01, k, 1.0);
        step_loop(&mut pw, &g, &mut mw, &mut vw, &h);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p), bits(&pw));
        assert_eq!(bits(&m), bits(&mw));
        assert_eq!(bits(&v), bits(&vw));
        assert!(
            p.iter().zip(&p0).any(|(a, b)| a != b),
            "the step moved nothing"
        );
    }

    #[test]
    fn sum_of_squares_in_lanes_is_the_plain_sum_to_rounding() {
        for n in [0, 1, 7, 8, 9, 1000, 4099] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.37)
                .collect();
            let plain: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let lanes = sum_squares(&x);
            assert!(
                (lanes - plain).abs() <= 1e-12 * plain.max(1.0),
                "n {n}: {lanes} vs {plain}"
            );
            assert_eq!(
                lanes.to_bits(),
                sum_squares_loop(&x).to_bits(),
                "n {n}: dispatch"
            );
        }
    }
}
