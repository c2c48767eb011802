//! Launch wrappers for cuda/rope.cu: half-split RoPE on `[B, S, H, hd]`.

use half::bf16;

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
        let ok = self.head_dim % 2 == 0 && self.theta > 0.0 && i32::try_from(self.len()).is_ok();
        match dims.map(|v| i32::try_from(v).ok().filter(|&v| v > 0)) {
            [Some(b), Some(s), Some(h), Some(d)] if ok => Ok([b, s, h, d]),
            _ => Err(GpuError::Invalid(format!(
                "rope: bad shape {self:?} (head_dim must be even)"
            ))),
        }
    }
    /// One thread per 8 pairs when the kernel can take 16-byte loads (it
    /// falls back to a pair per thread, grid-stride, otherwise).
    fn blocks(&self) -> u32 {
        let per_thread = if (self.head_dim / 2) % 8 == 0 { 8 } else { 1 };
        (self.len() / 2 / per_thread).div_ceil(THREADS as usize) as u32
    }
}

/// `kernel` (rope_fwd or rope_bwd) from `x` into `out` (may be `x`);
/// `names` label the two buffers in size errors.
fn launch(
    ex: &Executor,
    kernel: &'static str,
    x: &Buf<bf16>,
    out: &Buf<bf16>,
    s: &RopeShape,
    names: [&str; 2],
) -> Result<()> {
    let [batch, seq, heads, head_dim] = s.check()?;
    ex.check_buf(names[0], x, s.len())?;
    ex.check_buf(names[1], out, s.len())?;
    let row = (s.heads * s.head_dim) as i64;
    let params = RopeParams {
        x: x.cptr(),
        out: out.mptr(),
        batch,
        seq,
        heads,
        head_dim,
        x_stride: row,
        out_stride: row,
        theta: s.theta,
        _pad: 0,
    };
    ex.launch(&Launch::linear(kernel, s.blocks(), THREADS, params))
}

/// out = rotate(x, +angle). `out` may be `x` (in place).
pub fn fwd(ex: &Executor, x: &Buf<bf16>, out: &Buf<bf16>, s: &RopeShape) -> Result<()> {
    launch(ex, "rope_fwd", x, out, s, ["rope x", "rope out"])
}

/// dx = rotate(dy, -angle) (=). `dx` may be `dy`.
pub fn bwd(ex: &Executor, dy: &Buf<bf16>, dx: &Buf<bf16>, s: &RopeShape) -> Result<()> {
    launch(ex, "rope_bwd", dy, dx, s, ["rope dy", "rope dx"])
}
