//! Mixed-precision training on the CPU engine (`--precision bf16` with
//! `pretrain`, `finetune`, `bench model --train`): the linear layers',
//! experts' and LM head's products on bf16 operands with f32 sums
//! (`backend::cpu::matmul::Products`), every kernel this CPU runs (the
//! portable one everywhere, AVX-512 BF16 and AMX where present).
//!
//! - The strided products (every transposition, accumulation, a row stride,
//!   k not a multiple of the AMX tile, the transposed weight-gradient path)
//!   against an f64 product of the operands rounded to bf16: what is left is
//!   f32 summation, bounded by k · 2^-24 of the sum of |terms|. Skipping the
//!   rounding of either operand, or a wrong transposition, breaks the bound
//!   by orders of magnitude (bf16 is 2^-9 relative).
//! - The LM head and a whole micro model's loss and gradients against f32.
//!   Tolerances from bf16: one product is off by at most 2 · 2^-9 ≈ 0.4 %
//!   of its scale; the micro model chains 2 blocks of 4 to 5 products and
//!   the head, so gradients are asked to agree to 3 % (relative L2 of each
//!   parameter's gradient), the loss to 1 %.
//! - Training in bf16 lowers the loss like f32 training, and reruns bit for
//!   bit.

mod common;
use traffic_moe::autograd::{ParamStore, Tape};
use traffic_moe::backend::cpu::matmul::{self, Products, Rhs};
use traffic_moe::backend::cpu::{Cpu, lm_head};
use traffic_moe::backend::cpu_bf16::Kernel;
use traffic_moe::backend::cpu_bf16::pack::Elem;
use traffic_moe::backend::cpu_bf16::strided::{self, Strided};
use traffic_moe::engine::{Device, Param, Precision};
use traffic_moe::model::{FfnKind, Model};
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

/// Every bf16 kernel this CPU runs (the portable one always).
fn kernels() -> Vec<Kernel> {
    common::bf16_kernels()
}

fn bf16(x: f32) -> f64 {
    f64::from(half::bf16::from_f32(x).to_f32())
}

/// `c (+)= op(a)·op(b)` through `strided::product` against the f64 product
/// of the bf16-rounded operands.
#[allow(clippy::too_many_arguments)]
fn check_product(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    acc: bool,
    pad: usize,
) {
    let ctx = format!(
        "{} m {m} n {n} k {k} ta {ta} tb {tb} acc {acc} pad {pad}",
        kernel.name()
    );
    let a = common::values(m * k, 1 + m as u64);
    let b = common::values(k * n, 2 + n as u64);
    let a_at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
    let b_at = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
    let c_rs = n + pad;
    let c0 = common::values(m * c_rs, 3);
    let mut c = c0.clone();
    let view = |s: &[f32], t: bool, rows: usize, cols: usize| Strided {
        ptr: s.as_ptr(),
        rs: if t { 1 } else { cols as isize },
        cs: if t { rows as isize } else { 1 },
    };
    // SAFETY: a is [m, k] (or [k, m]), b [k, n] (or [n, k]), c m rows of c_rs.
    unsafe {
        strided::product(
            kernel,
            Elem::Bf16Pair,
            m,
            n,
            k,
            view(&a, ta, m, k),
            view(&b, tb, k, n),
            c.as_mut_ptr(),
            c_rs,
            acc,
        )
    }
    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut mag) = (0f64, 0f64);
            for p in 0..k {
                let t = bf16(a_at(i, p)) * bf16(b_at(p, j));
                want += t;
                mag += t.abs();
            }
            let base = if acc {
                f64::from(c0[i * c_rs + j])
            } else {
                0.0
            };
            let got = f64::from(c[i * c_rs + j]);
            let bound = (k + 2) as f64 * 2f64.powi(-24) * (mag + base.abs()) + 1e-30;
            assert!(
                (got - (base + want)).abs() <= bound,
                "{ctx}: c[{i},{j}] = {got}, want {} (bound {bound})",
                base + want
            );
        }
        // The row stride's padding is never written.
        for j in n..c_rs {
            assert_eq!(c[i * c_rs + j], c0[i * c_rs + j], "{ctx}: padding written");
        }
    }
}

