//! `tmoe dump-logits` (hidden): a classifier's logits on one batch of a
//! dataset split, written as JSON together with the batch itself (token ids
//! and padding mask). Another implementation of the network
//! (`tools/torch_reference.py`) reads the file and runs the same inputs, so
//! the comparison does not depend on re-implementing the shard reader or the
//! batching.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::args;
use crate::eval::evaluate::{Checked, open_for_dataset, open_split};
use crate::eval::predict::{Weights, class_logits, resolve_seq_len};
use crate::model::batch::{Sequences, make_batch};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fine-tuned classifier (e.g. RUN/classifier.safetensors; a run folder
    /// RUN stands for it).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset directory (dataset.json, <split>.tmoe).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test", value_parser = args::SPLITS)]
    pub split: String,
    /// Batch size: the split's first N flows (fewer if the split is smaller).
    #[arg(long, value_parser = args::count, default_value_t = 32)]
    pub flows: usize,
    /// Cut sequences to this many tokens (default: the fine-tuning length
    /// recorded in the checkpoint, else the shard's length).
    #[arg(long, value_parser = args::seq_len)]
    pub seq_len: Option<usize>,
    /// JSON output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    let checkpoint =
        super::checkpoint_in_run("--checkpoint", a.checkpoint, &["classifier.safetensors"]);
    let a = Args { checkpoint, ..a };
    super::refuse_existing_out(&a.out, a.force)?;
    let doc = dump(&a)?;
    // Whole or not at all: with --force, a killed run left the earlier
    // file cut short.
    crate::atomic_file::write_out(&a.out, (serde_json::to_string(&doc)? + "\n").as_bytes())?;
    eprintln!(
        "{} flows x {} tokens: logits written to {}",
        doc["b"],
        doc["s"],
        a.out.display()
    );
    Ok(())
}

/// The document `run` writes: `flows` (shard indices), `b`, `s`, `ids` and
/// `mask` (`[b][s]`, right-padded with id 0), `logits` (`[b][C]`, f32 on the
/// CPU engine) and `classes`.
pub fn dump(a: &Args) -> Result<Value> {
    let Checked {
        model,
        params,
        meta,
        info: _,
    } = open_for_dataset(&a.checkpoint, &a.data)?;
    let shard = open_split(&a.data, &a.split)?;
    let flows: Vec<usize> = (0..shard.count().min(a.flows)).collect();
    anyhow::ensure!(
        !flows.is_empty(),
        "{}: the {} split has no flows",
        a.data.display(),
        a.split
    );
    let (seq_len, _) = resolve_seq_len(a.seq_len, &meta, shard.seq_len());
    let b = make_batch(&shard, &flows, seq_len);
    let x = b.inputs();
    let (logits, _) = class_logits(&model, Weights::Cpu(&params), &x, false)?;
    let rows = |v: &[u32]| -> Vec<Vec<u32>> { v.chunks(b.s).map(<[u32]>::to_vec).collect() };
    let mask: Vec<u32> = b.mask.iter().map(|&m| u32::from(m)).collect();
    let c = model.cfg.n_classes;
    Ok(json!({
        "checkpoint": a.checkpoint.display().to_string(),
        "split": a.split,
        "flows": flows,
        "b": b.b,
        "s": b.s,
        "ids": rows(&b.ids),
        "mask": rows(&mask),
        "classes": meta.classes,
        "logits": logits.chunks(c).map(<[f32]>::to_vec).collect::<Vec<_>>(),
    }))
}
