//! Routed-slot bookkeeping: group the T·k (token, choice) slots by expert
//! (stable counting sort, segments padded to a tile), and the deterministic
//! combine of expert outputs back into token order.

use std::mem::MaybeUninit;

use super::alloc::assume_init_mut;
use crate::engine::float::Float;
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermutePlan {
    /// Per padded row: slot id `t*k + j`, `u32::MAX` for padding.
    pub sorted_slot: Vec<u32>,
    /// `N + 1` padded segment offsets.
    pub expert_offset: Vec<u32>,
    /// Expert of each tile of `tile` rows.
    pub tile_expert: Vec<u32>,
    /// Slot -> padded row (`T*k`).
    pub slot_pos: Vec<u32>,
}

pub fn plan(topk_idx: &[u32], t: usize, n: usize, k: usize, tile: usize) -> PermutePlan {
    assert!(tile > 0);
    let mut counts = vec![0usize; n];
    for &e in &topk_idx[..t * k] {
        counts[e as usize] += 1;
    }
    let mut expert_offset = vec![0u32; n + 1];
    for e in 0..n {
        let padded = counts[e].div_ceil(tile) * tile;
        expert_offset[e + 1] = expert_offset[e] + padded as u32;
    }
    let rows = expert_offset[n] as usize;
    let mut sorted_slot = vec![u32::MAX; rows];
    let mut slot_pos = vec![0u32; t * k];
    let mut fill: Vec<u32> = expert_offset[..n].to_vec();
    for (slot, &e) in topk_idx[..t * k].iter().enumerate() {
        let r = fill[e as usize];
        sorted_slot[r as usize] = slot as u32;
        slot_pos[slot] = r;
        fill[e as usize] += 1;
    }
    let mut tile_expert = Vec::with_capacity(rows / tile);
    for e in 0..n {
        let tiles = (expert_offset[e + 1] - expert_offset[e]) as usize / tile;
        tile_expert.extend(std::iter::repeat_n(e as u32, tiles));
    }
    PermutePlan {
        sorted_slot,
        expert_offset,
        tile_expert,
        slot_pos,
    }
}

/// `out[t] = resid[t] + shared_gate[t]*shared_out[t] + sum_j topk_w[t,j]*y_rows[slot_pos[t*k+j]]`.
/// Writes every element of `out[..t·d]` (not read before).
#[allow(clippy::too_many_arguments)]
pub fn combine<F: Float>(
    resid: &[F],
    shared_out: &[F],
    shared_gate: &[F],
    y_rows: &[F],
    topk_w: &[F],
    slot_pos: &[u32],
    t: usize,
    k: usize,
    d: usize,
    out: &mut [MaybeUninit<F>],
) {
    out[..t * d]
        .par_chunks_mut(d)
        .enumerate()
        .for_each(|(i, o)| {
            let g = shared_gate[i];
            for (c, oc) in o.iter_mut().enumerate() {
                *oc = MaybeUninit::new(resid[i * d + c] + g * shared_out[i * d + c]);
            }
            // SAFETY: every element of the row was written just above.
            let o = unsafe { assume_init_mut(o) };
            for j in 0..k {
                let w = topk_w[i * k + j];
                let r = slot_pos[i * k + j] as usize;
                for (oc, &y) in o.iter_mut().zip(&y_rows[r * d..(r + 1) * d]) {
                    *oc += w * y;
                }
            }
        });
}

