//! `tmoe tokenize`: captures -> flows -> tokens -> dataset shards.

use super::flow_parts::FlowPartsArgs;
use crate::cli::args;
use crate::traffic::dataset::build::{DatasetConfig, NoFlows, build_dataset_with};
use crate::traffic::dataset::labels::LabelSource;
use crate::traffic::dataset::split::SplitBy;
use crate::traffic::tokens::tokenize::TokenizerConfig;
use crate::traffic::tokens::vocab::DEFAULT_LEARNED;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Capture files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output directory (vocab.txt, train/val/test.tmoe, dataset.json).
    #[arg(long)]
    pub out: PathBuf,
    /// none (pretraining corpus: one unlabelled train.tmoe) | folder | prefix[:DELIMS] |
    /// csv:PATH[:app|category|COLUMN].
    #[arg(long, default_value = "none")]
    pub labels: String,
    /// Use this vocabulary (BERT vocab.txt) instead of training one.
    #[arg(long, conflicts_with = "vocab_size")]
    pub vocab: Option<PathBuf>,
    /// WordPiece entries besides the 5 specials; never fewer than the
    /// corpus's alphabet, which is always kept (as `tmoe vocab --size`).
    #[arg(long, value_parser = args::vocab_size, default_value_t = DEFAULT_LEARNED)]
    pub vocab_size: usize,
    /// Tokens per flow, [END] included.
    #[arg(long, value_parser = args::seq_len, default_value_t = 512)]
    pub seq_len: usize,
    #[command(flatten)]
    pub parts: FlowPartsArgs,
    /// Drop flows with fewer packets ...
    #[arg(long, default_value_t = 3)]
    pub min_packets: usize,
    /// ... unless their class has fewer than N flows that pass (0 = no exemption).
    #[arg(long, default_value_t = 0)]
    pub keep_rare: usize,
    /// Split flows freely (`flow`), keep all flows of a capture in one part
    /// (`file`), or split each capture by time: earliest flows train, latest
    /// test (`time`).
    #[arg(long, value_enum, default_value_t = SplitBy::Flow)]
    pub split_by: SplitBy,
    /// Seed of the split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Time-slice augmentation of training flows: slice length in seconds.
    #[arg(long, value_parser = args::positive)]
    pub slice_seconds: Option<f64>,
    /// Packets read per flow when augmenting.
    #[arg(long, value_parser = args::count, default_value_t = 100)]
    pub slice_packets: usize,
    /// Flow idle timeout in seconds.
    #[arg(long, value_parser = args::positive, default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// Flows open at once per capture; beyond it the least recently active
    /// flow ends early and is counted (bounds memory on floods and scans).
    #[arg(long, value_parser = args::count, default_value_t = crate::traffic::capture::reader::DEFAULT_MAX_FLOWS)]
    pub max_flows: usize,
    /// Write into an existing, non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    pub fn to_config(&self) -> anyhow::Result<DatasetConfig> {
        Ok(DatasetConfig {
            inputs: self.inputs.clone(),
            labels: LabelSource::parse(&self.labels)?,
            vocab_file: self.vocab.clone(),
            vocab_size: self.vocab_size,
            tokenizer: TokenizerConfig {
                seq_len: self.seq_len,
                ..self.parts.tokenizer()
            },
            min_packets: self.min_packets,
            keep_rare: self.keep_rare,
            split_by: self.split_by,
            seed: self.seed,
            slice_seconds: self.slice_seconds,
            slice_packets: self.slice_packets,
            idle_timeout_s: self.idle_timeout,
            max_flows: self.max_flows,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::refuse_file_as_out_folder(&args.out)?;
    let cfg = args.to_config()?;
    let summary = match build_dataset_with(&cfg, &args.out, !args.quiet, args.force) {
        Ok(s) => s,
        Err(e) => {
            // Why nothing was left (per-file problems, the read summary),
            // printed as a run with flows prints it, before the error.
            if let Some(nf) = e.downcast_ref::<NoFlows>() {
                println!("{}", nf.read);
            }
            return Err(e);
        }
    };
    println!("{}", summary.read);
    println!("{summary}");
    println!("wrote {}", args.out.display());
    Ok(())
}

/// What an interrupted `tokenize` left in `out` (said by its Ctrl-C line):
/// a build writes `dataset.json` last, so without it the files there are a
/// partial dataset that nothing reads as one (and a rerun refuses the
/// non-empty folder without --force).
pub fn interrupted_line(out: &std::path::Path) -> String {
    if out.join("dataset.json").exists() {
        return format!(
            "interrupted: {} was already written, the dataset is whole",
            out.join("dataset.json").display()
        );
    }
    let left: Vec<String> = std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if left.is_empty() {
        return format!("interrupted: nothing was written to {}", out.display());
    }
    let mut left = left;
    left.sort();
    format!(
        "interrupted: {} holds a partial dataset ({}) without dataset.json, which is written \
         last: nothing reads it as a dataset; run tokenize again with --force to rebuild it",
        out.display(),
        left.join(", ")
    )
}
