//! Launch wrapper for cuda/cast.cu: `cast_f32_bf16`, fp32 -> bf16 with round to
//! nearest even, bit for bit `half::bf16::from_f32` (NaN payloads included).

use half::bf16;

use crate::backend::gpu::params::CastF32Bf16Params;
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Items per thread and trip (CAST_UNROLL in cast.cu).
const UNROLL: usize = 4;

/// `out[..n] = bf16(input[..n])` (=). Nothing to do for `n = 0`.
pub fn f32_to_bf16(ex: &Executor, input: &Buf<f32>, out: &Buf<bf16>, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let nn = i32::try_from(n)
        .map_err(|_| GpuError::Invalid(format!("cast_f32_bf16: bad length {n}")))?;
    ex.check_buf("cast_f32_bf16 in", input, n)?;
    ex.check_buf("cast_f32_bf16 out", out, n)?;
    let vec = input.addr().is_multiple_of(16) && out.addr().is_multiple_of(16);
    let params = CastF32Bf16Params {
        in_: input.cptr(),
        out: out.mptr(),
        n: nn,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "cast_f32_bf16",
        super::item_walk_blocks(n, vec, THREADS, UNROLL),
        THREADS,
        params,
    ))
}
