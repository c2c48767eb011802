//! The tiny model and fine-tuning options shared by the training and evaluation
//! tests (each test overrides what it varies with struct-update syntax).

use std::path::Path;

pub mod classifier;
pub mod sequences;

use traffic_moe::model::{FfnKind, ModelConfig};
use traffic_moe::train::finetune::FinetuneOpts;

/// d 32, 2 layers, 2 heads, 4 experts (top 2): trains in a second on 2 cores.
pub fn tiny_model(ffn: FfnKind, vocab: usize, max_seq: usize) -> ModelConfig {
    ModelConfig {
        name: "test".into(),
        ffn,
        d: 32,
        layers: 2,
        heads: 2,
        n_experts: 4,
        top_k: 2,
        shared_ff: 32,
        vocab,
        max_seq,
        rope_theta: 10000.0,
        aux_weight: 0.02,
        n_classes: 0,
    }
}

/// Fine-tuning from scratch (no `init`), quiet, seed 1, never overwriting.
pub fn tiny_finetune(cfg: ModelConfig, classes: &[String], out: &Path) -> FinetuneOpts {
    FinetuneOpts {
        seq_len: cfg.max_seq,
        cfg,
        init: None,
        classes: classes.to_vec(),
        out: out.to_path_buf(),
        max_epochs: 8,
        patience: 3,
        batch: 8,
        lr: 2e-3,
        llrd: 0.9,
        aux_weight: 0.02,
        train_fraction: 1.0,
        max_per_class: None,
        clip: 1.0,
        seed: 1,
        progress: false,
        force: false,
        device: traffic_moe::engine::Device::Cpu,
        precision: traffic_moe::engine::Precision::F32,
        head_epochs: 0,
        head_lr: 1e-3,
        tokenizer: None,
    }
}
