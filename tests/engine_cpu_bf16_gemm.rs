//! The bf16 GEMM of the CPU inference engine (`backend::cpu_bf16`), every
//! micro-kernel this CPU runs (AMX, AVX-512 BF16, bf16 widened onto the
//! AVX-512F FMA, and the portable one always), against an f64 reference
//! computed on the bf16-rounded inputs.
//!
//! Tolerance, derived: a bf16 x bf16 product has at most 16 significant bits,
//! so it is exact in f32; the only error is the f32 rounding of the k (+1 for
//! the bias) additions, each at most 2^-24 relative to the running sum, so
//! |y - ref| <= (k + 2) · 2^-24 · sum_i |x_i w_i| (the recursive-summation
//! bound, one spare term). The SwiGLU epilogue adds the propagation of those
//! errors through silu(g)·u and a few f32 roundings of its own.
//!
//! Shapes include m, n, k off the tile sizes (MR 6, NR 64, k-pairs), k long
//! enough for several blocks of k, k = 1,
//! m = 1, a gather of rows, a bias, and products big enough to run in
//! parallel as well as the same products inside a rayon worker (serial).

mod common;
use half::bf16;
use traffic_moe::backend::cpu_bf16::pack::Elem;
use traffic_moe::backend::cpu_bf16::{Kernel, PackedMat, gemm, matmul};

fn round(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| bf16::from_f32(x).to_f64()).collect()
}

/// The f64 product on bf16-rounded inputs and, per element, sum |x_i w_i|.
fn reference(x: &[f64], w: &[f64], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let t = x[i * k + p] * w[j * k + p];
                y[i * n + j] += t;
                mag[i * n + j] += t.abs();
            }
        }
    }
    (y, mag)
}

fn kernels() -> Vec<Kernel> {
    common::bf16_kernels()
}

/// The last two run in several blocks of k (128 pairs each; 550 and 129
/// pairs), with C accumulated across blocks and the bias added once. With
/// k a multiple of 32 the AMX kernel runs on tiles (the rest fall back to
/// AVX-512): one step, rows short of a step, several 256-row blocks, and
/// (40 x 2,100 x 256) a short-k product whose 33 panels (1 MiB of weights
/// for 32) run in two groups of a step of rows against each panel.
const SHAPES: [(usize, usize, usize); 16] = [
    (1, 10, 32),
    (33, 64, 64),
    (70, 130, 512),
    (600, 200, 256),
    (1, 1, 1),
    (1, 64, 128),
    (7, 65, 1),
    (6, 64, 2),
    (13, 100, 37),
    (5, 3, 300),
    (50, 130, 257),
    (97, 200, 128),
    (300, 129, 129),
    (13, 70, 1100),
    (7, 65, 257),
    (40, 2100, 256),
];

fn check_plain(kernel: Kernel, m: usize, n: usize, k: usize, with_bias: bool) {
    let (x, w, b) = (
        common::values(m * k, 1),
        common::values(n * k, 2),
        common::values(n, 3),
    );
    let packed = PackedMat::new(&w, n, k);
    let bias = with_bias.then_some(&b[..]);
    let got = matmul(kernel, &x, None, m, &packed, bias).unwrap();
    assert_eq!(got.len(), m * n);
    let (want, mag) = reference(&round(&x), &round(&w), m, n, k);
    let eps = (-24f64).exp2();
    for (e, (&g, (&r, &a))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
        let r = r + if with_bias { b[e % n] as f64 } else { 0.0 };
        let a = a + if with_bias {
            (b[e % n] as f64).abs()
        } else {
            0.0
        };
        let tol = (k + 2) as f64 * eps * a + 1e-30;
        assert!(
            (g as f64 - r).abs() <= tol,
            "{kernel:?} m {m} n {n} k {k} bias {with_bias}: element {e}: {g} vs {r} (tol {tol:e})"
        );
    }
}

#[test]
fn plain_products_match_the_f64_reference_within_the_summation_bound() {
    for kernel in kernels() {
        for &(m, n, k) in &SHAPES {
            check_plain(kernel, m, n, k, false);
            check_plain(kernel, m, n, k, true);
        }
    }
}

