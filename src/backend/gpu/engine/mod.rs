//! The GPU engine: the tape's op interface ([`Backend`]) on the CUDA kernels
//! of `cuda/`, through their launch wrappers in `backend::gpu::ops`. One
//! implementation, two executors: cudarc on a GPU, the SIMT simulator on a
//! CPU (how `cargo test` checks it against the CPU engine).
//!
//! - Tensors stay on the device ([`GpuTensor`]: bf16 activations, fp32
//!   statistics) and are shared, not copied, when saved for the backward.
//! - Parameters live in one arena ([`GpuParams`]).
//! - Every buffer comes from the executor's caching pool: after the first
//!   step no op allocates from the driver, and the pool's high-water mark is
//!   the engine's peak memory.
//! - The batch's ids and mask are uploaded once per forward
//!   ([`Backend::stage_batch`]); the loss and each layer's aux loss are read
//!   back as scalars.

mod attn;
mod ffn;
mod lm_head;
pub(crate) mod moe;
pub mod params;
pub mod tensor;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use half::bf16;

use crate::backend::gpu::ops::gemm::{self, Mat};
use crate::backend::gpu::ops::{bias_grad, elementwise, embed, pool, rmsnorm, swiglu, xent};
use crate::backend::gpu::{Buf, Executor};
use crate::engine::ffn::inference_forward;
use crate::engine::{
    AttnDims, Backend, FfnDims, FfnGradRefs, FfnRefs, MoeDims, MoeGradRefs, MoeRefs, OpContext,
    OpError, OpResult,
};

pub use attn::GpuAttnSaved;
pub use ffn::SwigluSaved;
pub use lm_head::GpuLmHeadSaved;
pub use moe::GpuMoeSaved;
pub use params::{GpuParam, GpuParams, Role};
pub use tensor::GpuTensor;

/// RMSNorm's epsilon (as the CPU engine).
const EPS: f32 = 1e-6;

/// The engine: an executor with a caching pool, and the staged batch.
#[derive(Clone)]
pub struct Gpu {
    ex: Executor,
    staged: Rc<RefCell<Staged>>,
    /// Most logits the LM head holds at once (a block of rows).
    lm_head_block: usize,
}

/// The batch of the current step, on the device, with its host copy (an op
/// given the same ids or mask uses the staged buffer).
#[derive(Default)]
struct Staged {
    ids: Option<(Vec<u32>, Rc<Buf<u32>>)>,
    mask: Option<(Vec<u8>, Rc<Buf<u8>>)>,
    /// The loss's targets, uploaded by the first op that needs them (the
    /// forward's) and read again by the backward's; shared (`Arc`) so that
    /// the LM head's row blocks take views of it.
    targets: Option<(Vec<u32>, Arc<Buf<u32>>)>,
}

impl Gpu {
    /// The engine on `ex` (a caching pool of its own is added).
    pub fn new(ex: &Executor) -> Gpu {
        Gpu {
            ex: ex.with_pool(),
            staged: Rc::default(),
            lm_head_block: lm_head::BLOCK_ELEMS,
        }
    }

    /// The LM head computes at most `elems` logits at a time (rounded down
    /// to whole blocks of 64 rows, at least one; default 2^27, 256 MiB of
    /// bf16). Only the memory it holds changes, not the values: tests set
    /// a small one so that a micro batch runs in several blocks, as the
    /// paper's shapes do (base at batch 64: 16 blocks).
    pub fn with_lm_head_block(mut self, elems: usize) -> Gpu {
        self.lm_head_block = elems;
        self
    }

    pub fn executor(&self) -> &Executor {
        &self.ex
    }

    /// An output its kernel writes in full (not zeroed: see
    /// [`Executor::alloc_uninit`]).
    fn alloc_bf16(&self, n: usize, op: &'static str) -> OpResult<Buf<bf16>> {
        self.ex.alloc_uninit(n).op(op)
    }

    fn alloc_f32(&self, n: usize, op: &'static str) -> OpResult<Buf<f32>> {
        self.ex.alloc_uninit(n).op(op)
    }

    /// The device copy of a batch's ids (the staged one when it matches).
    fn dev_ids(&self, ids: &[u32], op: &'static str) -> OpResult<Rc<Buf<u32>>> {
        staged_or_upload(&self.ex, &self.staged.borrow().ids, ids, op)
    }

