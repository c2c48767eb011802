//! cuda/embed.cu against backend::cpu::embedding (f64, same bf16/f32 inputs),
//! on every available executor; `embed_fwd_bf16` against `embed_fwd` bit for bit.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use rand::rngs::StdRng;
use traffic_moe::backend::cpu::embedding;
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::ops::embed::{self, BWD_TILE, EmbedBwdScratch};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

/// `rows` ids in 0..vocab; a fraction `hot` of them is id 0 (like [PAD]).
fn skewed_ids(rng: &mut StdRng, rows: usize, vocab: usize, hot: f32) -> Vec<u32> {
    (0..rows)
        .map(|_| {
            if rng.random::<f32>() < hot {
                0
            } else {
                rng.random_range(0..vocab as u32)
            }
        })
        .collect()
}

/// Forward and backward against the reference; the backward twice, bitwise equal.
fn check(
    ex: &Executor,
    rng: &mut StdRng,
    ids: &[u32],
    d: usize,
    vocab: usize,
) -> anyhow::Result<()> {
    let rows = ids.len();
    let shape = format!("rows {rows} d {d} vocab {vocab}");
    let table = uniform(rng, vocab * d, 1.0);
    let idb = ex.upload(ids)?;
    let tb = ex.upload(&table)?;
    let out = ex.alloc_zeroed::<bf16>(rows * d)?;
    embed::fwd(ex, &idb, &tb, &out, rows, d, vocab)?;
    let mut want = vec![0.0f64; rows * d];
    embedding::fwd(ids, &f64s(&table), d, &mut want);
    // One bf16 rounding of an exact copy: half an ulp.
    assert_close(
        &format!("embedding out ({shape})"),
        &bf_f64(&ex.download(&out)?),
        &want,
        0.0,
        1.0 / 256.0,
    )?;
    // From the table's bf16 copy (inference weights): the same bits. The
    // output starts as garbage, so a row the kernel skips shows.
    let t16: Vec<bf16> = table.iter().map(|&x| bf16::from_f32(x)).collect();
    let out16 = ex.alloc_uninit::<bf16>(rows * d)?;
    embed::fwd_bf16(ex, &idb, &ex.upload(&t16)?, &out16, rows, d, vocab)?;
    let (a, b) = (ex.download(&out)?, ex.download(&out16)?);
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        anyhow::bail!(
            "embed_fwd_bf16 ({shape}): element {i} is {} where embed_fwd gives {}",
            b[i],
            a[i]
        );
    }

    let (dout, doutf) = bf16_input(rng, rows * d, 0.5);
    let dtable0: Vec<f32> = (0..vocab * d).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut want = f64s(&dtable0);
    embedding::bwd(ids, &doutf, d, &mut want);
    let scratch = EmbedBwdScratch::alloc(ex, rows, d, vocab)?;
    let db = ex.upload(&dout)?;
    let dt = ex.upload(&dtable0)?;
    embed::bwd(ex, &idb, &db, &dt, &scratch, vocab)?;
    let got = f64s(&ex.download(&dt)?);
    // Row v of dtable is an fp32 sum of one term per occurrence of id v: its
    // tolerance grows with the hits of v, not with the total row count.
    let mut hits = vec![0usize; vocab];
    for &id in ids {
        hits[id as usize] += 1;
    }
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let tol = 1e-5 * (hits[i / d] as f64 + w.abs());
        anyhow::ensure!(
            (g - w).abs() <= tol,
            "dtable ({shape}): element {i} (id {}, {} hits): got {g}, want {w}",
            i / d,
            hits[i / d]
        );
    }

    let dt2 = ex.upload(&dtable0)?;
    embed::bwd(ex, &idb, &db, &dt2, &scratch, vocab)?;
    anyhow::ensure!(
        f64s(&ex.download(&dt2)?) == got,
        "embedding backward is not deterministic ({shape})"
    );
    Ok(())
}

#[test]
fn embedding_fwd_bwd_match_reference() {
    run_on_executors("embedding", |ex| {
        let mut rng = rng(11);
        // Partial tiles, several tiles, d % 8 == 0 (vector path) and odd d.
        for (rows, d, vocab) in [
            (77usize, 100usize, 50usize),
            (64, 96, 1000),
            (5, 13, 3),
            (3 * BWD_TILE + 41, 64, 300),
        ] {
            let ids = skewed_ids(&mut rng, rows, vocab, 0.4);
            check(ex, &mut rng, &ids, d, vocab)?;
        }
        Ok(())
    });
}

#[test]
fn embedding_bwd_one_id_covering_most_rows() {
    run_on_executors("embedding_skewed", |ex| {
        let mut rng = rng(12);
        for (rows, d) in [(6 * BWD_TILE + 77, 37), (4 * BWD_TILE, 72)] {
            let ids = skewed_ids(&mut rng, rows, 500, 0.9);
            let hot = ids.iter().filter(|&&id| id == 0).count();
            assert!(hot * 10 >= rows * 8, "{hot} of {rows} rows are id 0");
            check(ex, &mut rng, &ids, d, 500)?;
        }
        // Every row the same id.
        check(ex, &mut rng, &vec![3; 2 * BWD_TILE + 1], 24, 4)?;
        Ok(())
    });
}

#[test]
fn out_of_range_ids_are_zeroed_forward_and_skipped_backward() {
    let ex = Executor::sim();
    let ids = ex.upload(&[1u32, 9]).unwrap();
    let table = ex.upload(&[1.0f32; 8]).unwrap();
    let out = ex.alloc_zeroed::<bf16>(4).unwrap();
    embed::fwd(&ex, &ids, &table, &out, 2, 2, 4).unwrap();
    let got = bf_f64(&ex.download(&out).unwrap());
    assert_eq!(got, vec![1.0, 1.0, 0.0, 0.0]);
    let t16 = ex.upload(&[bf16::from_f32(1.0); 8]).unwrap();
    let out16 = ex.alloc_uninit::<bf16>(4).unwrap();
    embed::fwd_bf16(&ex, &ids, &t16, &out16, 2, 2, 4).unwrap();
    assert_eq!(bf_f64(&ex.download(&out16).unwrap()), got, "embed_fwd_bf16");

    let dout = ex.upload(&[bf16::from_f32(0.5); 4]).unwrap();
    let dtable = ex.alloc_zeroed::<f32>(8).unwrap();
    let scratch = EmbedBwdScratch::alloc(&ex, 2, 2, 4).unwrap();
    embed::bwd(&ex, &ids, &dout, &dtable, &scratch, 4).unwrap();
    assert_eq!(
        ex.download(&dtable).unwrap(),
        vec![0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn backward_rejects_wrong_sizes() {
    let ex = Executor::sim();
    let ids = ex.upload(&[0u32; 3]).unwrap();
    let dout = ex.alloc_zeroed::<bf16>(8).unwrap();
    let dtable = ex.alloc_zeroed::<f32>(8).unwrap();
    let scratch = EmbedBwdScratch::alloc(&ex, 4, 2, 4).unwrap();
    let err = embed::bwd(&ex, &ids, &dout, &dtable, &scratch, 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("embedding ids"), "{err}");
}
