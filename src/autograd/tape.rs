//! A small tape: each forward call computes its output at once through a
//! [`Backend`] (the CPU reference ops by default) and records an [`Op`];
//! `backward` walks the records in reverse. The records hold only ids, shapes
//! and the backend's saved state, so the same model code drives any backend.
//!
//! An inference tape ([`Tape::inference`]) records nothing: each op's saved
//! state is dropped at once, and [`Tape::release`] frees an activation after
//! its last use, so that memory holds the model and a layer's working set,
//! not a training tape.

use std::time::Instant;

use super::params::{ParamId, ParamStore};
use super::profile::{self, Pass};
use crate::backend::cpu::Cpu;
use crate::engine::{
    AttnDims as Dims, Backend, FfnDims, FfnRefs, Float, MoeDims, MoeRefs, OpError, OpResult,
};

pub type TensorId = usize;

/// Parameters of one MoE layer, in [`MoeRefs`] order.
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
    fn weights<'a, P: ?Sized>(&self, v: &[&'a P]) -> MoeRefs<'a, P> {
        self.ids().map(|i| v[i])
    }
}

/// The dense twin's SwiGLU FFN parameters, in [`FfnRefs`] order.
#[derive(Clone, Copy, Debug)]
pub struct FfnParams {
    pub w_gate: ParamId,
    pub w_up: ParamId,
    pub w_down: ParamId,
}

impl FfnParams {
    fn ids(&self) -> [ParamId; 3] {
        [self.w_gate, self.w_up, self.w_down]
    }
    fn weights<'a, P: ?Sized>(&self, v: &[&'a P]) -> FfnRefs<'a, P> {
        self.ids().map(|i| v[i])
    }
}

/// One recorded operation: its inputs (tensor and parameter ids) and saved state.
pub enum Op<F: Float, B: Backend<F>> {
    Embedding {
        ids: Vec<u32>,
        table: ParamId,
        d: usize,
    },
    RmsNorm {
        x: TensorId,
        w: ParamId,
        d: usize,
        rstd: B::Tensor,
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
        saved: B::AttnSaved,
    },
    Moe {
        z: TensorId,
        resid: TensorId,
        p: MoeParams,
        dims: MoeDims,
        aux_weight: F,
        saved: Box<B::MoeSaved>,
    },
    Ffn {
        z: TensorId,
        resid: TensorId,
        p: FfnParams,
        dims: FfnDims,
        saved: B::FfnSaved,
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
    LmHeadXent {
        h: TensorId,
        table: ParamId,
        d: usize,
        targets: Vec<u32>,
        saved: B::LmHeadSaved,
    },
}

impl<F: Float, B: Backend<F>> Op<F, B> {
    /// The op's kind, as a profile names it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Embedding { .. } => "embedding",
            Op::RmsNorm { .. } => "rmsnorm",
            Op::Linear { .. } => "linear",
            Op::Add { .. } => "add",
            Op::Swiglu { .. } => "swiglu",
            Op::Gelu { .. } => "gelu",
            Op::Attention { .. } => "attention",
            Op::Moe { .. } => "moe",
            Op::Ffn { .. } => "ffn",
            Op::MeanPool { .. } => "mean_pool",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::LmHeadXent { .. } => "lm_head_xent",
        }
    }
}

struct Record<F: Float, B: Backend<F>> {
    op: Op<F, B>,
    out: TensorId,
}

pub struct Tape<F: Float, B: Backend<F> = Cpu> {
    backend: B,
    /// Values by id; `None` once released (inference) or consumed (backward).
    vals: Vec<Option<B::Tensor>>,
    records: Vec<Record<F, B>>,
    /// Whether ops are recorded for a backward (false: inference).
    record: bool,
    /// MoE routing kept for [`Tape::routing`] when nothing is recorded
    /// (only when asked: reading it back is a device sync per layer).
    routing: Vec<u32>,
    keep_routing: bool,
    /// Each MoE layer's aux loss (a one-element tensor, read when asked) and
    /// its weight in the loss (already part of the loss gradient).
    aux: Vec<(F, B::Tensor)>,
    /// When this tape's last op ended, if profiling was on when it was made
    /// ([`profile`]).
    mark: Option<Instant>,
}

impl<F: Float> Default for Tape<F, Cpu> {
    fn default() -> Self {
        Tape::with_cpu(Cpu::EXACT)
    }
}