/// The bf16 panels widened onto the f32 FMA (`Kernel::Avx512Fma`) give
/// the portable kernel's bits: both add each pair's odd product, then its
/// even one, each exact in f32 and rounded once into the sum (as
/// `vdpbf16ps` documents), across several blocks of k, with a bias.
#[test]
fn widened_bf16_gives_the_portable_kernels_bits() {
    if !Kernel::Avx512Fma.available() {
        eprintln!("SKIP widened_bf16_gives_the_portable_kernels_bits: this CPU has no AVX-512F");
        return;
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for &(m, n, k) in &SHAPES {
        let (x, w, b) = (
            common::values(m * k, 11),
            common::values(n * k, 12),
            common::values(n, 13),
        );
        let packed = PackedMat::new(&w, n, k);
        for bias in [None, Some(&b[..])] {
            let widened = matmul(Kernel::Avx512Fma, &x, None, m, &packed, bias).unwrap();
            let portable = matmul(Kernel::Portable, &x, None, m, &packed, bias).unwrap();
            assert!(
                bits(&widened) == bits(&portable),
                "m {m} n {n} k {k} bias {}: the widened kernel's sums differ from the portable ones",
                bias.is_some()
            );
        }
    }
}

#[test]
fn products_inside_a_rayon_worker_run_serially_with_the_same_result() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for kernel in kernels() {
        for (m, n, k) in [(300, 129, 129), (300, 129, 256)] {
            let (x, w) = (common::values(m * k, 4), common::values(n * k, 5));
            let packed = PackedMat::new(&w, n, k);
            let outside = matmul(kernel, &x, None, m, &packed, None).unwrap();
            let inside = pool.install(|| matmul(kernel, &x, None, m, &packed, None).unwrap());
            // Each element is one tile's dot product either way: bit-identical.
            assert_eq!(outside, inside, "{kernel:?} m {m} n {n} k {k}");
        }
    }
}

#[test]
fn gathered_rows_equal_the_product_of_the_gathered_matrix() {
    for kernel in kernels() {
        for (rows_x, n, k) in [(40, 70, 33), (40, 70, 64)] {
            let x = common::values(rows_x * k, 6);
            let w = common::values(n * k, 7);
            let idx: Vec<u32> = (0..23).map(|i| (i * 7 % rows_x) as u32).collect();
            let gathered: Vec<f32> = idx
                .iter()
                .flat_map(|&r| x[r as usize * k..][..k].to_vec())
                .collect();
            let packed = PackedMat::new(&w, n, k);
            let a = matmul(kernel, &x, Some(&idx), idx.len(), &packed, None).unwrap();
            let b = matmul(kernel, &gathered, None, idx.len(), &packed, None).unwrap();
            assert_eq!(a, b, "{kernel:?} k {k}");
        }
    }
}

#[test]
fn swiglu_pairs_give_silu_of_gate_times_up() {
    for kernel in kernels() {
        for &(m, f, k) in &[
            (1, 1, 1),
            (7, 33, 19),
            (20, 100, 128),
            (64, 256, 129),
            (45, 96, 256),
        ] {
            let (x, g, u) = (
                common::values(m * k, 8),
                common::values(f * k, 9),
                common::values(f * k, 10),
            );
            let packed = PackedMat::swiglu(&g, &u, f, k);
            let got = matmul(kernel, &x, None, m, &packed, None).unwrap();
            let xr = round(&x);
            let (gr, gmag) = reference(&xr, &round(&g), m, f, k);
            let (ur, umag) = reference(&xr, &round(&u), m, f, k);
            let eps = (-24f64).exp2();
            for e in 0..m * f {
                let (a, b) = (gr[e], ur[e]);
                let sig = 1.0 / (1.0 + (-a).exp());
                let want = a * sig * b;
                let (ea, eb) = (
                    (k + 2) as f64 * eps * gmag[e],
                    (k + 2) as f64 * eps * umag[e],
                );
                // |d silu/dg| <= 1.1; 8 roundings of f32 epilogue arithmetic and e^x (1e-7).
                let tol =
                    1.1 * b.abs() * ea + (a * sig).abs() * eb + 8.0 * eps * want.abs() + 1e-30;
                let got = got[e] as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{kernel:?} m {m} f {f} k {k}: element {e}: {got} vs {want} (tol {tol:e})"
                );
            }
        }
    }
}

#[test]
fn bad_operands_are_errors_not_panics() {
    let w = PackedMat::new(&common::values(8 * 4, 1), 8, 4);
    let x = common::values(3 * 4, 2);
    assert!(
        matmul(Kernel::Portable, &x, None, 4, &w, None).is_err(),
        "too few rows"
    );
    assert!(
        matmul(Kernel::Portable, &x, Some(&[0, 3]), 2, &w, None).is_err(),
        "index past x"
    );
    assert!(
        matmul(Kernel::Portable, &x, Some(&[0]), 2, &w, None).is_err(),
        "too few indices"
    );
    assert!(
        matmul(Kernel::Portable, &x, None, 3, &w, Some(&[0.0; 7])).is_err(),
        "short bias"
    );
    if !Kernel::AmxBf16.available() {
        assert!(
            matmul(Kernel::AmxBf16, &x, None, 3, &w, None).is_err(),
            "the AMX kernel must be refused where the CPU or OS gives no tiles"
        );
    }
    if !Kernel::Avx512Bf16.available() {
        assert!(
            matmul(Kernel::Avx512Bf16, &x, None, 3, &w, None).is_err(),
            "no AVX-512 BF16"
        );
    }
    assert_eq!(
        matmul(Kernel::Portable, &x, None, 0, &w, None).unwrap(),
        Vec::<f32>::new()
    );
}

