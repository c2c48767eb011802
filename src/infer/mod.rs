//! Inference outside the training pipeline: a loaded classifier
//! ([`classifier`], shared by `tmoe classify` and embedders), the pipeline
//! that classifies captures in parallel across files ([`pipeline`]), and a
//! streaming front end ([`stream`]) that turns frames, as a network monitor
//! sees them, into classified flows: on the caller's thread ([`runner`], as
//! the C API (`crate::capi`, `include/traffic_moe.h`) drives it), or with
//! reading and the model on two threads ([`overlap`], `classify --stream`).

pub mod background;
pub mod classifier;
pub mod flow_feed;
pub mod latency;
pub mod overlap;
pub mod pipeline;
pub mod runner;
pub mod stream;

/// Token rows one GPU model call holds at the default batch: 1,024 flows
/// of 64 tokens.
pub const GPU_CALL_TOKENS: usize = 1 << 16;

/// Flows per model call on a GPU when none is given: 1,024 (small batches
/// leave it idle), fewer for longer flows, so that a call holds at most
/// [`GPU_CALL_TOKENS`] token rows. At 1,024 flows of 512 tokens the base
/// model's FFN activations reach 2^31 elements (the dense twin's 11 G),
/// past the kernels' 32-bit views: the call was refused.
pub fn gpu_default_batch(seq_len: usize) -> usize {
    (GPU_CALL_TOKENS / seq_len.max(1)).clamp(1, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelConfig;

    #[test]
    fn the_gpu_default_batch_keeps_a_call_under_the_kernels_views() {
        assert_eq!(gpu_default_batch(64), 1024);
        assert_eq!(gpu_default_batch(16), 1024);
        assert_eq!(gpu_default_batch(512), 128);
        assert_eq!(gpu_default_batch(1 << 20), 1);
        // The widest activation of a call: the base dense twin's packed
        // gate and up rows, `[tokens, 2 f]`, at any sequence length.
        let base = ModelConfig::named("base").unwrap();
        for seq in [64, 256, 512, 1024, 4096] {
            let elems = gpu_default_batch(seq) * seq * 2 * base.dense_ff();
            assert!(elems < 1 << 31, "seq {seq}: {elems} elements");
        }
    }
}
