//! Where the routed experts' tokens go (the paper's Figures 9-10): per MoE
//! layer and expert, the share of a split's real tokens (padding excluded)
//! routed there, overall and per true class, with each layer's load balance
//! (largest share over the uniform 1/N) and routing entropy (in bits, of at
//! most log2 N). `tmoe eval --routing` counts them in its prediction pass
//! (`eval::predict::predict_probs_routed`) and writes them as JSON and
//! heatmaps.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use super::plot_routing::ShareGrid;
use crate::model::{FfnKind, ModelConfig};

/// Routed (token, slot) pairs per layer x expert.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingCounts {
    pub layers: usize,
    pub experts: usize,
    /// `[layers * experts]`.
    pub overall: Vec<u64>,
    /// Per class, `[layers * experts]`.
    pub per_class: Vec<Vec<u64>>,
    /// Real tokens counted (each routed to k experts in every layer).
    pub tokens: u64,
    /// Real tokens counted per class.
    pub class_tokens: Vec<u64>,
}

impl RoutingCounts {
    /// Empty counts for `cfg`'s MoE layers (None for a dense model: nothing
    /// is routed).
    pub fn for_model(cfg: &ModelConfig, classes: usize) -> Option<RoutingCounts> {
        (cfg.ffn == FfnKind::Moe).then(|| RoutingCounts::new(cfg.layers, cfg.n_experts, classes))
    }

    pub fn new(layers: usize, experts: usize, classes: usize) -> RoutingCounts {
        RoutingCounts {
            layers,
            experts,
            overall: vec![0; layers * experts],
            per_class: vec![vec![0; layers * experts]; classes],
            tokens: 0,
            class_tokens: vec![0; classes],
        }
    }

    /// Adds one batch: `routing` is `[layers, b*s, k]` (the tape's layout),
    /// `mask` `[b*s]`, `labels[row]` the row's class (None: not counted per
    /// class).
    pub fn add(&mut self, routing: &[u32], mask: &[u8], s: usize, labels: &[Option<u32>]) {
        let t = mask.len();
        if self.layers == 0 || t == 0 || routing.is_empty() {
            return;
        }
        for (tok, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
            self.tokens += 1;
            let class = labels.get(tok / s).copied().flatten();
            if let Some(c) = class.and_then(|c| self.class_tokens.get_mut(c as usize)) {
                *c += 1;
            }
        }
        let k = routing.len() / (self.layers * t);
        for (l, layer) in routing.chunks_exact(t * k).take(self.layers).enumerate() {
            for (tok, experts) in layer.chunks_exact(k).enumerate() {
                if mask[tok] == 0 {
                    continue;
                }
                let class = labels.get(tok / s).copied().flatten();
                for &e in experts {
                    let cell = l * self.experts + e as usize;
                    self.overall[cell] += 1;
                    if let Some(c) = class.and_then(|c| self.per_class.get_mut(c as usize)) {
                        c[cell] += 1;
                    }
                }
            }
        }
    }

    /// Shares per layer (each row sums to 1, or 0 for an empty layer).
    pub fn shares(counts: &[u64], experts: usize) -> Vec<Vec<f64>> {
        counts
            .chunks_exact(experts.max(1))
            .map(|row| {
                let sum: u64 = row.iter().sum();
                row.iter()
                    .map(|&c| if sum == 0 { 0.0 } else { c as f64 / sum as f64 })
                    .collect()
            })
            .collect()
    }

    pub fn to_json(&self, classes: &[String]) -> Value {
        let layer_stats = |counts: &[u64]| -> Vec<Value> {
            Self::shares(counts, self.experts)
                .iter()
                .map(|row| {
                    let max = row.iter().copied().fold(0.0, f64::max);
                    let entropy: f64 = row
                        .iter()
                        .filter(|&&p| p > 0.0)
                        .map(|&p| -p * p.log2())
                        .sum();
                    json!({
                        "shares": row,
                        "max_over_uniform": max * self.experts as f64,
                        "entropy_bits": entropy,
                    })
                })
                .collect()
        };
        json!({
            "layers": self.layers,
            "experts": self.experts,
            "max_entropy_bits": (self.experts as f64).log2(),
            "tokens": self.tokens,
            "overall": layer_stats(&self.overall),
            "per_class": classes.iter().zip(&self.per_class).zip(&self.class_tokens).map(|((c, counts), tokens)| {
                json!({"class": c, "tokens": tokens, "routed": counts.iter().sum::<u64>(), "layers": layer_stats(counts)})
            }).collect::<Vec<_>>(),
        })
    }
}

/// Writes `routing.json`, `routing.png` (overall: layer x expert shares) and
/// `routing-per-class.png` (one small heatmap per class) into `dir`.
pub fn write_routing(dir: &Path, counts: &RoutingCounts, classes: &[String]) -> Result<()> {
    let p = dir.join("routing.json");
    crate::atomic_file::write_whole(
        &p,
        (serde_json::to_string_pretty(&counts.to_json(classes))? + "\n").as_bytes(),
    )?;
    let overall = ShareGrid {
        title: "all classes".to_string(),
        tokens: counts.tokens,
        shares: RoutingCounts::shares(&counts.overall, counts.experts),
    };
    super::plot_routing::save_share_grids(&dir.join("routing.png"), &[overall])?;
    let per_class: Vec<ShareGrid> = classes
        .iter()
        .zip(&counts.per_class)
        .zip(&counts.class_tokens)
        .filter(|((_, c), _)| c.iter().any(|&n| n > 0))
        .map(|((name, c), &tokens)| ShareGrid {
            title: name.clone(),
            tokens,
            shares: RoutingCounts::shares(c, counts.experts),
        })
        .collect();
    if !per_class.is_empty() {
        super::plot_routing::save_share_grids(&dir.join("routing-per-class.png"), &per_class)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_tokens_per_layer_and_class() {
        // 2 layers, 3 experts, k = 2; batch of 2 rows x s = 2 tokens, the
        // last token padding.
        let mut c = RoutingCounts::new(2, 3, 2);
        let mask = [1, 1, 1, 0];
        let routing = [
            0, 1, 0, 2, 1, 2, 0, 1, // layer 0: tokens 0..4, k = 2 each
            2, 0, 2, 1, 2, 0, 1, 1, // layer 1
        ];
        c.add(&routing, &mask, 2, &[Some(1), Some(0)]);
        assert_eq!(c.overall, vec![2, 2, 2, 2, 1, 3]);
        assert_eq!(c.per_class[1], vec![2, 1, 1, 1, 1, 2], "row 0: tokens 0, 1");
        assert_eq!(
            c.per_class[0],
            vec![0, 1, 1, 1, 0, 1],
            "row 1: token 2 only"
        );
        assert_eq!((c.tokens, &c.class_tokens[..]), (3, &[1, 2][..]));
        let routed: u64 = c.overall.iter().sum();
        assert_eq!(routed, 3 * 2 * 2, "real tokens x k x layers");
        let j = c.to_json(&["a".into(), "b".into()]);
        assert_eq!(
            (&j["tokens"], &j["per_class"][1]["tokens"]),
            (&json!(3), &json!(2))
        );
        assert!((j["overall"][0]["entropy_bits"].as_f64().unwrap() - 3f64.log2()).abs() < 1e-12);
        assert!((j["overall"][1]["max_over_uniform"].as_f64().unwrap() - 1.5).abs() < 1e-12);
    }
}