/// Big enough to run in parallel: plain panels in 22 row blocks with
/// several blocks of k and a bias; SwiGLU pairs in row blocks of at most
/// 512 KiB of x, those of bf16 slots also cut into two panel groups (k
/// 600), or at a short k (127) those of bf16 slots in the plain products'
/// row blocks; bf16 and f32 slots. Each output is one tile's sum over the k
/// blocks in order however the product is cut: bit-identical to the serial
/// product inside a rayon worker.
#[test]
fn products_cut_into_row_blocks_and_panel_groups_equal_the_serial_product() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // k 600: SwiGLU in tall blocks and panel groups; 127: split as plain
    // products (a short k, `split`), with an odd k's padding pair.
    for (m, n, k) in [(2100, 300, 600), (2100, 300, 127)] {
        cut_equals_serial(&pool, m, n, k);
    }
}

fn cut_equals_serial(pool: &rayon::ThreadPool, m: usize, n: usize, k: usize) {
    let (x, w, b) = (
        common::values(m * k, 11),
        common::values(n * k, 12),
        common::values(n, 13),
    );
    for kernel in kernels() {
        for elem in [Elem::Bf16Pair, Elem::F32] {
            let plain = PackedMat::new_as(elem, &w, n, k);
            let swiglu = PackedMat::swiglu_as(elem, &w[..n / 2 * k], &w[n / 2 * k..], n / 2, k);
            for (packed, bias) in [(&plain, Some(&b[..])), (&swiglu, None)] {
                let cut = matmul(kernel, &x, None, m, packed, bias).unwrap();
                let serial = pool.install(|| matmul(kernel, &x, None, m, packed, bias).unwrap());
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&cut) == bits(&serial),
                    "{kernel:?} {elem:?} {:?} k {k}: the cut product differs",
                    packed.layout
                );
            }
        }
    }
}

/// An FFN's hidden passed between its two AMX products as bf16 rows
/// (`swiglu_rows`, `matmul_rows`) gives the bits of the f32 hidden that the
/// down product rounds itself: rows short of a step, several SwiGLU panels.
#[test]
fn bf16_rows_between_the_ffn_products_give_the_same_bits() {
    if !Kernel::AmxBf16.available() {
        eprintln!("SKIP bf16_rows_between_the_ffn_products_give_the_same_bits: no AMX tiles here");
        return;
    }
    let k = Kernel::AmxBf16;
    for (m, d, f) in [(70, 64, 96), (33, 128, 64), (300, 64, 160)] {
        let x = common::values(m * d, 11);
        let (gate, up) = (common::values(f * d, 12), common::values(f * d, 13));
        let down_w = common::values(d * f, 14);
        let pair = PackedMat::swiglu(&gate, &up, f, d);
        let down = PackedMat::new(&down_w, d, f);
        assert!(gemm::rows_between(k, &pair, &down), "{m} x {d} x {f}");
        let h = matmul(k, &x, None, m, &pair, None).unwrap();
        let want = matmul(k, &h, None, m, &down, None).unwrap();
        let rows = gemm::swiglu_rows(k, &x, None, m, &pair, down.kp).unwrap();
        let got = gemm::matmul_rows(k, &rows, &down).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{m} x {d} x {f}: output {i}: {a} vs {b}"
            );
        }
        // A routed expert's: its tokens' rows gathered by index (reversed,
        // every third), into part of a buffer.
        let idx: Vec<u32> = (0..m as u32).rev().step_by(3).collect();
        let g = idx.len();
        let h = matmul(k, &x, Some(&idx), g, &pair, None).unwrap();
        let want = matmul(k, &h, None, g, &down, None).unwrap();
        let rows = gemm::swiglu_rows(k, &x, Some(&idx), g, &pair, down.kp).unwrap();
        let mut out = vec![std::mem::MaybeUninit::new(f32::NAN); g * d + 5];
        gemm::matmul_rows_into(k, &rows, &down, &mut out).unwrap();
        for (i, b) in want.iter().enumerate() {
            // SAFETY: every element was initialised (NaN, then written).
            let a = unsafe { out[i].assume_init() };
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "gathered {m} x {d} x {f}: output {i}"
            );
        }
        // SAFETY: as above.
        assert!(
            unsafe { out[g * d].assume_init() }.is_nan(),
            "wrote past its rows"
        );
    }
}
