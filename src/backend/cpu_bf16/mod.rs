//! The packed-weight CPU inference engine: weights packed once, in the
//! micro-kernel's layout, as bf16 (`--precision bf16`) or as f32 (the f32
//! inference engine where the CPU has AVX-512F); activations f32, products
//! accumulated in f32. Forward ops only; every backward op is an error
//! (training's bf16 products use the kernels through `strided`).
//! (The name is the bf16 engine's, which came first.)
//!
//! - `pack`: the layout. A weight `W [n, k]` becomes column panels of NR = 64
//!   outputs; within a panel, one `u32` per (k-pair, output) holds two bf16
//!   (or, for f32 weights, one `u32` per (k, output) holds an f32's bits).
//!   A SwiGLU gate/up pair packs into one matrix whose panels hold 32 gate
//!   and the matching 32 up outputs, so the kernel can write `silu(g)·u`.
//! - `kernel` / `avx512` / `amx`: the micro-kernel, picked at run time: AMX
//!   tiles (`tdpbf16ps`, 32 x 32 outputs a step) where the CPU and OS have
//!   them, else an MR = 6 x NR = 64 tile on `vdpbf16ps` where the CPU has
//!   AVX-512 BF16 and it outruns the f32 FMA, else the same tile with bf16
//!   widened to f32 in registers on `vfmadd231ps` (AVX-512F), else
//!   portable Rust (bf16 widened to f32, f32 multiply-add); f32 panels on
//!   `vfmadd231ps` (AVX-512F). The widened tile gives the portable
//!   kernel's bits (tested); `vdpbf16ps` documents the same arithmetic
//!   (and gave the same bits on the Intel Xeon of 2026-12-07); AMX sums in
//!   another order.
//! - `gemm`: the blocked product, parallel over row blocks.
//! - `strided`: general products of strided f32 operands (right operand
//!   packed per product) on these kernels: the training engine's bf16
//!   mixed-precision products (`backend::cpu::matmul::Products`).
//! - `params`: which weights become bf16 and which stay f32, and why.
//! - `peak`: this CPU's measured bf16 and f32 multiply-add rates (whether
//!   bf16 pays here).
//! - `row_dots`: the router's and shared gate's few outputs, one fixed-order
//!   dot product each, so a token's routing does not depend on its batch.
//! - `lm_head`: the tied LM head's loss, a vocabulary slice at a time
//!   with a running softmax per row.
//! - `backend`, `moe`, `attention`: the engine ([`CpuBf16`]) behind the tape;
//!   products on the bf16 GEMM, the rest f32 (the reference ops, and a
//!   leaner attention without the training copies).

#[cfg(target_arch = "x86_64")]
pub mod amx;
pub(crate) mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod backend;
pub mod gemm;
pub mod kernel;
mod lm_head;
mod moe;
pub mod pack;
pub mod params;
pub mod peak;
pub mod row_dots;
pub mod strided;

pub use backend::CpuBf16;
pub use gemm::{matmul, matmul_into};
pub use kernel::Kernel;
pub use pack::PackedMat;
pub use params::{Bf16Param, Bf16Params};
