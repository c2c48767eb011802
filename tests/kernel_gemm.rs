//! cuda/gemm.cu against backend::cpu::matmul (f64 on the same bf16 inputs):
//! the three linear-layer products (Nt forward, Nn dX, Tn dW), both tiles,
//! the 16-byte and scalar load paths, tails in M/N/K, bias, accumulate vs
//! overwrite, split-K, strided views of fused buffers, bit-identical repeats,
//! the FlashAttention error rule (error vs f64 at most 2x a naive bf16 GEMM's),
//! and the grouped expert products over a device-built MoE plan.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::matmul;
use traffic_moe::backend::gpu::ops::gemm::{self, Gemm, Mat, Op, Out, Tile};
use traffic_moe::backend::gpu::ops::moe_permute::{self, MoePlan, NONE};
use traffic_moe::backend::gpu::ops::moe_route::Routing;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};
use traffic_moe::backend::gpu::{Buf, Executor};

/// (m, n, k): odd tails everywhere; multiples of 8 where the 16-byte path of
/// some op applies (130x136x264: Nt, Nn; 136x72x100: Tn; 77x45x40: Nt).
const SHAPES: [(usize, usize, usize); 3] = [(77, 45, 40), (130, 136, 264), (136, 72, 100)];

/// Storage shapes (rows, cols) of A and B for an op.
fn a_shape(op: Op, m: usize, k: usize) -> (usize, usize) {
    if op == Op::Tn { (k, m) } else { (m, k) }
}
fn b_shape(op: Op, n: usize, k: usize) -> (usize, usize) {
    if op == Op::Nt { (n, k) } else { (k, n) }
}

/// f64 reference through backend::cpu::matmul::gemm.
fn reference(op: Op, m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    matmul::gemm(m, n, k, a, op == Op::Tn, b, op == Op::Nt, &mut c, false);
    c
}

/// A naive bf16 GEMM: the same bf16 inputs, fp32 products summed in k order,
/// the output rounded to bf16 for the bf16-output ops.
fn naive(op: Op, m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for p in 0..k {
                let x = if op == Op::Tn {
                    a[p * m + i]
                } else {
                    a[i * k + p]
                };
                let y = if op == Op::Nt {
                    b[j * k + p]
                } else {
                    b[p * n + j]
                };
                s += x as f32 * y as f32;
            }
            c[i * n + j] = if op == Op::Tn { s as f64 } else { bf(s) };
        }
    }
    c
}