impl<F: Float> Tape<F, Cpu> {
    /// A tape on the CPU reference ops.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tape on the CPU ops with `cpu`'s products (see `Products`).
    pub fn with_cpu(cpu: Cpu) -> Self {
        crate::backend::cpu::alloc::keep_freed_memory();
        Tape::with_backend(cpu)
    }

    /// An inference tape on the CPU reference ops.
    pub fn cpu_inference() -> Self {
        crate::backend::cpu::alloc::keep_freed_memory();
        Tape::inference(Cpu::EXACT)
    }

    /// A tensor's values (the CPU tape keeps them on the host).
    pub fn value(&self, t: TensorId) -> OpResult<&[F]> {
        self.val(t).map(|v| &v[..])
    }

    /// A leaf tensor of host values (features computed elsewhere, such as
    /// a frozen encoder's): no op is recorded, so a backward stops there.
    pub fn input(&mut self, values: Vec<F>) -> TensorId {
        self.vals.push(Some(values));
        self.vals.len() - 1
    }
}

impl<F: Float, B: Backend<F>> Tape<F, B> {
    /// A training tape on `backend`: ops are recorded for [`Tape::backward`].
    pub fn with_backend(backend: B) -> Self {
        Tape {
            backend,
            vals: Vec::new(),
            records: Vec::new(),
            record: true,
            routing: Vec::new(),
            keep_routing: false,
            aux: Vec::new(),
            mark: profile::on().then(Instant::now),
        }
    }

    /// An inference tape on `backend`: nothing is recorded (no backward), and
    /// [`Tape::release`] frees activations.
    pub fn inference(backend: B) -> Self {
        Tape {
            record: false,
            ..Self::with_backend(backend)
        }
    }

    /// An inference tape that also keeps each MoE layer's routing for
    /// [`Tape::routing`] (a training tape always can).
    pub fn keep_routing(mut self) -> Self {
        self.keep_routing = true;
        self
    }

