//! f32 weights on the packed CPU inference engine (`backend::cpu_bf16` with
//! `Elem::F32` panels): what `--precision f32` runs on a CPU with AVX-512F.
//! The GEMM against an f64 reference, and the whole micro classifier against
//! the f32 reference engine.
//!
//! Tolerance, derived: the products are f32 multiply-adds of f32 inputs, so
//! the only error is the rounding of the k (+1 for the bias) additions, at
//! most 2^-24 relative to the running sum each: |y - ref| <= (k + 2) · 2^-24
//! · sum_i |x_i w_i| (a fused multiply-add rounds once, which only tightens
//! it). The classifier chains 10 products, each off by at most about
//! 130 · 2^-24 ≈ 8e-6 of its scale (k <= 128 here) against the reference
//! engine's own summation order; letting each add its worst case, twice
//! (ours and the reference's), gives under 2e-4: each logit must be within
//! 2e-4 of its row's largest magnitude, and routing must be identical (the
//! margin weights of tests/common give every token clear top-k margins).

mod common;
use traffic_moe::backend::cpu_bf16::pack::Elem;
use traffic_moe::backend::cpu_bf16::{Bf16Params, CpuBf16, Kernel, PackedMat, matmul};
use traffic_moe::engine::{Device, Precision};
use traffic_moe::eval::predict::{Loaded, Weights, class_logits};
use traffic_moe::model::{FfnKind, Inputs};

/// `y = x·wᵀ` in f64 and, per element, sum |x_i w_i|.
fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let t = x[i * k + p] as f64 * w[j * k + p] as f64;
                y[i * n + j] += t;
                mag[i * n + j] += t.abs();
            }
        }
    }
    (y, mag)
}

fn kernels() -> Vec<Kernel> {
    let mut ks = vec![Kernel::Portable];
    match Kernel::detect_f32() {
        Some(k) => ks.push(k),
        None => eprintln!("this CPU has no AVX-512F: only the portable kernel is tested"),
    }
    ks
}

const EPS: f64 = 5.960_464_477_539_063e-8; // 2^-24

#[test]
fn f32_panels_match_the_f64_reference_within_the_summation_bound() {
    let shapes = [
        (1, 1, 1),
        (7, 65, 1),
        (13, 100, 37),
        (5, 3, 300),
        (50, 130, 257),
        (300, 129, 129),
        // Several blocks of k (128 slots each), C accumulated, bias once.
        (11, 70, 600),
        (3, 5, 129),
    ];
    for kernel in kernels() {
        for &(m, n, k) in &shapes {
            let (x, w, b) = (
                common::values(m * k, 1),
                common::values(n * k, 2),
                common::values(n, 3),
            );
            let packed = PackedMat::new_as(Elem::F32, &w, n, k);
            assert_eq!(packed.kp, k);
            let got = matmul(kernel, &x, None, m, &packed, Some(&b)).unwrap();
            let (want, mag) = reference(&x, &w, m, n, k);
            for (e, (&g, (&r, &a))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
                let bias = b[e % n] as f64;
                let tol = (k + 2) as f64 * EPS * (a + bias.abs()) + 1e-30;
                assert!(
                    (g as f64 - (r + bias)).abs() <= tol,
                    "{kernel:?} m {m} n {n} k {k}: element {e}: {g} vs {} (tol {tol:e})",
                    r + bias
                );
            }
        }
    }
}

#[test]
fn f32_swiglu_panels_and_gathered_rows() {
    for kernel in kernels() {
        let (m, f, k) = (23, 100, 67);
        let (x, g, u) = (
            common::values(40 * k, 4),
            common::values(f * k, 5),
            common::values(f * k, 6),
        );
        let idx: Vec<u32> = (0..m).map(|i| (i * 7 % 40) as u32).collect();
        let gathered: Vec<f32> = idx
            .iter()
            .flat_map(|&r| x[r as usize * k..][..k].to_vec())
            .collect();
        let packed = PackedMat::swiglu_as(Elem::F32, &g, &u, f, k);
        let got = matmul(kernel, &x, Some(&idx), m, &packed, None).unwrap();
        let plain = matmul(kernel, &gathered, None, m, &packed, None).unwrap();
        assert_eq!(
            got, plain,
            "{kernel:?}: a gather is the gathered matrix's product"
        );
        let (gr, gmag) = reference(&gathered, &g, m, f, k);
        let (ur, umag) = reference(&gathered, &u, m, f, k);
        for e in 0..m * f {
            let (gv, uv) = (gr[e], ur[e]);
            let want = gv / (1.0 + (-gv).exp()) * uv;
            // silu'(g) <= 1.1, so the gate's error carries at most 1.1·|u|;
            // the up's carries |silu(g)| <= |g| + 0.3; plus a few roundings.
            let tol =
                (k + 2) as f64 * EPS * (1.1 * uv.abs() * gmag[e] + (gv.abs() + 0.3) * umag[e])
                    + 1e-6 * want.abs()
                    + 1e-12;
            assert!(
                (got[e] as f64 - want).abs() <= tol,
                "{kernel:?}: element {e}: {} vs {want} (tol {tol:e})",
                got[e]
            );
        }
    }
}

const B: usize = 10;
const S: usize = 32;
const CLASSES: usize = 3;

fn check_model(ffn: FfnKind) {
    let cfg = common::micro_config(ffn, CLASSES);
    let (model, p) = common::margin_params(&cfg, 0.05);
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let ids: Vec<u32> = (0..B * S)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 512) as u32
        })
        .collect();
    let mask: Vec<u8> = (0..B * S)
        .map(|i| u8::from(i % S < S - (i / S) * 2))
        .collect();
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: B,
        s: S,
    };
    let (want, want_routing) = class_logits(&model, Weights::Cpu(&p), &x, true).unwrap();
    let store = Bf16Params::pack_as(Elem::F32, &p);
    for kernel in kernels() {
        let engine = CpuBf16::with_kernel(kernel).unwrap();
        let ctx = format!("{ffn:?} on {}", kernel.name());
        let (got, routing) = class_logits(&model, Weights::CpuBf16(&engine, &store), &x, true)
            .unwrap_or_else(|e| panic!("{ctx}: {e:#}"));
        assert_eq!(routing, want_routing, "{ctx}: routing differs");
        assert_eq!(got.len(), want.len(), "{ctx}");
        for (r, (g, w)) in got.chunks(CLASSES).zip(want.chunks(CLASSES)).enumerate() {
            let tol = 2e-4 * w.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in g.iter().zip(w) {
                assert!(
                    (a - b).abs() <= tol,
                    "{ctx}: row {r}: {g:?} vs reference {w:?}"
                );
            }
        }
    }
}

#[test]
fn moe_classifier_on_f32_panels_agrees_with_the_reference_engine() {
    check_model(FfnKind::Moe);
}

#[test]
fn dense_classifier_on_f32_panels_agrees_with_the_reference_engine() {
    check_model(FfnKind::Dense);
}

#[test]
fn precision_f32_loads_packed_panels_where_the_cpu_has_avx512f() {
    let cfg = common::micro_config(FfnKind::Moe, CLASSES);
    let (_, p) = common::margin_params(&cfg, 0.05);
    let loaded = Loaded::with_precision(Device::Cpu, p, Precision::F32).unwrap();
    match (Kernel::detect_f32(), &loaded) {
        (Some(k), Loaded::CpuBf16(engine, _)) => assert_eq!(engine.kernel(), k),
        (None, Loaded::Cpu(_)) => {}
        (k, _) => panic!("with kernel {k:?}, f32 loaded on the wrong engine"),
    }
}
