//! The seam between the model and the engines that run it: the op interface
//! ([`Backend`]) the autograd tape dispatches through, and the types every
//! engine shares (precision, op shapes, parameters, errors). Nothing here
//! depends on an engine: the CPU engine (`backend::cpu`) and the GPU engine
//! (`backend::gpu::engine`, on the CUDA kernels, run by cudarc on a GPU or by
//! the SIMT simulator) both implement [`Backend`].

pub mod backend;
pub mod device;
pub mod dims;
pub mod error;
pub mod ffn;
pub mod float;
pub mod param;
pub mod precision;

pub use backend::{Backend, FfnGradRefs, FfnRefs, MoeGradRefs, MoeRefs};
pub use device::Device;
pub use dims::{AttnDims, FfnDims, MoeDims};
pub use error::{OpContext, OpError, OpResult};
pub use float::Float;
pub use param::Param;
pub use precision::Precision;
