//! cuda/embed.cu against backend::cpu::embedding (f64, same bf16/f32 inputs),
//! on every available executor.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::embedding;
use traffic_moe::backend::gpu::ops::embed::{self, EmbedBwdPlan};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

#[test]
fn embedding_fwd_bwd_match_reference() {
    run_on_executors("embedding", |ex| {
        let mut rng = rng(11);
        for (rows, d, vocab) in [(77usize, 100usize, 50usize), (64, 96, 1000), (5, 13, 3)] {
            // Skewed ids: many repeats of a few tokens, like [PAD] in real batches.
            let ids: Vec<u32> = (0..rows)
                .map(|_| {
                    if rng.random::<f32>() < 0.4 {
                        0
                    } else {
                        rng.random_range(0..vocab as u32)
                    }
                })
                .collect();
            let table = uniform(&mut rng, vocab * d, 1.0);
            let shape = format!("rows {rows} d {d} vocab {vocab}");

            let idb = ex.upload(&ids)?;
            let tb = ex.upload(&table)?;
            let out = ex.alloc_zeroed::<bf16>(rows * d)?;
            embed::fwd(ex, &idb, &tb, &out, rows, d, vocab)?;
            let got: Vec<f64> = ex.download(&out)?.iter().map(|v| v.to_f64()).collect();
            let mut want = vec![0.0f64; rows * d];
            embedding::fwd(&ids, &f64s(&table), d, &mut want);
            // One bf16 rounding of an exact copy: half an ulp.
            assert_close(
                &format!("embedding out ({shape})"),
                &got,
                &want,
                0.0,
                1.0 / 256.0,
            )?;

            let (dout, doutf) = bf16_input(&mut rng, rows * d, 0.5);
            let dtable0: Vec<f32> = (0..vocab * d).map(|i| (i % 5) as f32 * 0.01).collect();
            let mut want = f64s(&dtable0);
            embedding::bwd(&ids, &doutf, d, &mut want);
            let plan = EmbedBwdPlan::new(ex, &ids, vocab)?;
            let db = ex.upload(&dout)?;
            let dt = ex.upload(&dtable0)?;
            embed::bwd(ex, &plan, &db, &dt, d, vocab)?;
            let got: Vec<f64> = ex.download(&dt)?.iter().map(|&v| v as f64).collect();
            assert_close(
                &format!("dtable ({shape})"),
                &got,
                &want,
                1e-5 * rows as f64,
                1e-5,
            )?;

            let dt2 = ex.upload(&dtable0)?;
            embed::bwd(ex, &plan, &db, &dt2, d, vocab)?;
            let again: Vec<f64> = ex.download(&dt2)?.iter().map(|&v| v as f64).collect();
            anyhow::ensure!(
                again == got,
                "embedding backward is not deterministic ({shape})"
            );
        }
        Ok(())
    });
}

#[test]
fn out_of_range_ids_are_rejected_by_the_plan_and_zeroed_forward() {
    let ex = traffic_moe::backend::gpu::Executor::sim();
    let err = EmbedBwdPlan::new(&ex, &[1, 9], 4)
        .err()
        .expect("id 9 >= vocab 4")
        .to_string();
    assert!(err.contains("id 9"), "{err}");
    let ids = ex.upload(&[1u32, 9]).unwrap();
    let table = ex.upload(&[1.0f32; 8]).unwrap();
    let out = ex.alloc_zeroed::<bf16>(4).unwrap();
    embed::fwd(&ex, &ids, &table, &out, 2, 2, 4).unwrap();
    let got: Vec<f32> = ex
        .download(&out)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    assert_eq!(got, vec![1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn plan_groups_rows_by_id_in_row_order() {
    let (order, start, id) = EmbedBwdPlan::host(&[3, 1, 3, 0, 1, 3]);
    assert_eq!(order, vec![3, 1, 4, 0, 2, 5]);
    assert_eq!(start, vec![0, 1, 3, 6]);
    assert_eq!(id, vec![0, 1, 3]);
}
