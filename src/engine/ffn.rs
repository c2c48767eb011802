//! What every engine's dense SwiGLU FFN shares: the error of a backward
//! through a forward that kept nothing. The FFNs themselves are the
//! engines' own (the CPU engine's `backend::cpu::ffn`, the GPU engine's
//! fused kernels).

use super::OpError;

/// The error of a backward through a forward run with `train: false`.
pub fn inference_forward(op: &'static str) -> OpError {
    OpError::msg(
        op,
        "the forward ran for inference (train: false) and kept nothing for a backward",
    )
}
