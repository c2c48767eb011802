//! cuda/bias_grad.cu against the column sum in f64 (the bias gradient of
//! backend::cpu::matmul's linear backward, on the same bf16 `dy`), on every
//! available executor. Shapes: rows 1, 37, 1000, 4097 x n 1, 7, 24, 768; each
//! dense (`ld = n`), strided (`ld = n + 8`: the 16-byte path when n % 8 == 0;
//! `n + 3`: scalar) and, for n % 8 == 0, a view 1 element off 16-byte
//! alignment (scalar); accumulate on and off. The one-pass (one row split)
//! and two-pass (partials + reduce) plans both occur on both paths.

mod kernel_util;

use std::sync::Arc;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::gpu::Buf;
use traffic_moe::backend::gpu::ops::bias_grad;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

const ROWS: [usize; 4] = [1, 37, 1000, 4097];
const NS: [usize; 4] = [1, 7, 24, 768];

/// db0 (when accumulating) + Σ_t dy[t, c] in f64.
fn reference(dy: &[f64], ld: usize, rows: usize, n: usize, db0: Option<&[f32]>) -> Vec<f64> {
    let mut db: Vec<f64> = db0.map_or(vec![0.0; n], f64s);
    for t in 0..rows {
        for (c, v) in db.iter_mut().enumerate() {
            *v += dy[t * ld + c];
        }
    }
    db
}

#[test]
fn bias_grad_matches_reference() {
    run_on_executors("bias_grad", |ex| {
        let mut rng = rng(11);
        // (vec, splits > 1) combinations seen.
        let mut seen = [[false; 2]; 2];
        for rows in ROWS {
            for n in NS {
                // (ld, offset of the view in elements)
                let mut layouts = vec![(n, 0), (n + 3, 0)];
                if n % 8 == 0 {
                    layouts.push((n + 8, 0));
                    layouts.push((n, 1));
                }
                for (ld, off) in layouts {
                    let len = rows * ld;
                    let (dy, dyf) = bf16_input(&mut rng, len + off, 1.0);
                    let full = Arc::new(ex.upload(&dy)?);
                    let view = Buf::view(&full, off, len).expect("in range");
                    let vec = bias_grad::vec_path(&view, ld, n);
                    let plan = bias_grad::plan(rows, n, vec);
                    seen[vec as usize][(plan.splits > 1) as usize] = true;
                    let sl = bias_grad::scratch_len(rows, n);
                    let scratch = if sl > 0 {
                        Some(ex.alloc_zeroed::<f32>(sl)?)
                    } else {
                        None
                    };
                    for accumulate in [false, true] {
                        let db0 = uniform(&mut rng, n, 0.5);
                        let want =
                            reference(&dyf[off..], ld, rows, n, accumulate.then_some(&db0[..]));
                        let run = || -> anyhow::Result<Vec<f64>> {
                            let db = ex.upload(&db0)?;
                            bias_grad::run(
                                ex,
                                &view,
                                ld,
                                rows,
                                n,
                                &db,
                                accumulate,
                                scratch.as_ref(),
                            )?;
                            Ok(f64s(&ex.download(&db)?))
                        };
                        let got = run()?;
                        let what = format!(
                            "db (rows {rows} n {n} ld {ld} off {off} acc {accumulate}, {plan:?})"
                        );
                        // fp32 sums of |dy| <= 1 over `rows` terms.
                        assert_close(&what, &got, &want, 1e-6 * rows as f64, 1e-5)?;
                        // Deterministic: the same bits again.
                        anyhow::ensure!(run()? == got, "{what}: differs between runs");
                    }
                }
            }
        }
        anyhow::ensure!(
            seen == [[true; 2]; 2],
            "plans covered (vec, multi-split): {seen:?}"
        );
        Ok(())
    });
}

/// Few rows take one pass: no scratch needed; rows = 0 zeroes (or keeps) db.
#[test]
fn bias_grad_edge_cases() {
    let ex = traffic_moe::backend::gpu::Executor::sim();
    assert_eq!(bias_grad::scratch_len(37, 768), 0);
    assert!(bias_grad::scratch_len(4097, 768) > 0);
    let dy = ex.alloc_zeroed::<bf16>(8).unwrap();
    let db = ex.upload(&[1f32; 8]).unwrap();
    bias_grad::run(&ex, &dy, 8, 0, 8, &db, true, None).unwrap();
    assert_eq!(ex.download(&db).unwrap(), vec![1f32; 8]);
    bias_grad::run(&ex, &dy, 8, 0, 8, &db, false, None).unwrap();
    assert_eq!(ex.download(&db).unwrap(), vec![0f32; 8]);
    // Wrong sizes and a missing scratch are errors, not launches.
    assert!(bias_grad::run(&ex, &dy, 8, 2, 8, &db, true, None).is_err());
    assert!(bias_grad::run(&ex, &dy, 4, 1, 8, &db, true, None).is_err());
    let big = ex.alloc_zeroed::<bf16>(4097 * 768).unwrap();
    let db768 = ex.alloc_zeroed::<f32>(768).unwrap();
    assert!(bias_grad::run(&ex, &big, 768, 4097, 768, &db768, true, None).is_err());
}
