//! Test helpers: deterministic inputs, finite-difference gradient checks,
//! and running a closure on a pool of a given size.

/// Deterministic pseudo-random values in [-1, 1).
pub fn vals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Central-difference check of `analytic` = d f / d x at `x`.
pub fn check_grad(x: &[f64], analytic: &[f64], f: impl Fn(&[f64]) -> f64, what: &str) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let eps = 1e-6;
    let mut p = x.to_vec();
    for i in 0..x.len() {
        p[i] = x[i] + eps;
        let fp = f(&p);
        p[i] = x[i] - eps;
        let fm = f(&p);
        p[i] = x[i];
        let fd = (fp - fm) / (2.0 * eps);
        let tol = 1e-6 + 1e-5 * fd.abs().max(analytic[i].abs());
        assert!(
            (fd - analytic[i]).abs() <= tol,
            "{what}[{i}]: finite difference {fd} vs analytic {}",
            analytic[i]
        );
    }
}

/// `sum(a * b)`: turns an output into a scalar loss with upstream grad `b`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `f` run inside a rayon pool of `threads` threads: the same sums on one
/// thread or two is how the ops' fixed orders are tested.
pub fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
