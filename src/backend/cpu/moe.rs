//! The Traffic-MoE layer as one composite of reference ops:
//! `out = resid + sigmoid(z·w_D) * E_shared(z) + sum_j w_j * E_{e_j}(z)`
//! with a softmax router, top-k routing (kept probabilities, not
//! renormalised) and SwiGLU experts. Routed rows are grouped by expert
//! (`moe_permute::plan`, tile 1) so each expert runs two dense products;
//! experts run in parallel.

use std::mem::MaybeUninit;

use super::matmul::Products;
use super::{act, alloc, ffn, matmul, moe_permute, router, simd};
use crate::engine::float::Float;
use rayon::prelude::*;

pub use crate::engine::MoeDims;

/// Weights, PyTorch layout (`[out, in]`); routed experts stacked on a leading N axis.
pub struct MoeWeights<'a, F> {
    pub router: &'a [F],      // [N, d]
    pub shared_gate: &'a [F], // w_D: [1, d]
    pub s_gate: &'a [F],      // [d', d]
    pub s_up: &'a [F],        // [d', d]
    pub s_down: &'a [F],      // [d, d']
    pub e_gate: &'a [F],      // [N, f, d]
    pub e_up: &'a [F],        // [N, f, d]
    pub e_down: &'a [F],      // [N, d, f]
}

impl<F> MoeWeights<'_, F> {
    /// Routed expert `e`'s `[gate, up, down]` (expert width `f`).
    fn expert(&self, e: usize, d: usize, f: usize) -> [&[F]; 3] {
        [
            &self.e_gate[e * f * d..][..f * d],
            &self.e_up[e * f * d..][..f * d],
            &self.e_down[e * d * f..][..d * f],
        ]
    }
}

/// Gradients of the same tensors (accumulated, `+=`).
pub struct MoeGrads<'a, F> {
    pub router: &'a mut [F],
    pub shared_gate: &'a mut [F],
    pub s_gate: &'a mut [F],
    pub s_up: &'a mut [F],
    pub s_down: &'a mut [F],
    pub e_gate: &'a mut [F],
    pub e_up: &'a mut [F],
    pub e_down: &'a mut [F],
}

pub struct MoeSaved<F> {
    pub probs: Vec<F>,
    pub topk_idx: Vec<u32>,
    pub topk_w: Vec<F>,
    /// Routed slots per expert among the real tokens (see `valid`).
    pub counts: Vec<u32>,
    /// `[T]`, 1 = real token, 0 = `[PAD]` (`None`: all real): the tokens the
    /// load-balancing loss and its gradient are over (`router` module docs).
    pub valid: Option<Vec<u8>>,
    pub plan: moe_permute::PermutePlan,
    /// Shared expert: what its backward reads, and its output.
    pub shared: ffn::Saved<F>,
    pub s_out: Vec<F>,
    /// sigmoid(z·w_D) per token.
    pub g: Vec<F>,
    /// Routed rows in expert order: gathered inputs and outputs; and what
    /// each expert's backward reads (None: no rows routed to it).
    pub x_rows: Vec<F>,
    pub experts: Vec<Option<ffn::Saved<F>>>,
    pub y_rows: Vec<F>,
    /// The layer's load-balancing loss (over the real tokens).
    pub aux: F,
}

/// Split a `[rows, width]` buffer into one mutable slice per expert
/// segment; the segments cover the whole buffer (the buffers are written
/// through them).
fn segments<'a, F>(mut buf: &'a mut [F], offsets: &[u32], width: usize) -> Vec<&'a mut [F]> {
    assert_eq!(
        *offsets.last().expect("offsets start at 0") as usize * width,
        buf.len(),
        "moe: the plan's segments cover the rows"
    );
    let mut out = Vec::with_capacity(offsets.len() - 1);
    for e in 0..offsets.len() - 1 {
        let n = (offsets[e + 1] - offsets[e]) as usize * width;
        let (head, tail) = buf.split_at_mut(n);
        out.push(head);
        buf = tail;
    }
    out
}

/// Multiply-adds of one shared-expert product (`t · d · d'`) up to which
/// the shared and the routed experts run side by side.
const SIDE_BY_SIDE_MAX: usize = 1 << 26;

