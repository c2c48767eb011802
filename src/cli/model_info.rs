//! `tmoe model-info`: parameters (total / active per token) and forward
//! FLOPs per token, Traffic-MoE vs its dense twin.

use crate::cli::args;
use crate::model::info::model_info;
use crate::model::{FfnKind, ModelConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model size: tiny, small or base.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Vocabulary size (default: the config's).
    #[arg(long, value_parser = args::count)]
    pub vocab: Option<usize>,
    /// Context length for the attention FLOPs.
    #[arg(long, value_parser = args::seq_len, default_value_t = 256)]
    pub seq: usize,
}

fn m(x: f64) -> String {
    format!("{:.3} M", x / 1e6)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = ModelConfig::named(&args.config)?;
    if let Some(v) = args.vocab {
        cfg.vocab = v;
    }
    // Both models first: a config they refuse prints no half table.
    let rows = [FfnKind::Moe, FfnKind::Dense]
        .map(|ffn| model_info(&cfg.clone().with_ffn(ffn), args.seq).map(|i| (ffn, i)));
    let rows = rows.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "config {}: d {}, layers {}, heads {}, N {}, k {}, d' {} (routed experts d'/k = {}, dense twin {}), vocab {}, seq {}",
        cfg.name,
        cfg.d,
        cfg.layers,
        cfg.heads,
        cfg.n_experts,
        cfg.top_k,
        cfg.shared_ff,
        cfg.expert_ff(),
        cfg.dense_ff(),
        cfg.vocab,
        args.seq
    );
    println!(
        "{:<10} {:>14} {:>14} {:>14} {:>16} {:>14}",
        "model", "total params", "active/token", "embedding", "GFLOP/token fwd", "+LM head"
    );
    for (ffn, i) in rows {
        println!(
            "{:<10} {:>14} {:>14} {:>14} {:>16.4} {:>14.4}",
            match ffn {
                FfnKind::Moe => "MoE",
                FfnKind::Dense => "dense twin",
            },
            m(i.total_params as f64),
            m(i.active_params as f64),
            m(i.embedding_params as f64),
            i.flops_per_token / 1e9,
            i.lm_head_flops / 1e9
        );
    }
    println!(
        "(embedding tied to the LM head; FLOPs: 2 per active weight + causal attention 2·L·seq·d)"
    );
    Ok(())
}
