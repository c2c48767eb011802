//! Routed-slot bookkeeping: group the T·k (token, choice) slots by expert
//! (stable counting sort, segments padded to a tile), and the deterministic
//! combine of expert outputs back into token order.

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
    out: &mut [F],
) {
    out[..t * d]
        .par_chunks_mut(d)
        .enumerate()
        .for_each(|(i, o)| {
            let g = shared_gate[i];
            for c in 0..d {
                o[c] = resid[i * d + c] + g * shared_out[i * d + c];
            }
            for j in 0..k {
                let w = topk_w[i * k + j];
                let r = slot_pos[i * k + j] as usize;
                for (oc, &y) in o.iter_mut().zip(&y_rows[r * d..(r + 1) * d]) {
                    *oc += w * y;
                }
            }
        });
}

/// Backward of `combine` (all outputs overwritten; `dy_rows` padding rows set to 0).
/// `dresid = dout`, so callers pass `dout` on unchanged for the residual.
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
    dshared_out: &mut [F],
    dshared_gate: &mut [F],
    dy_rows: &mut [F],
    dtopk_w: &mut [F],
) {
    dy_rows.iter_mut().for_each(|v| *v = F::ZERO);
    for i in 0..t {
        let dr = &dout[i * d..(i + 1) * d];
        let g = shared_gate[i];
        let so = &shared_out[i * d..(i + 1) * d];
        dshared_gate[i] = dr.iter().zip(so).map(|(&a, &b)| a * b).sum();
        for (o, &v) in dshared_out[i * d..(i + 1) * d].iter_mut().zip(dr) {
            *o = g * v;
        }
        for j in 0..k {
            let r = slot_pos[i * k + j] as usize;
            let w = topk_w[i * k + j];
            let yr = &y_rows[r * d..(r + 1) * d];
            dtopk_w[i * k + j] = dr.iter().zip(yr).map(|(&a, &b)| a * b).sum();
            for (o, &v) in dy_rows[r * d..(r + 1) * d].iter_mut().zip(dr) {
                *o = w * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
            combine(&resid, so, sg, y, w, &p.slot_pos, t, k, d, &mut o);
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
            &mut dso,
            &mut dsg,
            &mut dy,
            &mut dw,
        );
        check_grad(&so, &dso, |v| run(v, &sg, &y, &w), "dshared_out");
        check_grad(&sg, &dsg, |v| run(&so, v, &y, &w), "dshared_gate");
        check_grad(&y, &dy, |v| run(&so, &sg, v, &w), "dy_rows");
        check_grad(&w, &dw, |v| run(&so, &sg, &y, v), "dtopk_w");
    }
}