/// Runs the shared expert's part `shared` and the routed experts' part
/// `routed`: side by side (`rayon::join`) when the shared expert's products
/// have at most [`SIDE_BY_SIDE_MAX`] multiply-adds (`macs`), else one after
/// the other with each product split across the threads. Small products
/// lose more to their own fork, join and tail than a second thread gains
/// them; side by side, neither part waits on the other's tail. Interleaved
/// A/B on the 2-core EPYC (`bench/results/cpu/epyc-zen4-2026-12-05-session3/
/// ab-moe-shared-beside-routed-*.txt`, always side by side): tiny training
/// (1.7e7-6.7e7 multiply-adds) x1.02 (f32) and x1.03-1.12 (bf16); small at
/// batch 8 (2.0e8) x1.03 (f32), x0.94-1.00 (bf16, two runs); small at
/// batch 32 (8.1e8) x0.97-0.98. The bits are the same either way: a
/// product's sums do not depend on how its rows are split.
fn shared_and_routed<S, R, SO, RO>(macs: usize, shared: S, routed: R) -> (SO, RO)
where
    S: FnOnce() -> SO + Send,
    R: FnOnce() -> RO + Send,
    SO: Send,
    RO: Send,
{
    if macs <= SIDE_BY_SIDE_MAX {
        rayon::join(shared, routed)
    } else {
        (shared(), routed())
    }
}

/// Forward of the layer. `valid` (`[T]`, 1 = real token; `None`: all real)
/// selects the tokens of the load-balancing loss; every position is still
/// routed and computed. It is kept in the returned `MoeSaved` for `bwd`.
/// Writes every element of `out` (`[T, d]`; not read first).
pub fn fwd<F: Float>(
    products: Products,
    z: &[F],
    resid: &[F],
    w: &MoeWeights<F>,
    dm: &MoeDims,
    valid: Option<&[u8]>,
    out: &mut [MaybeUninit<F>],
) -> MoeSaved<F> {
    let MoeDims {
        t,
        d,
        n,
        k,
        shared_ff: sf,
        expert_ff: f,
    } = *dm;
    if let Some(v) = valid {
        assert_eq!(v.len(), t, "moe: valid mask length");
    }
    assert_eq!(out.len(), t * d, "moe: output length");
    // Router (full-precision softmax over N, top-k, counts).
    let router::Routed {
        probs,
        topk_idx,
        topk_w,
        counts,
        aux,
    } = router::route(z, w.router, (t, d, n, k), valid);

    // The shared expert (with its per-token gate) and the routed experts
    // are independent until the combine (`shared_and_routed`).
    let ((g, shared, s_out), (plan, x_rows, experts, y_rows)) = shared_and_routed(
        t * d * sf,
        || {
            let mut gl = vec![F::ZERO; t];
            matmul::fwd(z, w.shared_gate, None, t, d, 1, &mut gl);
            let mut g = vec![F::ZERO; t];
            act::sigmoid_fwd(&gl, &mut g);
            let mut s_out = alloc::uninit(t * d);
            let shared = ffn::fwd(
                products,
                z,
                [w.s_gate, w.s_up, w.s_down],
                t,
                d,
                sf,
                true,
                &mut s_out,
            )
            .expect("kept");
            // SAFETY: `ffn::fwd` wrote all of it.
            (g, shared, unsafe { alloc::assume_init(s_out) })
        },
        || {
            // Routed experts on their grouped rows.
            let plan = moe_permute::plan(&topk_idx, t, n, k, 1);
            let rows = t * k;
            let x_rows = alloc::par_written(rows * d, d, |r, row| {
                let tok = plan.sorted_slot[r] as usize / k;
                row.copy_from_slice(&z[tok * d..(tok + 1) * d]);
            });
            let mut y_rows = alloc::uninit(rows * d);
            let off = &plan.expert_offset;
            let experts = segments(&mut y_rows, off, d)
                .into_par_iter()
                .enumerate()
                .map(|(e, y)| {
                    let m = (off[e + 1] - off[e]) as usize;
                    if m == 0 {
                        return None;
                    }
                    let x = &x_rows[off[e] as usize * d..][..m * d];
                    ffn::fwd(products, x, w.expert(e, d, f), m, d, f, true, y)
                })
                .collect();
            // SAFETY: the segments cover the buffer (`segments`), each
            // written (an empty one has nothing to write).
            let y_rows = unsafe { alloc::assume_init(y_rows) };
            (plan, x_rows, experts, y_rows)
        },
    );

    moe_permute::combine(
        resid,
        &s_out,
        &g,
        &y_rows,
        &topk_w,
        &plan.slot_pos,
        t,
        k,
        d,
        out,
    );
    MoeSaved {
        probs,
        topk_idx,
        topk_w,
        counts,
        valid: valid.map(<[u8]>::to_vec),
        plan,
        shared,
        s_out,
        g,
        x_rows,
        experts,
        y_rows,
        aux,
    }
}

