//! [`add_f32`]: `dst += src` on fp32 matrices through the split-K reduction
//! kernel with one split (it adds its workspace into C), so that an fp32
//! gradient made ahead of time (the LM head's `dE`) joins a parameter's
//! gradient without a kernel of its own.

use super::*;
use crate::backend::gpu::Launch;
use crate::backend::gpu::params::GemmSplitkReduceParams;

/// `dst[rows, cols] += src[rows, cols]`, both dense.
pub fn add_f32(
    ex: &Executor,
    src: &Buf<f32>,
    dst: &Buf<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let n = rows * cols;
    let (m, c) = match (i32::try_from(rows), i32::try_from(cols)) {
        (Ok(m), Ok(c)) if m > 0 && c > 0 && i32::try_from(n).is_ok() => (m, c),
        _ => {
            return Err(GpuError::Invalid(format!(
                "add_f32: bad shape {rows} x {cols}"
            )));
        }
    };
    ex.check_buf("add_f32 src", src, n)?;
    ex.check_buf("add_f32 dst", dst, n)?;
    let p = GemmSplitkReduceParams {
        workspace: src.cptr(),
        c: dst.mptr(),
        seg_offset: std::ptr::null(),
        c_expert_stride: 0,
        m,
        n: c,
        ldc: c,
        splits: 1,
        accumulate: 1,
        experts: 1,
    };
    let blocks = n.div_ceil(256).min(1 << 16) as u32;
    ex.launch(&Launch::linear("gemm_splitk_reduce", blocks, 256, p))
}
