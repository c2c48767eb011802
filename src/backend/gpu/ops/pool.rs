//! Launch wrappers for cuda/pool.cu: masked mean pooling over the sequence.

use half::bf16;

use crate::backend::gpu::params::{PoolMeanBwdParams, PoolMeanFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Columns per forward block (POOL_TILE in pool.cu).
const FWD_TILE: usize = 64;
/// Sequence positions per backward block (POOL_BWD_ROWS in pool.cu).
const BWD_ROWS: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct PoolShape {
    pub batch: usize,
    pub seq: usize,
    pub d: usize,
}

impl PoolShape {
    fn check(&self) -> Result<[i32; 3]> {
        match [self.batch, self.seq, self.d].map(|v| i32::try_from(v).ok().filter(|&v| v > 0)) {
            [Some(b), Some(s), Some(d)] if self.batch <= 65535 => Ok([b, s, d]),
            _ => Err(GpuError::Invalid(format!("pool: bad shape {self:?}"))),
        }
    }
}

/// out [B, d] = mean of x [B, S, d] over positions with mask [B, S] != 0 (0 if none).
pub fn mean_fwd(
    ex: &Executor,
    x: &Buf<bf16>,
    mask: &Buf<u8>,
    out: &Buf<bf16>,
    s: &PoolShape,
) -> Result<()> {
    let [batch, seq, d] = s.check()?;
    ex.check_buf("pool x", x, s.batch * s.seq * s.d)?;
    ex.check_buf("pool mask", mask, s.batch * s.seq)?;
    ex.check_buf("pool out", out, s.batch * s.d)?;
    let params = PoolMeanFwdParams {
        x: x.cptr(),
        mask: mask.cptr(),
        out: out.mptr(),
        batch,
        seq,
        d,
        _pad: 0,
    };
    ex.launch(&Launch {
        kernel: "pool_mean_fwd",
        grid: [s.d.div_ceil(FWD_TILE) as u32, s.batch as u32, 1],
        block: [THREADS, 1, 1],
        smem: 0,
        params,
    })
}

/// `dx [B, S, d] = mask * dout[b] / n_b` (=).
pub fn mean_bwd(
    ex: &Executor,
    dout: &Buf<bf16>,
    mask: &Buf<u8>,
    dx: &Buf<bf16>,
    s: &PoolShape,
) -> Result<()> {
    let [batch, seq, d] = s.check()?;
    ex.check_buf("pool dout", dout, s.batch * s.d)?;
    ex.check_buf("pool mask", mask, s.batch * s.seq)?;
    ex.check_buf("pool dx", dx, s.batch * s.seq * s.d)?;
    let params = PoolMeanBwdParams {
        mask: mask.cptr(),
        dout: dout.cptr(),
        dx: dx.mptr(),
        batch,
        seq,
        d,
        _pad: 0,
    };
    ex.launch(&Launch {
        kernel: "pool_mean_bwd",
        grid: [s.seq.div_ceil(BWD_ROWS) as u32, s.batch as u32, 1],
        block: [THREADS, 1, 1],
        smem: 0,
        params,
    })
}