#[test]
fn strided_products_are_bf16_operands_with_f32_sums() {
    for kernel in kernels() {
        // k 259: a transposed weight's pairs span several 64-slot blocks, odd at the end.
        for (m, n, k) in [
            (37, 70, 45),
            (96, 64, 64),
            (130, 33, 100),
            (5, 130, 7),
            (19, 70, 259),
        ] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                check_product(kernel, m, n, k, ta, tb, false, 0);
                check_product(kernel, m, n, k, ta, tb, true, 3);
            }
        }
    }
}

#[test]
fn a_prepared_operand_gives_the_same_bits_as_per_product_packing() {
    let (m, n, k) = (150, 90, 70);
    let a = common::values(m * k, 5);
    let b = common::values(n * k, 6);
    for kernel in kernels() {
        let p = Products::bf16_on(kernel).unwrap();
        let rhs = Rhs::new(p, k, n, &b, true);
        for chunk in [0..64, 64..150] {
            let rows = chunk.len();
            let x = &a[chunk.start * k..chunk.end * k];
            let mut once = vec![0f32; rows * n];
            matmul::gemm_rhs(rows, x, false, &rhs, &mut once, false);
            let mut each = vec![0f32; rows * n];
            matmul::gemm_in(p, rows, n, k, x, false, &b, true, &mut each, false);
            let mut exact = vec![0f32; rows * n];
            matmul::gemm(rows, n, k, x, false, &b, true, &mut exact, false);
            assert_eq!(once, each, "{}", kernel.name());
            assert_ne!(
                once,
                exact,
                "{}: the bf16 products equal f32's",
                kernel.name()
            );
        }
    }
}

#[test]
fn f64_products_stay_exact_under_mixed_precision() {
    let (m, n, k) = (80, 70, 60); // above the mixed-precision minimum
    let a: Vec<f64> = common::values(m * k, 7)
        .into_iter()
        .map(f64::from)
        .collect();
    let b: Vec<f64> = common::values(k * n, 8)
        .into_iter()
        .map(f64::from)
        .collect();
    let p = Products::bf16_on(Kernel::Portable).unwrap();
    let (mut got, mut want) = (vec![0f64; m * n], vec![0f64; m * n]);
    matmul::gemm_in(p, m, n, k, &a, false, &b, false, &mut got, false);
    matmul::gemm(m, n, k, &a, false, &b, false, &mut want, false);
    assert_eq!(got, want);
}

