//! The MoE variants of cuda/gemm.cu against backend::cpu (f64 on the same bf16
//! inputs): grouped dW over the expert segments of a device-built plan (skewed
//! routing: an expert with no rows, one with a single tile, one with many; the
//! gather fused or on pre-gathered rows; one or several splits per expert; both
//! tiles; accumulate vs overwrite; repeat runs bit-identical), and the SwiGLU
//! epilogue of the gate|up forward (grouped and dense, with bias) against
//! `backend::cpu::swiglu` on the unfused product.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::{matmul, swiglu};
use traffic_moe::backend::gpu::ops::gemm::{self, Gemm, Group, Mat, Op, Out, Tile};
use traffic_moe::backend::gpu::ops::moe_permute::{self, MoePlan, NONE};
use traffic_moe::backend::gpu::ops::moe_route::Routing;
use traffic_moe::backend::gpu::ops::swiglu as gpu_swiglu;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};
use traffic_moe::backend::gpu::{Buf, Executor};

/// Skewed top-2 routing over 4 experts: expert 0 gets every token (many
/// tiles), expert 1 none, expert 2 the first `few` tokens (one tile), expert 3
/// the rest.
fn skewed_plan(ex: &Executor, t: usize, few: usize, tile: usize) -> anyhow::Result<MoePlan> {
    let idx: Vec<u32> = (0..t)
        .flat_map(|i| [0, if i < few { 2 } else { 3 }])
        .collect();
    let routing = Routing {
        tokens: t,
        n_experts: 4,
        k: 2,
    };
    let plan = MoePlan::alloc(ex, routing, tile)?;
    plan.build(ex, &ex.upload(&idx)?)?;
    Ok(plan)
}

