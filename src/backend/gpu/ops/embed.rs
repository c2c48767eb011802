//! Launch wrappers for cuda/embed.cu.

use half::bf16;

use crate::backend::gpu::params::{EmbedBwdParams, EmbedFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| GpuError::Invalid(format!("embedding: bad {what} {v}")))
}

/// out[t] = table[ids[t]]; ids: [rows], table: [vocab, d] f32, out: [rows, d] bf16.
/// Ids outside the table give zero rows.
pub fn fwd(
    ex: &Executor,
    ids: &Buf<u32>,
    table: &Buf<f32>,
    out: &Buf<bf16>,
    rows: usize,
    d: usize,
    vocab: usize,
) -> Result<()> {
    ex.check_buf("embedding ids", ids, rows)?;
    ex.check_buf("embedding table", table, vocab * d)?;
    ex.check_buf("embedding out", out, rows * d)?;
    let params = EmbedFwdParams {
        ids: ids.cptr(),
        table: table.cptr(),
        out: out.mptr(),
        rows: to_i32("rows", rows)?,
        d: to_i32("d", d)?,
        vocab: to_i32("vocab", vocab)?,
        _pad: 0,
    };
    let rows_per_block = (THREADS / 32) as usize;
    ex.launch(&Launch::linear(
        "embed_fwd",
        rows.div_ceil(rows_per_block) as u32,
        THREADS,
        params,
    ))
}

/// Rows grouped by token id, built on the host from the batch's ids (which the
/// host has anyway) and uploaded: the backward pass then needs no atomics.
pub struct EmbedBwdPlan {
    order: Buf<u32>,
    seg_start: Buf<u32>,
    seg_id: Buf<u32>,
    rows: usize,
    n_segments: usize,
}

impl EmbedBwdPlan {
    /// Host part: (rows sorted by (id, row), segment offsets, segment ids).
    pub fn host(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by_key(|&r| (ids[r as usize], r));
        let (mut seg_start, mut seg_id) = (Vec::new(), Vec::new());
        for (i, &r) in order.iter().enumerate() {
            let id = ids[r as usize];
            if seg_id.last() != Some(&id) {
                seg_start.push(i as u32);
                seg_id.push(id);
            }
        }
        seg_start.push(order.len() as u32);
        (order, seg_start, seg_id)
    }

    /// Fails when an id is outside the table (the forward pass zeroes such rows).
    pub fn new(ex: &Executor, ids: &[u32], vocab: usize) -> Result<Self> {
        if let Some((t, &id)) = ids
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= vocab)
        {
            return Err(GpuError::Invalid(format!(
                "embedding: token {t} has id {id} >= vocab {vocab}"
            )));
        }
        let (order, seg_start, seg_id) = Self::host(ids);
        Ok(EmbedBwdPlan {
            rows: ids.len(),
            n_segments: seg_id.len(),
            order: ex.upload(&order)?,
            seg_start: ex.upload(&seg_start)?,
            seg_id: ex.upload(&seg_id)?,
        })
    }
}

/// dtable += scatter of dout by the plan's ids; dout: [rows, d], dtable: [vocab, d].
pub fn bwd(
    ex: &Executor,
    plan: &EmbedBwdPlan,
    dout: &Buf<bf16>,
    dtable: &Buf<f32>,
    d: usize,
    vocab: usize,
) -> Result<()> {
    ex.check_buf("embedding dout", dout, plan.rows * d)?;
    ex.check_buf("embedding dtable", dtable, vocab * d)?;
    if plan.n_segments == 0 {
        return Ok(());
    }
    let params = EmbedBwdParams {
        dout: dout.cptr(),
        order: plan.order.cptr(),
        seg_start: plan.seg_start.cptr(),
        seg_id: plan.seg_id.cptr(),
        dtable: dtable.mptr(),
        n_segments: to_i32("segments", plan.n_segments)?,
        d: to_i32("d", d)?,
    };
    ex.launch(&Launch::linear(
        "embed_bwd",
        plan.n_segments as u32,
        THREADS.min((d as u32).div_ceil(32) * 32),
        params,
    ))
}
