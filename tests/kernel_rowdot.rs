//! cuda/rowdot.cu against f64 loops on the same bf16 / fp32 inputs: the
//! 16-byte path (d % 8 == 0) and the scalar path (odd d), J = 1, 8, 37 (several
//! output chunks) and 64, rows that are not multiples of the block / row group /
//! row range, the sigmoid epilogue and its derivative (`y`), dz `=` and `+=`,
//! dw `+=` onto nonzero values, and bit-identical repeat runs.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::gpu::ops::rowdot;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

// (rows, d, j): vec d 64 / 96 / 768, scalar d 45 / 77; rows 300 spans 5 dw row ranges.
const SHAPES: [(usize, usize, usize); 6] = [
    (37, 64, 8),
    (37, 45, 8),
    (300, 96, 1),
    (130, 77, 37),
    (9, 768, 8),
    (21, 40, 64),
];
const F32_TOL: f64 = 1e-4;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn rowdot_fwd_bwd_match_reference() {
    run_on_executors("rowdot", |ex| {
        let mut rng = rng(31);
        for (rows, d, j) in SHAPES {
            for sig in [false, true] {
                let what = format!("rows {rows} d {d} j {j} sigmoid {sig}");
                let (z, zf) = bf16_input(&mut rng, rows * d, 2.0);
                let w = uniform(&mut rng, j * d, 0.1);
                let dout = uniform(&mut rng, rows * j, 1.0);
                let (dz0, dz0f) = bf16_input(&mut rng, rows * d, 1.0);
                let dw0 = uniform(&mut rng, j * d, 0.5);

                // Reference.
                let mut out = vec![0.0f64; rows * j];
                for t in 0..rows {
                    for jj in 0..j {
                        let s: f64 = (0..d).map(|c| zf[t * d + c] * w[jj * d + c] as f64).sum();
                        out[t * j + jj] = if sig { sigmoid(s) } else { s };
                    }
                }
                let zb = ex.upload(&z)?;
                let wb = ex.upload(&w)?;
                let ob = ex.alloc_zeroed::<f32>(rows * j)?;
                rowdot::fwd(ex, &zb, &wb, &ob, rows, d, j, sig)?;
                let got = ex.download(&ob)?;
                assert_close(
                    &format!("out ({what})"),
                    &f64s(&got),
                    &out,
                    F32_TOL,
                    F32_TOL,
                )?;
                rowdot::fwd(ex, &zb, &wb, &ob, rows, d, j, sig)?;
                anyhow::ensure!(ex.download(&ob)? == got, "fwd repeat differs ({what})");

                // Logit gradients: after the sigmoid the kernels apply y (1 - y)
                // with y = the kernel's own forward output.
                let dl: Vec<f64> = (0..rows * j)
                    .map(|i| {
                        let g = dout[i] as f64;
                        if sig {
                            let y = got[i] as f64;
                            g * y * (1.0 - y)
                        } else {
                            g
                        }
                    })
                    .collect();
                let y = if sig { Some(&ob) } else { None };
                let doutb = ex.upload(&dout)?;

                // dz, = and +=.
                let mut dz = vec![0.0f64; rows * d];
                for t in 0..rows {
                    for c in 0..d {
                        dz[t * d + c] =
                            (0..j).map(|jj| dl[t * j + jj] * w[jj * d + c] as f64).sum();
                    }
                }
                let dzb = ex.alloc_zeroed::<bf16>(rows * d)?;
                rowdot::bwd_dz(ex, &doutb, y, &wb, &dzb, rows, d, j, false)?;
                let got_dz = ex.download(&dzb)?;
                assert_close(
                    &format!("dz ({what})"),
                    &bf_f64(&got_dz),
                    &dz,
                    1e-5,
                    BF16_RTOL,
                )?;
                let dzb = ex.upload(&dz0)?;
                rowdot::bwd_dz(ex, &doutb, y, &wb, &dzb, rows, d, j, true)?;
                let want: Vec<f64> = dz.iter().zip(&dz0f).map(|(a, b)| a + b).collect();
                let got_acc = bf_f64(&ex.download(&dzb)?);
                assert_close(&format!("dz += ({what})"), &got_acc, &want, 1e-5, BF16_RTOL)?;

                // dw += onto nonzero values, twice on fresh copies: identical bits.
                let mut dw: Vec<f64> = dw0.iter().map(|&v| v as f64).collect();
                for jj in 0..j {
                    for c in 0..d {
                        dw[jj * d + c] += (0..rows)
                            .map(|t| dl[t * j + jj] * zf[t * d + c])
                            .sum::<f64>();
                    }
                }
                let scratch = ex.alloc_zeroed::<f32>(rowdot::dw_scratch_len(rows, d, j))?;
                let mut runs = Vec::new();
                for _ in 0..2 {
                    let dwb = ex.upload(&dw0)?;
                    rowdot::bwd_dw(ex, &doutb, y, &zb, &dwb, &scratch, rows, d, j)?;
                    runs.push(ex.download(&dwb)?);
                }
                assert_close(
                    &format!("dw ({what})"),
                    &f64s(&runs[0]),
                    &dw,
                    F32_TOL,
                    F32_TOL,
                )?;
                anyhow::ensure!(runs[0] == runs[1], "dw repeat differs ({what})");
            }
        }
        Ok(())
    });
}

#[test]
fn rowdot_rejects_bad_shapes() {
    let ex = traffic_moe::backend::gpu::Executor::sim();
    let z = ex.alloc_zeroed::<bf16>(10 * 65).unwrap();
    let w = ex.alloc_zeroed::<f32>(65 * 10).unwrap();
    let out = ex.alloc_zeroed::<f32>(10 * 65).unwrap();
    let err = rowdot::fwd(&ex, &z, &w, &out, 10, 10, 65, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("j 65"), "{err}");
    let err = rowdot::fwd(&ex, &z, &w, &out, 100, 10, 8, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rowdot_fwd z"), "{err}");
}
