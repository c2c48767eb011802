//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use traffic_moe::model::{FfnKind, ModelConfig};

/// The real captures of `../shared/data` (relative to the crate root), or
/// `TMOE_DATA` when set. When absent the test skips visibly
/// (`traffic_moe::testing::skip_or_fail`), except under `TMOE_CI=1` (set by
/// `.ci/run`), where the data is promised and its absence is a failure.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("TMOE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = root.join(sub);
    if dir.exists() {
        return Some(dir);
    }
    traffic_moe::testing::skip_or_fail(format_args!(
        "{} not found (set TMOE_DATA or provide ../shared/data)",
        dir.display()
    ));
    None
}

/// The micro model the GPU-engine tests run (head_dim 32, which the
/// attention kernels support; small enough for the simulator).
pub fn micro_config(ffn: FfnKind, n_classes: usize) -> ModelConfig {
    ModelConfig {
        name: "micro".into(),
        ffn,
        d: 64,
        layers: 2,
        heads: 2,
        n_experts: 4,
        top_k: 2,
        shared_ff: 128,
        vocab: 512,
        max_seq: 32,
        rope_theta: 10000.0,
        aux_weight: 0.02,
        n_classes,
    }
}