/// Backward of `combine`: every element of the outputs written (not read
/// before; `dy_rows`' padding rows, which no slot maps to, set to 0).
/// `dresid = dout`, so callers pass `dout` on unchanged for the residual.
/// In parallel, per token and then per routed row (it was one serial loop:
/// 1.3 % of a tiny MoE bf16 training step); each value is the same sum in
/// the same order as that loop's, so the same bits on any thread count.
#[allow(clippy::too_many_arguments)]
pub fn combine_bwd<F: Float>(
    dout: &[F],
    shared_out: &[F],
    shared_gate: &[F],
    y_rows: &[F],
    topk_w: &[F],
    slot_pos: &[u32],
    t: usize,
    k: usize,
    d: usize,
    dshared_out: &mut [MaybeUninit<F>],
    dshared_gate: &mut [MaybeUninit<F>],
    dy_rows: &mut [MaybeUninit<F>],
    dtopk_w: &mut [MaybeUninit<F>],
) {
    let dot = |a: &[F], b: &[F]| a.iter().zip(b).map(|(&x, &y)| x * y).sum::<F>();
    dshared_out[..t * d]
        .par_chunks_mut(d)
        .zip(dshared_gate[..t].par_iter_mut())
        .zip(dtopk_w[..t * k].par_chunks_mut(k))
        .enumerate()
        .for_each(|(i, ((dso, dsg), dtw))| {
            let dr = &dout[i * d..(i + 1) * d];
            let g = shared_gate[i];
            *dsg = MaybeUninit::new(dot(dr, &shared_out[i * d..(i + 1) * d]));
            for (o, &v) in dso.iter_mut().zip(dr) {
                *o = MaybeUninit::new(g * v);
            }
            for (j, o) in dtw.iter_mut().enumerate() {
                let r = slot_pos[i * k + j] as usize;
                *o = MaybeUninit::new(dot(dr, &y_rows[r * d..(r + 1) * d]));
            }
        });
    // Which slot each routed row holds (none: a padding row).
    let rows = dy_rows.len() / d.max(1);
    let mut slot_of = vec![u32::MAX; rows];
    for (s, &r) in slot_pos[..t * k].iter().enumerate() {
        slot_of[r as usize] = s as u32;
    }
    dy_rows[..rows * d]
        .par_chunks_mut(d)
        .zip(&slot_of)
        .for_each(|(o, &s)| {
            if s == u32::MAX {
                o.iter_mut().for_each(|v| *v = MaybeUninit::new(F::ZERO));
                return;
            }
            let (i, w) = (s as usize / k, topk_w[s as usize]);
            for (v, &g) in o.iter_mut().zip(&dout[i * d..(i + 1) * d]) {
                *v = MaybeUninit::new(w * g);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::alloc::as_uninit;
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn plan_is_stable_and_padded() {
        // t=3, k=2: slots 0..6 -> experts
        let idx = [1u32, 0, 1, 2, 0, 1];
        let p = plan(&idx, 3, 3, 2, 2);
        assert_eq!(p.expert_offset, vec![0, 2, 6, 8]);
        assert_eq!(p.sorted_slot, vec![1, 4, 0, 2, 5, u32::MAX, 3, u32::MAX]);
        assert_eq!(p.tile_expert, vec![0, 1, 1, 2]);
        for (s, &r) in p.slot_pos.iter().enumerate() {
            assert_eq!(p.sorted_slot[r as usize], s as u32);
        }
    }

    #[test]
    fn combine_backward_matches_finite_differences() {
        let (t, k, d, n) = (3, 2, 4, 3);
        let idx = [1u32, 0, 1, 2, 0, 1];
        let p = plan(&idx, t, n, k, 2);
        let rows = p.sorted_slot.len();
        let resid = vals(t * d, 1);
        let so = vals(t * d, 2);
        let sg = vals(t, 3);
        let y = vals(rows * d, 4);
        let w = vals(t * k, 5);
        let dout = vals(t * d, 6);
        let run = |so: &[f64], sg: &[f64], y: &[f64], w: &[f64]| {
            let mut o = vec![0.0; t * d];
            combine(
                &resid,
                so,
                sg,
                y,
                w,
                &p.slot_pos,
                t,
                k,
                d,
                as_uninit(&mut o),
            );
            dot(&o, &dout)
        };
        let (mut dso, mut dsg, mut dy, mut dw) = (
            vec![0.0; t * d],
            vec![0.0; t],
            vec![0.0; rows * d],
            vec![0.0; t * k],
        );
        combine_bwd(
            &dout,
            &so,
            &sg,
            &y,
            &w,
            &p.slot_pos,
            t,
            k,
            d,
            as_uninit(&mut dso),
            as_uninit(&mut dsg),
            as_uninit(&mut dy),
            as_uninit(&mut dw),
        );
        check_grad(&so, &dso, |v| run(v, &sg, &y, &w), "dshared_out");
        check_grad(&sg, &dsg, |v| run(&so, v, &y, &w), "dshared_gate");
        check_grad(&y, &dy, |v| run(&so, &sg, v, &w), "dy_rows");
        check_grad(&w, &dw, |v| run(&so, &sg, &y, v), "dtopk_w");
    }
}
