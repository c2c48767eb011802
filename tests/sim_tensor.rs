//! Simulator self-tests of the tensor-core wrappers (cuda/sim/tests/tensor.cu):
//! ldmatrix against the PTX ISA's documented fragment layout, mma.sync
//! m16n8k16 against a plain matmul, cp.async.

mod kernel_util;
use kernel_util::{Io, bf, launch};
use traffic_moe::backend::gpu::testing::run_on_executors;

/// PTX ISA, "ldmatrix": lanes 8i..8i+7 give the rows of matrix i; thread l
/// receives, in register i, row l/4 and columns 2(l%4), 2(l%4)+1 of matrix i
/// (low half = lower column); with .trans, rows 2(l%4), 2(l%4)+1 of column l/4.
fn ldmatrix_expected(m: &[u32], count: usize, trans: bool, lane: usize, i: usize) -> u32 {
    if i >= count {
        return 0;
    }
    let at = |r: usize, c: usize| m[i * 64 + r * 8 + c] & 0xffff;
    let (q, c) = (lane / 4, 2 * (lane % 4));
    let (lo, hi) = if trans {
        (at(c, q), at(c + 1, q))
    } else {
        (at(q, c), at(q, c + 1))
    };
    lo | (hi << 16)
}

#[test]
fn ldmatrix_matches_ptx_layout() {
    run_on_executors("ldmatrix", |ex| {
        let m: Vec<u32> = (0..256u32).map(|i| 1000 + i * 3).collect();
        for (mode, count, trans) in [
            (1, 1, false),
            (2, 2, false),
            (4, 4, false),
            (9, 1, true),
            (10, 2, true),
            (12, 4, true),
        ] {
            let io = Io::new(ex, &[0.0], &m, 1, 128);
            launch(ex, "simt_ldmatrix", 1, 32, 0, io.params(0, mode))?;
            let got = ex.download(&io.out_u)?;
            for lane in 0..32 {
                for i in 0..4 {
                    let want = ldmatrix_expected(&m, count, trans, lane, i);
                    anyhow::ensure!(
                        got[lane * 4 + i] == want,
                        "x{count} trans={trans} lane {lane} reg {i}: {:#x} != {want:#x}",
                        got[lane * 4 + i]
                    );
                }
            }
        }
        Ok(())
    });
}

#[test]
fn mma_m16n8k16_matches_matmul() {
    run_on_executors("mma", |ex| {
        // Distinct values everywhere so any misplaced element changes the result.
        let a: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 97) as f32 - 48.0) / 16.0)
            .collect();
        let b: Vec<f32> = (0..128)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 8.0)
            .collect();
        let c: Vec<f32> = (0..128).map(|i| i as f32 * 0.25 - 7.0).collect();
        let input: Vec<f32> = a.iter().chain(&b).chain(&c).copied().collect();
        let mut want = vec![0f64; 128];
        for r in 0..16 {
            for n in 0..8 {
                want[r * 8 + n] = c[r * 8 + n] as f64
                    + (0..16)
                        .map(|k| bf(a[r * 16 + k]) * bf(b[k * 8 + n]))
                        .sum::<f64>();
            }
        }
        for mode in [0, 1] {
            let io = Io::new(ex, &input, &[0], 128, 1);
            launch(ex, "simt_mma", 1, 32, 0, io.params(0, mode))?;
            let got = ex.download(&io.out_f)?;
            for i in 0..128 {
                // Products of bf16 are exact in fp32; only the fp32 sum rounds.
                anyhow::ensure!(
                    (got[i] as f64 - want[i]).abs() <= 1e-3,
                    "mode {mode} D[{}][{}] = {}, want {}",
                    i / 8,
                    i % 8,
                    got[i],
                    want[i]
                );
            }
        }
        Ok(())
    });
}

#[test]
fn cp_async_copies_and_zero_fills() {
    run_on_executors("cp_async", |ex| {
        let n = 200usize;
        let input: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
        let io = Io::new(ex, &input, &[0], n, 1);
        launch(ex, "simt_cp_async", 1, 64, 0, io.params(n as i32, 0))?;
        let got = ex.download(&io.out_f)?;
        for i in 0..n {
            let want = if i / 4 * 4 < n / 2 { input[i] } else { 0.0 };
            anyhow::ensure!(got[i] == want, "[{i}] = {}, want {want}", got[i]);
        }
        Ok(())
    });
}