fn max_err(got: &[f64], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

/// Compares an output with the f64 reference: one bf16 rounding (bf16 out) or
/// fp32 accumulation error (fp32 out).
fn check(what: &str, op: Op, got: &[f64], want: &[f64]) -> anyhow::Result<()> {
    let (atol, rtol) = if op == Op::Tn {
        (1e-4, 1e-5)
    } else {
        (1e-4, BF16_RTOL)
    };
    assert_close(what, got, want, atol, rtol)?;
    Ok(())
}

struct Case {
    a: Vec<bf16>,
    b: Vec<bf16>,
    want: Vec<f64>,
    naive: Vec<f64>,
}

fn case(rng: &mut rand::rngs::StdRng, op: Op, m: usize, n: usize, k: usize) -> Case {
    let (ar, ac) = a_shape(op, m, k);
    let (br, bc) = b_shape(op, n, k);
    let (a, af) = bf16_input(rng, ar * ac, 1.0);
    let (b, bf_) = bf16_input(rng, br * bc, 1.0);
    Case {
        want: reference(op, m, n, k, &af, &bf_),
        naive: naive(op, m, n, k, &af, &bf_),
        a,
        b,
    }
}

/// Runs one dense product into a fresh output (fp32 outputs start at `c0`).
#[allow(clippy::too_many_arguments)]
fn run_dense(
    ex: &Executor,
    op: Op,
    (m, n, k): (usize, usize, usize),
    c: &Case,
    tile: Tile,
    scalar: bool,
    splits: Option<usize>,
    c0: Option<&[f32]>,
) -> anyhow::Result<Vec<f64>> {
    let (a, b) = (ex.upload(&c.a)?, ex.upload(&c.b)?);
    let (ac, bc) = (a_shape(op, m, k).1, b_shape(op, n, k).1);
    let ws = ex.alloc_zeroed::<f32>(gemm::dw_workspace_len(m, n, k, splits.unwrap_or(1)).max(1))?;
    if op == Op::Tn {
        let out: Buf<f32> = match c0 {
            Some(v) => ex.upload(v)?,
            None => ex.upload(&vec![f32::NAN; m * n])?,
        };
        let mut g = Gemm::new(
            op,
            m,
            n,
            k,
            Mat::dense(&a, ac),
            Mat::dense(&b, bc),
            Out::F32 {
                c: Mat::dense(&out, n),
                accumulate: c0.is_some(),
            },
        );
        (g.tile, g.scalar, g.splits, g.workspace) = (Some(tile), scalar, splits, Some(&ws));
        g.run(ex)?;
        Ok(f64s(&ex.download(&out)?))
    } else {
        let out = ex.upload(&vec![bf16::NAN; m * n])?;
        let mut g = Gemm::new(
            op,
            m,
            n,
            k,
            Mat::dense(&a, ac),
            Mat::dense(&b, bc),
            Out::Bf16(Mat::dense(&out, n)),
        );
        (g.tile, g.scalar) = (Some(tile), scalar);
        g.run(ex)?;
        Ok(bf_f64(&ex.download(&out)?))
    }
}

#[test]
fn dense_products_match_reference() {
    run_on_executors("gemm_dense", |ex| {
        let mut rng = rng(41);
        for shape @ (m, n, k) in SHAPES {
            for op in [Op::Nt, Op::Nn, Op::Tn] {
                let c = case(&mut rng, op, m, n, k);
                for tile in [Tile::Big, Tile::Small] {
                    for scalar in [false, true] {
                        let what = format!("{op:?} {m}x{n}x{k} {tile:?} scalar={scalar}");
                        let got = run_dense(ex, op, shape, &c, tile, scalar, Some(1), None)?;
                        check(&what, op, &got, &c.want)?;
                        // FlashAttention's rule: no worse than 2x a naive bf16 GEMM.
                        let (e, e0) = (max_err(&got, &c.want), max_err(&c.naive, &c.want));
                        anyhow::ensure!(
                            e <= 2.0 * e0 + 1e-6,
                            "{what}: max error {e:.3e} > 2 x naive {e0:.3e}"
                        );
                    }
                }
            }
        }
        Ok(())
    });
}

/// Degenerate shapes the engine asks for: one row (a batch of one flow through
/// the classifier head: M = 1 for the forward and dX, K = 1 for dW), a
/// handful of classes (N = 1, 2), a reduction shorter than one 8-element
/// vector or one 32-row slice, on both tiles and both load paths.
#[test]
fn degenerate_shapes_match_reference() {
    run_on_executors("gemm_degenerate", |ex| {
        let mut rng = rng(44);
        for shape @ (m, n, k) in [
            (1, 2, 128),
            (1, 128, 2),
            (2, 128, 1),
            (1, 1, 1),
            (1, 8, 8),
            (65, 1, 8),
        ] {
            for op in [Op::Nt, Op::Nn, Op::Tn] {
                let c = case(&mut rng, op, m, n, k);
                for tile in [Tile::Big, Tile::Small] {
                    for scalar in [false, true] {
                        let what = format!("{op:?} {m}x{n}x{k} {tile:?} scalar={scalar}");
                        let got = run_dense(ex, op, shape, &c, tile, scalar, Some(1), None)?;
                        // Element by element (a few outputs: assert_close's
                        // bias statistics need many), and FlashAttention's rule.
                        let tol = if op == Op::Tn { 1e-5 } else { BF16_RTOL };
                        for (i, (g, w)) in got.iter().zip(&c.want).enumerate() {
                            anyhow::ensure!(
                                (g - w).abs() <= 1e-4 + tol * w.abs(),
                                "{what}[{i}]: got {g}, expected {w}"
                            );
                        }
                        let (e, e0) = (max_err(&got, &c.want), max_err(&c.naive, &c.want));
                        anyhow::ensure!(e <= 2.0 * e0 + 1e-6, "{what}: {e:.3e} > 2 x {e0:.3e}");
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn dw_accumulates_and_splits_k_deterministically() {
    run_on_executors("gemm_dw_split", |ex| {
        let mut rng = rng(42);
        // k = 300 in 3 splits of 128, 128, 44 rows; m, n odd (scalar) and 8-aligned.
        for shape @ (m, n, k) in [(72, 40, 300), (45, 77, 300)] {
            let c = case(&mut rng, Op::Tn, m, n, k);
            let c0 = uniform(&mut rng, m * n, 1.0);
            let want_acc: Vec<f64> = c.want.iter().zip(&c0).map(|(w, &z)| w + z as f64).collect();
            for tile in [Tile::Big, Tile::Small] {
                for splits in [1, 3] {
                    let what = format!("Tn {m}x{n}x{k} {tile:?} splits {splits}");
                    let got = run_dense(ex, Op::Tn, shape, &c, tile, false, Some(splits), None)?;
                    check(&format!("{what} =",), Op::Tn, &got, &c.want)?;
                    let acc =
                        run_dense(ex, Op::Tn, shape, &c, tile, false, Some(splits), Some(&c0))?;
                    check(&format!("{what} +="), Op::Tn, &acc, &want_acc)?;
                    let again =
                        run_dense(ex, Op::Tn, shape, &c, tile, false, Some(splits), Some(&c0))?;
                    anyhow::ensure!(
                        acc.iter()
                            .zip(&again)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{what}: repeat run differs"
                    );
                }
            }
        }
        // A split without a workspace is an error, not a silent wrong result.
        let (m, n, k) = (40, 40, 4096);
        assert_eq!(gemm::dw_splits(m, n, k), 4);
        let (dy, x) = (
            ex.alloc_zeroed::<bf16>(k * m)?,
            ex.alloc_zeroed::<bf16>(k * n)?,
        );
        let dw = ex.alloc_zeroed::<f32>(m * n)?;
        let r = gemm::bwd_dw(
            ex,
            Mat::dense(&dy, m),
            Mat::dense(&x, n),
            Mat::dense(&dw, n),
            true,
            None,
            k,
            n,
            m,
        );
        anyhow::ensure!(r.is_err(), "split dW without workspace accepted");
        Ok(())
    });
}

#[test]
fn repeat_runs_are_bit_identical() {
    run_on_executors("gemm_repeat", |ex| {
        let mut rng = rng(43);
        let shape @ (m, n, k) = (130, 136, 264);
        for op in [Op::Nt, Op::Nn, Op::Tn] {
            let c = case(&mut rng, op, m, n, k);
            let splits = (op == Op::Tn).then_some(2);
            let x = run_dense(ex, op, shape, &c, Tile::Big, false, splits, None)?;
            let y = run_dense(ex, op, shape, &c, Tile::Big, false, splits, None)?;
            anyhow::ensure!(
                x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{op:?}: repeat run differs"
            );
        }
        Ok(())
    });
}

/// The linear-layer wrappers on views of fused buffers: X is columns 8.. of a
/// wider activation, Y the middle third of a fused QKV output, dX a view, dW a
/// block of a larger gradient arena; elements outside the views stay untouched.
/// A second pass shifts every view by one element (the scalar fallback).
#[test]
fn linear_layer_on_strided_views() {
    run_on_executors("gemm_views", |ex| {
        let mut rng = rng(44);
        let (t, din, dout) = (97, 72, 40);
        for shift in [0usize, 1] {
            let what = format!("shift {shift}");
            let (ldx, ldy, ldw) = (din + 16, 3 * dout, din + 8);
            let (xo, yo, wo) = (8 + shift, dout + shift, shift);
            let (xs, xf) = bf16_input(&mut rng, t * ldx + shift, 1.0);
            let (ws, wf) = bf16_input(&mut rng, dout * ldw + shift, 1.0);
            let (dys, dyf) = bf16_input(&mut rng, t * ldy + shift, 1.0);
            let bias = uniform(&mut rng, dout, 1.0);
            let pick = |v: &[f64], off: usize, ld: usize, rows: usize, cols: usize| {
                (0..rows * cols)
                    .map(|i| v[off + (i / cols) * ld + i % cols])
                    .collect::<Vec<f64>>()
            };
            let x = pick(&xf, xo, ldx, t, din);
            let w = pick(&wf, wo, ldw, dout, din);
            let dy = pick(&dyf, yo, ldy, t, dout);
            let b64: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
            let mut y_ref = vec![0.0; t * dout];
            matmul::fwd(&x, &w, Some(&b64), t, din, dout, &mut y_ref);
            let (mut dx_ref, mut dw_ref) = (vec![0.0; t * din], vec![0.0; dout * din]);
            matmul::bwd(
                &x,
                &w,
                &dy,
                t,
                din,
                dout,
                Some(&mut dx_ref),
                &mut dw_ref,
                None,
            );

            let (xb, wb, dyb) = (ex.upload(&xs)?, ex.upload(&ws)?, ex.upload(&dys)?);
            let bb = ex.upload(&bias)?;
            let sentinel = bf16::from_f32(-3.0);
            let yb = ex.upload(&vec![sentinel; t * ldy + shift])?;
            let dxb = ex.upload(&vec![sentinel; t * ldx + shift])?;
            let dw0 = vec![0.5f32; dout * ldw + shift];
            let dwb = ex.upload(&dw0)?;
            let xm = Mat::view(&xb, xo, ldx);
            let wm = Mat::view(&wb, wo, ldw);
            gemm::fwd(ex, xm, wm, Some(&bb), Mat::view(&yb, yo, ldy), t, din, dout)?;
            gemm::bwd_dx(
                ex,
                Mat::view(&dyb, yo, ldy),
                wm,
                Mat::view(&dxb, xo, ldx),
                t,
                din,
                dout,
            )?;
            gemm::bwd_dw(
                ex,
                Mat::view(&dyb, yo, ldy),
                xm,
                Mat::view(&dwb, wo, ldw),
                true,
                None,
                t,
                din,
                dout,
            )?;
            let (y, dx, dw) = (
                bf_f64(&ex.download(&yb)?),
                bf_f64(&ex.download(&dxb)?),
                f64s(&ex.download(&dwb)?),
            );
            check(
                &format!("Y {what}"),
                Op::Nt,
                &pick(&y, yo, ldy, t, dout),
                &y_ref,
            )?;
            check(
                &format!("dX {what}"),
                Op::Nn,
                &pick(&dx, xo, ldx, t, din),
                &dx_ref,
            )?;
            let dw_acc: Vec<f64> = dw_ref.iter().map(|v| v + 0.5).collect();
            check(
                &format!("dW {what}"),
                Op::Tn,
                &pick(&dw, wo, ldw, dout, din),
                &dw_acc,
            )?;
            let outside = |v: &[f64], off: usize, ld: usize, rows: usize, cols: usize, s: f64| {
                v.iter().enumerate().all(|(i, &e)| {
                    let j = i.wrapping_sub(off);
                    let inside = i >= off && j / ld < rows && j % ld < cols;
                    inside || e == s
                })
            };
            anyhow::ensure!(
                outside(&y, yo, ldy, t, dout, -3.0),
                "Y wrote outside ({what})"
            );
            anyhow::ensure!(
                outside(&dx, xo, ldx, t, din, -3.0),
                "dX wrote outside ({what})"
            );
            anyhow::ensure!(
                outside(&dw, wo, ldw, dout, din, 0.5),
                "dW wrote outside ({what})"
            );
        }
        Ok(())
    });
}

/// Grouped expert products over a device-built plan: forward with the gather
/// fused into the A load and on pre-gathered rows (identical bits), dX per
/// expert; tiles past the end untouched. Reference: per-expert dense products.
#[test]
fn grouped_expert_products_match_per_expert_reference() {
    run_on_executors("gemm_grouped", |ex| {
        let mut rng = rng(45);
        // (tokens, experts, k, plan tile, n, d): 64-row tiles (small blocks), 128-row
        // tiles on the scalar path (small blocks, two per plan tile), 128 (big).
        for (t, e, topk, tile, n, d) in [
            (100, 4, 2, 64, 72, 40),
            (60, 3, 2, 128, 48, 45),
            (70, 3, 2, 128, 64, 48),
        ] {
            let what = format!("T {t} E {e} k {topk} tile {tile} n {n} d {d}");
            let mut idx = Vec::with_capacity(t * topk);
            for i in 0..t {
                // k distinct experts, unbalanced (expert 0 busiest, the last one rare).
                let first = (i * i + i / 3) % e;
                idx.extend((0..topk).map(|j| ((first + j * (1 + i % 2)) % e) as u32));
                if idx[idx.len() - 1] == idx[idx.len() - 2] {
                    let l = idx.len();
                    idx[l - 1] = (idx[l - 1] + 1) % e as u32;
                }
            }
            let routing = Routing {
                tokens: t,
                n_experts: e,
                k: topk,
            };
            let plan = MoePlan::alloc(ex, routing, tile)?;
            plan.build(ex, &ex.upload(&idx)?)?;
            let rows = plan.max_rows;
            let sorted = ex.download(&plan.sorted_slot)?;
            let tiles = ex.download(&plan.tile_expert)?;

            let (x, xf) = bf16_input(&mut rng, t * d, 1.0);
            let (w, wf) = bf16_input(&mut rng, e * n * d, 1.0);
            let (dy, dyf) = bf16_input(&mut rng, rows * n, 1.0);
            let (xb, wb, dyb) = (ex.upload(&x)?, ex.upload(&w)?, ex.upload(&dy)?);
            let sentinel = bf16::from_f32(-3.0);

            // Reference, row by row: y[r] = x[slot / k] . W_e^T, dx[r] = dy[r] . W_e.
            let mut y_ref = vec![0.0; rows * n];
            let mut dx_ref = vec![0.0; rows * d];
            let mut live = vec![false; rows];
            for r in 0..rows {
                let ex_id = tiles[r / tile];
                if ex_id == NONE {
                    continue;
                }
                live[r] = true;
                let we = &wf[ex_id as usize * n * d..(ex_id as usize + 1) * n * d];
                if sorted[r] != NONE {
                    let s = sorted[r] as usize / topk;
                    matmul::gemm(
                        1,
                        n,
                        d,
                        &xf[s * d..(s + 1) * d],
                        false,
                        we,
                        true,
                        &mut y_ref[r * n..(r + 1) * n],
                        false,
                    );
                }
                matmul::gemm(
                    1,
                    d,
                    n,
                    &dyf[r * n..(r + 1) * n],
                    false,
                    we,
                    false,
                    &mut dx_ref[r * d..(r + 1) * d],
                    false,
                );
            }
            let pick = |v: &[f64], cols: usize| -> (Vec<f64>, bool) {
                let mut out = Vec::new();
                let mut untouched = true;
                for r in 0..rows {
                    let row = &v[r * cols..(r + 1) * cols];
                    if live[r] {
                        out.extend_from_slice(row);
                    } else {
                        untouched &= row.iter().all(|&x| x == -3.0);
                    }
                }
                (out, untouched)
            };
            let live_ref = |v: &[f64], cols: usize| pick(v, cols).0;

            // Forward, gather fused.
            let yb = ex.upload(&vec![sentinel; rows * n])?;
            gemm::grouped_fwd(
                ex,
                &plan,
                Mat::dense(&xb, d),
                true,
                &wb,
                Mat::dense(&yb, n),
                n,
                d,
            )?;
            let y_fused = ex.download(&yb)?;
            let (got, untouched) = pick(&bf_f64(&y_fused), n);
            check(
                &format!("grouped fwd gather {what}"),
                Op::Nt,
                &got,
                &live_ref(&y_ref, n),
            )?;
            anyhow::ensure!(untouched, "grouped fwd wrote past the plan ({what})");

            // Forward on rows gathered by moe_gather: the same bits.
            let xp = ex.alloc_zeroed::<bf16>(rows * d)?;
            moe_permute::gather(ex, &plan, &xb, &xp, d)?;
            let yb2 = ex.upload(&vec![sentinel; rows * n])?;
            gemm::grouped_fwd(
                ex,
                &plan,
                Mat::dense(&xp, d),
                false,
                &wb,
                Mat::dense(&yb2, n),
                n,
                d,
            )?;
            anyhow::ensure!(
                ex.download(&yb2)? == y_fused,
                "grouped fwd: gathered rows differ from the fused gather ({what})"
            );

            // dX per expert.
            let dxb = ex.upload(&vec![sentinel; rows * d])?;
            gemm::grouped_dx(
                ex,
                &plan,
                Mat::dense(&dyb, n),
                &wb,
                Mat::dense(&dxb, d),
                n,
                d,
            )?;
            let (got, untouched) = pick(&bf_f64(&ex.download(&dxb)?), d);
            check(
                &format!("grouped dx {what}"),
                Op::Nn,
                &got,
                &live_ref(&dx_ref, d),
            )?;
            anyhow::ensure!(untouched, "grouped dx wrote past the plan ({what})");
        }
        Ok(())
    });
}

#[test]
fn grouped_rejects_a_plan_tile_that_is_not_a_block_height() {
    run_on_executors("gemm_grouped_tile", |ex| {
        let routing = Routing {
            tokens: 10,
            n_experts: 2,
            k: 1,
        };
        let plan = MoePlan::alloc(ex, routing, 32)?;
        let (x, w) = (
            ex.alloc_zeroed::<bf16>(10 * 8)?,
            ex.alloc_zeroed::<bf16>(2 * 8 * 8)?,
        );
        let y = ex.alloc_zeroed::<bf16>(plan.max_rows * 8)?;
        let r = gemm::grouped_fwd(
            ex,
            &plan,
            Mat::dense(&x, 8),
            true,
            &w,
            Mat::dense(&y, 8),
            8,
            8,
        );
        anyhow::ensure!(r.is_err(), "tile 32 accepted");
        Ok(())
    });
}
