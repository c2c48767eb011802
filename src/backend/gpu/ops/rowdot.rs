//! Launch wrappers for cuda/rowdot.cu: `out[t, j] = z[t, :] · w[j, :]` for
//! J <= 64 output columns (router logits, the shared-expert gate with its
//! sigmoid), and its backward: `dz` (bf16, `=` or `+=`: z's gradient also
//! collects the FFN / expert contributions) and `dw` (fp32 `+=`, deterministic:
//! per-block partials in `scratch`, then `rmsnorm_dw_reduce` in block order).
//! After a sigmoid forward, pass its output as `y` to the backward: the kernels
//! then take `dout` as the gradient of that output and apply `y (1 - y)`.

use half::bf16;

use crate::backend::gpu::params::{
    RmsNormDwReduceParams, RowdotBwdDwParams, RowdotBwdDzParams, RowdotFwdParams,
};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

/// Widest output the kernels are meant for (a GEMM is the tool beyond it).
pub const MAX_J: usize = 64;
const THREADS: u32 = 256;
/// Rows per item of `rowdot_bwd_dz` (RD_DZ_ROWS), rows per warp of
/// `rowdot_fwd` (RD_FWD_ROWS) and outputs per chunk (RD_JC).
const DZ_ROWS: usize = 4;
const FWD_ROWS: usize = 4;
const JC: usize = 8;
/// `rowdot_bwd_dw`: at most this many row ranges (partial rows), each at least
/// MIN_DW_ROWS rows (8 warps x a few rows).
const MAX_DW_RANGES: usize = 256;
const MIN_DW_ROWS: usize = 64;

fn dims(what: &str, rows: usize, d: usize, j: usize) -> Result<(i32, i32, i32)> {
    let ok = rows > 0
        && d > 0
        && (1..=MAX_J).contains(&j)
        && i32::try_from(rows * d).is_ok()
        && i32::try_from(j * d).is_ok();
    if !ok {
        return Err(GpuError::Invalid(format!(
            "{what}: bad shape rows {rows} d {d} j {j} (1 <= j <= {MAX_J})"
        )));
    }
    Ok((rows as i32, d as i32, j as i32))
}

/// out = z · wᵀ, or sigmoid of it. z: [rows, d] bf16, w: [j, d] fp32, out: [rows, j] fp32 (=).
#[allow(clippy::too_many_arguments)]
pub fn fwd(
    ex: &Executor,
    z: &Buf<bf16>,
    w: &Buf<f32>,
    out: &Buf<f32>,
    rows: usize,
    d: usize,
    j: usize,
    sigmoid: bool,
) -> Result<()> {
    let (r, dd, jj) = dims("rowdot_fwd", rows, d, j)?;
    ex.check_buf("rowdot_fwd z", z, rows * d)?;
    ex.check_buf("rowdot_fwd w", w, j * d)?;
    ex.check_buf("rowdot_fwd out", out, rows * j)?;
    let params = RowdotFwdParams {
        z: z.cptr(),
        w: w.cptr(),
        out: out.mptr(),
        rows: r,
        d: dd,
        j: jj,
        sigmoid: sigmoid as i32,
    };
    // 8 warps of FWD_ROWS rows each.
    let rows_per_block = (THREADS / 32) as usize * FWD_ROWS;
    ex.launch(&Launch::linear(
        "rowdot_fwd",
        rows.div_ceil(rows_per_block) as u32,
        THREADS,
        params,
    ))
}

fn check_y(ex: &Executor, what: &str, y: Option<&Buf<f32>>, n: usize) -> Result<*const f32> {
    match y {
        Some(b) => {
            ex.check_buf(what, b, n)?;
            Ok(b.cptr())
        }
        None => Ok(std::ptr::null()),
    }
}

