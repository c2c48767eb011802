//! cuda/rmsnorm.cu against backend::cpu::rmsnorm (f64, same bf16 inputs),
//! on every available executor. Odd shapes exercise the scalar path and partial
//! blocks; d % 8 == 0 shapes the 16-byte vector paths (forward and backward).

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::alloc::as_uninit;
use traffic_moe::backend::cpu::rmsnorm as cpu_rmsnorm;
use traffic_moe::backend::gpu::ops::rmsnorm;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

// Scalar path: d = 300, 77 (odd). Vector path with the lane's share in
// registers (d <= 768): 264 (lanes with 2 and 1 column groups), 8, 768 (the
// model's d), 64 with more rows than the backward's warps (several rows per
// warp); the looping vector path: 1000, 2056 (a backward block of 5 warps, to
// fit the shared-memory dw slices).
const SHAPES: [(usize, usize); 8] = [
    (37, 300),
    (23, 77),
    (19, 264),
    (5, 1000),
    (300, 8),
    (4, 2056),
    (70, 768),
    (4500, 64),
];

struct Reference {
    y: Vec<f64>,
    rstd: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
}

/// backend::cpu::rmsnorm in f64 on the kernel's (bf16-rounded) inputs.
fn reference(x: &[f64], w: &[f64], dy: &[f64], dw0: &[f64], d: usize, eps: f64) -> Reference {
    let rows = x.len() / d;
    let mut r = Reference {
        y: vec![0.0; rows * d],
        rstd: vec![0.0; rows],
        dx: vec![0.0; rows * d],
        dw: dw0.to_vec(),
    };
    cpu_rmsnorm::fwd(x, w, d, eps, as_uninit(&mut r.y), as_uninit(&mut r.rstd));
    cpu_rmsnorm::bwd(x, w, &r.rstd, dy, d, as_uninit(&mut r.dx), &mut r.dw);
    r
}

#[test]
fn rmsnorm_fwd_bwd_match_reference() {
    run_on_executors("rmsnorm", |ex| {
        let mut rng = rng(7);
        for (rows, d) in SHAPES {
            let eps = 1e-5f32;
            let (x, xf) = bf16_input(&mut rng, rows * d, 2.0);
            let w: Vec<f32> = uniform(&mut rng, d, 0.5).iter().map(|v| v + 1.0).collect();
            let (dy, dyf) = bf16_input(&mut rng, rows * d, 1.0);
            let dw0 = uniform(&mut rng, d, 0.1); // dw accumulates (+=)
            let want = reference(&xf, &f64s(&w), &dyf, &f64s(&dw0), d, eps as f64);

            let (xb, wb, dyb) = (ex.upload(&x)?, ex.upload(&w)?, ex.upload(&dy)?);
            let yb = ex.alloc_zeroed::<bf16>(rows * d)?;
            let rstdb = ex.alloc_zeroed::<f32>(rows)?;
            rmsnorm::fwd(ex, &xb, &wb, &yb, &rstdb, rows, d, eps)?;
            let shape = format!("rows {rows} d {d}");
            // rsqrtf is approximate on the GPU (2 ulp): a little atol on top.
            assert_close(
                &format!("rstd ({shape})"),
                &f64s(&ex.download(&rstdb)?),
                &want.rstd,
                0.0,
                1e-5,
            )?;
            assert_close(
                &format!("y ({shape})"),
                &bf_f64(&ex.download(&yb)?),
                &want.y,
                1e-6,
                BF16_RTOL,
            )?;

            let dxb = ex.alloc_zeroed::<bf16>(rows * d)?;
            let dwb = ex.upload(&dw0)?;
            let scratch = ex.alloc_zeroed::<f32>(rmsnorm::bwd_scratch_len(rows, d))?;
            rmsnorm::bwd(ex, &xb, &wb, &rstdb, &dyb, &dxb, &dwb, &scratch, rows, d)?;
            // dx is a difference of two terms: allow fp32 cancellation relative to their scale.
            let dx_scale = want.dx.iter().map(|v| v.abs()).sum::<f64>() / want.dx.len() as f64;
            assert_close(
                &format!("dx ({shape})"),
                &bf_f64(&ex.download(&dxb)?),
                &want.dx,
                1e-3 * dx_scale,
                BF16_RTOL,
            )?;
            let dw = f64s(&ex.download(&dwb)?);
            assert_close(
                &format!("dw ({shape})"),
                &dw,
                &want.dw,
                1e-5 * rows as f64,
                1e-4,
            )?;

            // Deterministic: a second backward pass from the same dw gives identical bits.
            let dwb2 = ex.upload(&dw0)?;
            rmsnorm::bwd(ex, &xb, &wb, &rstdb, &dyb, &dxb, &dwb2, &scratch, rows, d)?;
            anyhow::ensure!(
                f64s(&ex.download(&dwb2)?) == dw,
                "dw differs between runs ({shape})"
            );
        }
        Ok(())
    });
}

#[test]
fn rmsnorm_rejects_wrong_sizes() {
    let ex = traffic_moe::backend::gpu::Executor::sim();
    let x = ex.alloc_zeroed::<bf16>(10).unwrap();
    let w = ex.alloc_zeroed::<f32>(5).unwrap();
    let rstd = ex.alloc_zeroed::<f32>(2).unwrap();
    let err = rmsnorm::fwd(&ex, &x, &w, &x, &rstd, 3, 5, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rmsnorm x"), "{err}");
}
