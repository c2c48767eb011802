//! Launch wrappers for cuda/bias_grad.cu: a linear layer's bias gradient,
//! `db[c] (+)= Σ_t dy[t, c]` over a bf16 `dy` `[rows, n]` (row stride `ld`),
//! fp32 `db` `[n]`; deterministic (fixed row splits, fixed summation order).

use half::bf16;

use crate::backend::gpu::params::{BiasGradPartialParams, BiasGradReduceParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

/// Threads of a partial-sum block (BG_THREADS in bias_grad.cu).
const THREADS: usize = 256;
/// Column items (of 1 or 8 columns) per block at most: a warp reads 32 items of a row.
const MAX_BLOCK_ITEMS: usize = 32;
/// Blocks the partial pass aims for: 8 resident blocks of 256 threads on each
/// of an H200's 132 SMs (one wave at full occupancy).
const TARGET_BLOCKS: usize = 8 * 132;
/// Rows each thread sums at least (two trips of BG_UNROLL loads) before a
/// further split pays for its partial row.
const MIN_ROWS_PER_THREAD: usize = 8;

/// How a bias gradient is cut up: items of `width` columns, `block_items` of
/// them per block, `splits` row ranges of `rows_per_split` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub width: usize,
    pub block_items: usize,
    pub col_blocks: usize,
    pub splits: usize,
    pub rows_per_split: usize,
}

/// The launch plan for `rows x n` on the 16-byte path (`vec`) or the scalar one.
pub fn plan(rows: usize, n: usize, vec: bool) -> Plan {
    let width = if vec { 8 } else { 1 };
    let items = (n / width).max(1);
    let block_items = items.next_power_of_two().min(MAX_BLOCK_ITEMS);
    let row_lanes = THREADS / block_items;
    let col_blocks = items.div_ceil(block_items);
    let rows = rows.max(1);
    let splits = TARGET_BLOCKS
        .div_ceil(col_blocks)
        .min(rows.div_ceil(row_lanes * MIN_ROWS_PER_THREAD))
        .max(1);
    let rows_per_split = rows.div_ceil(splits);
    Plan {
        width,
        block_items,
        col_blocks,
        splits: rows.div_ceil(rows_per_split),
        rows_per_split,
    }
}

/// Whether `dy` (row stride `ld`, `n` columns) takes the 16-byte path.
pub fn vec_path(dy: &Buf<bf16>, ld: usize, n: usize) -> bool {
    n.is_multiple_of(8) && ld.is_multiple_of(8) && dy.addr().is_multiple_of(16)
}

/// fp32 scratch `run` needs for `rows x n` (either path; 0: one pass, no scratch).
pub fn scratch_len(rows: usize, n: usize) -> usize {
    [true, false]
        .iter()
        .map(|&v| plan(rows, n, v).splits)
        .filter(|&s| s > 1)
        .max()
        .map_or(0, |s| s * n)
}

/// `db (+)= Σ_t dy[t, ..n]` (`+=` when `accumulate`): `dy` `[rows, ld]` bf16
/// (the last row may stop at `n`; a view for an offset),
/// `db` `[n]` fp32. `scratch` holds at least `scratch_len(rows, n)` floats (None when that is 0).
#[allow(clippy::too_many_arguments)] // mirrors the kernel's parameters
pub fn run(
    ex: &Executor,
    dy: &Buf<bf16>,
    ld: usize,
    rows: usize,
    n: usize,
    db: &Buf<f32>,
    accumulate: bool,
    scratch: Option<&Buf<f32>>,
) -> Result<()> {
    let bad = || GpuError::Invalid(format!("bias_grad: bad shape rows {rows} n {n} ld {ld}"));
    if n == 0 || ld < n {
        return Err(bad());
    }
    ex.check_buf("bias_grad db", db, n)?;
    if rows == 0 {
        return if accumulate {
            Ok(())
        } else {
            ex.zero_range(db, 0, n)
        };
    }
    ex.check_buf("bias_grad dy", dy, dy.len())?;
    if dy.len() < (rows - 1) * ld + n {
        return Err(GpuError::Invalid(format!(
            "bias_grad dy: {} elements, rows {rows} n {n} ld {ld} need {}",
            dy.len(),
            (rows - 1) * ld + n
        )));
    }
    let (r, c, l) = match (i32::try_from(rows), i32::try_from(n), i32::try_from(ld)) {
        (Ok(r), Ok(c), Ok(l)) => (r, c, l),
        _ => return Err(bad()),
    };
    let pl = plan(rows, n, vec_path(dy, ld, n));
    let out = if pl.splits > 1 {
        let s = scratch.ok_or_else(|| {
            GpuError::Invalid(format!(
                "bias_grad: rows {rows} n {n} needs a scratch of {} floats",
                scratch_len(rows, n)
            ))
        })?;
        ex.check_buf("bias_grad scratch", s, s.len())?;
        if s.len() < pl.splits * n {
            return Err(GpuError::Invalid(format!(
                "bias_grad scratch: {} elements, rows {rows} n {n} need {}",
                s.len(),
                pl.splits * n
            )));
        }
        s
    } else {
        db
    };
    let params = BiasGradPartialParams {
        dy: dy.cptr(),
        out: out.mptr(),
        rows: r,
        n: c,
        ld: l,
        rows_per_split: pl.rows_per_split as i32,
        width: pl.width as i32,
        block_items: pl.block_items as i32,
        accumulate: (pl.splits == 1 && accumulate) as i32,
        _pad: 0,
    };
    ex.launch(&Launch {
        kernel: "bias_grad_partial",
        grid: [pl.col_blocks as u32, pl.splits as u32, 1],
        block: [THREADS as u32, 1, 1],
        smem: 0,
        params,
    })?;
    if pl.splits == 1 {
        return Ok(());
    }
    let reduce = BiasGradReduceParams {
        partial: out.cptr(),
        db: db.mptr(),
        splits: pl.splits as i32,
        n: c,
        accumulate: accumulate as i32,
        _pad: 0,
    };
    // 32 columns per block, 32 warps striding the splits.
    ex.launch(&Launch::linear(
        "bias_grad_reduce",
        n.div_ceil(32) as u32,
        1024,
        reduce,
    ))
}

/// Bytes the two passes move as the hardware sees them: `dy` once (whole 16-byte
/// items or elements of its first `n` columns), the partial rows written and
/// read back, `db` read (when accumulating) and written.
pub fn bytes_moved(rows: usize, n: usize, vec: bool, accumulate: bool) -> u64 {
    let pl = plan(rows, n, vec);
    let db = n * 4 * if accumulate { 2 } else { 1 };
    let partial = if pl.splits > 1 {
        2 * pl.splits * n * 4
    } else {
        0
    };
    (rows * n * 2 + partial + db) as u64
}
