//! Dense matrix products through the `gemm` crate (f32 and f64), plus the
//! linear layer built on them. Weights use PyTorch's layout: `w` is
//! `[dout, din]` and `y = x·wᵀ + b`.

use std::any::TypeId;

use crate::backend::cpu_bf16::Kernel;
use crate::backend::cpu_bf16::gemm::Bf16Rows;
use crate::backend::cpu_bf16::pack::{Elem, PackedMat};
use crate::backend::cpu_bf16::strided::{self, Strided};
use crate::engine::OpResult;
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

/// How the training engine multiplies f32 operands.
///
/// - `F32`: exact f32 products on the `gemm` crate (the reference).
/// - `Bf16(kernel)`: mixed precision, as PyTorch's CPU autocast does for
///   `linear`: the operands of the linear layers', experts' and LM head's
///   products rounded to bf16, sums in f32, on the packed engine's
///   `kernel` (AMX tiles where the CPU has them). Weights, gradients and
///   optimizer state stay f32; attention's products, the router's and
///   every other op stay f32 (small products, and routing decisions).
///   f64 operands (the gradient checks) are always exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Products {
    #[default]
    F32,
    Bf16(Kernel),
}

impl Products {
    /// Mixed precision on this CPU's fastest bf16 kernel; `None` where it
    /// has no AVX-512 (the portable kernel would be far slower than f32).
    pub fn bf16() -> Option<Products> {
        match Kernel::detect() {
            Kernel::Portable => None,
            k => Some(Products::Bf16(k)),
        }
    }

    /// Mixed precision on `kernel`, if this CPU runs it (tests pick the
    /// portable kernel, which runs anywhere).
    pub fn bf16_on(kernel: Kernel) -> Option<Products> {
        kernel.available().then_some(Products::Bf16(kernel))
    }

    /// The kernel f32 operands go through, if not the `gemm` crate.
    fn kernel_for<F: Float>(self) -> Option<Kernel> {
        match self {
            Products::Bf16(k) if TypeId::of::<F>() == TypeId::of::<f32>() => Some(k),
            _ => None,
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
    // SAFETY: the caller's contract; exact products cannot fail.
    unsafe { gemm_raw_in(Products::F32, m, n, k, a, b, c, c_rs, accumulate) }
        .expect("exact f32/f64 products do not fail")
}

/// Products this small stay on the `gemm` crate in mixed precision: the
/// per-product packing would cost more than the bf16 rate saves
/// (attention's per-head products, the router's).
const MIXED_MIN: usize = 1 << 18;

/// [`gemm_raw`] with `products`' precision.
///
/// # Safety
/// As [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw_in<F: Float>(
    products: Products,
    m: usize,
    n: usize,
    k: usize,
    a: View<F>,
    b: View<F>,
    c: *mut F,
    c_rs: isize,
    accumulate: bool,
) -> OpResult<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if let Some(kernel) = products.kernel_for::<F>()
        && k > 0
        && m * n * k >= MIXED_MIN
    {
        // SAFETY: F is f32 (`kernel_for`); the caller's contract.
        return unsafe {
            strided::product(
                kernel,
                Elem::Bf16Pair,
                m,
                n,
                k,
                strided_view(a),
                strided_view(b),
                c.cast(),
                c_rs as usize,
                accumulate,
            )
        };
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    unsafe { *c.offset(i as isize * c_rs + j as isize) = F::ZERO };
                }
            }
        }
        return Ok(());
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
    Ok(())
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
    gemm_in(Products::F32, m, n, k, a, ta, b, tb, c, accumulate)
}

/// [`gemm()`] with `products`' precision.
#[allow(clippy::too_many_arguments)]
pub fn gemm_in<F: Float>(
    products: Products,
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
    // SAFETY: c holds m·n elements (checked above).
    unsafe { gemm_views(products, m, n, k, a, ta, b, tb, c.as_mut_ptr(), accumulate) }
}

/// `c (+)= op(a)·op(b)` into `m` rows of `n` at `c`, after checking that
/// both operands are long enough: what [`gemm_in`] and [`product_into`]
/// share.
///
/// # Safety
/// `c` must hold `m · n` elements (readable too when `accumulate`).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_views<F: Float>(
    products: Products,
    m: usize,
    n: usize,
    k: usize,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
    c: *mut F,
    accumulate: bool,
) {
    let (av, bv) = operand_views(m, n, k, a, ta, b, tb);
    // SAFETY: the operands were checked by `operand_views`; c the caller's.
    unsafe { gemm_raw_in(products, m, n, k, av, bv, c, n as isize, accumulate) }
        .expect(MIXED_INFALLIBLE)
}

/// A right operand `op(b)` `[k, n]` used by several products (the LM head's
/// table against each chunk of rows): packed once for mixed precision,
/// kept as the plain slice otherwise.
pub struct Rhs<'a, F> {
    products: Products,
    b: &'a [F],
    tb: bool,
    k: usize,
    n: usize,
    packed: Option<PackedMat>,
}

