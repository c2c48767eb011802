//! Launch wrappers for cuda/elementwise.cu: residual add (`add_fwd`; its
//! backward is the identity, no kernel) and the tanh-approximation GELU of the
//! classifier head (`gelu_fwd`, `gelu_bwd`), on flat bf16 buffers of `n` elements.

use half::bf16;

use crate::backend::gpu::params::{AddFwdParams, GeluBwdParams, GeluFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Items per thread and trip (EW_UNROLL in elementwise.cu).
const UNROLL: usize = 4;

fn len(what: &str, n: usize) -> Result<i32> {
    match i32::try_from(n) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(GpuError::Invalid(format!("{what}: bad length {n}"))),
    }
}

/// One trip per thread (items of 8 on the 16-byte path when n % 8 == 0).
fn blocks(n: usize) -> u32 {
    super::item_walk_blocks(n, n.is_multiple_of(8), THREADS, UNROLL)
}

/// out = a + b (=); `out` may be `a` or `b` (in place).
pub fn add_fwd(
    ex: &Executor,
    a: &Buf<bf16>,
    b: &Buf<bf16>,
    out: &Buf<bf16>,
    n: usize,
) -> Result<()> {
    let nn = len("add_fwd", n)?;
    for (name, buf) in [("a", a), ("b", b), ("out", out)] {
        ex.check_buf(&format!("add_fwd {name}"), buf, n)?;
    }
    let params = AddFwdParams {
        a: a.cptr(),
        b: b.cptr(),
        out: out.mptr(),
        n: nn,
        _pad: 0,
    };
    ex.launch(&Launch::linear("add_fwd", blocks(n), THREADS, params))
}

/// y = gelu(x) (=, tanh approximation); `y` may be `x`.
pub fn gelu_fwd(ex: &Executor, x: &Buf<bf16>, y: &Buf<bf16>, n: usize) -> Result<()> {
    let nn = len("gelu_fwd", n)?;
    ex.check_buf("gelu_fwd x", x, n)?;
    ex.check_buf("gelu_fwd y", y, n)?;
    let params = GeluFwdParams {
        x: x.cptr(),
        y: y.mptr(),
        n: nn,
        _pad: 0,
    };
    ex.launch(&Launch::linear("gelu_fwd", blocks(n), THREADS, params))
}

/// dx = dy * gelu'(x) (=); `dx` may be `x` or `dy`.
pub fn gelu_bwd(
    ex: &Executor,
    x: &Buf<bf16>,
    dy: &Buf<bf16>,
    dx: &Buf<bf16>,
    n: usize,
) -> Result<()> {
    let nn = len("gelu_bwd", n)?;
    for (name, buf) in [("x", x), ("dy", dy), ("dx", dx)] {
        ex.check_buf(&format!("gelu_bwd {name}"), buf, n)?;
    }
    let params = GeluBwdParams {
        x: x.cptr(),
        dy: dy.cptr(),
        dx: dx.mptr(),
        n: nn,
        _pad: 0,
    };
    ex.launch(&Launch::linear("gelu_bwd", blocks(n), THREADS, params))
}
