//! `tmoe pretrain`: next-token pretraining on a dataset's token shards.

use crate::cli::args;
use crate::model::batch::open_part;
use crate::model::{FfnKind, ModelConfig};
use crate::traffic::dataset::build::load_dataset_info;
use crate::train::pretrain::{PretrainOpts, pretrain_until};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Ffn {
    Moe,
    Dense,
}

impl From<Ffn> for FfnKind {
    fn from(f: Ffn) -> Self {
        match f {
            Ffn::Moe => FfnKind::Moe,
            Ffn::Dense => FfnKind::Dense,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset directory (from `tmoe tokenize`); trains on train.tmoe.
    #[arg(long)]
    pub data: PathBuf,
    /// Model size: tiny, small or base (vocabulary taken from the dataset).
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Traffic-MoE or its dense twin.
    #[arg(long, value_enum, default_value_t = Ffn::Moe)]
    pub ffn: Ffn,
    /// Run directory (model.safetensors, optimizer state, pretrain_log.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    /// Optimizer steps in all (the cosine schedule ends there).
    #[arg(long, value_parser = args::count_u64, default_value_t = 1000)]
    pub steps: u64,
    /// Sequences per step.
    #[arg(long, value_parser = args::batch, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per sequence (default: the dataset's).
    #[arg(long, value_parser = args::seq_len)]
    pub seq_len: Option<usize>,
    /// Peak learning rate (after warmup, then cosine decay).
    #[arg(long, value_parser = args::positive, default_value_t = 3e-4)]
    pub lr: f64,
    /// Steps of linear warmup.
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// Global gradient-norm clipping threshold.
    #[arg(long, value_parser = args::positive, default_value_t = 1.0)]
    pub clip: f64,
    /// Seed of the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 200)]
    pub save_every: u64,
    /// Continue the run in --out from its last checkpoint (a periodic one,
    /// --stop-after's, or the one Ctrl-C saves at the step under way).
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Start afresh even if --out already holds a checkpoint (replaces it).
    #[arg(long)]
    pub force: bool,
    /// Stop after this step with a checkpoint, as an interrupted run would;
    /// `--resume` with the same --steps continues it exactly.
    #[arg(long, value_parser = args::count_u64)]
    pub stop_after: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Engine: cpu, cuda (a GPU; needs --features cuda) or sim (the GPU
    /// engine's kernels in the simulator: slow, for checking a pipeline).
    #[arg(long, value_enum, default_value_t = crate::engine::Device::Cpu)]
    pub device: crate::engine::Device,
    /// Training precision on the CPU: f32, or bf16 mixed precision (the
    /// linear layers', experts' and LM head's products on bf16 operands
    /// with f32 sums, on AMX tiles where the CPU has them; weights,
    /// gradients and AdamW state f32). The GPU engine (cuda, sim) always
    /// computes in bf16 (bf16 weights, f32 sums): either value is accepted
    /// there and runs it.
    #[arg(long, value_enum, default_value_t = crate::engine::Precision::F32)]
    pub precision: crate::engine::Precision,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    super::refuse_file_as_out_folder(&a.out)?;
    super::advise_cpu_precision(a.device, a.precision);
    let info = load_dataset_info(&a.data)?;
    let train = open_part(&a.data, "train")?;
    let mut cfg = ModelConfig::named(&a.config)?.with_ffn(a.ffn.into());
    cfg.vocab = info.vocab_size;
    cfg.max_seq = train.seq_len();
    let opts = PretrainOpts {
        cfg,
        steps: a.steps,
        batch: a.batch,
        seq_len: super::seq_len_within(a.seq_len, train.seq_len()),
        lr: a.lr,
        warmup: a.warmup,
        clip: a.clip,
        seed: a.seed,
        save_every: a.save_every,
        out: a.out.clone(),
        resume: a.resume,
        progress: !a.quiet,
        force: a.force,
        stop_after: a.stop_after,
        device: a.device,
        precision: a.precision,
        keep_at: Vec::new(),
    };
    let r = pretrain_until(&opts, &train, info.vocab_hash, super::interrupt::flag())?;
    if r.interrupted {
        let at = r.history.last().map_or(r.start_step, |h| h.0);
        return Err(super::interrupt::Interrupted(format!(
            "interrupted at step {at} of {}: checkpoint and optimizer state saved in {}; continue with: {}",
            a.steps,
            a.out.display(),
            super::interrupt::resume_command()
        ))
        .into());
    }
    if r.history.is_empty() {
        let why = match a.stop_after {
            Some(s) if s < a.steps => format!("--stop-after {s} is not past it"),
            _ => format!(
                "the last of --steps {}: a larger --steps continues the run",
                a.steps
            ),
        };
        println!(
            "nothing to pretrain: {} is already at step {}, {why}",
            r.checkpoint.display(),
            r.start_step
        );
        return Ok(());
    }
    // The mean over this call's last 20 steps, or over all of them when
    // it ran fewer.
    let tail = r.history.len().min(20);
    let last = r.history.iter().rev().take(tail).map(|h| h.1).sum::<f32>() / tail.max(1) as f32;
    println!(
        "pretrained {} in {:.1} s ({:.0} tokens/s); LM loss (last {}) {last:.4}; checkpoint {}",
        super::noun(r.history.len() as u64, "step"),
        r.seconds,
        r.tokens_per_s,
        super::noun(tail as u64, "step"),
        r.checkpoint.display()
    );
    Ok(())
}
