//! A small tape: each forward call computes its output at once (on the CPU
//! reference ops) and records an [`Op`]; `backward` walks the records in
//! reverse. The records hold only ids, shapes and what the backward needs,
//! nothing CPU-specific, so another executor can replay the same list.

use super::params::{ParamId, ParamStore};
use crate::backend::cpu::attention::Dims;
use crate::backend::cpu::mha::{self, MhaSaved};
use crate::backend::cpu::moe::{self, MoeDims, MoeGrads, MoeSaved, MoeWeights};
use crate::backend::cpu::{Float, act, embedding, linear, pool, rmsnorm, swiglu, xent};

pub type TensorId = usize;

/// Parameters of one MoE layer, in [`MoeWeights`] order.
#[derive(Clone, Copy, Debug)]
pub struct MoeParams {
    pub router: ParamId,
    pub shared_gate: ParamId,
    pub s_gate: ParamId,
    pub s_up: ParamId,
    pub s_down: ParamId,
    pub e_gate: ParamId,
    pub e_up: ParamId,
    pub e_down: ParamId,
}

impl MoeParams {
    fn ids(&self) -> [ParamId; 8] {
        [
            self.router,
            self.shared_gate,
            self.s_gate,
            self.s_up,
            self.s_down,
            self.e_gate,
            self.e_up,
            self.e_down,
        ]
    }
    fn weights<'a, F>(&self, v: &[&'a [F]]) -> MoeWeights<'a, F> {
        MoeWeights {
            router: v[self.router],
            shared_gate: v[self.shared_gate],
            s_gate: v[self.s_gate],
            s_up: v[self.s_up],
            s_down: v[self.s_down],
            e_gate: v[self.e_gate],
            e_up: v[self.e_up],
            e_down: v[self.e_down],
        }
    }
}

/// One recorded operation: its inputs (tensor and parameter ids) and saved state.
pub enum Op<F> {
    Embedding {
        ids: Vec<u32>,
        table: ParamId,
        d: usize,
    },
    RmsNorm {
        x: TensorId,
        w: ParamId,
        d: usize,
        rstd: Vec<F>,
    },
    Linear {
        x: TensorId,
        w: ParamId,
        b: Option<ParamId>,
        rows: usize,
        din: usize,
        dout: usize,
    },
    Add {
        a: TensorId,
        b: TensorId,
    },
    Swiglu {
        gate: TensorId,
        up: TensorId,
    },
    Gelu {
        x: TensorId,
    },
    Attention {
        qkv: TensorId,
        dims: Dims,
        theta: f64,
        saved: MhaSaved<F>,
    },
    Moe {
        z: TensorId,
        resid: TensorId,
        p: MoeParams,
        dims: MoeDims,
        aux_weight: F,
        saved: Box<MoeSaved<F>>,
    },
    MeanPool {
        x: TensorId,
        mask: Vec<u8>,
        b: usize,
        s: usize,
        d: usize,
    },
    CrossEntropy {
        logits: TensorId,
        targets: Vec<u32>,
        ignore: u32,
    },
}

struct Record<F> {
    op: Op<F>,
    out: TensorId,
}

pub struct Tape<F> {
    vals: Vec<Vec<F>>,
    records: Vec<Record<F>>,
    /// Sum of `aux_weight * aux` over MoE layers (already part of the loss gradient).
    pub aux_loss: F,
}

impl<F: Float> Default for Tape<F> {
    fn default() -> Self {
        Tape {
            vals: Vec::new(),
            records: Vec::new(),
            aux_loss: F::ZERO,
        }
    }
}