    fn dev_mask(&self, mask: &[u8], op: &'static str) -> OpResult<Rc<Buf<u8>>> {
        staged_or_upload(&self.ex, &self.staged.borrow().mask, mask, op)
    }

    /// The device copy of a loss's targets: uploaded once, then the same
    /// buffer for every op given the same targets (the forward's and the
    /// backward's), not one upload per op or per row block.
    fn dev_targets(&self, targets: &[u32], op: &'static str) -> OpResult<Arc<Buf<u32>>> {
        let mut s = self.staged.borrow_mut();
        if let Some((h, dev)) = &s.targets
            && h[..] == targets[..]
        {
            return Ok(dev.clone());
        }
        let dev = Arc::new(self.ex.upload(targets).op(op)?);
        s.targets = Some((targets.to_vec(), dev.clone()));
        Ok(dev)
    }

    /// Reads a one-element fp32 buffer (a loss).
    fn read_scalar(&self, b: &Buf<f32>, op: &'static str) -> OpResult<f32> {
        let v = self.ex.download(b).op(op)?;
        v.first()
            .copied()
            .ok_or_else(|| OpError::msg(op, "empty scalar"))
    }

    /// Workspace for a split-K dW (None when the product does not split).
    fn dw_workspace(
        &self,
        m: usize,
        n: usize,
        k: usize,
        op: &'static str,
    ) -> OpResult<Option<Buf<f32>>> {
        let len = gemm::dw_workspace_len(m, n, k, gemm::dw_splits(m, n, k));
        Ok(if len > 0 {
            Some(self.alloc_f32(len, op)?)
        } else {
            None
        })
    }

    /// `dW[m, n] += dYᵀ · X` over `k` rows.
    #[allow(clippy::too_many_arguments)]
    fn dw(
        &self,
        dy: Mat<bf16>,
        x: Mat<bf16>,
        dw: Mat<f32>,
        k: usize,
        n_in: usize,
        m_out: usize,
        op: &'static str,
    ) -> OpResult<()> {
        let ws = self.dw_workspace(m_out, n_in, k, op)?;
        gemm::bwd_dw(&self.ex, dy, x, dw, true, ws.as_ref(), k, n_in, m_out).op(op)
    }
}

/// The staged device copy when its host copy equals `host`, else a fresh upload.
fn staged_or_upload<T: crate::backend::gpu::buffer::DeviceType + PartialEq>(
    ex: &Executor,
    staged: &Option<(Vec<T>, Rc<Buf<T>>)>,
    host: &[T],
    op: &'static str,
) -> OpResult<Rc<Buf<T>>> {
    match staged {
        Some((h, dev)) if h[..] == host[..] => Ok(dev.clone()),
        _ => Ok(Rc::new(ex.upload(host).op(op)?)),
    }
}

/// Rejects a fused pair's half where an op wants a tensor of its own.
fn own<'a>(p: &'a GpuParam, op: &'static str) -> OpResult<&'a GpuParam> {
    match p.role {
        Role::Own => Ok(p),
        _ => Err(OpError::msg(
            op,
            "a packed gate|up pair is not a linear layer's weight",
        )),
    }
}

impl Backend<f32> for Gpu {
    type Tensor = GpuTensor;
    type Param = GpuParam;
    type AttnSaved = GpuAttnSaved;
    type MoeSaved = GpuMoeSaved;
    /// None after an inference forward.
    type FfnSaved = Option<SwigluSaved>;
    type LmHeadSaved = GpuLmHeadSaved;