/// SwiGLU's output and gradients are packed a block of rows at a time as
/// they are computed (`strided::pack_produced`): the slots must be those of
/// packing the finished matrices, on every shape class (k odd, one row,
/// n past a panel, big enough to run in parallel) and both slot types.
#[test]
fn packing_rows_as_produced_gives_the_slots_of_the_finished_matrix() {
    for kernel in kernels() {
        for elem in [Elem::Bf16Pair, Elem::F32] {
            for (k, n) in [(37, 70), (1, 5), (301, 230), (64, 128), (18, 3)] {
                let ctx = format!("{} {elem:?} k {k} n {n}", kernel.name());
                let b = common::values(k * n, 11 + k as u64);
                let neg: Vec<f32> = b.iter().map(|v| -v * 0.5).collect();
                let [pb, pn] = strided::pack_produced(kernel, elem, k, n, |r, [x, y]| {
                    let span = r.start * n..r.end * n;
                    x.copy_from_slice(&b[span.clone()]);
                    y.copy_from_slice(&neg[span]);
                });
                let view = |s: &[f32]| Strided {
                    ptr: s.as_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                // SAFETY: both are [k, n].
                let (wb, wn) = unsafe {
                    (
                        strided::pack_rhs(kernel, elem, k, n, view(&b)),
                        strided::pack_rhs(kernel, elem, k, n, view(&neg)),
                    )
                };
                for (got, want) in [(&pb, &wb), (&pn, &wn)] {
                    assert_eq!((got.n, got.k, got.kp), (want.n, want.k, want.kp), "{ctx}");
                    assert!(got.slots() == want.slots(), "{ctx}: slots differ");
                }
            }
        }
    }
}

/// Rows rounded to bf16 once (`UnwrittenRows`, written in blocks out of
/// order) and multiplied in place: the bits of the product of the f32 rows.
#[test]
fn rounded_rows_multiply_to_the_bits_of_their_f32_rows() {
    use traffic_moe::backend::cpu_bf16::gemm::UnwrittenRows;
    for kernel in kernels() {
        let p = Products::bf16_on(kernel).unwrap();
        for (m, n, k, tb) in [
            (70, 90, 45, true),
            (37, 130, 100, false),
            (7, 200, 301, true),
        ] {
            let ctx = format!("{} m {m} n {n} k {k} tb {tb}", kernel.name());
            let x = common::values(m * k, 21);
            let b = common::values(k * n, 22);
            let mut rows = UnwrittenRows::new(kernel, m, k);
            let writer = rows.writer();
            let starts: Vec<usize> = (0..m).step_by(5).collect();
            for &r0 in starts.iter().rev() {
                let r1 = (r0 + 5).min(m);
                // SAFETY: rows r0..r1 < m, written once.
                unsafe { writer.write(r0, &x[r0 * k..r1 * k]) };
            }
            // SAFETY: every row written above.
            let rows = unsafe { rows.assume_written() };
            let mut got = vec![std::mem::MaybeUninit::new(0f32); m * n];
            matmul::product_rows_into(kernel, &rows, n, k, &b, tb, &mut got);
            let got: Vec<f32> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
            let mut want = vec![0f32; m * n];
            matmul::gemm_in(p, m, n, k, &x, false, &b, tb, &mut want, false);
            assert!(got == want, "{ctx}: bits differ");
        }
    }
}

/// The SwiGLU FFN in mixed precision packs h, da and du as they are
/// computed and never writes them as f32: its output, input gradient and
/// weight gradients must be bit for bit those of the same products and
/// SwiGLU called one by one (what the engine did before), and the fused
/// path must have been taken.
#[test]
fn mixed_precision_ffn_fuses_without_changing_a_bit() {
    use traffic_moe::backend::cpu::{ffn, swiglu};
    // (rows, d, f): f > d (both passes fused), an odd row count, f == d
    // (only the forward's h fused: the gradients pack x instead).
    for kernel in kernels() {
        let p = Products::bf16_on(kernel).unwrap();
        for (rows, d, f) in [(70, 40, 100), (71, 48, 96), (70, 64, 64)] {
            let ctx = format!("{} rows {rows} d {d} f {f}", kernel.name());
            let x = common::values(rows * d, 31);
            let (wg, wu, wd) = (
                common::values(f * d, 32),
                common::values(f * d, 33),
                common::values(d * f, 34),
            );
            let dy = common::values(rows * d, 35);
            let g0 = [
                common::values(f * d, 36),
                common::values(f * d, 37),
                common::values(d * f, 38),
            ];

            let mut y = vec![std::mem::MaybeUninit::new(0f32); rows * d];
            let saved = ffn::fwd(p, &x, [&wg, &wu, &wd], rows, d, f, true, &mut y).unwrap();
            assert!(
                matches!(saved.h, ffn::Hidden::Packed(_)),
                "{ctx}: h kept as f32 rows"
            );
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            let mut dx = vec![std::mem::MaybeUninit::new(0f32); rows * d];
            let mut g = g0.clone();
            {
                let [a, b, c] = &mut g;
                ffn::bwd(
                    p,
                    &x,
                    [&wg, &wu, &wd],
                    &saved,
                    &dy,
                    rows,
                    d,
                    f,
                    &mut dx,
                    [a, b, c],
                );
            }
            let dx: Vec<f32> = dx.iter().map(|v| unsafe { v.assume_init() }).collect();

            // The same, one op at a time.
            let a = matmul::product_in(p, rows, f, d, &x, false, &wg, true);
            let u = matmul::product_in(p, rows, f, d, &x, false, &wu, true);
            let h = swiglu::fwd_new(&a, &u);
            let want_y = matmul::product_in(p, rows, d, f, &h, false, &wd, true);
            let mut wg_ = g0.clone();
            let dh = matmul::product_in(p, rows, f, d, &dy, false, &wd, false);
            matmul::bwd_in(p, &h, &wd, &dy, rows, f, d, None, &mut wg_[2], None);
            let (da, du) = swiglu::bwd_new(&a, &u, &dh);
            let mut want_dx = matmul::product_in(p, rows, d, f, &da, false, &wg, false);
            matmul::bwd_in(p, &x, &wg, &da, rows, d, f, None, &mut wg_[0], None);
            let dx2 = matmul::product_in(p, rows, d, f, &du, false, &wu, false);
            matmul::bwd_in(p, &x, &wu, &du, rows, d, f, None, &mut wg_[1], None);
            want_dx.iter_mut().zip(&dx2).for_each(|(a, b)| *a += b);

            assert!(y == want_y, "{ctx}: output");
            assert!(dx == want_dx, "{ctx}: input gradient");
            for (i, name) in ["w_gate", "w_up", "w_down"].iter().enumerate() {
                assert!(g[i] == wg_[i], "{ctx}: {name} gradient");
                assert!(g[i] != g0[i], "{ctx}: {name} gradient not accumulated");
            }
        }
    }
}

/// Relative L2 distance of `got` from `want`.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut d, mut w) = (0f64, 0f64);
    for (&g, &x) in got.iter().zip(want) {
        d += (f64::from(g) - f64::from(x)).powi(2);
        w += f64::from(x).powi(2);
    }
    (d / w.max(1e-30)).sqrt()
}

