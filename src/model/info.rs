//! Parameter and FLOP counts, from the same parameter list the model builds.

use super::config::{FfnKind, ModelConfig};
use super::net::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub total_params: usize,
    /// Parameters a token touches: total minus the N-k routed experts it skips per layer.
    pub active_params: usize,
    /// Embedding table (also the tied LM head).
    pub embedding_params: usize,
    /// Forward FLOPs per token of the backbone at `seq` tokens of context
    /// (2 per multiply-add of active non-embedding weights, plus causal
    /// attention scores and mixing: 2·L·seq·d on average).
    pub flops_per_token: f64,
    /// Extra forward FLOPs per token of the tied LM head (2·V·d).
    pub lm_head_flops: f64,
}

pub fn model_info(cfg: &ModelConfig, seq: usize) -> anyhow::Result<ModelInfo> {
    // The shapes the model would build, nothing allocated (base: 362 M
    // parameters, 1.4 GB of f32 per model otherwise).
    let total: usize = Model::param_shapes(cfg)?
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    let embedding = cfg.vocab * cfg.d;
    let skipped = match cfg.ffn {
        FfnKind::Moe => cfg.layers * (cfg.n_experts - cfg.top_k) * 3 * cfg.d * cfg.expert_ff(),
        FfnKind::Dense => 0,
    };
    let active = total - skipped;
    // Norm gains and biases are negligible; count every active non-embedding parameter once.
    let flops = 2.0 * (active - embedding) as f64 + 2.0 * (cfg.layers * seq * cfg.d) as f64;
    Ok(ModelInfo {
        total_params: total,
        active_params: active,
        embedding_params: embedding,
        flops_per_token: flops,
        lm_head_flops: 2.0 * embedding as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_twin_has_the_same_expert_parameters() {
        let moe = ModelConfig::named("tiny").unwrap();
        let dense = moe.clone().with_ffn(FfnKind::Dense);
        let (m, d) = (
            model_info(&moe, 256).unwrap(),
            model_info(&dense, 256).unwrap(),
        );
        // MoE adds only the router (N·d) and the shared gate (d) per layer.
        let extra = moe.layers * (moe.n_experts * moe.d + moe.d);
        assert_eq!(m.total_params, d.total_params + extra);
        assert!(m.active_params < d.active_params);
        assert_eq!(d.active_params, d.total_params);
    }
}