    pub fn is_recording(&self) -> bool {
        self.record
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn val(&self, t: TensorId) -> OpResult<&B::Tensor> {
        self.vals.get(t).and_then(|v| v.as_ref()).ok_or_else(|| {
            OpError::msg("tape", format!("tensor {t} was released or never computed"))
        })
    }

    /// A copy of a tensor's values on the host.
    pub fn to_host(&self, t: TensorId) -> OpResult<Vec<F>> {
        self.backend.to_host(self.val(t)?)
    }

    /// Frees activations after their last use. Only an inference tape frees
    /// (a training tape keeps every value for the backward).
    pub fn release(&mut self, ids: &[TensorId]) {
        if !self.record {
            for &t in ids {
                if let Some(v) = self.vals.get_mut(t) {
                    *v = None;
                }
            }
        }
    }

    /// Every MoE layer's aux loss so far, unweighted, in layer order (read
    /// back now: on a device engine, once per forward rather than per layer);
    /// empty on an inference tape, which does not compute them.
    pub fn aux_losses(&self) -> OpResult<Vec<F>> {
        let xs: Vec<&B::Tensor> = self.aux.iter().map(|(_, t)| t).collect();
        self.backend.scalars_to_host(&xs)
    }

    /// Sum of `aux_weight * aux` over the MoE layers so far.
    pub fn aux_loss(&self) -> OpResult<F> {
        let v = self.aux_losses()?;
        Ok(self
            .aux
            .iter()
            .zip(v)
            .fold(F::ZERO, |acc, ((w, _), a)| acc + *w * a))
    }

    /// The experts chosen in every MoE layer so far (top-k ids, layer after layer).
    pub fn routing(&self) -> OpResult<Vec<u32>> {
        let mut out = self.routing.clone();
        for r in &self.records {
            if let Op::Moe { saved, .. } = &r.op {
                out.extend(self.backend.moe_routing(saved)?);
            }
        }
        Ok(out)
    }

    fn push(&mut self, val: B::Tensor, op: Op<F, B>) -> TensorId {
        if let Some(mark) = self.mark {
            let now = Instant::now();
            profile::add(op.name(), Pass::Forward, now - mark);
            self.mark = Some(now);
        }
        self.vals.push(Some(val));
        let out = self.vals.len() - 1;
        if self.record {
            self.records.push(Record { op, out });
        }
        out
    }

    /// Stages the batch's ids and mask on the backend (a device engine
    /// uploads them once per step).
    pub fn stage_batch(&mut self, ids: &[u32], mask: &[u8]) -> OpResult<()> {
        self.backend.stage_batch(ids, mask)
    }

    pub fn embedding(
        &mut self,
        p: &[&B::Param],
        table: ParamId,
        ids: &[u32],
        d: usize,
    ) -> OpResult<TensorId> {
        let y = self.backend.embedding_fwd(ids, p[table], d)?;
        Ok(self.push(
            y,
            Op::Embedding {
                ids: ids.to_vec(),
                table,
                d,
            },
        ))
    }

    pub fn rmsnorm(
        &mut self,
        p: &[&B::Param],
        x: TensorId,
        w: ParamId,
        d: usize,
    ) -> OpResult<TensorId> {
        let (y, rstd) = self.backend.rmsnorm_fwd(self.val(x)?, p[w], d)?;
        Ok(self.push(y, Op::RmsNorm { x, w, d, rstd }))
    }

    pub fn linear(
        &mut self,
        p: &[&B::Param],
        x: TensorId,
        w: ParamId,
        b: Option<ParamId>,
        din: usize,
        dout: usize,
    ) -> OpResult<TensorId> {
        let xv = self.val(x)?;
        let rows = self.backend.len(xv) / din;
        let y = self
            .backend
            .linear_fwd(xv, p[w], b.map(|b| p[b]), rows, din, dout)?;
        Ok(self.push(
            y,
            Op::Linear {
                x,
                w,
                b,
                rows,
                din,
                dout,
            },
        ))
    }

    pub fn add(&mut self, a: TensorId, b: TensorId) -> OpResult<TensorId> {
        let y = self.backend.add(self.val(a)?, self.val(b)?)?;
        Ok(self.push(y, Op::Add { a, b }))
    }

    pub fn swiglu(&mut self, gate: TensorId, up: TensorId) -> OpResult<TensorId> {
        let y = self.backend.swiglu_fwd(self.val(gate)?, self.val(up)?)?;
        Ok(self.push(y, Op::Swiglu { gate, up }))
    }

    pub fn gelu(&mut self, x: TensorId) -> OpResult<TensorId> {
        let y = self.backend.gelu_fwd(self.val(x)?)?;
        Ok(self.push(y, Op::Gelu { x }))
    }

    /// Causal self-attention with RoPE on the fused projection `qkv [B·S, 3d]`.
    pub fn attention(
        &mut self,
        qkv: TensorId,
        mask: &[u8],
        dims: Dims,
        theta: f64,
    ) -> OpResult<TensorId> {
        let (y, saved) = self
            .backend
            .attention_fwd(self.val(qkv)?, mask, &dims, theta)?;
        Ok(self.push(
            y,
            Op::Attention {
                qkv,
                dims,
                theta,
                saved,
            },
        ))
    }

    /// `resid + MoE(z)`; the layer's aux loss (over the positions where
    /// `mask` is set), times `aux_weight`, joins the loss.
    #[allow(clippy::too_many_arguments)]
    pub fn moe(
        &mut self,
        p: &[&B::Param],
        z: TensorId,
        resid: TensorId,
        mask: &[u8],
        mp: MoeParams,
        dims: MoeDims,
        aux_weight: F,
    ) -> OpResult<TensorId> {
        let (y, saved) = self.backend.moe_fwd(
            self.val(z)?,
            self.val(resid)?,
            mask,
            mp.weights(p),
            &dims,
            self.record,
        )?;
        // Only training reads the aux loss (an engine may skip it at inference).
        if self.record {
            let aux = self.backend.moe_aux(&saved)?;
            self.aux.push((aux_weight, aux));
        }
        if !self.record && self.keep_routing {
            let r = self.backend.moe_routing(&saved)?;
            self.routing.extend(r);
        }
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
        Ok(id)
    }

    /// `resid + FFN(z)`, the dense twin's SwiGLU FFN as one op (an engine
    /// may fuse it; on an inference tape it keeps nothing for a backward).
    pub fn ffn(
        &mut self,
        p: &[&B::Param],
        z: TensorId,
        resid: TensorId,
        fp: FfnParams,
        dims: FfnDims,
    ) -> OpResult<TensorId> {
        let (y, saved) = self.backend.ffn_fwd(
            self.val(z)?,
            self.val(resid)?,
            fp.weights(p),
            &dims,
            self.record,
        )?;
        Ok(self.push(
            y,
            Op::Ffn {
                z,
                resid,
                p: fp,
                dims,
                saved,
            },
        ))
    }

    pub fn mean_pool(
        &mut self,
        x: TensorId,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<TensorId> {
        let y = self.backend.mean_pool_fwd(self.val(x)?, mask, b, s, d)?;
        Ok(self.push(
            y,
            Op::MeanPool {
                x,
                mask: mask.to_vec(),
                b,
                s,
                d,
            },
        ))
    }

    /// Mean cross entropy over rows whose target is not `ignore`: a scalar
    /// tensor, returned with its value.
    pub fn cross_entropy(
        &mut self,
        logits: TensorId,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(TensorId, F)> {
        let l = self.backend.xent_fwd(self.val(logits)?, targets, ignore)?;
        let y = self.backend.scalar(l)?;
        let id = self.push(
            y,
            Op::CrossEntropy {
                logits,
                targets: targets.to_vec(),
                ignore,
            },
        );
        Ok((id, l))
    }

    /// Tied LM head + mean cross entropy (rows whose target is `ignore` are
    /// skipped; no `[T, V]` logits are kept): a scalar tensor and its value.
    pub fn lm_head_xent(
        &mut self,
        p: &[&B::Param],
        h: TensorId,
        table: ParamId,
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(TensorId, F)> {
        // Training may make the gradients in the forward's pass (the CPU
        // and GPU engines do); inference keeps the forward alone.
        let hv = self.val(h)?;
        let (l, saved) = if self.record {
            self.backend
                .lm_head_xent_train_fwd(hv, p[table], d, targets, ignore)?
        } else {
            self.backend
                .lm_head_xent_fwd(hv, p[table], d, targets, ignore)?
        };
        let y = self.backend.scalar(l)?;
        let id = self.push(
            y,
            Op::LmHeadXent {
                h,
                table,
                d,
                targets: targets.to_vec(),
                saved,
            },
        );
        Ok((id, l))
    }

    /// Backpropagates `loss` (a scalar tensor, seeded with 1) plus every MoE
    /// layer's weighted aux loss; parameter grads accumulate into `store`.
    pub fn backward<S: ParamStore<B::Param> + ?Sized>(
        &mut self,
        loss: TensorId,
        store: &mut S,
    ) -> OpResult<()> {
        if !self.record {
            return Err(OpError::msg(
                "backward",
                "an inference tape records nothing to differentiate",
            ));
        }
        let (pv, mut pg) = store.split();
        if pg.len() != pv.len() {
            return Err(OpError::msg(
                "backward",
                format!(
                    "the parameter store has {} gradients for {} values (an inference-only store?)",
                    pg.len(),
                    pv.len()
                ),
            ));
        }
        let mut grads: Vec<Option<B::Tensor>> = (0..self.vals.len()).map(|_| None).collect();
        grads[loss] = Some(self.backend.scalar(F::ONE)?);
        let records = std::mem::take(&mut self.records);
        for rec in records.into_iter().rev() {
            let (name, t0) = (rec.op.name(), self.mark.map(|_| Instant::now()));
            // The loss's own gradient is the seed, 1: known here, so a loss
            // op needs no read of it from the device.
            let seed = (rec.out == loss).then_some(F::ONE);
            let dout = match (grads[rec.out].take(), &rec.op) {
                (Some(g), _) => g,
                // The aux loss reaches MoE layers even if their output gets no gradient.
                (None, Op::Moe { .. }) => {
                    let n = self.backend.len(self.val(rec.out)?);
                    self.backend.zeros(n)?
                }
                (None, _) => continue,
            };
            self.backward_op(rec.op, (dout, seed), &pv, &mut pg, &mut grads)?;
            if let Some(t0) = t0 {
                profile::add(name, Pass::Backward, t0.elapsed());
            }
        }
        Ok(())
    }

    /// One record's backward; `dout` with its value when the host knows it
    /// (a scalar: the loss's seed).
    fn backward_op(
        &self,
        op: Op<F, B>,
        (dout, known): (B::Tensor, Option<F>),
        pv: &[&B::Param],
        pg: &mut [&mut B::Param],
        grads: &mut [Option<B::Tensor>],
    ) -> OpResult<()> {
        let be = &self.backend;
        let v = |t: TensorId| self.val(t);
        // A loss op's upstream gradient as a number: known, or read back.
        let dloss = || match known {
            Some(v) => Ok(v),
            None => scalar_value(be.to_host(&dout)?),
        };
        let acc = |grads: &mut [Option<B::Tensor>], t: TensorId, g: B::Tensor| -> OpResult<()> {
            match &mut grads[t] {
                Some(a) => be.add_assign(a, &g),
                slot @ None => {
                    *slot = Some(g);
                    Ok(())
                }
            }
        };
        match op {
            Op::Embedding { ids, table, d } => be.embedding_bwd(&ids, &dout, d, pg[table])?,
            Op::RmsNorm { x, w, d, rstd } => {
                let dx = be.rmsnorm_bwd(v(x)?, pv[w], &rstd, &dout, d, pg[w])?;
                acc(grads, x, dx)?;
            }
            Op::Linear {
                x,
                w,
                b,
                rows,
                din,
                dout: n,
            } => {
                let dx = match b {
                    Some(b) => {
                        let [gw, gb] = grads_of(pg, [w, b])?;
                        be.linear_bwd(v(x)?, pv[w], &dout, rows, din, n, gw, Some(gb))?
                    }
                    None => be.linear_bwd(v(x)?, pv[w], &dout, rows, din, n, pg[w], None)?,
                };
                acc(grads, x, dx)?;
            }
            Op::Add { a, b } => {
                // The second consumer gets a copy; the first takes `dout` itself.
                let mut copy = be.zeros(be.len(&dout))?;
                be.add_assign(&mut copy, &dout)?;
                acc(grads, a, dout)?;
                acc(grads, b, copy)?;
            }
            Op::Swiglu { gate, up } => {
                let (dg, du) = be.swiglu_bwd(v(gate)?, v(up)?, &dout)?;
                acc(grads, gate, dg)?;
                acc(grads, up, du)?;
            }
            Op::Gelu { x } => {
                let dx = be.gelu_bwd(v(x)?, &dout)?;
                acc(grads, x, dx)?;
            }
            Op::Attention {
                qkv,
                dims,
                theta,
                saved,
            } => {
                let dq = be.attention_bwd(&saved, &dout, &dims, theta)?;
                acc(grads, qkv, dq)?;
            }
            Op::Moe {
                z,
                resid,
                p,
                dims,
                aux_weight,
                saved,
            } => {
                let g = grads_of(pg, p.ids())?;
                let dz = be.moe_bwd(v(z)?, p.weights(pv), &saved, &dout, aux_weight, &dims, g)?;
                acc(grads, z, dz)?;
                acc(grads, resid, dout)?;
            }
            Op::Ffn {
                z,
                resid,
                p,
                dims,
                saved,
            } => {
                let g = grads_of(pg, p.ids())?;
                let dz = be.ffn_bwd(v(z)?, p.weights(pv), &saved, &dout, &dims, g)?;
                acc(grads, z, dz)?;
                acc(grads, resid, dout)?;
            }
            Op::MeanPool { x, mask, b, s, d } => {
                let dx = be.mean_pool_bwd(&dout, &mask, b, s, d)?;
                acc(grads, x, dx)?;
            }
            Op::CrossEntropy {
                logits,
                targets,
                ignore,
            } => {
                let dloss = dloss()?;
                let dl = be.xent_bwd(v(logits)?, &targets, ignore, dloss)?;
                acc(grads, logits, dl)?;
            }
            Op::LmHeadXent {
                h,
                table,
                d,
                targets,
                saved,
            } => {
                let dloss = dloss()?;
                let dh =
                    be.lm_head_xent_bwd(v(h)?, pv[table], d, &targets, &saved, dloss, pg[table])?;
                acc(grads, h, dh)?;
            }
        }
        Ok(())
    }
}

/// The value of a one-element tensor read back to the host.
fn scalar_value<F: Float>(v: Vec<F>) -> OpResult<F> {
    match v[..] {
        [x] => Ok(x),
        _ => Err(OpError::msg(
            "backward",
            format!("the loss gradient has {} values, expected 1", v.len()),
        )),
    }
}

/// Several parameters' gradients at once (ids must be distinct), for ops
/// with more than one weight.
fn grads_of<'a, P: ?Sized, const N: usize>(
    pg: &'a mut [&mut P],
    ids: [usize; N],
) -> OpResult<[&'a mut P; N]> {
    let mut out: [Option<&'a mut P>; N] = [const { None }; N];
    for (i, g) in pg.iter_mut().enumerate() {
        if let Some(j) = ids.iter().position(|&id| id == i) {
            out[j] = Some(&mut **g);
        }
    }
    if out.iter().any(Option::is_none) {
        return Err(OpError::msg(
            "backward",
            format!("parameter ids {ids:?} are not distinct entries of the store"),
        ));
    }
    Ok(out.map(|g| g.expect("checked above")))
}
