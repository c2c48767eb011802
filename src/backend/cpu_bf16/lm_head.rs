//! The tied LM head's loss on the packed engine, no tape (pretraining's
//! held-out loss, `bench model --objective lm`): mean next-token cross
//! entropy over the rows with a target, logits never held for a whole row.
//!
//! The packed table comes in slices of [`HEAD_SLICE`] entries. Rows go in
//! groups; a group runs every slice in turn against each of its chunks of
//! [`ROWS`] rows, so a slice (1.5 MiB at `small`) is read from memory once
//! per group and from cache by the group's other chunks. Before, each
//! chunk of 32 rows ran the whole table (50 MB at `small`'s 65,541
//! entries) from memory, the first tile of every panel waiting on it. Each
//! row keeps a running softmax: its maximum so far `m`, the sum `s` of
//! `exp(x - m)` (rescaled when a slice raises `m`) and its target's logit;
//! the loss is `(m - x_y) + ln s`. A row's sums run over the slices in
//! order, so its loss is the same bits whatever the grouping or threads.

use rayon::prelude::*;

use super::gemm::matmul_into;
use super::kernel::Kernel;
use super::pack::{MR, PackedMat};
use super::params::HEAD_SLICE;
use crate::backend::cpu::alloc::as_uninit;
use crate::backend::cpu::lm_head::{gather, valid_rows};
use crate::backend::cpu::simd::{exp_sum, row_max};
use crate::engine::float::Float;
use crate::engine::{OpError, OpResult};

/// Rows per product: a whole number of micro tiles (32 rows ran as 36 and
/// took 7 % longer), and a chunk of logits (36 x 2,048 f32, 288 KiB) that
/// stays in L2 between the product and the softmax pass.
const ROWS: usize = 6 * MR;

/// Chunks per group: the rows that share a read of each slice. A thread's
/// part of a batch of 8 flows at sequence 64 (256 rows) is one group.
const GROUP_CHUNKS: usize = 8;

/// One row's running softmax.
#[derive(Clone, Copy)]
struct Running {
    max: f32,
    sum: f32,
    target: f32,
}

/// Mean loss over the rows of `h` (`[T, d]`) whose target is not
/// `ignore` (0 if none), against the head `slices` (`[V, d]` in
/// [`HEAD_SLICE`] entries each). A target outside the vocabulary is an
/// error naming it.
pub fn loss(
    kernel: Kernel,
    slices: &[PackedMat],
    h: &[f32],
    d: usize,
    targets: &[u32],
    ignore: u32,
) -> OpResult<f32> {
    const OP: &str = "lm_head_xent_fwd (packed)";
    let v: usize = slices.iter().map(|s| s.n).sum();
    if h.len() != targets.len() * d || slices.iter().any(|s| s.k != d) {
        return Err(OpError::msg(
            OP,
            format!("{} values of h for {} rows of {d}", h.len(), targets.len()),
        ));
    }
    let rows = valid_rows(targets, ignore);
    if let Some(&r) = rows.iter().find(|&&r| targets[r] as usize >= v) {
        return Err(OpError::msg(
            OP,
            format!("target {} outside the vocabulary of {v}", targets[r]),
        ));
    }
    if rows.is_empty() {
        return Ok(0.0);
    }
    let group = ROWS * GROUP_CHUNKS;
    let losses: Vec<f64> = rows
        .par_chunks(group)
        .map(|g| group_losses(kernel, slices, h, d, targets, g))
        .collect::<OpResult<Vec<_>>>()?
        .concat();
    Ok((losses.iter().sum::<f64>() / rows.len() as f64) as f32)
}

