//! Products with a few outputs, row by row: `y[i, j] = x_i · w_j` as one
//! dot product each, in a fixed order, for the MoE router's logits and the
//! shared expert's gate. A token's values then do not depend on the other
//! tokens in its batch. The `gemm` crate's do: its blocking follows the
//! number of rows, and a routing logit that moved by an ulp with the batch
//! moved the last printed digit of a flow's probability between the flow
//! classified alone (the C API's early verdict) and in a batch.

use rayon::prelude::*;

use super::kernel::Kernel;
use crate::engine::float::dot_lanes;

/// Rows per parallel task.
const ROWS: usize = 64;

/// `x [m, d] · w [n, d]ᵀ` as `[m, n]`, each output a dot product of one row
/// of `x` and one of `w` whose value depends on nothing else.
pub fn row_dots(kernel: Kernel, x: &[f32], m: usize, d: usize, w: &[f32], n: usize) -> Vec<f32> {
    assert!(x.len() == m * d && w.len() == n * d, "row_dots: shapes");
    let mut y = vec![0f32; m * n];
    if n == 0 {
        return y;
    }
    y.par_chunks_mut(ROWS * n)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, o) in out.chunks_exact_mut(n).enumerate() {
                let row = &x[(task * ROWS + i) * d..][..d];
                dots(kernel, row, w, d, o);
            }
        });
    y
}

/// `o[j] = x · w_j` for every row `w_j` of `w` (rows of `d`).
fn dots(kernel: Kernel, x: &[f32], w: &[f32], d: usize, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if kernel.has_avx512f() {
        // SAFETY: the engine runs `kernel` only where the CPU has it.
        return unsafe { dots_avx512(x, w, d, o) };
    }
    let _ = kernel;
    for (o, wj) in o.iter_mut().zip(w.chunks_exact(d)) {
        *o = dot_lanes(x, wj);
    }
}

/// [`dots`] on 16-lane vectors, eight outputs at a time against each
/// loaded chunk of `x` (the tail of `d` past whole chunks under a mask).
///
/// # Safety
/// AVX-512F; `x` of `d`, `w` of `o.len()` rows of `d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(x: &[f32], w: &[f32], d: usize, o: &mut [f32]) {
    let mut j0 = 0;
    while j0 < o.len() {
        let nj = (o.len() - j0).min(8);
        let (w, o) = (&w[j0 * d..][..nj * d], &mut o[j0..j0 + nj]);
        // SAFETY (all): as this function's contract, for these nj rows.
        unsafe {
            match nj {
                1 => dots_of::<1>(x, w, d, o),
                2 => dots_of::<2>(x, w, d, o),
                3 => dots_of::<3>(x, w, d, o),
                4 => dots_of::<4>(x, w, d, o),
                5 => dots_of::<5>(x, w, d, o),
                6 => dots_of::<6>(x, w, d, o),
                7 => dots_of::<7>(x, w, d, o),
                _ => dots_of::<8>(x, w, d, o),
            }
        }
        j0 += nj;
    }
}

/// NJ outputs, their sums in registers.
///
/// # Safety
/// AVX-512F; `x` of `d`, `w` of NJ rows of `d`, `o` of NJ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dots_of<const NJ: usize>(x: &[f32], w: &[f32], d: usize, o: &mut [f32]) {
    use std::arch::x86_64::*;
    const L: usize = 16;
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    // SAFETY: every load is within x's d values or row j's d values of w
    // (the tail under a mask of its d % L lanes).
    unsafe {
        let mut acc = [_mm512_setzero_ps(); NJ];
        let whole = d / L * L;
        for c in (0..whole).step_by(L) {
            let xv = _mm512_loadu_ps(xp.add(c));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(xv, _mm512_loadu_ps(wp.add(j * d + c)), *a);
            }
        }
        if whole < d {
            let mask: __mmask16 = (1u16 << (d - whole)) - 1;
            let xv = _mm512_maskz_loadu_ps(mask, xp.add(whole));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(mask, wp.add(j * d + whole)), *a);
            }
        }
        for (o, &a) in o.iter_mut().zip(&acc) {
            *o = _mm512_reduce_add_ps(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64 dot products, and the same bits for a row whatever the
    /// rows around it: alone, first of many, or last.
    #[test]
    fn rows_do_not_depend_on_their_batch() {
        for (d, n) in [(128, 8), (64, 1), (37, 9), (384, 17)] {
            let m = 150;
            let x: Vec<f32> = (0..m * d)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.7)
                .collect();
            let w: Vec<f32> = (0..n * d)
                .map(|i| ((i * 104_729 % 1000) as f32 / 500.0 - 1.0) * 0.3)
                .collect();
            for kernel in [Kernel::Portable, Kernel::detect()] {
                let all = row_dots(kernel, &x, m, d, &w, n);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..d)
                            .map(|c| x[i * d + c] as f64 * w[j * d + c] as f64)
                            .sum();
                        let got = all[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{got} vs {want}"
                        );
                    }
                }
                for i in [0, 77, m - 1] {
                    let alone = row_dots(kernel, &x[i * d..(i + 1) * d], 1, d, &w, n);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&alone),
                        bits(&all[i * n..(i + 1) * n]),
                        "{kernel:?} d {d} n {n} row {i}"
                    );
                }
            }
        }
    }
}
