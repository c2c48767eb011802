//! Dense matrix products through the `gemm` crate (f32 and f64), plus the
//! linear layer built on them. Weights use PyTorch's layout: `w` is
//! `[dout, din]` and `y = x·wᵀ + b`.

use crate::engine::float::Float;
use gemm::Parallelism;

/// Row-major strided view of a matrix operand.
#[derive(Clone, Copy)]
pub struct View<F> {
    pub ptr: *const F,
    /// Stride between rows.
    pub rs: isize,
    /// Stride between columns.
    pub cs: isize,
}

impl<F> View<F> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(s: &[F], cols: usize) -> Self {
        View {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn trans(s: &[F], cols: usize) -> Self {
        View {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// Threads for one product: none inside a rayon worker (the caller already
/// parallelises) or for small products, all otherwise.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    if rayon::current_thread_index().is_some() || m * n * k < 32 * 32 * 32 {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

/// `c[m,n] (+)= a[m,k]·b[k,n]`, c row-major with row stride `c_rs`.
///
/// # Safety
/// `a` and `b` must point at matrices of the stated shapes and strides that
/// stay inside live allocations; `c` must hold `m` rows of stride `c_rs`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: View<F>,
    b: View<F>,
    c: *mut F,
    c_rs: isize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    unsafe { *c.offset(i as isize * c_rs + j as isize) = F::ZERO };
                }
            }
        }
        return;
    }
    // gemm: dst = alpha·dst + beta·lhs·rhs (alpha and beta swapped vs BLAS).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            F::ONE,
            F::ONE,
            false,
            false,
            false,
            parallelism(m, n, k),
        )
    }
}

/// Safe wrapper: `c[m,n] (+)= op(a)·op(b)` where `ta`/`tb` say whether the
/// row-major operand is transposed. `a` is `[m,k]` (or `[k,m]` if `ta`),
/// `b` is `[k,n]` (or `[n,k]` if `tb`).
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
    c: &mut [F],
    accumulate: bool,
) {
    assert!(c.len() >= m * n, "gemm: operand too short");
    let (av, bv) = operand_views(m, n, k, a, ta, b, tb);
    unsafe { gemm_raw(m, n, k, av, bv, c.as_mut_ptr(), n as isize, accumulate) }
}

/// The views of `op(a)` `[m, k]` and `op(b)` `[k, n]` (see [`gemm`]), after
/// checking both operands are long enough.
#[allow(clippy::too_many_arguments)]
fn operand_views<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
) -> (View<F>, View<F>) {
    assert!(
        a.len() >= m * k && b.len() >= k * n,
        "gemm: operand too short"
    );
    let av = if ta {
        View::trans(a, m)
    } else {
        View::rows(a, k)
    };
    let bv = if tb {
        View::trans(b, k)
    } else {
        View::rows(b, n)
    };
    (av, bv)
}

/// A new `[m, n]` matrix `op(a)·op(b)` (as [`gemm`]), never zero-filled.
#[allow(clippy::too_many_arguments)]
pub fn product<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
) -> Vec<F> {
    let (av, bv) = operand_views(m, n, k, a, ta, b, tb);
    // SAFETY: without `accumulate`, gemm_raw writes all m·n outputs (zeros
    // when k = 0) and reads none of them; the operands were checked above.
    unsafe { super::alloc::written_by(m * n, |c| gemm_raw(m, n, k, av, bv, c, n as isize, false)) }
}

/// [`fwd`] into a new vector (no zero fill).
pub fn fwd_new<F: Float>(
    x: &[F],
    w: &[F],
    bias: Option<&[F]>,
    t: usize,
    din: usize,
    dout: usize,
) -> Vec<F> {
    let mut y = product(t, dout, din, x, false, w, true);
    if let Some(b) = bias {
        add_bias(&mut y, b, dout);
    }
    y
}

