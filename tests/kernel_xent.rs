//! cuda/xent.cu against backend::cpu::xent (f64, same bf16 logits): per-row
//! losses, the mean, and dlogits (in place and into another buffer), with
//! ignored rows, targets in the unaligned head / vector body / tail of a row.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::xent;
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::ops::xent as gpu_xent;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

const IGNORE: u32 = 0; // [PAD]

/// (tokens, vocab). Odd vocabularies start rows at every alignment (scalar
/// head, 16-byte body, scalar tail); 4096 is a multiple of 8 (aligned rows, no
/// head or tail); 7 has no vector body. 1000 (64 threads) and 5003 (96) take
/// the 4-load loop once plus the one-vector remainder; 65541 (the benchmark's
/// vocabulary, 512 threads) takes it four times.
const SHAPES: [(usize, usize); 6] = [
    (13, 1000),
    (6, 2500),
    (40, 7),
    (9, 5003),
    (5, 4096),
    (3, 65541),
];

/// Targets in 0..vocab with ignored rows, plus targets at both ends of a row
/// (head and tail elements, whatever the row's alignment).
fn targets(rng: &mut impl Rng, t: usize, v: usize, ignore: u32) -> Vec<u32> {
    let mut y: Vec<u32> = (0..t).map(|_| rng.random_range(0..v as u32)).collect();
    y[1] = ignore;
    y[t - 1] = ignore;
    y[0] = (v - 1) as u32;
    if t > 3 {
        y[2] = 1.min(v - 1) as u32;
    }
    y
}

/// Loss only (logits untouched), the mean, then the fused gradient: in place
/// when `in_place`, else into a separate buffer.
fn check(
    ex: &Executor,
    logits: &[bf16],
    targets: &[u32],
    ignore: u32,
    v: usize,
    in_place: bool,
) -> anyhow::Result<()> {
    let t = targets.len();
    let what = format!("T {t} V {v} ignore {ignore} in_place {in_place}");
    let lf = bf_f64(logits);
    let mut want_losses = vec![0.0f64; t];
    let want_mean = xent::fwd(&lf, targets, ignore, &mut want_losses);
    let dloss = 1.5f64;
    let mut want_d = vec![0.0f64; t * v];
    xent::bwd(&lf, targets, ignore, dloss, &mut want_d);
    let n_valid = targets.iter().filter(|&&y| y != ignore).count().max(1);

    let (lb, tb, lossb, meanb) = (
        ex.upload(logits)?,
        ex.upload(targets)?,
        ex.alloc_zeroed::<f32>(t)?,
        ex.alloc_zeroed::<f32>(1)?,
    );
    gpu_xent::fwd_bwd(ex, &lb, &tb, ignore, &lossb, None, t, v, v)?;
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
    gpu_xent::mean(ex, &lossb, &tb, ignore, &meanb, t)?;
    assert_close(
        &format!("xent mean ({what})"),
        &f64s(&ex.download(&meanb)?),
        &[want_mean],
        1e-5,
        1e-5,
    )?;

    // Fused: a garbage-filled separate buffer, or the logits themselves.
    let db = if in_place {
        None
    } else {
        Some(ex.upload(&vec![bf16::from_f32(7.0); t * v])?)
    };
    let dref = db.as_ref().unwrap_or(&lb);
    let lossb2 = ex.alloc_zeroed::<f32>(t)?;
    let scale = (dloss / n_valid as f64) as f32;
    gpu_xent::fwd_bwd(ex, &lb, &tb, ignore, &lossb2, Some((dref, scale)), t, v, v)?;
    assert_close(
        &format!("xent losses, fused ({what})"),
        &f64s(&ex.download(&lossb2)?),
        &want_losses,
        1e-5,
        1e-5,
    )?;
    let got = bf_f64(&ex.download(dref)?);
    // Target elements (about -grad_scale) apart from the rest (tiny
    // probabilities): a few large roundings would dominate the bias check of
    // assert_close, and there are too few of them for one of their own.
    // bf16 keeps tiny values relative: atol well below one.
    let is_target = |i: usize| targets[i / v] != ignore && i % v == targets[i / v] as usize;
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for i in 0..t * v {
        if is_target(i) {
            anyhow::ensure!(
                (got[i] - want_d[i]).abs() <= BF16_RTOL * want_d[i].abs(),
                "xent dlogits at target {i}: got {}, expected {} ({what})",
                got[i],
                want_d[i]
            );
        } else {
            g.push(got[i]);
            w.push(want_d[i]);
        }
    }
    assert_close(&format!("xent dlogits ({what})"), &g, &w, 1e-12, BF16_RTOL)?;
    for (r, &y) in targets.iter().enumerate() {
        let row = &got[r * v..(r + 1) * v];
        if y == ignore {
            anyhow::ensure!(
                row.iter().all(|&g| g == 0.0),
                "ignored row {r} has a gradient ({what})"
            );
        } else {
            anyhow::ensure!(
                row[y as usize] < 0.0,
                "row {r}: target's gradient >= 0 ({what})"
            );
        }
    }
    if !in_place {
        anyhow::ensure!(
            ex.download(&lb)? == logits,
            "xent into another buffer changed the logits ({what})"
        );
    }
    Ok(())
}

