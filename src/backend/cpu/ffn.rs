//! The SwiGLU FFN on rows, `y = (silu(x·Wgᵀ) ⊙ x·Wuᵀ)·Wdᵀ` (PyTorch
//! layout, `W [out, in]`): the dense twin's FFN, the MoE layer's shared
//! expert and each routed expert.
//!
//! In mixed precision (`Products::Bf16`) the three weight gradients read
//! SwiGLU's output `h` and its gradients `da`, `du` as bf16 operands that
//! the product packs from them. Here they are packed as they are computed,
//! a block of rows at a time while still in cache (`strided::pack_produced`),
//! instead of written as f32 and read back to round and pack: the same
//! bits, one pass fewer over three `[rows, f]` buffers, and `h` kept for
//! the backward in half the bytes.

use std::mem::MaybeUninit;

use super::matmul::{self, GradPacks, Products};
use super::{alloc, simd, swiglu};
use crate::backend::cpu_bf16::Kernel;
use crate::backend::cpu_bf16::gemm::{Bf16Rows, UnwrittenRows};
use crate::backend::cpu_bf16::pack::{Elem, PackedMat};
use crate::backend::cpu_bf16::strided;
use crate::engine::float::Float;

/// `[w_gate [f, d], w_up [f, d], w_down [d, f]]`.
pub type Weights<'a, F> = [&'a [F]; 3];
/// Their gradients, in the same order (accumulated, `+=`).
pub type Grads<'a, F> = [&'a mut [F]; 3];

/// SwiGLU's output as the backward keeps it.
pub enum Hidden<F> {
    /// `[rows, f]` rows.
    Rows(Vec<F>),
    /// Packed as the down weight's gradient reads it (mixed precision).
    Packed(PackedMat),
}

/// What the backward reads: the gate and up projections, and `h`.
pub struct Saved<F> {
    pub a: Vec<F>,
    pub u: Vec<F>,
    pub h: Hidden<F>,
}

/// `y` (`[rows, d]`, every element written) of `x [rows, d]`; the saved
/// state when `keep` (otherwise the intermediates are freed as soon as they
/// are read, before the down product).
#[allow(clippy::too_many_arguments)]
pub fn fwd<F: Float>(
    products: Products,
    x: &[F],
    w: Weights<F>,
    rows: usize,
    d: usize,
    f: usize,
    keep: bool,
    y: &mut [MaybeUninit<F>],
) -> Option<Saved<F>> {
    let [wg, wu, wd] = w;
    let a = matmul::product_in(products, rows, f, d, x, false, wg, true);
    let u = matmul::product_in(products, rows, f, d, x, false, wu, true);
    if keep
        && let Some((kernel, GradPacks::X)) = matmul::weight_grad_packs::<F>(products, rows, f, d)
    {
        // h never exists as f32 rows: each block of rows is computed,
        // rounded into the down product's bf16 rows and packed for the down
        // weight's gradient.
        let (a32, u32) = (f32s(&a), f32s(&u));
        let mut h_rows = UnwrittenRows::new(kernel, rows, f);
        let writer = h_rows.writer();
        let [hp] = strided::pack_produced(kernel, Elem::Bf16Pair, rows, f, |r, [h]| {
            let span = r.start * f..r.end * f;
            swiglu::fwd_piece(&a32[span.clone()], &u32[span], alloc::as_uninit(h));
            // SAFETY: rows r, inside the buffer, written by this block only.
            unsafe { writer.write(r.start, h) };
        });
        // SAFETY: `pack_produced` ran every block of rows.
        let h_rows = unsafe { h_rows.assume_written() };
        matmul::product_rows_into(kernel, &h_rows, d, f, f32s(wd), true, f32s_uninit(y));
        return Some(Saved {
            a,
            u,
            h: Hidden::Packed(hp),
        });
    }
    let mut h = alloc::uninit(rows * f);
    swiglu::fwd_into(&a, &u, &mut h);
    // SAFETY: every element of h written above.
    let h = unsafe { alloc::assume_init(h) };
    let kept = keep.then_some((a, u));
    matmul::product_into(products, rows, d, f, &h, false, wd, true, y);
    kept.map(|(a, u)| Saved {
        a,
        u,
        h: Hidden::Rows(h),
    })
}

/// Backward of [`fwd`]: `dx` written (all of it), the weights' gradients
/// accumulated; the products in `matmul::bwd_in`'s order (input gradient,
/// then weight).
#[allow(clippy::too_many_arguments)]
pub fn bwd<F: Float>(
    products: Products,
    x: &[F],
    w: Weights<F>,
    s: &Saved<F>,
    dy: &[F],
    rows: usize,
    d: usize,
    f: usize,
    dx: &mut [MaybeUninit<F>],
    g: Grads<F>,
) {
    let [wg, wu, wd] = w;
    let [dwg, dwu, dwd] = g;
    let mut dh_buf = alloc::uninit(rows * f);
    let dh = matmul::product_into(products, rows, f, d, dy, false, wd, false, &mut dh_buf);
    match &s.h {
        Hidden::Rows(h) => matmul::bwd_in(products, h, wd, dy, rows, f, d, None, dwd, None),
        Hidden::Packed(hp) => {
            let (kernel, _) = matmul::weight_grad_packs::<F>(products, rows, f, d)
                .expect("h was packed for this product");
            matmul::weight_grad_packed(
                kernel,
                GradPacks::X,
                hp,
                f32s(dy),
                rows,
                f,
                d,
                f32s_mut(dwd),
            );
        }
    }
    let [ga, gu] = swiglu_grads(products, s, dh, rows, d, f);
    let dx = ga.input_grad(products, wg, rows, d, f, dx);
    ga.weight_grad(products, x, wg, rows, d, f, dwg);
    let mut dx2 = alloc::uninit(rows * d);
    let dx2 = gu.input_grad(products, wu, rows, d, f, &mut dx2);
    gu.weight_grad(products, x, wu, rows, d, f, dwu);
    simd::add_into(dx, dx2);
    ga.recycle();
    gu.recycle();
}