#[test]
fn lm_head_in_mixed_precision_tracks_f32() {
    let (t, d, v) = (300, 64, 700); // two backward row chunks, uneven vocab slices
    let h = common::values(t * d, 9);
    let table = common::values(v * d, 10);
    let targets: Vec<u32> = (0..t as u32)
        .map(|i| if i % 9 == 4 { 9999 } else { (i * 7) % v as u32 })
        .collect();
    let (want_loss, want_saved) = lm_head::fwd(Products::F32, &h, &table, d, &targets, 9999);
    let mut want_dt = vec![0.25f32; v * d];
    let want_dh = lm_head::bwd(
        Products::F32,
        &h,
        &table,
        d,
        &targets,
        &want_saved,
        1.5,
        &mut want_dt,
    );
    for kernel in kernels() {
        let p = Products::bf16_on(kernel).unwrap();
        let (loss, saved) = lm_head::fwd(p, &h, &table, d, &targets, 9999);
        let mut dt = vec![0.25f32; v * d];
        let dh = lm_head::bwd(p, &h, &table, d, &targets, &saved, 1.5, &mut dt);
        let ctx = kernel.name();
        assert!(
            (loss - want_loss).abs() < 0.01 * want_loss.abs(),
            "{ctx}: loss {loss} vs {want_loss}"
        );
        assert_ne!(loss, want_loss, "{ctx}: no rounding happened");
        assert!(
            rel_l2(&dh, &want_dh) < 0.03,
            "{ctx}: dh off by {}",
            rel_l2(&dh, &want_dh)
        );
        assert!(
            rel_l2(&dt, &want_dt) < 0.03,
            "{ctx}: dtable off by {}",
            rel_l2(&dt, &want_dt)
        );
    }
}