#[test]
fn xent_fwd_bwd_match_reference() {
    run_on_executors("xent", |ex| {
        let mut rng = rng(51);
        for (i, (t, v)) in SHAPES.into_iter().enumerate() {
            let (logits, _) = bf16_input(&mut rng, t * v, 8.0);
            let y = targets(&mut rng, t, v, IGNORE);
            check(ex, &logits, &y, IGNORE, v, i % 2 == 0)?;
        }
        Ok(())
    });
}

/// Ignore index outside the vocabulary (target 0 is then a real class), both
/// gradient destinations, and -inf logits (masked classes) in every part of a row.
#[test]
fn xent_ignore_outside_vocab_and_masked_logits() {
    run_on_executors("xent_masked", |ex| {
        let mut rng = rng(52);
        let ignore = u32::MAX;
        for (t, v) in [(11usize, 1001usize), (4, 4096)] {
            let (mut logits, _) = bf16_input(&mut rng, t * v, 4.0);
            for (i, x) in logits.iter_mut().enumerate() {
                if i % 7 == 3 {
                    *x = bf16::NEG_INFINITY;
                }
            }
            let mut y = targets(&mut rng, t, v, ignore);
            y[3] = 0;
            // Targets on a finite logit: step off a masked one.
            for (r, c) in y.iter_mut().enumerate() {
                if *c != ignore && (r * v + *c as usize) % 7 == 3 {
                    *c = if *c > 0 { *c - 1 } else { 1 };
                }
            }
            check(ex, &logits, &y, ignore, v, false)?;
            check(ex, &logits, &y, ignore, v, true)?;
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
        gpu_xent::fwd_bwd(ex, &lb, &tb, IGNORE, &lossb, None, t, v, v)?;
        gpu_xent::mean(ex, &lossb, &tb, IGNORE, &meanb, t)?;
        anyhow::ensure!(
            ex.download(&meanb)? == [0.0],
            "mean over no valid rows should be 0"
        );
        Ok(())
    });
}

/// The LM head's layout: rows `ld` apart with the vocabulary padded to a
/// multiple of 8 (`ld > vocab`; 5 is the smallest vocabulary a config
/// allows), one row and several; the padding columns must be neither read
/// (they hold NaN here) nor written. Then extreme but finite logits: equal
/// huge values (uniform softmax), a +-3e4 spread (probabilities that
/// underflow to 0 next to one of 1) and +-1e30 mixed in one row.
#[test]
fn xent_padded_rows_and_extreme_logits() {
    run_on_executors("xent_padded", |ex| {
        let mut rng = rng(53);
        let nan = bf16::NAN;
        for (t, v, ld) in [
            (1usize, 5usize, 8usize),
            (3, 5, 8),
            (4, 13, 16),
            (3, 1003, 1008),
        ] {
            let (dense, lf) = bf16_input(&mut rng, t * v, 6.0);
            let y = if t == 1 {
                vec![(v - 1) as u32]
            } else {
                targets(&mut rng, t, v, IGNORE)
            };
            let mut padded = vec![nan; t * ld];
            for r in 0..t {
                padded[r * ld..r * ld + v].copy_from_slice(&dense[r * v..(r + 1) * v]);
            }
            let mut want_l = vec![0.0; t];
            xent::fwd(&lf, &y, IGNORE, &mut want_l);
            let mut want_d = vec![0.0; t * v];
            xent::bwd(&lf, &y, IGNORE, 1.0, &mut want_d);
            let n_valid = y.iter().filter(|&&c| c != IGNORE).count().max(1);
            let what = format!("T {t} V {v} ld {ld}");
            let (lb, tb, lossb) = (ex.upload(&padded)?, ex.upload(&y)?, ex.alloc_zeroed(t)?);
            let db = ex.upload(&vec![bf16::from_f32(7.0); t * ld])?;
            let scale = 1.0 / n_valid as f32;
            gpu_xent::fwd_bwd(ex, &lb, &tb, IGNORE, &lossb, Some((&db, scale)), t, v, ld)?;
            assert_close(
                &format!("xent losses ({what})"),
                &f64s(&ex.download(&lossb)?),
                &want_l,
                1e-5,
                1e-5,
            )?;
            let got = ex.download(&db)?;
            let mut body = Vec::new();
            for r in 0..t {
                body.extend(bf_f64(&got[r * ld..r * ld + v]));
                anyhow::ensure!(
                    got[r * ld + v..(r + 1) * ld]
                        .iter()
                        .all(|&g| g == bf16::from_f32(7.0)),
                    "padding columns of row {r} written ({what})"
                );
            }
            assert_close(
                &format!("xent dlogits ({what})"),
                &body,
                &want_d,
                1e-6,
                2.0 * BF16_RTOL,
            )?;
        }

        // Extreme but finite logits, V = 13 (a head, vectors and a tail):
        // equal 1e30 (uniform softmax), +-3e4 (probabilities of 1 and 0)
        // with the target on the largest and on a smallest, +-1e30
        // alternating; then logits past 2.36e38 (whose x * log2(e)
        // overflowed f32: NaN losses and gradients): equal 3e38, 3e38 over
        // 1e38, equal -3e38, and +-3e38 alternating (a spread of 6e38, past
        // FLT_MAX: those probabilities are 0, and a loss of 6e38 is inf in
        // f32). The loss is (m - x_t) + ln s (m the row's max, s = sum
        // exp(x - m)), exact when x_t = m, as the CPU reference computes it;
        // the gradient exp(x - m) / s.
        let v = 13;
        let alt =
            |a: f32| -> Vec<f32> { (0..v).map(|i| if i % 2 == 0 { a } else { -a }).collect() };
        let spike = |hi: f32, lo: f32| -> Vec<f32> {
            (0..v).map(|i| if i == 4 { hi } else { lo }).collect()
        };
        let rows: [(Vec<f32>, u32); 11] = [
            (vec![1e30; v], 7),
            (spike(3e4, -3e4), 4),
            (spike(3e4, -3e4), 5),
            (alt(1e30), 2),
            (alt(1e30), 3),
            (vec![3e38; v], 7),
            (spike(3e38, 1e38), 4),
            (spike(3e38, 1e38), 5),
            (vec![-3e38; v], 1),
            (alt(3e38), 2),
            (alt(3e38), 3),
        ];
        let logits = to_bf16(&rows.iter().flat_map(|r| r.0.clone()).collect::<Vec<_>>());
        let y: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let lf = bf_f64(&logits);
        let mut want_l = vec![0.0; y.len()];
        xent::fwd(&lf, &y, IGNORE, &mut want_l);
        // The CPU engine's f32 gives the same losses (inf where f64's passes
        // FLT_MAX).
        let mut want_l32 = vec![0f32; y.len()];
        let l32: Vec<f32> = logits.iter().map(|x| x.to_f32()).collect();
        xent::fwd(&l32, &y, IGNORE, &mut want_l32);
        for (r, (&l64, &l32)) in want_l.iter().zip(&want_l32).enumerate() {
            anyhow::ensure!(
                l32 == l64 as f32 || ((l32 as f64 - l64) / l64).abs() < 1e-6,
                "row {r}: CPU reference f32 loss {l32:e} vs f64 {l64:e}"
            );
        }
        anyhow::ensure!(
            (want_l[5] - 13f64.ln()).abs() < 1e-12 && want_l[10] as f32 == f32::INFINITY,
            "reference losses {want_l:?}"
        );
        let scale = 1.0 / y.len() as f32;
        let (lb, tb, lossb) = (
            ex.upload(&logits)?,
            ex.upload(&y)?,
            ex.alloc_zeroed(y.len())?,
        );
        let db = ex.alloc_zeroed::<bf16>(logits.len())?;
        gpu_xent::fwd_bwd(
            ex,
            &lb,
            &tb,
            IGNORE,
            &lossb,
            Some((&db, scale)),
            y.len(),
            v,
            v,
        )?;
        let got_l = ex.download(&lossb)?;
        // Losses past FLT_MAX are inf on both sides; the rest are compared.
        let (mut g, mut w) = (Vec::new(), Vec::new());
        for (r, (&got, &want)) in got_l.iter().zip(&want_l).enumerate() {
            if (want as f32).is_infinite() {
                anyhow::ensure!(got == f32::INFINITY, "row {r}: loss {got}, expected inf");
            } else {
                g.push(got as f64);
                w.push(want);
            }
        }
        assert_close("xent losses (extreme logits)", &g, &w, 1e-5, 1e-5)?;
        let mut want_d = vec![0.0; logits.len()];
        xent::bwd(&lf, &y, IGNORE, 1.0, &mut want_d);
        let got_d = bf_f64(&ex.download(&db)?);
        assert_close(
            "xent dlogits (extreme logits)",
            &got_d,
            &want_d,
            1e-6,
            BF16_RTOL,
        )?;
        Ok(())
    });
}