    fn name(&self) -> &'static str {
        self.ex.name()
    }

    fn len(&self, x: &GpuTensor) -> usize {
        x.len()
    }

    fn stage_batch(&self, ids: &[u32], mask: &[u8]) -> OpResult<()> {
        let op = "stage_batch";
        let mut s = self.staged.borrow_mut();
        s.ids = Some((ids.to_vec(), Rc::new(self.ex.upload(ids).op(op)?)));
        s.mask = Some((mask.to_vec(), Rc::new(self.ex.upload(mask).op(op)?)));
        Ok(())
    }

    fn to_host(&self, x: &GpuTensor) -> OpResult<Vec<f32>> {
        Ok(match x {
            GpuTensor::F32(b) => self.ex.download(b).op("to_host")?,
            GpuTensor::Bf16(b) => self
                .ex
                .download(b)
                .op("to_host")?
                .into_iter()
                .map(f32::from)
                .collect(),
        })
    }

    /// One read for all of them: each value copied into one buffer on the
    /// device first (queued, no sync), then that buffer downloaded.
    fn scalars_to_host(&self, xs: &[&GpuTensor]) -> OpResult<Vec<f32>> {
        let op = "scalars_to_host";
        if xs.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.alloc_f32(xs.len(), op)?;
        for (i, x) in xs.iter().enumerate() {
            match x {
                GpuTensor::F32(b) if b.len() == 1 => self.ex.copy_range(b, 0, &all, i, 1).op(op)?,
                _ => {
                    let what = format!(
                        "a {} tensor of {} elements is not a scalar",
                        x.dtype(),
                        x.len()
                    );
                    return Err(OpError::msg(op, what));
                }
            }
        }
        self.ex.download(&all).op(op)
    }

    fn zeros(&self, n: usize) -> OpResult<GpuTensor> {
        Ok(GpuTensor::from_bf16(self.ex.alloc_zeroed(n).op("zeros")?))
    }

    fn scalar(&self, v: f32) -> OpResult<GpuTensor> {
        Ok(GpuTensor::from_f32(self.ex.upload(&[v]).op("scalar")?))
    }

    fn add_assign(&self, acc: &mut GpuTensor, x: &GpuTensor) -> OpResult<()> {
        let op = "add_assign";
        let n = acc.len();
        if x.len() != n {
            return Err(OpError::msg(op, format!("{n} += {} elements", x.len())));
        }
        match acc {
            // In place when nobody else holds the accumulator.
            GpuTensor::Bf16(a) if Rc::strong_count(a) == 1 => {
                elementwise::add_fwd(&self.ex, a, x.bf16(op)?, a, n).op(op)
            }
            _ => {
                let sum = self.add(acc, x)?;
                *acc = sum;
                Ok(())
            }
        }
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> OpResult<GpuTensor> {
        let op = "add";
        let n = a.len();
        let out = self.alloc_bf16(n, op)?;
        elementwise::add_fwd(&self.ex, a.bf16(op)?, b.bf16(op)?, &out, n).op(op)?;
        Ok(GpuTensor::from_bf16(out))
    }

    fn embedding_fwd(&self, ids: &[u32], table: &GpuParam, d: usize) -> OpResult<GpuTensor> {
        let op = "embedding_fwd";
        let table = own(table, op)?;
        let dev = self.dev_ids(ids, op)?;
        let out = self.alloc_bf16(ids.len() * d, op)?;
        // Weights loaded for inference keep only the bf16 copy of the table:
        // the same rows, since the gather rounds fp32 to bf16 as the copy did.
        if table.w.is_empty() {
            let t16 = table.bf16(op)?;
            embed::fwd_bf16(&self.ex, &dev, t16, &out, ids.len(), d, t16.len() / d)
        } else {
            embed::fwd(
                &self.ex,
                &dev,
                &table.w,
                &out,
                ids.len(),
                d,
                table.w.len() / d,
            )
        }
        .op(op)?;
        Ok(GpuTensor::from_bf16(out))
    }

    fn embedding_bwd(
        &self,
        ids: &[u32],
        dy: &GpuTensor,
        d: usize,
        dtable: &mut GpuParam,
    ) -> OpResult<()> {
        let op = "embedding_bwd";
        let vocab = dtable.w.len() / d;
        let dev = self.dev_ids(ids, op)?;
        let scratch = embed::EmbedBwdScratch::alloc(&self.ex, ids.len(), d, vocab).op(op)?;
        embed::bwd(&self.ex, &dev, dy.bf16(op)?, &dtable.w, &scratch, vocab).op(op)
    }

    fn rmsnorm_fwd(
        &self,
        x: &GpuTensor,
        w: &GpuParam,
        d: usize,
    ) -> OpResult<(GpuTensor, GpuTensor)> {
        let op = "rmsnorm_fwd";
        let rows = x.len() / d;
        let y = self.alloc_bf16(x.len(), op)?;
        let rstd = self.alloc_f32(rows, op)?;
        rmsnorm::fwd(
            &self.ex,
            x.bf16(op)?,
            &own(w, op)?.w,
            &y,
            &rstd,
            rows,
            d,
            EPS,
        )
        .op(op)?;
        Ok((GpuTensor::from_bf16(y), GpuTensor::from_f32(rstd)))
    }

    fn rmsnorm_bwd(
        &self,
        x: &GpuTensor,
        w: &GpuParam,
        rstd: &GpuTensor,
        dy: &GpuTensor,
        d: usize,
        dw: &mut GpuParam,
    ) -> OpResult<GpuTensor> {
        let op = "rmsnorm_bwd";
        let rows = x.len() / d;
        let dx = self.alloc_bf16(x.len(), op)?;
        let scratch = self.alloc_f32(rmsnorm::bwd_scratch_len(rows, d), op)?;
        rmsnorm::bwd(
            &self.ex,
            x.bf16(op)?,
            &own(w, op)?.w,
            rstd.f32(op)?,
            dy.bf16(op)?,
            &dx,
            &dw.w,
            &scratch,
            rows,
            d,
        )
        .op(op)?;
        Ok(GpuTensor::from_bf16(dx))
    }

    fn linear_fwd(
        &self,
        x: &GpuTensor,
        w: &GpuParam,
        b: Option<&GpuParam>,
        rows: usize,
        din: usize,
        dout: usize,
    ) -> OpResult<GpuTensor> {
        let op = "linear_fwd";
        let y = self.alloc_bf16(rows * dout, op)?;
        gemm::fwd(
            &self.ex,
            Mat::dense(x.bf16(op)?, din),
            Mat::dense(own(w, op)?.bf16(op)?, din),
            b.map(|b| &b.w),
            Mat::dense(&y, dout),
            rows,
            din,
            dout,
        )
        .op(op)?;
        Ok(GpuTensor::from_bf16(y))
    }

    fn linear_bwd(
        &self,
        x: &GpuTensor,
        w: &GpuParam,
        dy: &GpuTensor,
        rows: usize,
        din: usize,
        dout: usize,
        dw: &mut GpuParam,
        db: Option<&mut GpuParam>,
    ) -> OpResult<GpuTensor> {
        let op = "linear_bwd";
        let dyb = dy.bf16(op)?;
        let dx = self.alloc_bf16(rows * din, op)?;
        gemm::bwd_dx(
            &self.ex,
            Mat::dense(dyb, dout),
            Mat::dense(own(w, op)?.bf16(op)?, din),
            Mat::dense(&dx, din),
            rows,
            din,
            dout,
        )
        .op(op)?;
        self.dw(
            Mat::dense(dyb, dout),
            Mat::dense(x.bf16(op)?, din),
            Mat::dense(&dw.w, din),
            rows,
            din,
            dout,
            op,
        )?;
        if let Some(db) = db {
            // db[n] += Σ_t dy[t, n]: column sums, fp32, fixed order.
            let len = bias_grad::scratch_len(rows, dout);
            let scratch = if len > 0 {
                Some(self.alloc_f32(len, op)?)
            } else {
                None
            };
            bias_grad::run(
                &self.ex,
                dyb,
                dout,
                rows,
                dout,
                &db.w,
                true,
                scratch.as_ref(),
            )
            .op(op)?;
        }
        Ok(GpuTensor::from_bf16(dx))
    }

    fn swiglu_fwd(&self, gate: &GpuTensor, up: &GpuTensor) -> OpResult<GpuTensor> {
        let op = "swiglu_fwd";
        let n = gate.len();
        let out = self.alloc_bf16(n, op)?;
        swiglu::fwd(&self.ex, gate.bf16(op)?, up.bf16(op)?, &out, 1, n).op(op)?;
        Ok(GpuTensor::from_bf16(out))
    }

    fn swiglu_bwd(
        &self,
        gate: &GpuTensor,
        up: &GpuTensor,
        dy: &GpuTensor,
    ) -> OpResult<(GpuTensor, GpuTensor)> {
        let op = "swiglu_bwd";
        let n = gate.len();
        let (dg, du) = (self.alloc_bf16(n, op)?, self.alloc_bf16(n, op)?);
        swiglu::bwd(
            &self.ex,
            gate.bf16(op)?,
            up.bf16(op)?,
            dy.bf16(op)?,
            &dg,
            &du,
            1,
            n,
        )
        .op(op)?;
        Ok((GpuTensor::from_bf16(dg), GpuTensor::from_bf16(du)))
    }

    fn gelu_fwd(&self, x: &GpuTensor) -> OpResult<GpuTensor> {
        let op = "gelu_fwd";
        let y = self.alloc_bf16(x.len(), op)?;
        elementwise::gelu_fwd(&self.ex, x.bf16(op)?, &y, x.len()).op(op)?;
        Ok(GpuTensor::from_bf16(y))
    }

    fn gelu_bwd(&self, x: &GpuTensor, dy: &GpuTensor) -> OpResult<GpuTensor> {
        let op = "gelu_bwd";
        let dx = self.alloc_bf16(x.len(), op)?;
        elementwise::gelu_bwd(&self.ex, x.bf16(op)?, dy.bf16(op)?, &dx, x.len()).op(op)?;
        Ok(GpuTensor::from_bf16(dx))
    }

    fn attention_fwd(
        &self,
        qkv: &GpuTensor,
        mask: &[u8],
        dims: &AttnDims,
        theta: f64,
    ) -> OpResult<(GpuTensor, GpuAttnSaved)> {
        attn::fwd(self, qkv, mask, dims, theta)
    }

    fn attention_bwd(
        &self,
        saved: &GpuAttnSaved,
        dy: &GpuTensor,
        dims: &AttnDims,
        theta: f64,
    ) -> OpResult<GpuTensor> {
        attn::bwd(self, saved, dy, dims, theta)
    }

    fn moe_fwd(
        &self,
        z: &GpuTensor,
        resid: &GpuTensor,
        mask: &[u8],
        w: MoeRefs<GpuParam>,
        dims: &MoeDims,
        train: bool,
    ) -> OpResult<(GpuTensor, GpuMoeSaved)> {
        moe::fwd(self, z, resid, mask, w, dims, train)
    }

    fn moe_aux(&self, saved: &GpuMoeSaved) -> OpResult<GpuTensor> {
        let op = "moe_aux";
        let ts = saved.train.as_ref().ok_or_else(|| {
            OpError::msg(
                op,
                "an inference forward (train: false) computes no load-balancing loss",
            )
        })?;
        Ok(GpuTensor::F32(ts.aux.clone()))
    }

    fn moe_routing(&self, saved: &GpuMoeSaved) -> OpResult<Vec<u32>> {
        self.ex.download(&saved.topk_idx).op("moe_routing")
    }

    fn moe_bwd(
        &self,
        z: &GpuTensor,
        w: MoeRefs<GpuParam>,
        saved: &GpuMoeSaved,
        dy: &GpuTensor,
        aux_weight: f32,
        dims: &MoeDims,
        grads: MoeGradRefs<GpuParam>,
    ) -> OpResult<GpuTensor> {
        moe::bwd(self, z, w, saved, dy, aux_weight, dims, grads)
    }

    /// The fused block of the MoE's shared expert, then the residual added
    /// in place over the down GEMM's output.
    fn ffn_fwd(
        &self,
        z: &GpuTensor,
        resid: &GpuTensor,
        w: FfnRefs<GpuParam>,
        dims: &FfnDims,
        train: bool,
    ) -> OpResult<(GpuTensor, Option<SwigluSaved>)> {
        let op = "ffn_fwd";
        let FfnDims { t, d, ff } = *dims;
        let [gate_up, _, down] = w;
        let gate_up = ffn::pair(gate_up, "ffn.w_gate", op)?;
        let block = ffn::Block { t, d, f: ff };
        let (y, saved) = ffn::fwd(self, z.bf16(op)?, gate_up, down, block, train, op)?;
        elementwise::add_fwd(&self.ex, resid.bf16(op)?, &y, &y, t * d).op(op)?;
        Ok((GpuTensor::from_bf16(y), saved))
    }

    fn ffn_bwd(
        &self,
        z: &GpuTensor,
        w: FfnRefs<GpuParam>,
        saved: &Option<SwigluSaved>,
        dy: &GpuTensor,
        dims: &FfnDims,
        grads: FfnGradRefs<GpuParam>,
    ) -> OpResult<GpuTensor> {
        let op = "ffn_bwd";
        let FfnDims { t, d, ff } = *dims;
        let s = saved.as_ref().ok_or_else(|| inference_forward(op))?;
        let [gate_up, _, down] = w;
        let [gr_gate_up, _, gr_down] = grads;
        let dz = ffn::bwd(
            self,
            z.bf16(op)?,
            ffn::pair(gate_up, "ffn.w_gate", op)?,
            down,
            s,
            dy.bf16(op)?,
            ffn::Block { t, d, f: ff },
            [gr_gate_up, gr_down],
            op,
        )?;
        Ok(GpuTensor::from_bf16(dz))
    }

    fn mean_pool_fwd(
        &self,
        x: &GpuTensor,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<GpuTensor> {
        let op = "mean_pool_fwd";
        let m = self.dev_mask(mask, op)?;
        let out = self.alloc_bf16(b * d, op)?;
        pool::mean_fwd(
            &self.ex,
            x.bf16(op)?,
            &m,
            &out,
            &pool::PoolShape {
                batch: b,
                seq: s,
                d,
            },
        )
        .op(op)?;
        Ok(GpuTensor::from_bf16(out))
    }

    fn mean_pool_bwd(
        &self,
        dy: &GpuTensor,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<GpuTensor> {
        let op = "mean_pool_bwd";
        let m = self.dev_mask(mask, op)?;
        let dx = self.alloc_bf16(b * s * d, op)?;
        pool::mean_bwd(
            &self.ex,
            dy.bf16(op)?,
            &m,
            &dx,
            &pool::PoolShape {
                batch: b,
                seq: s,
                d,
            },
        )
        .op(op)?;
        Ok(GpuTensor::from_bf16(dx))
    }

    fn xent_fwd(&self, logits: &GpuTensor, targets: &[u32], ignore: u32) -> OpResult<f32> {
        let op = "xent_fwd";
        let t = targets.len();
        let vocab = logits.len() / t.max(1);
        let tg = self.dev_targets(targets, op)?;
        let losses = self.alloc_f32(t, op)?;
        xent::fwd_bwd(
            &self.ex,
            logits.bf16(op)?,
            &tg,
            ignore,
            &losses,
            None,
            t,
            vocab,
            vocab,
        )
        .op(op)?;
        let loss = self.alloc_f32(1, op)?;
        xent::mean(&self.ex, &losses, &tg, ignore, &loss, t).op(op)?;
        self.read_scalar(&loss, op)
    }

    fn xent_bwd(
        &self,
        logits: &GpuTensor,
        targets: &[u32],
        ignore: u32,
        dloss: f32,
    ) -> OpResult<GpuTensor> {
        let op = "xent_bwd";
        let t = targets.len();
        let vocab = logits.len() / t.max(1);
        let scale = lm_head::scale(dloss, lm_head::valid(targets, ignore));
        let tg = self.dev_targets(targets, op)?;
        let losses = self.alloc_f32(t, op)?;
        let dl = self.alloc_bf16(logits.len(), op)?;
        xent::fwd_bwd(
            &self.ex,
            logits.bf16(op)?,
            &tg,
            ignore,
            &losses,
            Some((&dl, scale)),
            t,
            vocab,
            vocab,
        )
        .op(op)?;
        Ok(GpuTensor::from_bf16(dl))
    }

    fn lm_head_xent_fwd(
        &self,
        h: &GpuTensor,
        table: &GpuParam,
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(f32, GpuLmHeadSaved)> {
        lm_head::fwd(self, h, table, d, targets, ignore)
    }

    /// Loss, `dh` and `dE` (for `dloss = 1`) per block of rows: three
    /// products per block instead of four (see the `lm_head` module).
    fn lm_head_xent_train_fwd(
        &self,
        h: &GpuTensor,
        table: &GpuParam,
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(f32, GpuLmHeadSaved)> {
        lm_head::train_fwd(self, h, table, d, targets, ignore)
    }

    fn lm_head_xent_bwd(
        &self,
        h: &GpuTensor,
        table: &GpuParam,
        d: usize,
        targets: &[u32],
        saved: &GpuLmHeadSaved,
        dloss: f32,
        dtable: &mut GpuParam,
    ) -> OpResult<GpuTensor> {
        lm_head::bwd(self, h, table, d, targets, saved, dloss, dtable)
    }
}