/// Loss and every parameter's gradient of one LM forward + backward.
fn grads(model: &Model, p0: &[Param], cpu: Cpu) -> (f32, Vec<Param>) {
    let mut params = p0.to_vec();
    let batch = &common::micro_batches()[0];
    let x = batch.inputs();
    let mut tape = Tape::<f32, Cpu>::with_cpu(cpu);
    let f = {
        let v = params.values();
        model.lm_forward(&mut tape, &v, &x, 0.02).unwrap()
    };
    traffic_moe::train::optim::zero_grads(&mut params);
    tape.backward(f.loss, &mut params).unwrap();
    (f.task_loss, params)
}

#[test]
fn model_gradients_in_mixed_precision_track_f32() {
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        let cfg = common::micro_config(ffn, 0);
        let (model, p0) = common::margin_params(&cfg, 0.05);
        let (want_loss, want) = grads(&model, &p0, Cpu::EXACT);
        for kernel in kernels() {
            let ctx = format!("{ffn:?} on {}", kernel.name());
            let (loss, got) = grads(
                &model,
                &p0,
                Cpu::with_products(Products::bf16_on(kernel).unwrap()),
            );
            assert!(
                (loss - want_loss).abs() < 0.01 * want_loss.abs(),
                "{ctx}: loss {loss} vs {want_loss}"
            );
            assert_ne!(loss, want_loss, "{ctx}: no product was mixed precision");
            for (g, w) in got.iter().zip(&want) {
                let e = rel_l2(&g.grad, &w.grad);
                assert!(e < 0.03, "{ctx}: {} gradient off by {e:.4}", w.name);
            }
        }
    }
}

#[test]
fn mixed_precision_training_lowers_the_loss_and_reruns_bit_for_bit() {
    let Some(_) = Products::bf16() else {
        // Trainer refuses bf16 where it would be slower; the kernels are
        // still tested above on the portable kernel.
        let (_, params) = Model::new(common::micro_config(FfnKind::Moe, 0), 5).unwrap();
        let opt = AdamW::new(AdamWConfig::default(), &params);
        let err = Trainer::new(Device::Cpu, Precision::Bf16, params, opt)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--precision bf16"), "{err}");
        eprintln!("no bf16 kernel on this CPU: the refusal was checked instead");
        return;
    };
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        let run = || common::micro_train_in(Device::Cpu, Precision::Bf16, ffn, Task::Lm, 12);
        let (losses, p1) = run();
        let (f32_losses, _) = common::micro_train(Device::Cpu, ffn, Task::Lm, 12);
        let (first, last) = (
            losses[..4].iter().sum::<f32>(),
            losses[8..].iter().sum::<f32>(),
        );
        assert!(last < 0.8 * first, "{ffn:?}: loss {losses:?}");
        for (b, f) in losses.iter().zip(&f32_losses) {
            assert!(
                (b - f).abs() < 0.05 * f.abs(),
                "{ffn:?}: bf16 {losses:?} vs f32 {f32_losses:?}"
            );
        }
        let (again, p2) = run();
        assert_eq!(losses, again, "{ffn:?}: losses differ between runs");
        common::assert_same_bits(&p1, &p2, "bf16 training");
    }
}

/// `tmoe pretrain` and `finetune --precision bf16` from the command line:
/// mixed precision where the CPU has a bf16 kernel, else a clear refusal.
#[test]
fn pretrain_and_finetune_take_precision_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::synth_dataset(d, "6", "1");
    let args = [
        "pretrain",
        "--data",
        "data",
        "--config",
        "tiny",
        "--out",
        "pt",
        "--steps",
        "3",
        "--batch",
        "4",
        "--seq-len",
        "32",
        "--precision",
        "bf16",
        "--quiet",
    ];
    if Products::bf16().is_none() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tmoe"))
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("--precision bf16"),
            "{err}"
        );
        return;
    }
    let pt = common::tmoe(d, &args);
    assert!(pt.contains("pretrained 3 steps"), "{pt}");
    let ft = common::tmoe(
        d,
        &[
            "finetune",
            "--data",
            "data",
            "--init",
            "pt/model.safetensors",
            "--out",
            "ft",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--precision",
            "bf16",
            "--quiet",
        ],
    );
    assert!(ft.contains("fine-tuned 1 epoch "), "{ft}");
}