/// Backward of `fwd` (except the residual, whose gradient is `dout`).
/// `aux_weight` is d(total loss)/d(this layer's aux loss), which is over the
/// real tokens `fwd` was given (`s.valid`). `dz` is written (all of it;
/// not read first).
#[allow(clippy::too_many_arguments)]
pub fn bwd<F: Float>(
    products: Products,
    z: &[F],
    w: &MoeWeights<F>,
    s: &MoeSaved<F>,
    dout: &[F],
    aux_weight: F,
    dm: &MoeDims,
    dz: &mut [MaybeUninit<F>],
    gr: MoeGrads<F>,
) {
    let MoeDims {
        t,
        d,
        n,
        k,
        shared_ff: sf,
        expert_ff: f,
    } = *dm;
    assert_eq!(dz.len(), t * d, "moe: input gradient length");
    let rows = t * k;
    let (mut ds_out, mut dg, mut dy_rows, mut dtopk_w) = (
        alloc::uninit(t * d),
        alloc::uninit(t),
        alloc::uninit(rows * d),
        alloc::uninit(t * k),
    );
    moe_permute::combine_bwd(
        dout,
        &s.s_out,
        &s.g,
        &s.y_rows,
        &s.topk_w,
        &s.plan.slot_pos,
        t,
        k,
        d,
        &mut ds_out,
        &mut dg,
        &mut dy_rows,
        &mut dtopk_w,
    );
    // SAFETY: `combine_bwd` writes every element of its outputs.
    let (ds_out, dg, dy_rows, dtopk_w) = unsafe {
        (
            alloc::assume_init(ds_out),
            alloc::assume_init(dg),
            alloc::assume_init(dy_rows),
            alloc::assume_init(dtopk_w),
        )
    };

    let MoeGrads {
        router: gr_router,
        shared_gate: gr_shared_gate,
        s_gate: gr_s_gate,
        s_up: gr_s_up,
        s_down: gr_s_down,
        e_gate: gr_e_gate,
        e_up: gr_e_up,
        e_down: gr_e_down,
    } = gr;
    // The shared expert (and its gate) and the routed experts, as in the
    // forward: they write disjoint gradients.
    let ((dz, mut dz2), dx_rows) = shared_and_routed(
        t * d * sf,
        || {
            ffn::bwd(
                products,
                z,
                [w.s_gate, w.s_up, w.s_down],
                &s.shared,
                &ds_out,
                t,
                d,
                sf,
                dz,
                [gr_s_gate, gr_s_up, gr_s_down],
            );
            // SAFETY: the shared expert's `ffn::bwd` wrote all of dz.
            let dz = unsafe { alloc::assume_init_mut(dz) };
            // Shared gate: g = sigmoid(z·w_D).
            let mut dgl = vec![F::ZERO; t];
            act::sigmoid_bwd(&s.g, &dg, &mut dgl);
            let mut dz2 = alloc::zeros(t * d);
            matmul::bwd(
                z,
                w.shared_gate,
                &dgl,
                t,
                d,
                1,
                Some(&mut dz2),
                gr_shared_gate,
                None,
            );
            simd::add_into(dz, &dz2);
            (dz, dz2)
        },
        || {
            // Routed experts, in parallel; each owns its slice of the
            // stacked grads.
            let off = &s.plan.expert_offset;
            let mut dx_rows = alloc::uninit(rows * d);
            segments(&mut dx_rows, off, d)
                .into_par_iter()
                .zip(gr_e_gate.par_chunks_mut(f * d))
                .zip(gr_e_up.par_chunks_mut(f * d))
                .zip(gr_e_down.par_chunks_mut(d * f))
                .enumerate()
                .for_each(|(e, (((dx, dwg), dwu), dwd))| {
                    let Some(saved) = &s.experts[e] else {
                        return;
                    };
                    let (r0, m) = (off[e] as usize, (off[e + 1] - off[e]) as usize);
                    ffn::bwd(
                        products,
                        &s.x_rows[r0 * d..][..m * d],
                        w.expert(e, d, f),
                        saved,
                        &dy_rows[r0 * d..][..m * d],
                        m,
                        d,
                        f,
                        dx,
                        [dwg, dwu, dwd],
                    );
                });
            // SAFETY: the segments cover the buffer (`segments`), each
            // written by its expert's `ffn::bwd`.
            unsafe { alloc::assume_init(dx_rows) }
        },
    );
    // Un-permute: add each routed row's input grad to its token, a token's
    // rows in ascending row order (the order of a serial pass over the rows,
    // so the sums do not depend on the threads).
    let slot_pos = &s.plan.slot_pos;
    dz.par_chunks_mut(d).enumerate().for_each(|(tok, acc)| {
        let mut last = None;
        for _ in 0..k {
            let r = slot_pos[tok * k..(tok + 1) * k]
                .iter()
                .map(|&r| r as usize)
                .filter(|&r| last.is_none_or(|l| r > l))
                .min()
                .expect("a token's k slots are on distinct rows");
            acc.iter_mut()
                .zip(&dx_rows[r * d..(r + 1) * d])
                .for_each(|(a, &b)| *a += b);
            last = Some(r);
        }
    });

    // Router: weights are kept probabilities; plus the load-balancing loss.
    let mut dprobs = alloc::zeros(t * n);
    router::topk_bwd(&s.topk_idx, &dtopk_w, n, k, &mut dprobs);
    router::lb_loss_bwd(
        &s.topk_idx,
        s.valid.as_deref(),
        t,
        n,
        k,
        aux_weight,
        &mut dprobs,
    );
    let mut dlogits = alloc::zeros(t * n);
    router::softmax_bwd(&s.probs, &dprobs, n, &mut dlogits);
    matmul::bwd(
        z,
        w.router,
        &dlogits,
        t,
        d,
        n,
        Some(&mut dz2),
        gr_router,
        None,
    );
    simd::add_into(dz, &dz2);
}

