//! The tied LM head with the cross entropy, a block of rows at a time: the
//! `[T, V]` logits are never whole on the device (base at batch 64 would be
//! 4.3 GB). Per block, in a fixed order: GEMM logits -> `xent_fwd_bwd`.
//!
//! - Forward (inference): the losses only, then one mean.
//! - Training forward ([`train_fwd`], when the tape records): `xent_fwd_bwd`
//!   also turns the logits into dlogits for `dloss = 1`, in place; then the
//!   block's rows of `dh` (GEMM into a saved `[T, d]` bf16 buffer) and `dE`
//!   (GEMM accumulated over the blocks into a saved fp32 `[V_pad, d]`
//!   buffer, 200 MB at base, held until the backward). Three products per
//!   block instead of the four of forward-then-backward.
//! - Backward: after the training forward and `dloss = 1` (the model's loss
//!   is the LM head's own, so its seed), `dE` is added into the table's
//!   gradient and `dh` is returned as it is. Otherwise (another `dloss`:
//!   there is no scale kernel; or after the inference forward) the block's
//!   logits again, dlogits in place, then `dh` and `dE` from two GEMMs.

use std::sync::Arc;

use half::bf16;

use super::{Gpu, GpuParam, GpuTensor, own};
use crate::backend::gpu::Buf;
use crate::backend::gpu::ops::gemm::{self, Mat};
use crate::backend::gpu::ops::xent;
use crate::engine::{OpContext, OpError, OpResult};

/// Logits per block: at most this many elements (256 MiB of bf16), unless
/// [`Gpu::with_lm_head_block`] says otherwise.
pub(super) const BLOCK_ELEMS: usize = 1 << 27;

/// What the backward needs besides its inputs: the count of rows with a
/// target (the mean's denominator); after the training forward, the
/// gradients themselves.
pub struct GpuLmHeadSaved {
    valid: usize,
    ignore: u32,
    grads: Option<TrainGrads>,
}

/// The gradients for `dloss = 1`: `dh` (`[T, d]`, zero rows where no
/// target) and `dE` (`[V_pad, d]` fp32, padding rows zero).
struct TrainGrads {
    dh: GpuTensor,
    de: Buf<f32>,
}

/// Row blocks `(start, rows)` of at most `elems` logits, 64-row multiples.
fn blocks(t: usize, vocab: usize, elems: usize) -> Vec<(usize, usize)> {
    let rows = (elems / vocab.max(1) / 64 * 64).max(64);
    (0..t).step_by(rows).map(|s| (s, rows.min(t - s))).collect()
}

/// The gradient outputs of a pass: dlogits' scale, `dh` (=) and `dE` (+=).
type GradOut<'a> = (f32, &'a Buf<bf16>, &'a Buf<f32>);

/// What every block of one call reads.
struct Head<'a> {
    g: &'a Gpu,
    h: &'a Buf<bf16>,
    table: &'a Buf<bf16>,
    /// All the targets, on the device (blocks take views).
    targets: Arc<Buf<u32>>,
    ignore: u32,
    d: usize,
    /// The vocabulary, and the table's rows: the vocabulary padded to a
    /// multiple of 8 with rows of zeros (`params::padded_rows`); the loss
    /// reads the first `vocab` of each row of `ldv` logits.
    vocab: usize,
    ldv: usize,
    op: &'static str,
}

