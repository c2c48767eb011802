//! The CPU reference ops: plain Rust, forward and backward, generic over
//! [`Float`] (f32 for training, f64 for gradient checks). These are the
//! definitions the CUDA kernels are tested against.
//!
//! Conventions (llm.c): row-major, T = rows (batch·seq tokens); parameter
//! gradients accumulate (`+=`), activation gradients are overwritten (`=`).
//! Matrix products go through the `gemm` crate; rows, heads and experts are
//! parallelised with rayon.

pub mod act;
pub mod adamw;
pub mod alloc;
pub mod attention;
pub mod attention_f32;
pub mod backend;
pub mod embedding;
pub mod ffn;
pub mod lm_head;
pub mod lm_head_train;
pub mod matmul;
pub mod mha;
pub mod moe;
pub mod moe_permute;
pub mod pool;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod simd;
pub mod swiglu;
pub mod xent;

#[cfg(test)]
pub(crate) mod testutil;

pub use crate::engine::Float;
pub use adamw::grad_norm;
pub use backend::Cpu;
/// The linear layer (`y = x·wᵀ + b`) lives with the matrix products.
pub use matmul as linear;