impl<'a, F: Float> Rhs<'a, F> {
    /// `b` is `[k, n]`, or `[n, k]` if `tb`.
    pub fn new(products: Products, k: usize, n: usize, b: &'a [F], tb: bool) -> Self {
        assert!(b.len() >= k * n, "gemm: operand too short");
        let packed = products
            .kernel_for::<F>()
            .filter(|_| k > 0 && n > 0)
            .map(|kernel| {
                let v = if tb {
                    View::trans(b, k)
                } else {
                    View::rows(b, n)
                };
                // SAFETY: F is f32 (`kernel_for`); b holds k x n, checked above.
                unsafe { strided::pack_rhs(kernel, Elem::Bf16Pair, k, n, strided_view(v)) }
            });
        Rhs {
            products,
            b,
            tb,
            k,
            n,
            packed,
        }
    }
}

impl<F> Drop for Rhs<'_, F> {
    fn drop(&mut self) {
        if let Some(w) = self.packed.take() {
            strided::recycle(w);
        }
    }
}

fn strided_view<F>(v: View<F>) -> Strided {
    Strided {
        ptr: v.ptr.cast(),
        rs: v.rs,
        cs: v.cs,
    }
}

/// [`gemm_in`] against a prepared right operand: `c[m, n] (+)= op(a)·rhs`.
pub fn gemm_rhs<F: Float>(
    m: usize,
    a: &[F],
    ta: bool,
    rhs: &Rhs<F>,
    c: &mut [F],
    accumulate: bool,
) {
    let (n, k) = (rhs.n, rhs.k);
    let (Some(w), Products::Bf16(kernel)) = (&rhs.packed, rhs.products) else {
        return gemm_in(rhs.products, m, n, k, a, ta, rhs.b, rhs.tb, c, accumulate);
    };
    assert!(c.len() >= m * n, "gemm: operand too short");
    let (av, _) = operand_views(m, n, k, a, ta, rhs.b, rhs.tb);
    // SAFETY: F is f32 (the operand was packed); shapes checked above.
    unsafe {
        strided::product_packed(
            kernel,
            m,
            k,
            strided_view(av),
            w,
            c.as_mut_ptr().cast(),
            n,
            accumulate,
        )
    }
    .expect(MIXED_INFALLIBLE)
}

/// Why a mixed-precision product cannot fail: `Products::Bf16` is made only
/// with a kernel this CPU runs ([`Products::bf16`]), and the shapes were
/// checked by the caller.
const MIXED_INFALLIBLE: &str = "a product on a checked kernel and checked shapes";

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

/// A new `[m, n]` matrix `op(a)·op(b)` (as [`gemm_in`]), never zero-filled.
#[allow(clippy::too_many_arguments)]
pub fn product_in<F: Float>(
    products: Products,
    m: usize,
    n: usize,
    k: usize,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
) -> Vec<F> {
    let mut c = super::alloc::uninit(m * n);
    product_into(products, m, n, k, a, ta, b, tb, &mut c);
    // SAFETY: `product_into` wrote all m·n outputs.
    unsafe { super::alloc::assume_init(c) }
}

/// [`product_in`] into a buffer not yet written (`m · n` elements, all
/// written): returns them, written.
#[allow(clippy::too_many_arguments)]
pub fn product_into<'c, F: Float>(
    products: Products,
    m: usize,
    n: usize,
    k: usize,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
    c: &'c mut [std::mem::MaybeUninit<F>],
) -> &'c mut [F] {
    assert_eq!(c.len(), m * n, "gemm: output of the wrong size");
    // SAFETY: c holds m·n elements; without `accumulate` all of them are
    // written (zeros when k = 0) and none read.
    unsafe {
        gemm_views(
            products,
            m,
            n,
            k,
            a,
            ta,
            b,
            tb,
            c.as_mut_ptr().cast(),
            false,
        );
        super::alloc::assume_init_mut(c)
    }
}

/// [`fwd_in`] into a new vector (no zero fill).
pub fn fwd_new_in<F: Float>(
    products: Products,
    x: &[F],
    w: &[F],
    bias: Option<&[F]>,
    t: usize,
    din: usize,
    dout: usize,
) -> Vec<F> {
    let mut y = product_in(products, t, dout, din, x, false, w, true);
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
    fwd_in(Products::F32, x, w, bias, t, din, dout, y)
}

/// [`fwd`] with `products`' precision.
#[allow(clippy::too_many_arguments)]
pub fn fwd_in<F: Float>(
    products: Products,
    x: &[F],
    w: &[F],
    bias: Option<&[F]>,
    t: usize,
    din: usize,
    dout: usize,
    y: &mut [F],
) {
    gemm_in(products, t, dout, din, x, false, w, true, y, false);
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
    bwd_in(Products::F32, x, w, dy, t, din, dout, dx, dw, dbias)
}

