//! cuda/pool.cu against backend::cpu::pool (f64, same bf16 inputs), including
//! a sequence with no valid token.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::pool;
use traffic_moe::backend::gpu::ops::pool::{self as gpu_pool, PoolShape};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

// Scalar path: d = 45, 300 (not multiples of 8). 16-byte path: d = 8 (one
// partial column tile), 768 (three full tiles), 200 (a partial last tile);
// seq 100 and 70 leave a partial backward block of positions; seq 4100 is
// longer than the forward's shared-memory copy of the mask.
const SHAPES: [(usize, usize, usize); 7] = [
    (3, 37, 45),
    (2, 5, 300),
    (4, 64, 8),
    (3, 100, 768),
    (2, 70, 200),
    (2, 1, 16),
    (3, 4100, 16),
];

#[test]
fn pool_mean_fwd_bwd_match_reference() {
    run_on_executors("pool_mean", |ex| {
        let mut rng = rng(61);
        for (b, s, d) in SHAPES {
            let what = format!("B {b} S {s} d {d}");
            let (x, xf) = bf16_input(&mut rng, b * s * d, 2.0);
            // Valid prefixes of random length, as padded flows have; batch 1 is
            // all padding, batch 2 has random holes.
            let mut mask = vec![0u8; b * s];
            for bi in 0..b {
                let row = &mut mask[bi * s..(bi + 1) * s];
                match bi {
                    1 => {}
                    2 => row.iter_mut().for_each(|m| *m = rng.random_range(0..2)),
                    _ => {
                        let len = rng.random_range(1..=s);
                        row[..len].iter_mut().for_each(|m| *m = 1);
                    }
                }
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
            // Fixed summation order: a second run gives the same bits.
            let ob2 = ex.alloc_zeroed::<bf16>(b * d)?;
            gpu_pool::mean_fwd(ex, &xb, &mb, &ob2, &shape)?;
            anyhow::ensure!(
                ex.download(&ob2)? == ex.download(&ob)?,
                "pool out differs between runs ({what})"
            );

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
