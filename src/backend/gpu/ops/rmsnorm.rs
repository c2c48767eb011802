//! Launch wrappers for cuda/rmsnorm.cu (the exemplar: copy this shape).

use half::bf16;

use crate::backend::gpu::params::{RmsNormBwdParams, RmsNormDwReduceParams, RmsNormFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Backward blocks at most: 4 per SM of an H200 (132 SMs), one wave at full
/// occupancy; also the rows of the dw partial buffer (the reduce's work).
const MAX_BWD_BLOCKS: usize = 4 * 132;
/// Dynamic shared memory of the backward (one d-float slice per warp) stays
/// within the 48 KiB available without an opt-in.
const BWD_SMEM_FLOATS: usize = 12 * 1024;

/// Backward launch shape: (warps per block, blocks). Every warp handles whole rows.
fn bwd_shape(rows: usize, d: usize) -> (usize, usize) {
    let warps = (BWD_SMEM_FLOATS / d.max(1)).clamp(1, (THREADS / 32) as usize);
    (warps, rows.div_ceil(warps).clamp(1, MAX_BWD_BLOCKS))
}

fn dims(rows: usize, d: usize) -> Result<(i32, i32)> {
    match (i32::try_from(rows), i32::try_from(d)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(GpuError::Invalid(format!(
            "rmsnorm: bad shape rows {rows} d {d}"
        ))),
    }
}

/// y = x * rstd * w, rstd = 1/sqrt(mean(x^2)+eps); x, y: `[rows, d]`, w: `[d]`, rstd: `[rows]`.
#[allow(clippy::too_many_arguments)] // mirrors the kernel's parameters one to one
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
    bwd_shape(rows, d).1 * d
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
    if d > BWD_SMEM_FLOATS {
        return Err(GpuError::Invalid(format!(
            "rmsnorm bwd: d {d} > {BWD_SMEM_FLOATS} (shared-memory dw slices)"
        )));
    }
    let (warps, blocks) = bwd_shape(rows, d);
    let smem = (warps * d * 4) as u32;
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
    ex.launch(
        &Launch::linear("rmsnorm_bwd", blocks as u32, (warps * 32) as u32, params).with_smem(smem),
    )?;
    let reduce = RmsNormDwReduceParams {
        dw_partial: scratch.cptr(),
        dw: dw.mptr(),
        n_partials: blocks as i32,
        d: c,
    };
    // 32 columns per block, 32 warps splitting the partial rows.
    ex.launch(&Launch::linear(
        "rmsnorm_dw_reduce",
        d.div_ceil(32) as u32,
        1024,
        reduce,
    ))
}