/// The losses of the rows `g` (indices into `h` and `targets`), in order.
fn group_losses(
    kernel: Kernel,
    slices: &[PackedMat],
    h: &[f32],
    d: usize,
    targets: &[u32],
    g: &[usize],
) -> OpResult<Vec<f64>> {
    let hv = gather(h, g, d);
    let mut run = vec![
        Running {
            max: f32::NEG_INFINITY,
            sum: 0.0,
            target: 0.0,
        };
        g.len()
    ];
    let mut logits = vec![0f32; ROWS * HEAD_SLICE];
    for (si, w) in slices.iter().enumerate() {
        let v0 = si * HEAD_SLICE;
        for (c, hc) in hv.chunks(ROWS * d).enumerate() {
            let m = hc.len() / d;
            let out = &mut logits[..m * w.n];
            matmul_into(kernel, hc, None, m, w, None, as_uninit(out))?;
            let rows = &g[c * ROWS..][..m];
            for ((x, &r), st) in out.chunks_exact(w.n).zip(rows).zip(&mut run[c * ROWS..]) {
                if let Some(j) = (targets[r] as usize).checked_sub(v0).filter(|&j| j < w.n) {
                    st.target = x[j];
                }
                let top = row_max(x);
                if top > st.max {
                    // On the first slice the sum is 0, whatever the factor.
                    st.sum *= Float::exp(st.max - top);
                    st.max = top;
                }
                st.sum += exp_sum(x, st.max);
            }
        }
    }
    // (m - x_y) + ln s: exact when x_y is the maximum, as the reference.
    Ok(run
        .iter()
        .map(|s| ((s.max - s.target) + s.sum.ln()) as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::pack::Elem;
    use super::*;
    use crate::backend::cpu::lm_head::fwd;
    use crate::backend::cpu::matmul::Products;
    use crate::backend::cpu::testutil::{on_threads, vals};

    const IGNORE: u32 = u32::MAX;

    /// 300 rows (two groups, the second short), d 24, a vocabulary of
    /// 4,500 (three slices, the last of 404), targets in every slice and
    /// every 7th row without one; logits of a few units, so the running
    /// maximum moves between slices.
    fn case() -> (Vec<f32>, Vec<f32>, usize, Vec<u32>) {
        let (t, d, v) = (300, 24, 4500);
        let f = |x: Vec<f64>| x.into_iter().map(|x| (2.0 * x) as f32).collect();
        let targets = (0..t as u32)
            .map(|i| {
                if i % 7 == 3 {
                    IGNORE
                } else {
                    (i * 7919) % v as u32
                }
            })
            .collect();
        (f(vals(t * d, 11)), f(vals(v * d, 12)), d, targets)
    }

    fn sliced(table: &[f32], d: usize) -> Vec<PackedMat> {
        table
            .chunks(HEAD_SLICE * d)
            .map(|s| PackedMat::new_as(Elem::Bf16Pair, s, s.len() / d, d))
            .collect()
    }

    /// The running softmax over slices against the reference's whole rows
    /// on the same bf16 operands (mixed precision's products on the same
    /// kernel), and the same bits on one thread or two.
    #[test]
    fn sliced_loss_matches_the_whole_row_loss() {
        let (h, table, d, targets) = case();
        let slices = sliced(&table, d);
        assert_eq!(slices.len(), 3);
        let kernel = Kernel::Portable;
        let products = Products::bf16_on(kernel).unwrap();
        let (want, _) = fwd(products, &h, &table, d, &targets, IGNORE);
        let on = |threads| {
            on_threads(threads, || {
                loss(kernel, &slices, &h, d, &targets, IGNORE).unwrap()
            })
        };
        let got = on(2);
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
        assert_eq!(got.to_bits(), on(1).to_bits());
        // Rows without a target change nothing; none at all give 0.
        let none = vec![IGNORE; targets.len()];
        assert_eq!(loss(kernel, &slices, &h, d, &none, IGNORE).unwrap(), 0.0);
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let (h, table, d, mut targets) = case();
        targets[5] = 4500;
        let e = loss(
            Kernel::Portable,
            &sliced(&table, d),
            &h,
            d,
            &targets,
            IGNORE,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("target 4500 outside the vocabulary of 4500"),
            "{e}"
        );
    }
}