#[cfg(test)]
mod tests {
    use super::super::alloc::as_uninit;
    use super::super::testutil::*;
    use super::*;

    /// The eight weight tensors' sizes, in `MoeWeights` field order.
    fn weight_sizes(dm: &MoeDims) -> [usize; 8] {
        let (n, d, sf, f) = (dm.n, dm.d, dm.shared_ff, dm.expert_ff);
        [
            n * d,
            d,
            sf * d,
            sf * d,
            d * sf,
            n * f * d,
            n * f * d,
            n * d * f,
        ]
    }

    fn as_weights(ws: &[Vec<f64>]) -> MoeWeights<'_, f64> {
        MoeWeights {
            router: &ws[0],
            shared_gate: &ws[1],
            s_gate: &ws[2],
            s_up: &ws[3],
            s_down: &ws[4],
            e_gate: &ws[5],
            e_up: &ws[6],
            e_down: &ws[7],
        }
    }

    fn as_grads(gs: &mut [Vec<f64>]) -> MoeGrads<'_, f64> {
        let [g0, g1, g2, g3, g4, g5, g6, g7] = gs else {
            panic!("eight gradient tensors, got {}", gs.len())
        };
        MoeGrads {
            router: g0,
            shared_gate: g1,
            s_gate: g2,
            s_up: g3,
            s_down: g4,
            e_gate: g5,
            e_up: g6,
            e_down: g7,
        }
    }

    /// Both ways of running the two parts give each part's result in its
    /// place (the layer's tests run the side-by-side way: micro sizes).
    #[test]
    fn shared_and_routed_runs_both_parts_either_way() {
        for macs in [1, SIDE_BY_SIDE_MAX, SIDE_BY_SIDE_MAX + 1] {
            let (a, b) = shared_and_routed(macs, || vec![1u8; 3], || "routed");
            assert_eq!((a, b), (vec![1u8; 3], "routed"), "macs {macs}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        backward_matches_finite_differences_with(None);
        backward_matches_finite_differences_with(Some(&[1, 1, 0, 1, 0]));
    }

    fn backward_matches_finite_differences_with(valid: Option<&[u8]>) {
        let dm = MoeDims {
            t: 5,
            d: 4,
            n: 4,
            k: 2,
            shared_ff: 6,
            expert_ff: 3,
        };
        let (t, d) = (dm.t, dm.d);
        let sizes = weight_sizes(&dm);
        let ws: Vec<Vec<f64>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| vals(s, 10 + i as u64))
            .collect();
        let z = vals(t * d, 1);
        let resid = vals(t * d, 2);
        let dout = vals(t * d, 3);
        let aux_w = 0.7;
        let run = |z: &[f64], ws: &[Vec<f64>]| -> (f64, Vec<u32>) {
            let w = as_weights(ws);
            let mut out = vec![0.0; t * d];
            let s = fwd(
                Products::F32,
                z,
                &resid,
                &w,
                &dm,
                valid,
                as_uninit(&mut out),
            );
            (dot(&out, &dout) + aux_w * s.aux, s.topk_idx)
        };
        let w = as_weights(&ws);
        let mut out = vec![0.0; t * d];
        let saved = fwd(
            Products::F32,
            &z,
            &resid,
            &w,
            &dm,
            valid,
            as_uninit(&mut out),
        );
        let mut gs: Vec<Vec<f64>> = sizes.iter().map(|&s| vec![0.0; s]).collect();
        let mut dz = vec![0.0; t * d];
        let gr = as_grads(&mut gs);
        bwd(
            Products::F32,
            &z,
            &w,
            &saved,
            &dout,
            aux_w,
            &dm,
            as_uninit(&mut dz),
            gr,
        );
        let sel = saved.topk_idx.clone();
        check_grad(
            &z,
            &dz,
            |p| {
                let (l, s) = run(p, &ws);
                assert_eq!(s, sel, "selection flipped");
                l
            },
            "dz",
        );
        for i in 0..ws.len() {
            check_grad(
                &ws[i],
                &gs[i],
                |p| {
                    let mut w2 = ws.clone();
                    w2[i] = p.to_vec();
                    let (l, s) = run(&z, &w2);
                    assert_eq!(s, sel, "selection flipped");
                    l
                },
                &format!("weight {i}"),
            );
        }
    }

    /// Padded positions (with no output gradient) leave the aux loss, the real
    /// tokens' outputs and input gradients, and every weight gradient as they
    /// are without them: the load-balancing statistics are over real tokens.
    #[test]
    fn padding_changes_neither_aux_loss_nor_gradients() {
        let (d, n, sf, f) = (4, 4, 6, 3);
        let dims = |t| MoeDims {
            t,
            d,
            n,
            k: 2,
            shared_ff: sf,
            expert_ff: f,
        };
        let sizes = weight_sizes(&dims(0));
        let ws: Vec<Vec<f64>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| vals(s, 30 + i as u64))
            .collect();
        let w = as_weights(&ws);
        // (z, resid, dout, valid) -> (out, aux, dz, weight grads)
        let run = |z: &[f64], resid: &[f64], dout: &[f64], valid: Option<&[u8]>| {
            let t = z.len() / d;
            let mut out = vec![0.0; t * d];
            let s = fwd(
                Products::F32,
                z,
                resid,
                &w,
                &dims(t),
                valid,
                as_uninit(&mut out),
            );
            let mut gs: Vec<Vec<f64>> = sizes.iter().map(|&s| vec![0.0; s]).collect();
            let mut dz = vec![0.0; t * d];
            bwd(
                Products::F32,
                z,
                &w,
                &s,
                dout,
                0.7,
                &dims(t),
                as_uninit(&mut dz),
                as_grads(&mut gs),
            );
            (out, s.aux, dz, gs)
        };
        let real = 3;
        let (z0, r0, dy0) = (vals(real * d, 41), vals(real * d, 42), vals(real * d, 43));
        let (zp, rp) = (vals(2 * d, 44), vals(2 * d, 45));
        // real, pad, real, real, pad
        let order = [Some(0), None, Some(1), Some(2), None];
        let valid: Vec<u8> = order.iter().map(|o| o.is_some() as u8).collect();
        let (mut z1, mut r1, mut dy1) = (Vec::new(), Vec::new(), Vec::new());
        let mut p = 0;
        for o in order {
            match o {
                Some(i) => {
                    z1.extend_from_slice(&z0[i * d..][..d]);
                    r1.extend_from_slice(&r0[i * d..][..d]);
                    dy1.extend_from_slice(&dy0[i * d..][..d]);
                }
                None => {
                    z1.extend_from_slice(&zp[p * d..][..d]);
                    r1.extend_from_slice(&rp[p * d..][..d]);
                    dy1.extend(std::iter::repeat_n(0.0, d));
                    p += 1;
                }
            }
        }
        let (out0, aux0, dz0, g0) = run(&z0, &r0, &dy0, None);
        let (out1, aux1, dz1, g1) = run(&z1, &r1, &dy1, Some(&valid));
        let close = |a: &[f64], b: &[f64], what: &str| {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-12, "{what}: {x} vs {y}");
            }
        };
        assert!((aux0 - aux1).abs() < 1e-12, "aux: {aux0} vs {aux1}");
        for (row, o) in order.iter().enumerate() {
            if let Some(i) = *o {
                close(&out1[row * d..][..d], &out0[i * d..][..d], "out");
                close(&dz1[row * d..][..d], &dz0[i * d..][..d], "dz");
            }
        }
        for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
            close(a, b, &format!("weight grad {i}"));
        }
        // Without the mask the padding enters the aux loss.
        let (_, aux_all, _, _) = run(&z1, &r1, &dy1, None);
        assert!((aux_all - aux0).abs() > 1e-9);
    }
}
