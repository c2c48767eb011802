//! Launch wrappers for cuda/rope.cu: half-split RoPE on `[B, S, H, hd]`.

use half::bf16;

pub use super::attention::Rows;

use crate::backend::gpu::params::RopeParams;
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;

/// Shape of one rotated tensor (Q or K).
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub theta: f32,
}

impl RopeShape {
    fn len(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_dim
    }
    fn check(&self) -> Result<[i32; 4]> {
        let dims = [self.batch, self.seq, self.heads, self.head_dim];
        let ok = self.head_dim.is_multiple_of(2)
            && self.theta.is_finite()
            && self.theta > 0.0
            && i32::try_from(self.len()).is_ok();
        match dims.map(|v| i32::try_from(v).ok().filter(|&v| v > 0)) {
            [Some(b), Some(s), Some(h), Some(d)] if ok => Ok([b, s, h, d]),
            _ => Err(GpuError::Invalid(format!(
                "rope: bad shape {self:?} (head_dim must be even, theta finite and positive)"
            ))),
        }
    }
    /// One thread per 8 pairs when the kernel can take 16-byte loads (it
    /// falls back to a pair per thread, grid-stride, otherwise).
    fn blocks(&self) -> u32 {
        let per_thread = if (self.head_dim / 2).is_multiple_of(8) {
            8
        } else {
            1
        };
        (self.len() / 2 / per_thread).div_ceil(THREADS as usize) as u32
    }
}

/// `kernel` (rope_fwd or rope_bwd) from `x` into `out` (may be `x`);
/// `names` label the two views in size errors.
fn launch(
    ex: &Executor,
    kernel: &'static str,
    x: Rows,
    out: Rows,
    s: &RopeShape,
    names: [&str; 2],
) -> Result<()> {
    let [batch, seq, heads, head_dim] = s.check()?;
    let (tokens, row) = (s.batch * s.seq, s.heads * s.head_dim);
    for (r, name) in [(&x, names[0]), (&out, names[1])] {
        ex.check_buf(name, r.buf, r.buf.len())?;
        let end = r.offset + (tokens - 1) * r.ld + row;
        if r.ld < row || end > r.buf.len() {
            return Err(GpuError::Invalid(format!(
                "{name}: {tokens} rows of {row} at offset {} stride {} overrun {} elements",
                r.offset,
                r.ld,
                r.buf.len()
            )));
        }
    }
    let at = |r: &Rows| r.buf.addr() + (r.offset * size_of::<bf16>()) as u64;
    let params = RopeParams {
        x: at(&x) as *const _,
        out: at(&out) as *mut _,
        batch,
        seq,
        heads,
        head_dim,
        x_stride: x.ld as i64,
        out_stride: out.ld as i64,
        theta: s.theta,
        _pad: 0,
    };
    ex.launch(&Launch::linear(kernel, s.blocks(), THREADS, params))
}

/// out = rotate(x, +angle). `out` may be `x` (in place).
pub fn fwd(ex: &Executor, x: &Buf<bf16>, out: &Buf<bf16>, s: &RopeShape) -> Result<()> {
    let row = s.heads * s.head_dim;
    ex.check_buf("rope x", x, s.len())?;
    ex.check_buf("rope out", out, s.len())?;
    fwd_strided(
        ex,
        Rows {
            buf: x,
            offset: 0,
            ld: row,
        },
        Rows {
            buf: out,
            offset: 0,
            ld: row,
        },
        s,
    )
}

/// dx = rotate(dy, -angle) (=). `dx` may be `dy`.
pub fn bwd(ex: &Executor, dy: &Buf<bf16>, dx: &Buf<bf16>, s: &RopeShape) -> Result<()> {
    let row = s.heads * s.head_dim;
    ex.check_buf("rope dy", dy, s.len())?;
    ex.check_buf("rope dx", dx, s.len())?;
    bwd_strided(
        ex,
        Rows {
            buf: dy,
            offset: 0,
            ld: row,
        },
        Rows {
            buf: dx,
            offset: 0,
            ld: row,
        },
        s,
    )
}

/// [`fwd`] on token rows `ld` apart (Q or K inside the fused QKV rows).
pub fn fwd_strided(ex: &Executor, x: Rows, out: Rows, s: &RopeShape) -> Result<()> {
    launch(ex, "rope_fwd", x, out, s, ["rope x", "rope out"])
}

/// [`bwd`] on strided token rows (dQ or dK into the fused dQKV rows).
pub fn bwd_strided(ex: &Executor, dy: Rows, dx: Rows, s: &RopeShape) -> Result<()> {
    launch(ex, "rope_bwd", dy, dx, s, ["rope dy", "rope dx"])
}
