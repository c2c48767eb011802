//! Launch wrappers for cuda/grad_norm.cu: deterministic global L2 norm of the
//! gradient arena (two passes, fixed partition and order; squares, sums and
//! the norm in f64, as the CPU engine's).

use crate::backend::gpu::params::{GradNormFinalParams, GradNormPartialParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Elements per partial sum (at least); at most MAX_PARTIALS blocks.
const PER_BLOCK: usize = 8192;
const MAX_PARTIALS: usize = 2048;
const FINAL_THREADS: u32 = 1024;

/// How many partial sums (f64, one per block of `grad_norm_partial`) a norm
/// of `n` elements takes.
pub fn n_partials(n: usize) -> usize {
    n.div_ceil(PER_BLOCK).min(MAX_PARTIALS)
}

/// Scratch and result for norms of `n` elements.
pub struct GradNorm {
    pub n: usize,
    n_partials: usize,
    partials: Buf<f64>,
    /// `[1]`: the norm after `compute` (feed it to `adamw::step` for clipping).
    /// f64 as the sums: the norm of finite f32 gradients may exceed `f32::MAX`.
    pub out: Buf<f64>,
}

impl GradNorm {
    pub fn new(ex: &Executor, n: usize) -> Result<Self> {
        if n == 0 || i64::try_from(n).is_err() {
            return Err(GpuError::Invalid(format!("grad_norm: bad length {n}")));
        }
        let n_partials = n_partials(n);
        Ok(GradNorm {
            n,
            n_partials,
            partials: ex.alloc_zeroed(n_partials)?,
            out: ex.alloc_zeroed(1)?,
        })
    }

    /// out = sqrt(sum grad^2).
    pub fn compute(&self, ex: &Executor, grad: &Buf<f32>) -> Result<()> {
        ex.check_buf("grad_norm grad", grad, self.n)?;
        let p1 = GradNormPartialParams {
            grad: grad.cptr(),
            partials: self.partials.mptr(),
            n: self.n as i64,
            n_partials: self.n_partials as i32,
            _pad: 0,
        };
        ex.launch(&Launch::linear(
            "grad_norm_partial",
            self.n_partials as u32,
            THREADS,
            p1,
        ))?;
        let p2 = GradNormFinalParams {
            partials: self.partials.cptr(),
            out: self.out.mptr(),
            n_partials: self.n_partials as i32,
            _pad: 0,
        };
        ex.launch(&Launch::linear("grad_norm_final", 1, FINAL_THREADS, p2))
    }
}
