//! Launch wrappers for cuda/swiglu.cu: `out = silu(gate) * up` and its backward,
//! on dense matrices (`fwd`, `bwd`) or row-strided views (`fwd_strided`,
//! `bwd_strided`: e.g. the gate and up halves of one fused GEMM output).

use half::bf16;

use crate::backend::gpu::params::{SwigluBwdParams, SwigluFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Items per thread and trip (must match SWIGLU_{FWD,BWD}_UNROLL in swiglu.cu).
const FWD_UNROLL: usize = 4;
const BWD_UNROLL: usize = 2;

/// A `[rows, cols]` bf16 matrix inside `buf`: row `r` starts at element `offset + r * ld`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub buf: &'a Buf<bf16>,
    pub offset: usize,
    pub ld: usize,
}

impl<'a> Rows<'a> {
    /// The whole buffer as a dense `[rows, cols]` matrix.
    pub fn dense(buf: &'a Buf<bf16>, cols: usize) -> Self {
        Rows {
            buf,
            offset: 0,
            ld: cols,
        }
    }
}

fn dims(rows: usize, cols: usize) -> Result<(i32, i32)> {
    match (i32::try_from(rows), i32::try_from(cols)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 && i32::try_from(rows * cols).is_ok() => Ok((r, c)),
        _ => Err(GpuError::Invalid(format!(
            "swiglu: bad shape rows {rows} cols {cols}"
        ))),
    }
}

/// Checks that `m` holds `rows` rows of `cols` and returns (address, ld). The
/// view must span fewer than 2^31 elements (the kernels' 32-bit offsets).
fn view<T>(ex: &Executor, what: &str, m: &Rows, rows: usize, cols: usize) -> Result<(*mut T, i32)> {
    ex.check_buf(what, m.buf, m.buf.len())?;
    let last = m.offset + (rows - 1) * m.ld + cols;
    match i32::try_from(m.ld) {
        Ok(ld) if m.ld >= cols && last <= m.buf.len() && last - m.offset <= i32::MAX as usize => {
            Ok(((m.buf.addr() + 2 * m.offset as u64) as *mut T, ld))
        }
        _ => Err(GpuError::Invalid(format!(
            "{what}: rows {rows} cols {cols} ld {} offset {} do not fit its {} elements",
            m.ld,
            m.offset,
            m.buf.len()
        ))),
    }
}

/// One trip per thread: many short blocks balance best (the tail is one small
/// block). Items of the 16-byte path when cols allows it.
fn blocks(rows: usize, cols: usize, unroll: usize) -> u32 {
    super::item_walk_blocks(rows * cols, cols.is_multiple_of(8), THREADS, unroll)
}

/// gate, up, out: [rows, cols] bf16 (contiguous).
pub fn fwd(
    ex: &Executor,
    gate: &Buf<bf16>,
    up: &Buf<bf16>,
    out: &Buf<bf16>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    dims(rows, cols)?;
    for (name, b) in [("gate", gate), ("up", up), ("out", out)] {
        ex.check_buf(&format!("swiglu {name}"), b, rows * cols)?;
    }
    let d = |b| Rows::dense(b, cols);
    fwd_strided(ex, d(gate), d(up), d(out), rows, cols)
}

/// `fwd` on row-strided views.
pub fn fwd_strided(
    ex: &Executor,
    gate: Rows,
    up: Rows,
    out: Rows,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let (r, c) = dims(rows, cols)?;
    let (g, ld_gate) = view(ex, "swiglu gate", &gate, rows, cols)?;
    let (u, ld_up) = view(ex, "swiglu up", &up, rows, cols)?;
    let (o, ld_out) = view(ex, "swiglu out", &out, rows, cols)?;
    let params = SwigluFwdParams {
        gate: g,
        up: u,
        out: o,
        rows: r,
        cols: c,
        ld_gate,
        ld_up,
        ld_out,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "swiglu_fwd",
        blocks(rows, cols, FWD_UNROLL),
        THREADS,
        params,
    ))
}

/// dgate, dup (=); they may be `gate`, `up` (in place).
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    ex: &Executor,
    gate: &Buf<bf16>,
    up: &Buf<bf16>,
    dout: &Buf<bf16>,
    dgate: &Buf<bf16>,
    dup: &Buf<bf16>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    dims(rows, cols)?;
    for (name, b) in [
        ("gate", gate),
        ("up", up),
        ("dout", dout),
        ("dgate", dgate),
        ("dup", dup),
    ] {
        ex.check_buf(&format!("swiglu bwd {name}"), b, rows * cols)?;
    }
    let d = |b| Rows::dense(b, cols);
    bwd_strided(ex, d(gate), d(up), d(dout), d(dgate), d(dup), rows, cols)
}

/// `bwd` on row-strided views; dgate / dup may be the same views as gate / up.
#[allow(clippy::too_many_arguments)]
pub fn bwd_strided(
    ex: &Executor,
    gate: Rows,
    up: Rows,
    dout: Rows,
    dgate: Rows,
    dup: Rows,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let (r, c) = dims(rows, cols)?;
    let (g, ld_gate) = view(ex, "swiglu bwd gate", &gate, rows, cols)?;
    let (u, ld_up) = view(ex, "swiglu bwd up", &up, rows, cols)?;
    let (d, ld_dout) = view(ex, "swiglu bwd dout", &dout, rows, cols)?;
    let (dg, ld_dgate) = view(ex, "swiglu bwd dgate", &dgate, rows, cols)?;
    let (du, ld_dup) = view(ex, "swiglu bwd dup", &dup, rows, cols)?;
    let params = SwigluBwdParams {
        gate: g,
        up: u,
        dout: d,
        dgate: dg,
        dup: du,
        rows: r,
        cols: c,
        ld_gate,
        ld_up,
        ld_dout,
        ld_dgate,
        ld_dup,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "swiglu_bwd",
        blocks(rows, cols, BWD_UNROLL),
        THREADS,
        params,
    ))
}