/// [`bwd`] with `products`' precision.
#[allow(clippy::too_many_arguments)]
pub fn bwd_in<F: Float>(
    products: Products,
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
        gemm_in(products, t, din, dout, dy, false, w, false, dx, false);
    }
    gemm_in(products, dout, din, t, dy, true, x, false, dw, true);
    if let Some(db) = dbias {
        for row in dy[..t * dout].chunks_exact(dout) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

/// [`product_into`]'s `c [m, n] = a·op(b)` in mixed precision on
/// `kernel` with `a` already rounded (`m` rows of k): the same bits as the
/// product of the f32 rows it was rounded from. `b` is `[k, n]` (or
/// `[n, k]` if `tb`).
pub fn product_rows_into(
    kernel: Kernel,
    a: &Bf16Rows,
    n: usize,
    k: usize,
    b: &[f32],
    tb: bool,
    c: &mut [std::mem::MaybeUninit<f32>],
) {
    assert!(b.len() >= k * n, "gemm: operand too short");
    assert_eq!(c.len(), a.m * n, "gemm: output of the wrong size");
    let bv = if tb {
        View::trans(b, k)
    } else {
        View::rows(b, n)
    };
    // SAFETY: b holds k x n (checked above).
    unsafe { strided::product_rows(kernel, a, k, n, strided_view(bv), c) }.expect(MIXED_INFALLIBLE)
}

/// The operand of a weight gradient `dw [dout, din] += dyᵀ·x` ([`bwd_in`])
/// that a mixed-precision product packs ([`weight_grad_packs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradPacks {
    /// `dy [rows, dout]`, as the panels of `(dyᵀ)ᵀ` (dy wider than x).
    Dy,
    /// `x [rows, din]`.
    X,
}

/// Which operand [`bwd_in`]'s weight gradient packs on the packed kernels,
/// and on which kernel: `None` where it packs neither (exact products, or
/// a product too small). An operand computed just before (SwiGLU's output
/// and gradients) can be packed as it is written instead
/// (`strided::pack_produced`, as `pack_rhs` of its `[rows, ·]` rows) and
/// passed to [`weight_grad_packed`]: the same bits.
pub fn weight_grad_packs<F: Float>(
    products: Products,
    rows: usize,
    din: usize,
    dout: usize,
) -> Option<(Kernel, GradPacks)> {
    let kernel = products.kernel_for::<F>()?;
    if rows == 0 || din == 0 || dout == 0 || dout * din * rows < MIXED_MIN {
        return None;
    }
    // The views `gemm_in(dout, din, rows, dy, true, x, false)` takes.
    let (a, b) = (
        Strided {
            ptr: std::ptr::null(),
            rs: 1,
            cs: dout as isize,
        },
        Strided {
            ptr: std::ptr::null(),
            rs: din as isize,
            cs: 1,
        },
    );
    Some((
        kernel,
        if strided::packs_lhs(a, b, dout, din) {
            GradPacks::Dy
        } else {
            GradPacks::X
        },
    ))
}

/// [`bwd_in`]'s `dw += dyᵀ·x` with the operand [`weight_grad_packs`] named
/// already `packed` on `kernel`; `other` is the other one (x when dy is
/// packed, dy when x is).
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_packed(
    kernel: Kernel,
    packs: GradPacks,
    packed: &PackedMat,
    other: &[f32],
    rows: usize,
    din: usize,
    dout: usize,
    dw: &mut [f32],
) {
    assert!(dw.len() >= dout * din, "gemm: weight gradient too short");
    let width = match packs {
        GradPacks::Dy => din,
        GradPacks::X => dout,
    };
    assert!(other.len() >= rows * width, "gemm: operand too short");
    assert_eq!(
        packed.n,
        din + dout - width,
        "gemm: the packed operand's width"
    );
    let c = dw.as_mut_ptr();
    // SAFETY: the shapes checked above (the packed operand's by the calls).
    unsafe {
        match packs {
            GradPacks::Dy => strided::product_packed_lhs(
                kernel,
                dout,
                din,
                rows,
                packed,
                strided_view(View::rows(other, din)),
                c,
                din,
                true,
            ),
            GradPacks::X => strided::product_packed(
                kernel,
                dout,
                rows,
                strided_view(View::trans(other, dout)),
                packed,
                c,
                din,
                true,
            ),
        }
    }
    .expect(MIXED_INFALLIBLE)
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
        // `product_in` (no zero fill) against `gemm` into zeros, with k = 0 too
        // (all outputs must still be written), and `fwd_new_in` against `fwd`.
        for (m, n, k) in [(7, 5, 9), (3, 4, 0)] {
            let a = seq(m * k, 0.7);
            let b = seq(n * k, 1.3);
            let mut c = vec![0.0; m * n];
            gemm(m, n, k, &a, false, &b, true, &mut c, false);
            assert_eq!(product_in(Products::F32, m, n, k, &a, false, &b, true), c);
            let bias = seq(n, 2.1);
            let mut y = vec![0.0; m * n];
            fwd(&a, &b, Some(&bias), m, k, n, &mut y);
            assert_eq!(fwd_new_in(Products::F32, &a, &b, Some(&bias), m, k, n), y);
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
