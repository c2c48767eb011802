//! Launch wrappers for cuda/swiglu.cu: `out = silu(gate) * up` and its backward.

use half::bf16;

use crate::backend::gpu::params::{SwigluBwdParams, SwigluFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

fn dims(rows: usize, cols: usize) -> Result<(i32, i32)> {
    match (i32::try_from(rows), i32::try_from(cols)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 && i32::try_from(rows * cols).is_ok() => Ok((r, c)),
        _ => Err(GpuError::Invalid(format!(
            "swiglu: bad shape rows {rows} cols {cols}"
        ))),
    }
}

/// Threads per block: whole warps, at most 256, no more than the columns need.
fn threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).min(256) as u32
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
    let (r, c) = dims(rows, cols)?;
    for (name, b) in [("gate", gate), ("up", up), ("out", out)] {
        ex.check_buf(&format!("swiglu {name}"), b, rows * cols)?;
    }
    let params = SwigluFwdParams {
        gate: gate.cptr(),
        up: up.cptr(),
        out: out.mptr(),
        rows: r,
        cols: c,
        ld_gate: c,
        ld_up: c,
        ld_out: c,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "swiglu_fwd",
        rows as u32,
        threads(cols),
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
    let (r, c) = dims(rows, cols)?;
    for (name, b) in [
        ("gate", gate),
        ("up", up),
        ("dout", dout),
        ("dgate", dgate),
        ("dup", dup),
    ] {
        ex.check_buf(&format!("swiglu bwd {name}"), b, rows * cols)?;
    }
    let params = SwigluBwdParams {
        gate: gate.cptr(),
        up: up.cptr(),
        dout: dout.cptr(),
        dgate: dgate.mptr(),
        dup: dup.mptr(),
        rows: r,
        cols: c,
        ld_gate: c,
        ld_up: c,
        ld_dout: c,
        ld_dgate: c,
        ld_dup: c,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "swiglu_bwd",
        rows as u32,
        threads(cols),
        params,
    ))
}
