//! The tied LM head with the cross entropy, a block of rows at a time: the
//! `[T, V]` logits are never whole on the device (base at batch 64 would be
//! 4.3 GB). Forward: GEMM -> `xent_fwd_bwd` (losses only) per block, one mean.
//! Backward: the block's logits again, `xent_fwd_bwd` turns them into
//! dlogits in place, then `dh` and `dE` from two GEMMs.

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
/// target (the mean's denominator).
pub struct GpuLmHeadSaved {
    valid: usize,
    ignore: u32,
}

/// Row blocks `(start, rows)` of at most `elems` logits, 64-row multiples.
fn blocks(t: usize, vocab: usize, elems: usize) -> Vec<(usize, usize)> {
    let rows = (elems / vocab.max(1) / 64 * 64).max(64);
    (0..t).step_by(rows).map(|s| (s, rows.min(t - s))).collect()
}

/// The vocabulary and the table's rows: the vocabulary padded to a multiple
/// of 8 with rows of zeros (`params::padded_rows`); the loss reads the first
/// `vocab` of each row of `ldv` logits.
fn vocab_and_rows(table: &GpuParam, tb: &Buf<bf16>, d: usize) -> (usize, usize) {
    (table.used / d, tb.len() / d)
}

/// The targets of rows `start..start + rows`: a view of all of them.
fn rows_of(
    tg: &Arc<Buf<u32>>,
    (start, rows): (usize, usize),
    op: &'static str,
) -> OpResult<Buf<u32>> {
    Buf::view(tg, start, rows).ok_or_else(|| OpError::msg(op, "fewer targets than rows"))
}

/// Logits of rows `start..start + rows`: `h[rows] · Eᵀ`, `ldv` a row (every
/// row of the table, padding included).
fn logits(
    g: &Gpu,
    h: &Buf<bf16>,
    table: &Buf<bf16>,
    d: usize,
    ldv: usize,
    (start, rows): (usize, usize),
    op: &'static str,
) -> OpResult<Buf<bf16>> {
    let out = g.alloc_bf16(rows * ldv, op)?;
    gemm::fwd(
        &g.ex,
        Mat::view(h, start * d, d),
        Mat::dense(table, d),
        None,
        Mat::dense(&out, ldv),
        rows,
        d,
        ldv,
    )
    .op(op)?;
    Ok(out)
}

pub(super) fn fwd(
    g: &Gpu,
    h: &GpuTensor,
    table: &GpuParam,
    d: usize,
    targets: &[u32],
    ignore: u32,
) -> OpResult<(f32, GpuLmHeadSaved)> {
    let op = "lm_head_xent_fwd";
    let (hb, tb) = (h.bf16(op)?, own(table, op)?.bf16(op)?);
    let (t, (vocab, ldv)) = (targets.len(), vocab_and_rows(table, tb, d));
    let losses = g.alloc_f32(t, op)?;
    let all = g.dev_targets(targets, op)?;
    for blk in blocks(t, ldv, g.lm_head_block) {
        let (start, rows) = blk;
        let lg = logits(g, hb, tb, d, ldv, blk, op)?;
        let part = g.alloc_f32(rows, op)?;
        let tg = rows_of(&all, blk, op)?;
        xent::fwd_bwd(&g.ex, &lg, &tg, ignore, &part, None, rows, vocab, ldv).op(op)?;
        g.ex.copy_range(&part, 0, &losses, start, rows).op(op)?;
    }
    let loss = g.alloc_f32(1, op)?;
    xent::mean(&g.ex, &losses, &all, ignore, &loss, t).op(op)?;
    let valid = targets.iter().filter(|&&x| x != ignore).count();
    Ok((g.read_scalar(&loss, op)?, GpuLmHeadSaved { valid, ignore }))
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
    let (hb, tb) = (h.bf16(op)?, own(table, op)?.bf16(op)?);
    let (t, (vocab, ldv)) = (targets.len(), vocab_and_rows(table, tb, d));
    let scale = if saved.valid > 0 {
        dloss / saved.valid as f32
    } else {
        0.0
    };
    let ignore = saved.ignore;
    let dh = g.alloc_bf16(t * d, op)?;
    let all = g.dev_targets(targets, op)?;
    for blk in blocks(t, ldv, g.lm_head_block) {
        let (start, rows) = blk;
        let lg = logits(g, hb, tb, d, ldv, blk, op)?;
        let tg = rows_of(&all, blk, op)?;
        let part = g.alloc_f32(rows, op)?;
        // dlogits in place of the logits.
        // The padding columns keep their logits, 0 (rows of zeros), which
        // is also their gradient: the GEMMs below run over all `ldv`.
        xent::fwd_bwd(
            &g.ex,
            &lg,
            &tg,
            ignore,
            &part,
            Some((&lg, scale)),
            rows,
            vocab,
            ldv,
        )
        .op(op)?;
        gemm::bwd_dx(
            &g.ex,
            Mat::dense(&lg, ldv),
            Mat::dense(tb, d),
            Mat::view(&dh, start * d, d),
            rows,
            d,
            ldv,
        )
        .op(op)?;
        g.dw(
            Mat::dense(&lg, ldv),
            Mat::view(hb, start * d, d),
            Mat::dense(&dtable.w, d),
            rows,
            d,
            ldv,
            op,
        )?;
    }
    Ok(GpuTensor::from_bf16(dh))
}