fn same_bits(x: &[f64], y: &[f64]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// dW_e = dY_eᵀ X_e per expert segment, X_e the gathered token rows (zero for
/// padding), through backend::cpu::matmul::gemm. `[E, n, d]`.
fn dw_reference(
    plan_off: &[u32],
    sorted: &[u32],
    topk: usize,
    dyf: &[f64],
    xf: &[f64],
    n: usize,
    d: usize,
) -> Vec<f64> {
    let experts = plan_off.len() - 1;
    let mut out = vec![0.0; experts * n * d];
    for e in 0..experts {
        let (b, end) = (plan_off[e] as usize, plan_off[e + 1] as usize);
        if b == end {
            continue;
        }
        let mut xe = vec![0.0; (end - b) * d];
        for r in b..end {
            if sorted[r] != NONE {
                let s = sorted[r] as usize / topk;
                xe[(r - b) * d..(r - b + 1) * d].copy_from_slice(&xf[s * d..(s + 1) * d]);
            }
        }
        matmul::gemm(
            n,
            d,
            end - b,
            &dyf[b * n..end * n],
            true,
            &xe,
            false,
            &mut out[e * n * d..(e + 1) * n * d],
            false,
        );
    }
    out
}

#[test]
fn grouped_dw_matches_per_expert_reference() {
    run_on_executors("gemm_grouped_dw", |ex| {
        let mut rng = rng(51);
        // (tokens, few, plan tile, n = out, d = in): odd widths (scalar, small
        // tile), 8-aligned widths (16-byte path, both tiles).
        for (t, few, tile, n, d) in [(150, 5, 64, 45, 37), (280, 1, 128, 72, 136)] {
            let plan = skewed_plan(ex, t, few, tile)?;
            let rows = plan.max_rows;
            let off = ex.download(&plan.expert_offset)?;
            let sorted = ex.download(&plan.sorted_slot)?;
            assert_eq!(off[1], off[2], "expert 1 has no rows");
            assert_eq!(off[3] - off[2], tile as u32, "expert 2 is one tile");
            assert!(off[1] - off[0] > 2 * tile as u32, "expert 0 has many tiles");

            let (x, xf) = bf16_input(&mut rng, t * d, 1.0);
            let (dy, dyf) = bf16_input(&mut rng, rows * n, 1.0);
            let want = dw_reference(&off, &sorted, 2, &dyf, &xf, n, d);
            let c0 = uniform(&mut rng, 4 * n * d, 1.0);
            let want_acc: Vec<f64> = want.iter().zip(&c0).map(|(w, &z)| w + z as f64).collect();
            let (xb, dyb) = (ex.upload(&x)?, ex.upload(&dy)?);
            let xp = ex.alloc_zeroed::<bf16>(rows * d)?;
            moe_permute::gather(ex, &plan, &xb, &xp, d)?;

            let run =
                |gather: bool, tile: Tile, splits: usize, acc: bool| -> anyhow::Result<Vec<f64>> {
                    let out: Buf<f32> = if acc {
                        ex.upload(&c0)?
                    } else {
                        ex.upload(&vec![f32::NAN; 4 * n * d])?
                    };
                    let ws = ex.alloc_zeroed::<f32>(
                        gemm::grouped_dw_workspace_len(&plan, n, d, splits).max(1),
                    )?;
                    let x = if gather {
                        Mat::dense(&xb, d)
                    } else {
                        Mat::dense(&xp, d)
                    };
                    let mut g = Gemm::new(
                        Op::Tn,
                        n,
                        d,
                        rows,
                        Mat::dense(&dyb, n),
                        x,
                        Out::F32 {
                            c: Mat::dense(&out, d),
                            accumulate: acc,
                        },
                    );
                    g.group = Some(Group {
                        plan: &plan,
                        gather,
                    });
                    (g.tile, g.splits, g.workspace) = (Some(tile), Some(splits), Some(&ws));
                    g.run(ex)?;
                    Ok(f64s(&ex.download(&out)?))
                };
            for tile in [Tile::Big, Tile::Small] {
                for splits in [1, 3] {
                    let what = format!("T {t} n {n} d {d} {tile:?} splits {splits}");
                    let got = run(true, tile, splits, false)?;
                    // An expert without rows is overwritten with zeros (the NaNs go).
                    assert_close(&format!("{what} ="), &got, &want, 1e-4, 1e-5)?;
                    let acc = run(true, tile, splits, true)?;
                    assert_close(&format!("{what} +="), &acc, &want_acc, 1e-4, 1e-5)?;
                    anyhow::ensure!(
                        same_bits(&acc, &run(true, tile, splits, true)?),
                        "{what}: repeat run differs"
                    );
                    anyhow::ensure!(
                        same_bits(&got, &run(false, tile, splits, false)?),
                        "{what}: pre-gathered rows differ from the fused gather"
                    );
                }
            }
        }

        // The public wrapper (default splits) and its errors.
        let plan = skewed_plan(ex, 40, 3, 64)?;
        let (dy, x) = (
            ex.alloc_zeroed::<bf16>(plan.max_rows * 8)?,
            ex.alloc_zeroed::<bf16>(40 * 8)?,
        );
        let dw = ex.upload(&vec![f32::NAN; 4 * 8 * 8])?;
        gemm::grouped_dw(
            ex,
            &plan,
            Mat::dense(&dy, 8),
            Mat::dense(&x, 8),
            true,
            Mat::dense(&dw, 8),
            false,
            None,
            8,
            8,
        )?;
        anyhow::ensure!(
            ex.download(&dw)?.iter().all(|&v| v == 0.0),
            "grouped dW of zeros"
        );
        let small = ex.alloc_zeroed::<f32>(3 * 8 * 8)?;
        let r = gemm::grouped_dw(
            ex,
            &plan,
            Mat::dense(&dy, 8),
            Mat::dense(&x, 8),
            true,
            Mat::dense(&small, 8),
            false,
            None,
            8,
            8,
        );
        anyhow::ensure!(r.is_err(), "dW with room for 3 of 4 experts accepted");
        Ok(())
    });
}

/// Runs `swiglu_fwd` on the gate / up halves of `z [rows, 2f]`.
fn swiglu_kernel(ex: &Executor, z: &Buf<bf16>, rows: usize, f: usize) -> anyhow::Result<Vec<bf16>> {
    let h = ex.alloc_zeroed::<bf16>(rows * f)?;
    let v = |off| gpu_swiglu::Rows {
        buf: z,
        offset: off,
        ld: 2 * f,
    };
    gpu_swiglu::fwd_strided(ex, v(0), v(f), gpu_swiglu::Rows::dense(&h, f), rows, f)?;
    Ok(ex.download(&h)?)
}

/// `backend::cpu::swiglu` on the two halves of `z [rows, 2f]`.
fn swiglu_reference(z: &[f64], rows: usize, f: usize) -> Vec<f64> {
    let (mut g, mut u) = (Vec::new(), Vec::new());
    for r in 0..rows {
        g.extend_from_slice(&z[r * 2 * f..r * 2 * f + f]);
        u.extend_from_slice(&z[r * 2 * f + f..(r + 1) * 2 * f]);
    }
    let mut h = vec![0.0; rows * f];
    swiglu::fwd(&g, &u, &mut h);
    h
}

#[test]
fn swiglu_epilogue_matches_unfused_product() {
    run_on_executors("gemm_swiglu", |ex| {
        let mut rng = rng(52);
        let sentinel = bf16::from_f32(-3.0);
        // Grouped: (tokens, plan tile, f, d): odd f and d (scalar, small tile),
        // aligned (16-byte path, big tile with the 128-row plan tile); an odd
        // f (H's rows, and the gate / up halves of the pre-activations, off
        // 16 bytes) and f = 1 on the 16-byte loads (d % 8 == 0), both tiles.
        for (t, tile, f, d) in [
            (90, 64, 45, 37),
            (70, 128, 64, 48),
            (40, 128, 45, 64),
            (40, 64, 45, 64),
            (40, 64, 1, 16),
        ] {
            let what = format!("grouped T {t} tile {tile} f {f} d {d}");
            let plan = skewed_plan(ex, t, 4, tile)?;
            let rows = plan.max_rows;
            let tiles = ex.download(&plan.tile_expert)?;
            let live: Vec<bool> = (0..rows).map(|r| tiles[r / tile] != NONE).collect();
            let (x, _) = bf16_input(&mut rng, t * d, 1.0);
            let (w, _) = bf16_input(&mut rng, 4 * 2 * f * d, 1.0);
            let (xb, wb) = (ex.upload(&x)?, ex.upload(&w)?);

            let zb = ex.upload(&vec![sentinel; rows * 2 * f])?;
            gemm::grouped_fwd(
                ex,
                &plan,
                Mat::dense(&xb, d),
                true,
                &wb,
                Mat::dense(&zb, 2 * f),
                2 * f,
                d,
            )?;
            let z = ex.download(&zb)?;
            let hb = ex.upload(&vec![sentinel; rows * f])?;
            let pb = ex.upload(&vec![sentinel; rows * 2 * f])?;
            gemm::grouped_fwd_swiglu(
                ex,
                &plan,
                Mat::dense(&xb, d),
                true,
                &wb,
                Mat::dense(&hb, f),
                Some(Mat::dense(&pb, 2 * f)),
                f,
                d,
            )?;
            let (h, pre) = (ex.download(&hb)?, ex.download(&pb)?);
            // Same accumulators, same rounding: the pre-activations are the
            // unfused output bit for bit (dead tiles untouched in both).
            anyhow::ensure!(
                pre == z,
                "{what}: pre-activations differ from the unfused GEMM"
            );
            let keep = |v: &[f64], cols: usize| -> Vec<f64> {
                (0..rows)
                    .filter(|&r| live[r])
                    .flat_map(|r| v[r * cols..(r + 1) * cols].to_vec())
                    .collect()
            };
            let n_live = live.iter().filter(|&&l| l).count();
            let want = swiglu_reference(&keep(&bf_f64(&z), 2 * f), n_live, f);
            assert_close(&what, &keep(&bf_f64(&h), f), &want, 1e-4, BF16_RTOL)?;
            anyhow::ensure!(
                (0..rows)
                    .filter(|&r| !live[r])
                    .all(|r| h[r * f..(r + 1) * f].iter().all(|&v| v == sentinel)),
                "{what}: H written past the plan"
            );
            // swiglu_fwd on the unfused output: the same bits on live rows.
            let hk = swiglu_kernel(ex, &zb, rows, f)?;
            anyhow::ensure!(
                (0..rows)
                    .filter(|&r| live[r])
                    .all(|r| h[r * f..(r + 1) * f] == hk[r * f..(r + 1) * f]),
                "{what}: differs from swiglu_fwd on the unfused output"
            );
            // Without the pre-activations, and on pre-gathered rows: same H.
            let xp = ex.alloc_zeroed::<bf16>(rows * d)?;
            moe_permute::gather(ex, &plan, &xb, &xp, d)?;
            let hb2 = ex.upload(&vec![sentinel; rows * f])?;
            gemm::grouped_fwd_swiglu(
                ex,
                &plan,
                Mat::dense(&xp, d),
                false,
                &wb,
                Mat::dense(&hb2, f),
                None,
                f,
                d,
            )?;
            anyhow::ensure!(ex.download(&hb2)? == h, "{what}: H without pre differs");
        }

        // Dense (the shared expert) with bias, a strided H view, both tiles.
        let (t, f, d) = (77, 40, 64);
        let (x, xf) = bf16_input(&mut rng, t * d, 1.0);
        let (w, wf) = bf16_input(&mut rng, 2 * f * d, 1.0);
        let bias = uniform(&mut rng, 2 * f, 1.0);
        let b64: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
        let (xb, wb, bb) = (ex.upload(&x)?, ex.upload(&w)?, ex.upload(&bias)?);
        let zb = ex.alloc_zeroed::<bf16>(t * 2 * f)?;
        gemm::fwd(
            ex,
            Mat::dense(&xb, d),
            Mat::dense(&wb, d),
            Some(&bb),
            Mat::dense(&zb, 2 * f),
            t,
            d,
            2 * f,
        )?;
        let z = ex.download(&zb)?;
        let mut z_ref = vec![0.0; t * 2 * f];
        matmul::fwd(&xf, &wf, Some(&b64), t, d, 2 * f, &mut z_ref);
        assert_close("dense z", &bf_f64(&z), &z_ref, 1e-4, BF16_RTOL)?;
        let want = swiglu_reference(&bf_f64(&z), t, f);
        for tile in [Tile::Big, Tile::Small] {
            let what = format!("dense {tile:?}");
            let ld = f + 8;
            let hb = ex.upload(&vec![sentinel; t * ld])?;
            let pb = ex.alloc_zeroed::<bf16>(t * 2 * f)?;
            let mut g = Gemm::new(
                Op::Nt,
                t,
                2 * f,
                d,
                Mat::dense(&xb, d),
                Mat::dense(&wb, d),
                Out::Bf16(Mat::view(&hb, 8, ld)),
            );
            g.bias = Some(&bb);
            g.tile = Some(tile);
            g.swiglu = Some(gemm::Swiglu {
                pre: Some(Mat::dense(&pb, 2 * f)),
            });
            g.run(ex)?;
            anyhow::ensure!(ex.download(&pb)? == z, "{what}: pre differs");
            let h = ex.download(&hb)?;
            let got: Vec<f64> = (0..t * f)
                .map(|i| h[8 + (i / f) * ld + i % f].to_f64())
                .collect();
            assert_close(&what, &got, &want, 1e-4, BF16_RTOL)?;
            anyhow::ensure!(
                h.iter()
                    .enumerate()
                    .all(
                        |(i, &v)| (i >= 8 && (i - 8) % ld < f && (i - 8) / ld < t) || v == sentinel
                    ),
                "{what}: wrote outside the H view"
            );
        }
        // An odd N cannot be split into gate and up.
        let mut g = Gemm::new(
            Op::Nt,
            t,
            2 * f - 1,
            d,
            Mat::dense(&xb, d),
            Mat::dense(&wb, d),
            Out::Bf16(Mat::dense(&zb, f)),
        );
        g.swiglu = Some(gemm::Swiglu { pre: None });
        anyhow::ensure!(g.run(ex).is_err(), "odd N accepted for SwiGLU");
        Ok(())
    });
}