impl<F: Float> Tape<F> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The experts chosen in every MoE layer so far (top-k ids, layer after layer).
    pub fn routing(&self) -> Vec<u32> {
        self.records
            .iter()
            .filter_map(|r| match &r.op {
                Op::Moe { saved, .. } => Some(saved.topk_idx.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn value(&self, t: TensorId) -> &[F] {
        &self.vals[t]
    }

    fn push(&mut self, val: Vec<F>, op: Op<F>) -> TensorId {
        self.vals.push(val);
        let out = self.vals.len() - 1;
        self.records.push(Record { op, out });
        out
    }

    pub fn embedding(&mut self, p: &[&[F]], table: ParamId, ids: &[u32], d: usize) -> TensorId {
        let mut y = vec![F::ZERO; ids.len() * d];
        embedding::fwd(ids, p[table], d, &mut y);
        self.push(
            y,
            Op::Embedding {
                ids: ids.to_vec(),
                table,
                d,
            },
        )
    }

    pub fn rmsnorm(&mut self, p: &[&[F]], x: TensorId, w: ParamId, d: usize) -> TensorId {
        let n = self.vals[x].len();
        let mut y = vec![F::ZERO; n];
        let mut rstd = vec![F::ZERO; n / d];
        rmsnorm::fwd(&self.vals[x], p[w], d, F::from_f64(1e-6), &mut y, &mut rstd);
        self.push(y, Op::RmsNorm { x, w, d, rstd })
    }

    pub fn linear(
        &mut self,
        p: &[&[F]],
        x: TensorId,
        w: ParamId,
        b: Option<ParamId>,
        din: usize,
        dout: usize,
    ) -> TensorId {
        let rows = self.vals[x].len() / din;
        let mut y = vec![F::ZERO; rows * dout];
        linear::fwd(
            &self.vals[x],
            p[w],
            b.map(|b| p[b]),
            rows,
            din,
            dout,
            &mut y,
        );
        self.push(
            y,
            Op::Linear {
                x,
                w,
                b,
                rows,
                din,
                dout,
            },
        )
    }

    pub fn add(&mut self, a: TensorId, b: TensorId) -> TensorId {
        let y = self.vals[a]
            .iter()
            .zip(&self.vals[b])
            .map(|(&x, &y)| x + y)
            .collect();
        self.push(y, Op::Add { a, b })
    }

    pub fn swiglu(&mut self, gate: TensorId, up: TensorId) -> TensorId {
        let mut y = vec![F::ZERO; self.vals[gate].len()];
        swiglu::fwd(&self.vals[gate], &self.vals[up], &mut y);
        self.push(y, Op::Swiglu { gate, up })
    }

    pub fn gelu(&mut self, x: TensorId) -> TensorId {
        let mut y = vec![F::ZERO; self.vals[x].len()];
        act::gelu_fwd(&self.vals[x], &mut y);
        self.push(y, Op::Gelu { x })
    }

    /// Causal self-attention with RoPE on the fused projection `qkv [B·S, 3d]`.
    pub fn attention(&mut self, qkv: TensorId, mask: &[u8], dims: Dims, theta: f64) -> TensorId {
        let mut y = vec![F::ZERO; dims.b * dims.s * dims.h * dims.hd];
        let saved = mha::fwd(&self.vals[qkv], mask, &dims, theta, &mut y);
        self.push(
            y,
            Op::Attention {
                qkv,
                dims,
                theta,
                saved,
            },
        )
    }

    /// `resid + MoE(z)`; the layer's aux loss, times `aux_weight`, joins the loss.
    pub fn moe(
        &mut self,
        p: &[&[F]],
        z: TensorId,
        resid: TensorId,
        mp: MoeParams,
        dims: MoeDims,
        aux_weight: F,
    ) -> (TensorId, F) {
        let mut y = vec![F::ZERO; dims.t * dims.d];
        let saved = moe::fwd(
            &self.vals[z],
            &self.vals[resid],
            &mp.weights(p),
            &dims,
            &mut y,
        );
        let aux = saved.aux;
        self.aux_loss += aux_weight * aux;
        let id = self.push(
            y,
            Op::Moe {
                z,
                resid,
                p: mp,
                dims,
                aux_weight,
                saved: Box::new(saved),
            },
        );
        (id, aux)
    }

    pub fn mean_pool(
        &mut self,
        x: TensorId,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> TensorId {
        let mut y = vec![F::ZERO; b * d];
        pool::mean_fwd(&self.vals[x], mask, b, s, d, &mut y);
        self.push(
            y,
            Op::MeanPool {
                x,
                mask: mask.to_vec(),
                b,
                s,
                d,
            },
        )
    }

    /// Mean cross entropy over rows whose target is not `ignore`: a scalar tensor.
    pub fn cross_entropy(&mut self, logits: TensorId, targets: &[u32], ignore: u32) -> TensorId {
        let mut losses = vec![F::ZERO; targets.len()];
        let l = xent::fwd(&self.vals[logits], targets, ignore, &mut losses);
        self.push(
            vec![l],
            Op::CrossEntropy {
                logits,
                targets: targets.to_vec(),
                ignore,
            },
        )
    }

    /// Backpropagates `loss` (a scalar tensor, seeded with 1) plus every MoE
    /// layer's weighted aux loss; parameter grads accumulate into `store`.
    pub fn backward<S: ParamStore<F> + ?Sized>(&mut self, loss: TensorId, store: &mut S) {
        let (pv, mut pg) = store.split();
        let mut grads: Vec<Option<Vec<F>>> = (0..self.vals.len()).map(|_| None).collect();
        grads[loss] = Some(vec![F::ONE]);
        let records = std::mem::take(&mut self.records);
        for rec in records.into_iter().rev() {
            let dout = match (grads[rec.out].take(), &rec.op) {
                (Some(g), _) => g,
                // The aux loss reaches MoE layers even if their output gets no gradient.
                (None, Op::Moe { .. }) => vec![F::ZERO; self.vals[rec.out].len()],
                (None, _) => continue,
            };
            self.backward_op(rec.op, &dout, &pv, &mut pg, &mut grads);
        }
    }

    fn backward_op(
        &self,
        op: Op<F>,
        dout: &[F],
        pv: &[&[F]],
        pg: &mut [&mut [F]],
        grads: &mut [Option<Vec<F>>],
    ) {
        let v = &self.vals;
        let zeros = |t: TensorId| vec![F::ZERO; v[t].len()];
        match op {
            Op::Embedding { ids, table, d } => embedding::bwd(&ids, dout, d, pg[table]),
            Op::RmsNorm { x, w, d, rstd } => {
                let mut dx = zeros(x);
                rmsnorm::bwd(&v[x], pv[w], &rstd, dout, d, &mut dx, pg[w]);
                accumulate(grads, x, dx);
            }
            Op::Linear {
                x,
                w,
                b,
                rows,
                din,
                dout: n,
            } => {
                let mut dx = zeros(x);
                match b {
                    Some(b) => {
                        let [gw, gb] = take_grads(pg, [w, b]);
                        linear::bwd(
                            &v[x],
                            pv[w],
                            dout,
                            rows,
                            din,
                            n,
                            Some(&mut dx),
                            &mut *gw,
                            Some(&mut *gb),
                        );
                        restore_grads(pg, [w, b], [gw, gb]);
                    }
                    None => {
                        linear::bwd(&v[x], pv[w], dout, rows, din, n, Some(&mut dx), pg[w], None)
                    }
                }
                accumulate(grads, x, dx);
            }
            Op::Add { a, b } => {
                accumulate(grads, a, dout.to_vec());
                accumulate(grads, b, dout.to_vec());
            }
            Op::Swiglu { gate, up } => {
                let (mut dg, mut du) = (zeros(gate), zeros(up));
                swiglu::bwd(&v[gate], &v[up], dout, &mut dg, &mut du);
                accumulate(grads, gate, dg);
                accumulate(grads, up, du);
            }
            Op::Gelu { x } => {
                let mut dx = zeros(x);
                act::gelu_bwd(&v[x], dout, &mut dx);
                accumulate(grads, x, dx);
            }
            Op::Attention {
                qkv,
                dims,
                theta,
                saved,
            } => {
                let mut dq = zeros(qkv);
                mha::bwd(&saved, dout, &dims, theta, &mut dq);
                accumulate(grads, qkv, dq);
            }
            Op::Moe {
                z,
                resid,
                p,
                dims,
                aux_weight,
                saved,
            } => {
                let mut dz = zeros(z);
                let mut g = take_grads(pg, p.ids());
                let [g0, g1, g2, g3, g4, g5, g6, g7] = &mut g;
                let gr = MoeGrads {
                    router: g0,
                    shared_gate: g1,
                    s_gate: g2,
                    s_up: g3,
                    s_down: g4,
                    e_gate: g5,
                    e_up: g6,
                    e_down: g7,
                };
                moe::bwd(
                    &v[z],
                    &p.weights(pv),
                    &saved,
                    dout,
                    aux_weight,
                    &dims,
                    &mut dz,
                    gr,
                );
                restore_grads(pg, p.ids(), g);
                accumulate(grads, z, dz);
                accumulate(grads, resid, dout.to_vec());
            }
            Op::MeanPool { x, mask, b, s, d } => {
                let mut dx = zeros(x);
                pool::mean_bwd(dout, &mask, b, s, d, &mut dx);
                accumulate(grads, x, dx);
            }
            Op::CrossEntropy {
                logits,
                targets,
                ignore,
            } => {
                let mut dl = zeros(logits);
                xent::bwd(&v[logits], &targets, ignore, dout[0], &mut dl);
                accumulate(grads, logits, dl);
            }
        }
    }
}

/// Several parameters' gradient slices at once (ids must be distinct): moved
/// out of the list for the op's backward, then put back with [`restore_grads`].
fn take_grads<'a, F, const N: usize>(pg: &mut [&'a mut [F]], ids: [usize; N]) -> [&'a mut [F]; N] {
    ids.map(|i| std::mem::take(&mut pg[i]))
}

fn restore_grads<'a, F, const N: usize>(
    pg: &mut [&'a mut [F]],
    ids: [usize; N],
    g: [&'a mut [F]; N],
) {
    for (i, g) in ids.into_iter().zip(g) {
        pg[i] = g;
    }
}

/// Activation grads from several consumers add up.
fn accumulate<F: Float>(grads: &mut [Option<Vec<F>>], t: TensorId, g: Vec<F>) {
    match &mut grads[t] {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, &b)| *a += b),
        slot @ None => *slot = Some(g),
    }
}