/// dz (= or, with `accumulate`, +=) dl · w, dl = dout (or dout * y * (1 - y)
/// with `y`). dout, y: [rows, j] fp32; w: [j, d] fp32; dz: [rows, d] bf16.
#[allow(clippy::too_many_arguments)]
pub fn bwd_dz(
    ex: &Executor,
    dout: &Buf<f32>,
    y: Option<&Buf<f32>>,
    w: &Buf<f32>,
    dz: &Buf<bf16>,
    rows: usize,
    d: usize,
    j: usize,
    accumulate: bool,
) -> Result<()> {
    let (r, dd, jj) = dims("rowdot_bwd_dz", rows, d, j)?;
    ex.check_buf("rowdot_bwd_dz dout", dout, rows * j)?;
    let yp = check_y(ex, "rowdot_bwd_dz y", y, rows * j)?;
    ex.check_buf("rowdot_bwd_dz w", w, j * d)?;
    ex.check_buf("rowdot_bwd_dz dz", dz, rows * d)?;
    let params = RowdotBwdDzParams {
        dout: dout.cptr(),
        y: yp,
        w: w.cptr(),
        dz: dz.mptr(),
        rows: r,
        d: dd,
        j: jj,
        accumulate: accumulate as i32,
    };
    // Items: groups of DZ_ROWS rows x (8 columns, or 1 off the 16-byte path).
    let blocks =
        super::item_walk_blocks(rows.div_ceil(DZ_ROWS) * d, d.is_multiple_of(8), THREADS, 1);
    ex.launch(&Launch::linear("rowdot_bwd_dz", blocks, THREADS, params))
}

/// (rows per range, ranges) of `rowdot_bwd_dw`: a fixed function of `rows`.
fn dw_ranges(rows: usize) -> (usize, usize) {
    let per = rows
        .div_ceil(MAX_DW_RANGES)
        .max(MIN_DW_ROWS)
        .next_multiple_of(8);
    (per, rows.div_ceil(per))
}

/// Length of the fp32 scratch buffer `bwd_dw` needs.
pub fn dw_scratch_len(rows: usize, d: usize, j: usize) -> usize {
    dw_ranges(rows).1 * j * d
}

/// dw += dlᵀ · z (fp32, deterministic for a given `rows`); dl as in `bwd_dz`.
/// z: [rows, d] bf16; dw: [j, d]; scratch: `dw_scratch_len(rows, d, j)` floats.
#[allow(clippy::too_many_arguments)]
pub fn bwd_dw(
    ex: &Executor,
    dout: &Buf<f32>,
    y: Option<&Buf<f32>>,
    z: &Buf<bf16>,
    dw: &Buf<f32>,
    scratch: &Buf<f32>,
    rows: usize,
    d: usize,
    j: usize,
) -> Result<()> {
    let (r, dd, jj) = dims("rowdot_bwd_dw", rows, d, j)?;
    ex.check_buf("rowdot_bwd_dw dout", dout, rows * j)?;
    let yp = check_y(ex, "rowdot_bwd_dw y", y, rows * j)?;
    ex.check_buf("rowdot_bwd_dw z", z, rows * d)?;
    ex.check_buf("rowdot_bwd_dw dw", dw, j * d)?;
    ex.check_buf("rowdot_bwd_dw scratch", scratch, dw_scratch_len(rows, d, j))?;
    let (per, ranges) = dw_ranges(rows);
    let params = RowdotBwdDwParams {
        dout: dout.cptr(),
        y: yp,
        z: z.cptr(),
        dw_partial: scratch.mptr(),
        rows: r,
        d: dd,
        j: jj,
        rows_per_block: per as i32,
    };
    // Column slabs of 32 items of 8 columns (the kernel loops if it takes the
    // scalar path); one block row per row range; one block layer per 8 outputs.
    ex.launch(&Launch {
        kernel: "rowdot_bwd_dw",
        grid: [d.div_ceil(256) as u32, ranges as u32, j.div_ceil(JC) as u32],
        block: [THREADS, 1, 1],
        smem: 0,
        params,
    })?;
    let reduce = RmsNormDwReduceParams {
        dw_partial: scratch.cptr(),
        dw: dw.mptr(),
        n_partials: ranges as i32,
        d: jj * dd,
    };
    ex.launch(&Launch::linear(
        "rmsnorm_dw_reduce",
        (j * d).div_ceil(32) as u32,
        1024,
        reduce,
    ))
}