fn add_bias<F: Float>(y: &mut [F], b: &[F], dout: usize) {
    for row in y.chunks_exact_mut(dout) {
        for (v, &bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

/// Linear forward: `y[t,dout] = x[t,din]·wᵀ + b`.
pub fn fwd<F: Float>(
    x: &[F],
    w: &[F],
    bias: Option<&[F]>,
    t: usize,
    din: usize,
    dout: usize,
    y: &mut [F],
) {
    gemm(t, dout, din, x, false, w, true, y, false);
    if let Some(b) = bias {
        add_bias(&mut y[..t * dout], b, dout);
    }
}

/// Linear backward: `dx = dy·w` (=), `dw += dyᵀ·x`, `dbias += colsum(dy)`.
#[allow(clippy::too_many_arguments)]
pub fn bwd<F: Float>(
    x: &[F],
    w: &[F],
    dy: &[F],
    t: usize,
    din: usize,
    dout: usize,
    dx: Option<&mut [F]>,
    dw: &mut [F],
    dbias: Option<&mut [F]>,
) {
    if let Some(dx) = dx {
        gemm(t, din, dout, dy, false, w, false, dx, false);
    }
    gemm(dout, din, t, dy, true, x, false, dw, true);
    if let Some(db) = dbias {
        for row in dy[..t * dout].chunks_exact(dout) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn seq(n: usize, s: f64) -> Vec<f64> {
        (0..n).map(|i| (i as f64 * s).sin()).collect()
    }

    #[test]
    fn gemm_matches_naive_in_all_transpositions() {
        let (m, n, k) = (7, 5, 9);
        let a = seq(m * k, 0.7);
        let b = seq(k * n, 1.3);
        let want = naive(&a, &b, m, n, k);
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut c = vec![0.0; m * n];
            let aa = if ta { &at } else { &a };
            let bb = if tb { &bt } else { &b };
            gemm(m, n, k, aa, ta, bb, tb, &mut c, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12, "ta={ta} tb={tb}");
            }
        }
    }

    #[test]
    fn new_matrix_forms_equal_the_in_place_ones() {
        // `product` (no zero fill) against `gemm` into zeros, with k = 0 too
        // (all outputs must still be written), and `fwd_new` against `fwd`.
        for (m, n, k) in [(7, 5, 9), (3, 4, 0)] {
            let a = seq(m * k, 0.7);
            let b = seq(n * k, 1.3);
            let mut c = vec![0.0; m * n];
            gemm(m, n, k, &a, false, &b, true, &mut c, false);
            assert_eq!(product(m, n, k, &a, false, &b, true), c);
            let bias = seq(n, 2.1);
            let mut y = vec![0.0; m * n];
            fwd(&a, &b, Some(&bias), m, k, n, &mut y);
            assert_eq!(fwd_new(&a, &b, Some(&bias), m, k, n), y);
        }
    }

    #[test]
    fn linear_backward_matches_finite_differences() {
        let (t, din, dout) = (3, 4, 5);
        let x = seq(t * din, 0.3);
        let w = seq(dout * din, 0.9);
        let b = seq(dout, 2.1);
        let dy = seq(t * dout, 1.7);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; t * dout];
            fwd(x, w, Some(b), t, din, dout, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut dx = vec![0.0; t * din];
        let mut dw = vec![0.0; dout * din];
        let mut db = vec![0.0; dout];
        bwd(
            &x,
            &w,
            &dy,
            t,
            din,
            dout,
            Some(&mut dx),
            &mut dw,
            Some(&mut db),
        );
        let eps = 1e-6;
        for i in 0..x.len() {
            let (mut p, mut q) = (x.clone(), x.clone());
            p[i] += eps;
            q[i] -= eps;
            let fd = (loss(&p, &w, &b) - loss(&q, &w, &b)) / (2.0 * eps);
            assert!((fd - dx[i]).abs() < 1e-7);
        }
        for i in 0..w.len() {
            let (mut p, mut q) = (w.clone(), w.clone());
            p[i] += eps;
            q[i] -= eps;
            let fd = (loss(&x, &p, &b) - loss(&x, &q, &b)) / (2.0 * eps);
            assert!((fd - dw[i]).abs() < 1e-7);
        }
        for i in 0..b.len() {
            let (mut p, mut q) = (b.clone(), b.clone());
            p[i] += eps;
            q[i] -= eps;
            let fd = (loss(&x, &w, &p) - loss(&x, &w, &q)) / (2.0 * eps);
            assert!((fd - db[i]).abs() < 1e-7);
        }
    }
}
