//! `tmoe study CAPTURES.. --out DIR`: the comparison rows (Traffic-MoE
//! pretrained and from scratch, the dense twin, without the aux loss, header
//! only, payload only, AppScanner, k-NN) over seeds, resumable, one report.

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::args;
use crate::engine::Device;
use crate::model::ModelConfig;
use crate::study::report::REPORT_MD;
use crate::study::{Row, StudyOpts, run_until};
use crate::traffic::dataset::labels::LabelSource;
use crate::traffic::dataset::split::SplitBy;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Capture files or folders (one folder per class with --labels folder).
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    /// Study folder: datasets, pretrainings, runs/, report.{md,json}, macro-f1.png.
    /// Runs already in it are kept and skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Labels: folder, prefix or csv:PATH[:app|category] (as tokenize).
    #[arg(long, default_value = "folder")]
    pub labels: String,
    /// Rows to run (default: every row below, Table 4's top-1 and top-4
    /// and LP-FT's two included).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub rows: Vec<Row>,
    /// Seeds: each row runs once per seed (initialisation, training order,
    /// flows subsampled); every seed uses the same split.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Model size: tiny, small or base.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Tokens per flow, [END] included.
    #[arg(long, value_parser = args::seq_len, default_value_t = 64)]
    pub seq_len: usize,
    /// Learnt vocabulary entries (ignored with --vocab).
    #[arg(long, value_parser = args::vocab_size, default_value_t = 2048)]
    pub vocab_size: usize,
    /// Use this vocab.txt (e.g. `tmoe vocab` on an unlabelled corpus)
    /// instead of learning one on the studied flows.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Split flows freely (flow), keep each capture's flows in one part
    /// (file), or split each capture by time (time), as tokenize.
    #[arg(long, value_enum, default_value_t = SplitBy::File)]
    pub split_by: SplitBy,
    /// Zero the flow's own addresses and ports in payloads, as tokenize.
    #[arg(long)]
    pub mask_identifiers: bool,
    /// Pretraining steps of the pretrained rows.
    #[arg(long, value_parser = args::count_u64, default_value_t = 300)]
    pub pretrain_steps: u64,
    /// Most fine-tuning epochs (early stopping on validation macro-F1).
    #[arg(long, value_parser = args::count, default_value_t = 6)]
    pub epochs: usize,
    /// At most this many training flows per class (the 2-core budget).
    #[arg(long, value_parser = args::count, default_value_t = 40)]
    pub max_per_class: usize,
    /// Few-shot: also fine-tune the pretrained and the from-scratch model on
    /// these fractions of the training flows (e.g. 0.01,0.05,0.1,0.25).
    #[arg(long, value_parser = args::fraction, value_delimiter = ',')]
    pub fractions: Vec<f64>,
    /// Fine-tuning learning rate (the top layer's, LLRD 0.9 below it);
    /// pretraining keeps its own 3e-4.
    #[arg(long, value_parser = args::positive, default_value_t = 1e-3)]
    pub lr: f64,
    /// Flows per training step.
    #[arg(long, value_parser = args::batch, default_value_t = 32)]
    pub batch: usize,
    /// Engine that trains and evaluates: cpu, cuda (a GPU; needs --features
    /// cuda) or sim (the GPU engine in the simulator: slow, for checks).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Pretraining budgets in steps (e.g. 300,1000,2000): one pretraining
    /// run keeps its weights at each; held-out LM loss against a bigram
    /// table, and fine-tuning from each budget against from scratch.
    #[arg(long, value_parser = args::count_u64, value_delimiter = ',')]
    pub budgets: Vec<u64>,
    /// Unlabelled captures (files or folders) added to the budget run's
    /// pretraining corpus, e.g. every other capture at hand.
    #[arg(long, num_args = 1.., requires = "budgets")]
    pub pretrain_extra: Vec<PathBuf>,
    /// Few-shot fractions each budget also fine-tunes on (pretrained and
    /// from scratch), beside all the training flows.
    #[arg(long, value_parser = args::fraction, value_delimiter = ',', default_value = "0.25", requires = "budgets")]
    pub budget_fractions: Vec<f64>,
}

pub fn run_cli(a: Args) -> Result<()> {
    super::refuse_file_as_out_folder(&a.out)?;
    let opts = StudyOpts {
        captures: a.captures.clone(),
        labels: LabelSource::parse(&a.labels)?,
        out: a.out.clone(),
        rows: if a.rows.is_empty() {
            Row::ALL.to_vec()
        } else {
            a.rows.clone()
        },
        seeds: a.seeds.clone(),
        cfg: ModelConfig::named(&a.config)?,
        seq_len: a.seq_len,
        vocab_file: a.vocab.clone(),
        vocab_size: a.vocab_size,
        split_by: a.split_by,
        mask_identifiers: a.mask_identifiers,
        pretrain_steps: a.pretrain_steps,
        epochs: a.epochs,
        max_per_class: Some(a.max_per_class),
        fractions: a.fractions.clone(),
        lr: a.lr,
        batch: a.batch,
        device: a.device,
        progress: !a.quiet,
        budgets: a.budgets.clone(),
        pretrain_extra: a.pretrain_extra.clone(),
        budget_fractions: a.budget_fractions.clone(),
    };
    let s = run_until(&opts, super::interrupt::flag())?;
    if s.interrupted {
        return Err(super::interrupt::Interrupted(format!(
            "interrupted: {} study runs are done in {} ({} of them now), each stored as it \
             ended; no report yet. Run the same command again to continue: it skips the \
             finished runs (and resumes an interrupted pretraining)",
            s.results.len(),
            a.out.display(),
            s.ran
        ))
        .into());
    }
    println!(
        "study: {} runs now, {} found done, {:.0} s; report in {}",
        s.ran,
        s.skipped,
        s.seconds,
        a.out.join(REPORT_MD).display()
    );
    print!(
        "{}",
        std::fs::read_to_string(a.out.join(REPORT_MD)).unwrap_or_default()
    );
    Ok(())
}
