//! Launch wrappers for cuda/rmsnorm.cu (the exemplar: copy this shape).

use half::bf16;

use crate::backend::gpu::params::{RmsNormBwdParams, RmsNormDwReduceParams, RmsNormFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Row chunks of the backward pass (= rows of the dw partial buffer).
const MAX_BWD_BLOCKS: usize = 264;

fn dims(rows: usize, d: usize) -> Result<(i32, i32)> {
    match (i32::try_from(rows), i32::try_from(d)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(GpuError::Invalid(format!(
            "rmsnorm: bad shape rows {rows} d {d}"
        ))),
    }
}

/// y = x * rstd * w, rstd = 1/sqrt(mean(x^2)+eps); x, y: [rows, d], w: [d], rstd: [rows].
pub fn fwd(
    ex: &Executor,
    x: &Buf<bf16>,
    w: &Buf<f32>,
    y: &Buf<bf16>,
    rstd: &Buf<f32>,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let (r, c) = dims(rows, d)?;
    ex.check_buf("rmsnorm x", x, rows * d)?;
    ex.check_buf("rmsnorm w", w, d)?;
    ex.check_buf("rmsnorm y", y, rows * d)?;
    ex.check_buf("rmsnorm rstd", rstd, rows)?;
    let params = RmsNormFwdParams {
        x: x.cptr(),
        w: w.cptr(),
        y: y.mptr(),
        rstd: rstd.mptr(),
        rows: r,
        d: c,
        eps,
    };
    let rows_per_block = (THREADS / 32) as usize;
    ex.launch(&Launch::linear(
        "rmsnorm_fwd",
        rows.div_ceil(rows_per_block) as u32,
        THREADS,
        params,
    ))
}

/// Length of the scratch buffer `bwd` needs.
pub fn bwd_scratch_len(rows: usize, d: usize) -> usize {
    rows.min(MAX_BWD_BLOCKS) * d
}

/// dx = (input gradient, overwritten); dw += (parameter gradient). `scratch`
/// holds `bwd_scratch_len(rows, d)` floats.
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    ex: &Executor,
    x: &Buf<bf16>,
    w: &Buf<f32>,
    rstd: &Buf<f32>,
    dy: &Buf<bf16>,
    dx: &Buf<bf16>,
    dw: &Buf<f32>,
    scratch: &Buf<f32>,
    rows: usize,
    d: usize,
) -> Result<()> {
    let (r, c) = dims(rows, d)?;
    for (name, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        ex.check_buf(&format!("rmsnorm bwd {name}"), b, rows * d)?;
    }
    ex.check_buf("rmsnorm bwd w", w, d)?;
    ex.check_buf("rmsnorm bwd dw", dw, d)?;
    ex.check_buf("rmsnorm bwd rstd", rstd, rows)?;
    ex.check_buf("rmsnorm bwd scratch", scratch, bwd_scratch_len(rows, d))?;
    let blocks = rows.min(MAX_BWD_BLOCKS);
    let smem = u32::try_from(d * 4)
        .map_err(|_| GpuError::Invalid(format!("rmsnorm bwd: d {d} too large")))?;
    let params = RmsNormBwdParams {
        x: x.cptr(),
        w: w.cptr(),
        rstd: rstd.cptr(),
        dy: dy.cptr(),
        dx: dx.mptr(),
        dw_partial: scratch.mptr(),
        rows: r,
        d: c,
    };
    ex.launch(&Launch::linear("rmsnorm_bwd", blocks as u32, THREADS, params).with_smem(smem))?;
    let reduce = RmsNormDwReduceParams {
        dw_partial: scratch.cptr(),
        dw: dw.mptr(),
        n_partials: blocks as i32,
        d: c,
    };
    ex.launch(&Launch::linear(
        "rmsnorm_dw_reduce",
        d.div_ceil(THREADS as usize) as u32,
        THREADS,
        reduce,
    ))
}