/// SwiGLU's gradient with respect to the gate or up projection (`da`,
/// `du`, `[rows, f]`), as the two products that read it take it.
enum Grad<F> {
    /// f32 rows.
    Rows(Vec<F>),
    /// Mixed precision: bf16 rows for the input gradient, packed for the
    /// weight's (never f32 rows).
    Packed {
        kernel: Kernel,
        rows: Bf16Rows,
        packed: PackedMat,
    },
}

/// `[da, du]` from `dh`: packed as they are computed where the weight
/// gradients pack them (`weight_grad_packs`: dy), f32 rows otherwise.
fn swiglu_grads<F: Float>(
    products: Products,
    s: &Saved<F>,
    dh: &[F],
    rows: usize,
    d: usize,
    f: usize,
) -> [Grad<F>; 2] {
    let Some((kernel, GradPacks::Dy)) = matmul::weight_grad_packs::<F>(products, rows, d, f) else {
        let (mut da, mut du) = (alloc::uninit(rows * f), alloc::uninit(rows * f));
        swiglu::bwd_into(&s.a, &s.u, dh, &mut da, &mut du);
        // SAFETY: `bwd_into` wrote all of both.
        return unsafe { [da, du].map(|g| Grad::Rows(alloc::assume_init(g))) };
    };
    // Each block of rows computed, rounded into the input gradient's bf16
    // rows and packed for the weight's gradient.
    let (a, u, dh) = (f32s(&s.a), f32s(&s.u), f32s(dh));
    let mut bf16_rows = [(); 2].map(|_| UnwrittenRows::new(kernel, rows, f));
    let [wa, wu] = bf16_rows.each_mut().map(|r| r.writer());
    let packed = strided::pack_produced(kernel, Elem::Bf16Pair, rows, f, |r, [da, du]| {
        let span = r.start * f..r.end * f;
        swiglu::bwd_piece(
            &a[span.clone()],
            &u[span.clone()],
            &dh[span],
            alloc::as_uninit(da),
            alloc::as_uninit(du),
        );
        // SAFETY: rows r, inside the buffers, written by this block only.
        unsafe {
            wa.write(r.start, da);
            wu.write(r.start, du);
        }
    });
    let mut packed = packed.into_iter();
    // SAFETY: `pack_produced` ran every block of rows.
    bf16_rows.map(|r| Grad::Packed {
        kernel,
        rows: unsafe { r.assume_written() },
        packed: packed.next().expect("two packed gradients"),
    })
}

impl<F: Float> Grad<F> {
    /// `dx = g · w` (`w [f, d]`) into `dx` (all of it written).
    fn input_grad<'c>(
        &self,
        products: Products,
        w: &[F],
        rows: usize,
        d: usize,
        f: usize,
        dx: &'c mut [MaybeUninit<F>],
    ) -> &'c mut [F] {
        match self {
            Grad::Rows(g) => matmul::product_into(products, rows, d, f, g, false, w, false, dx),
            Grad::Packed {
                kernel, rows: r, ..
            } => {
                matmul::product_rows_into(*kernel, r, d, f, f32s(w), false, f32s_uninit(dx));
                // SAFETY: written in full just above.
                unsafe { alloc::assume_init_mut(dx) }
            }
        }
    }

    /// `dw += gᵀ · x`, as `matmul::bwd_in`.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad(
        &self,
        products: Products,
        x: &[F],
        w: &[F],
        rows: usize,
        d: usize,
        f: usize,
        dw: &mut [F],
    ) {
        match self {
            Grad::Rows(g) => matmul::bwd_in(products, x, w, g, rows, d, f, None, dw, None),
            Grad::Packed { kernel, packed, .. } => matmul::weight_grad_packed(
                *kernel,
                GradPacks::Dy,
                packed,
                f32s(x),
                rows,
                d,
                f,
                f32s_mut(dw),
            ),
        }
    }

    /// Returns a packed gradient's storage to this thread's spares.
    fn recycle(self) {
        if let Grad::Packed { packed, .. } = self {
            strided::recycle(packed);
        }
    }
}

/// `s` as f32: the packed kernels' operands, which only f32 reaches.
fn f32s<F: Float>(s: &[F]) -> &[f32] {
    simd::as_f32(s).expect("mixed precision is f32")
}

fn f32s_mut<F: Float>(s: &mut [F]) -> &mut [f32] {
    simd::as_f32_mut(s).expect("mixed precision is f32")
}

fn f32s_uninit<F: Float>(s: &mut [MaybeUninit<F>]) -> &mut [MaybeUninit<f32>] {
    simd::as_f32_uninit(s).expect("mixed precision is f32")
}
