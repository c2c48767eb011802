//! cuda/xent.cu against backend::cpu::xent (f64, same bf16 logits): per-row
//! losses, the mean, and dlogits written in place, with ignored rows.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::xent;
use traffic_moe::backend::gpu::ops::xent as gpu_xent;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

const IGNORE: u32 = 0; // [PAD]
// (tokens, vocab): vocabularies not multiples of the block; 2500 uses 512 threads.
const SHAPES: [(usize, usize); 3] = [(13, 1000), (6, 2500), (40, 7)];

#[test]
fn xent_fwd_bwd_match_reference() {
    run_on_executors("xent", |ex| {
        let mut rng = rng(51);
        for (t, v) in SHAPES {
            let what = format!("T {t} V {v}");
            let (logits, lf) = bf16_input(&mut rng, t * v, 8.0);
            let mut targets: Vec<u32> = (0..t).map(|_| rng.random_range(0..v as u32)).collect();
            targets[1] = IGNORE;
            targets[t - 1] = IGNORE;
            let mut want_losses = vec![0.0f64; t];
            let want_mean = xent::fwd(&lf, &targets, IGNORE, &mut want_losses);
            let dloss = 1.5f64;
            let mut want_d = vec![0.0f64; t * v];
            xent::bwd(&lf, &targets, IGNORE, dloss, &mut want_d);
            let n_valid = targets.iter().filter(|&&y| y != IGNORE).count();

            let (lb, tb, lossb, meanb) = (
                ex.upload(&logits)?,
                ex.upload(&targets)?,
                ex.alloc_zeroed::<f32>(t)?,
                ex.alloc_zeroed::<f32>(1)?,
            );
            // Loss only first: logits untouched.
            gpu_xent::fwd_bwd(ex, &lb, &tb, IGNORE, &lossb, None, t, v)?;
            anyhow::ensure!(
                ex.download(&lb)? == logits,
                "xent without grad changed the logits ({what})"
            );
            assert_close(
                &format!("xent losses ({what})"),
                &f64s(&ex.download(&lossb)?),
                &want_losses,
                1e-5,
                1e-5,
            )?;
            gpu_xent::mean(ex, &lossb, &tb, IGNORE, &meanb, t)?;
            assert_close(
                &format!("xent mean ({what})"),
                &f64s(&ex.download(&meanb)?),
                &[want_mean],
                1e-5,
                1e-5,
            )?;

            // Fused, in place: dlogits over the logits buffer.
            gpu_xent::fwd_bwd(
                ex,
                &lb,
                &tb,
                IGNORE,
                &lossb,
                Some((&lb, (dloss / n_valid as f64) as f32)),
                t,
                v,
            )?;
            assert_close(
                &format!("xent losses, fused ({what})"),
                &f64s(&ex.download(&lossb)?),
                &want_losses,
                1e-5,
                1e-5,
            )?;
            let got = bf_f64(&ex.download(&lb)?);
            // Tiny probabilities: bf16 keeps them relative; atol well below one of them.
            assert_close(
                &format!("xent dlogits ({what})"),
                &got,
                &want_d,
                1e-12,
                BF16_RTOL,
            )?;
            anyhow::ensure!(
                got[v..2 * v].iter().all(|&g| g == 0.0),
                "ignored row has a gradient ({what})"
            );
        }
        Ok(())
    });
}

#[test]
fn xent_all_ignored_mean_is_zero() {
    run_on_executors("xent_all_ignored", |ex| {
        let (t, v) = (4, 33);
        let lb = ex.upload(&vec![bf16::from_f32(1.0); t * v])?;
        let tb = ex.upload(&vec![IGNORE; t])?;
        let (lossb, meanb) = (ex.alloc_zeroed::<f32>(t)?, ex.upload(&[5.0f32])?);
        gpu_xent::fwd_bwd(ex, &lb, &tb, IGNORE, &lossb, None, t, v)?;
        gpu_xent::mean(ex, &lossb, &tb, IGNORE, &meanb, t)?;
        anyhow::ensure!(
            ex.download(&meanb)? == [0.0],
            "mean over no valid rows should be 0"
        );
        Ok(())
    });
}
