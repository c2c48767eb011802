//! cuda/swiglu.cu against backend::cpu::swiglu (f64, same bf16 inputs).

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::swiglu;
use traffic_moe::backend::gpu::ops::swiglu as gpu_swiglu;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

const SHAPES: [(usize, usize); 3] = [(7, 45), (33, 300), (97, 1)];

#[test]
fn swiglu_fwd_bwd_match_reference() {
    run_on_executors("swiglu", |ex| {
        let mut rng = rng(12);
        for (rows, cols) in SHAPES {
            let n = rows * cols;
            let what = format!("rows {rows} cols {cols}");
            let (g, gf) = bf16_input(&mut rng, n, 6.0);
            let (u, uf) = bf16_input(&mut rng, n, 2.0);
            let (d, df) = bf16_input(&mut rng, n, 1.0);
            let mut want = vec![0.0f64; n];
            swiglu::fwd(&gf, &uf, &mut want);
            let (gb, ub, db) = (ex.upload(&g)?, ex.upload(&u)?, ex.upload(&d)?);
            let ob = ex.alloc_zeroed::<bf16>(n)?;
            gpu_swiglu::fwd(ex, &gb, &ub, &ob, rows, cols)?;
            assert_close(
                &format!("swiglu out ({what})"),
                &bf_f64(&ex.download(&ob)?),
                &want,
                1e-5,
                BF16_RTOL,
            )?;

            let (mut wdg, mut wdu) = (vec![0.0f64; n], vec![0.0f64; n]);
            swiglu::bwd(&gf, &uf, &df, &mut wdg, &mut wdu);
            let (dgb, dub) = (ex.alloc_zeroed::<bf16>(n)?, ex.alloc_zeroed::<bf16>(n)?);
            gpu_swiglu::bwd(ex, &gb, &ub, &db, &dgb, &dub, rows, cols)?;
            assert_close(
                &format!("swiglu dgate ({what})"),
                &bf_f64(&ex.download(&dgb)?),
                &wdg,
                1e-5,
                BF16_RTOL,
            )?;
            assert_close(
                &format!("swiglu dup ({what})"),
                &bf_f64(&ex.download(&dub)?),
                &wdu,
                1e-5,
                BF16_RTOL,
            )?;

            // In place (the backward overwrites gate and up): same result.
            gpu_swiglu::bwd(ex, &gb, &ub, &db, &gb, &ub, rows, cols)?;
            anyhow::ensure!(
                ex.download(&gb)? == ex.download(&dgb)?,
                "in-place dgate differs ({what})"
            );
            anyhow::ensure!(
                ex.download(&ub)? == ex.download(&dub)?,
                "in-place dup differs ({what})"
            );
        }
        Ok(())
    });
}
