//! Typed launch wrappers, one file per kernel family in cuda/ (same names).

pub mod adamw;
pub mod attention;
pub mod bias_grad;
pub mod cast;
pub mod elementwise;
pub mod embed;
pub mod gemm;
pub mod grad_norm;
pub mod moe_combine;
pub mod moe_permute;
pub mod moe_route;
pub mod pool;
pub mod rmsnorm;
pub mod rope;
pub mod rowdot;
pub mod swiglu;
pub mod xent;

/// Blocks of `threads` for the flat grid-stride item walks (swiglu.cu,
/// elementwise.cu): `n` elements taken as 8-element items on the 16-byte path
/// (`vec`) or one by one, `unroll` items per thread and trip, one trip per
/// thread. Capped so that the kernels' 32-bit item indices stay below
/// n + gridDim * blockDim * unroll < 2^32.
pub(crate) fn item_walk_blocks(n: usize, vec: bool, threads: u32, unroll: usize) -> u32 {
    const MAX_BLOCKS: usize = 1 << 20;
    let items = if vec { n / 8 } else { n };
    items
        .div_ceil(threads as usize * unroll)
        .clamp(1, MAX_BLOCKS) as u32
}
