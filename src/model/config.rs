//! Model hyper-parameters and the named sizes `tiny`, `small`, `base`.

use serde::{Deserialize, Serialize};

/// What follows attention in each block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfnKind {
    /// Shared expert + N routed SwiGLU experts, top-k (Traffic-MoE).
    Moe,
    /// One SwiGLU FFN of the same total size (`d' + N·d'/k`): the "MoE->Dense" twin.
    Dense,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub ffn: FfnKind,
    pub d: usize,
    pub layers: usize,
    pub heads: usize,
    /// Routed experts N.
    pub n_experts: usize,
    /// Experts per token k.
    pub top_k: usize,
    /// Shared-expert intermediate size d'; routed experts get d'/k.
    pub shared_ff: usize,
    pub vocab: usize,
    pub max_seq: usize,
    pub rope_theta: f64,
    /// Weight of the load-balancing loss (averaged over layers).
    pub aux_weight: f64,
    /// Classifier classes (0: no classification head).
    pub n_classes: usize,
}

impl ModelConfig {
    /// `tiny`, `small` or `base`, with the MoE layer.
    pub fn named(name: &str) -> anyhow::Result<ModelConfig> {
        let (d, layers, heads, shared_ff, vocab) = match name {
            "tiny" => (128, 4, 4, 256, 8192),
            "small" => (384, 6, 6, 1024, 65541),
            "base" => (768, 12, 12, 2048, 65541),
            other => anyhow::bail!("unknown model config `{other}` (expected tiny, small or base)"),
        };
        Ok(ModelConfig {
            name: name.to_string(),
            ffn: FfnKind::Moe,
            d,
            layers,
            heads,
            n_experts: 8,
            top_k: 2,
            shared_ff,
            vocab,
            max_seq: 512,
            rope_theta: 10000.0,
            aux_weight: 0.02,
            n_classes: 0,
        })
    }

    pub fn with_ffn(mut self, ffn: FfnKind) -> Self {
        self.ffn = ffn;
        self
    }

    pub fn head_dim(&self) -> usize {
        self.d / self.heads
    }

    /// Routed-expert intermediate size d'/k.
    pub fn expert_ff(&self) -> usize {
        self.shared_ff / self.top_k
    }

    /// Dense twin's intermediate size: d' + N·d'/k.
    pub fn dense_ff(&self) -> usize {
        self.shared_ff + self.n_experts * self.expert_ff()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.d > 0 && self.layers > 0 && self.heads > 0,
            "model config: d, layers and heads must be positive"
        );
        anyhow::ensure!(
            self.d.is_multiple_of(self.heads),
            "model config: d={} is not divisible by heads={}",
            self.d,
            self.heads
        );
        anyhow::ensure!(
            self.head_dim().is_multiple_of(2),
            "model config: head dim {} must be even for RoPE",
            self.head_dim()
        );
        anyhow::ensure!(
            self.top_k >= 1 && self.top_k <= self.n_experts && self.n_experts <= 64,
            "model config: need 1 <= k <= N <= 64"
        );
        anyhow::ensure!(
            self.shared_ff.is_multiple_of(self.top_k),
            "model config: d'={} not divisible by k={}",
            self.shared_ff,
            self.top_k
        );
        anyhow::ensure!(
            self.vocab > 4,
            "model config: vocab {} too small (at least 5: the special tokens)",
            self.vocab
        );
        // Far past any real model, but a config read from a file (a
        // checkpoint's metadata) can make no shape overflow and no loop
        // over layers run for ever.
        for (what, value, max) in [
            ("d", self.d, 1 << 16),
            ("layers", self.layers, 1 << 10),
            ("shared_ff", self.shared_ff, 1 << 20),
            ("vocab", self.vocab, 1 << 24),
            ("max_seq", self.max_seq, 1 << 16),
            ("n_classes", self.n_classes, 1 << 16),
        ] {
            anyhow::ensure!(
                value <= max,
                "model config: {what} {value} is above the limit {max}"
            );
        }
        anyhow::ensure!(
            self.rope_theta.is_finite() && self.rope_theta > 0.0,
            "model config: rope_theta {} must be a positive number",
            self.rope_theta
        );
        anyhow::ensure!(
            self.aux_weight.is_finite() && self.aux_weight >= 0.0,
            "model config: aux_weight {} must be a number >= 0",
            self.aux_weight
        );
        Ok(())
    }
}
