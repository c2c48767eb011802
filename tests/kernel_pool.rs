//! cuda/pool.cu against backend::cpu::pool (f64, same bf16 inputs), including
//! a sequence with no valid token.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::pool;
use traffic_moe::backend::gpu::ops::pool::{self as gpu_pool, PoolShape};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

const SHAPES: [(usize, usize, usize); 3] = [(3, 37, 45), (2, 5, 300), (4, 64, 8)];

#[test]
fn pool_mean_fwd_bwd_match_reference() {
    run_on_executors("pool_mean", |ex| {
        let mut rng = rng(61);
        for (b, s, d) in SHAPES {
            let what = format!("B {b} S {s} d {d}");
            let (x, xf) = bf16_input(&mut rng, b * s * d, 2.0);
            // Valid prefixes of random length, as padded flows have; batch 1 is all padding.
            let mut mask = vec![0u8; b * s];
            for bi in 0..b {
                let len = if bi == 1 { 0 } else { rng.random_range(1..=s) };
                mask[bi * s..bi * s + len].iter_mut().for_each(|m| *m = 1);
            }
            let mut want = vec![0.0f64; b * d];
            pool::mean_fwd(&xf, &mask, b, s, d, &mut want);
            let shape = PoolShape {
                batch: b,
                seq: s,
                d,
            };
            let (xb, mb) = (ex.upload(&x)?, ex.upload(&mask)?);
            let ob = ex.upload(&vec![bf16::from_f32(9.0); b * d])?;
            gpu_pool::mean_fwd(ex, &xb, &mb, &ob, &shape)?;
            assert_close(
                &format!("pool out ({what})"),
                &bf_f64(&ex.download(&ob)?),
                &want,
                1e-5,
                BF16_RTOL,
            )?;

            let (dout, doutf) = bf16_input(&mut rng, b * d, 1.0);
            let mut want = vec![0.0f64; b * s * d];
            pool::mean_bwd(&doutf, &mask, b, s, d, &mut want);
            let dxb = ex.upload(&vec![bf16::from_f32(9.0); b * s * d])?;
            gpu_pool::mean_bwd(ex, &ex.upload(&dout)?, &mb, &dxb, &shape)?;
            assert_close(
                &format!("pool dx ({what})"),
                &bf_f64(&ex.download(&dxb)?),
                &want,
                1e-6,
                BF16_RTOL,
            )?;
        }
        Ok(())
    });
}