impl<'a> Head<'a> {
    fn new(
        g: &'a Gpu,
        h: &'a GpuTensor,
        table: &'a GpuParam,
        d: usize,
        (targets, ignore): (&[u32], u32),
        op: &'static str,
    ) -> OpResult<Head<'a>> {
        let (hb, tb) = (h.bf16(op)?, own(table, op)?.bf16(op)?);
        Ok(Head {
            g,
            h: hb,
            table: tb,
            targets: g.dev_targets(targets, op)?,
            ignore,
            d,
            vocab: table.used / d,
            ldv: tb.len() / d,
            op,
        })
    }

    /// Every block in order: its losses into `losses` when given; with
    /// `grad`, dlogits in place of its logits, then its rows of `dh` and
    /// its share of `dE`.
    fn run(&self, t: usize, losses: Option<&Buf<f32>>, grad: Option<GradOut>) -> OpResult<()> {
        for blk in blocks(t, self.ldv, self.g.lm_head_block) {
            let lg = self.logits(blk)?;
            let part = self.g.alloc_f32(blk.1, self.op)?;
            self.xent(&lg, blk, &part, grad.map(|(s, ..)| s))?;
            if let Some(losses) = losses {
                let ex = &self.g.ex;
                ex.copy_range(&part, 0, losses, blk.0, blk.1).op(self.op)?;
            }
            if let Some((_, dh, de)) = grad {
                self.grads(&lg, blk, dh, de)?;
            }
        }
        Ok(())
    }

    /// Logits of rows `start..start + rows`: `h[rows] · Eᵀ`, `ldv` a row
    /// (every row of the table, padding included).
    fn logits(&self, (start, rows): (usize, usize)) -> OpResult<Buf<bf16>> {
        let (g, d, ldv) = (self.g, self.d, self.ldv);
        let out = g.alloc_bf16(rows * ldv, self.op)?;
        gemm::fwd(
            &g.ex,
            Mat::view(self.h, start * d, d),
            Mat::dense(self.table, d),
            None,
            Mat::dense(&out, ldv),
            rows,
            d,
            ldv,
        )
        .op(self.op)?;
        Ok(out)
    }

    /// The block's losses into `part`; with a scale, dlogits in place of
    /// the logits. The padding columns keep their logits, 0 (rows of
    /// zeros), which is also their gradient: the GEMMs run over all `ldv`.
    fn xent(
        &self,
        lg: &Buf<bf16>,
        (start, rows): (usize, usize),
        part: &Buf<f32>,
        scale: Option<f32>,
    ) -> OpResult<()> {
        let tg = Buf::view(&self.targets, start, rows)
            .ok_or_else(|| OpError::msg(self.op, "fewer targets than rows"))?;
        let grad = scale.map(|s| (lg, s));
        let (vocab, ldv) = (self.vocab, self.ldv);
        xent::fwd_bwd(
            &self.g.ex,
            lg,
            &tg,
            self.ignore,
            part,
            grad,
            rows,
            vocab,
            ldv,
        )
        .op(self.op)
    }

    /// From the block's dlogits: its rows of `dh` (=) and `dE` (+=).
    fn grads(
        &self,
        dl: &Buf<bf16>,
        (start, rows): (usize, usize),
        dh: &Buf<bf16>,
        de: &Buf<f32>,
    ) -> OpResult<()> {
        let (g, d, ldv) = (self.g, self.d, self.ldv);
        gemm::bwd_dx(
            &g.ex,
            Mat::dense(dl, ldv),
            Mat::dense(self.table, d),
            Mat::view(dh, start * d, d),
            rows,
            d,
            ldv,
        )
        .op(self.op)?;
        let h = Mat::view(self.h, start * d, d);
        g.dw(
            Mat::dense(dl, ldv),
            h,
            Mat::dense(de, d),
            rows,
            d,
            ldv,
            self.op,
        )
    }

    /// The mean of `losses` over the rows with a target.
    fn mean(&self, losses: &Buf<f32>, t: usize) -> OpResult<f32> {
        let loss = self.g.alloc_f32(1, self.op)?;
        xent::mean(&self.g.ex, losses, &self.targets, self.ignore, &loss, t).op(self.op)?;
        self.g.read_scalar(&loss, self.op)
    }
}

/// The mean's denominator.
pub(super) fn valid(targets: &[u32], ignore: u32) -> usize {
    targets.iter().filter(|&&x| x != ignore).count()
}

/// The gradient scale of the mean loss for `dloss`.
pub(super) fn scale(dloss: f32, valid: usize) -> f32 {
    if valid > 0 { dloss / valid as f32 } else { 0.0 }
}

pub(super) fn fwd(
    g: &Gpu,
    h: &GpuTensor,
    table: &GpuParam,
    d: usize,
    targets: &[u32],
    ignore: u32,
) -> OpResult<(f32, GpuLmHeadSaved)> {
    let head = Head::new(g, h, table, d, (targets, ignore), "lm_head_xent_fwd")?;
    let t = targets.len();
    let losses = g.alloc_f32(t, head.op)?;
    head.run(t, Some(&losses), None)?;
    let valid = valid(targets, ignore);
    let saved = GpuLmHeadSaved {
        valid,
        ignore,
        grads: None,
    };
    Ok((head.mean(&losses, t)?, saved))
}

/// The forward that also makes `dh` and `dE` for `dloss = 1` (module doc).
pub(super) fn train_fwd(
    g: &Gpu,
    h: &GpuTensor,
    table: &GpuParam,
    d: usize,
    targets: &[u32],
    ignore: u32,
) -> OpResult<(f32, GpuLmHeadSaved)> {
    let head = Head::new(g, h, table, d, (targets, ignore), "lm_head_xent_train_fwd")?;
    let t = targets.len();
    let valid = valid(targets, ignore);
    let losses = g.alloc_f32(t, head.op)?;
    // Every row of dh is written (rows without a target get zeros); dE
    // accumulates, so it starts at zero.
    let dh = g.alloc_bf16(t * d, head.op)?;
    let de = g.ex.alloc_zeroed(head.ldv * d).op(head.op)?;
    head.run(t, Some(&losses), Some((scale(1.0, valid), &dh, &de)))?;
    let grads = Some(TrainGrads {
        dh: GpuTensor::from_bf16(dh),
        de,
    });
    let saved = GpuLmHeadSaved {
        valid,
        ignore,
        grads,
    };
    Ok((head.mean(&losses, t)?, saved))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn bwd(
    g: &Gpu,
    h: &GpuTensor,
    table: &GpuParam,
    d: usize,
    targets: &[u32],
    saved: &GpuLmHeadSaved,
    dloss: f32,
    dtable: &mut GpuParam,
) -> OpResult<GpuTensor> {
    let op = "lm_head_xent_bwd";
    if let Some(gr) = &saved.grads
        && dloss == 1.0
    {
        let rows = gr.de.len() / d;
        gemm::add_f32(&g.ex, &gr.de, &dtable.w, rows, d).op(op)?;
        return Ok(gr.dh.clone());
    }
    let head = Head::new(g, h, table, d, (targets, saved.ignore), op)?;
    let t = targets.len();
    let dh = g.alloc_bf16(t * d, op)?;
    let grad = (scale(dloss, saved.valid), &dh, &dtable.w);
    head.run(t, None, Some(grad))?;
    Ok(GpuTensor::from_bf16(dh))
}
