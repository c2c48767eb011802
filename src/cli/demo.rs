//! `tmoe demo`: the whole pipeline on the CPU in a few minutes:
//! captures (synthetic, or --data) -> tokens -> pretraining -> fine-tuning
//! -> test metrics and confusion matrix. Sized for 2 cores and 5 minutes:
//! model `tiny` (vocabulary from the data, default 512 + 5 entries), short
//! sequences, a short pretraining run, a few capped fine-tuning epochs.

use crate::cli::args;
use crate::eval::report::EvalReport;
use crate::model::ModelConfig;
use crate::model::batch::open_part;
use crate::model::checkpoint::load_classifier;
use crate::traffic::capture::synth::{SynthConfig, synthesize};
use crate::traffic::dataset::build::{
    DatasetConfig, NoFlows, build_dataset_with, collect_captures, load_dataset_info,
};
use crate::traffic::dataset::labels::{LabelSource, folder_label};
use crate::traffic::dataset::split::SplitBy;
use crate::traffic::tokens::tokenize::TokenizerConfig;
use crate::train::finetune::{FinetuneOpts, evaluate, finetune};
use crate::train::pretrain::{PretrainOpts, pretrain};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Captures in one folder per class, or a tokenized dataset directory
    /// (with dataset.json). Default: synthetic traffic.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where everything goes.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Pretraining steps (batch 16).
    #[arg(long, value_parser = args::count_u64, default_value_t = 150)]
    pub pretrain_steps: u64,
    /// Fine-tuning epochs at most (early stopping on validation macro-F1,
    /// patience 5 as in the paper). The synthetic TLS classes differ in a
    /// handful of the 64 tokens (the ClientHello's size): 6 epochs leave them
    /// confused, and patience 2 stopped runs while the loss was still falling.
    #[arg(long, value_parser = args::count, default_value_t = 15)]
    pub epochs: usize,
    /// Tokens per flow.
    #[arg(long, value_parser = args::seq_len, default_value_t = 64)]
    pub seq_len: usize,
    /// Training flows per class for fine-tuning.
    #[arg(long, value_parser = args::count, default_value_t = 60)]
    pub max_per_class: usize,
    /// Seed of the synthetic traffic, the split and the training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Reuse a non-empty --out, replacing what an earlier demo left there.
    #[arg(long)]
    pub force: bool,
    /// Engine: cpu, cuda (a GPU; needs --features cuda) or sim (the GPU
    /// engine's kernels in the simulator: slow, for checking a pipeline).
    #[arg(long, value_enum, default_value_t = crate::engine::Device::Cpu)]
    pub device: crate::engine::Device,
}

fn dataset(a: &Args) -> anyhow::Result<PathBuf> {
    let dir = a.out.join("dataset");
    let inputs = match &a.data {
        Some(d) if d.join("dataset.json").exists() => return Ok(d.clone()),
        Some(d) => d.clone(),
        None => synth_captures(&a.out.join("captures"), a.seed)?,
    };
    let cfg = DatasetConfig {
        inputs: vec![inputs],
        labels: LabelSource::Folder,
        vocab_size: 512,
        tokenizer: TokenizerConfig {
            seq_len: a.seq_len,
            ..Default::default()
        },
        split_by: SplitBy::Flow,
        seed: a.seed,
        ..Default::default()
    };
    // With --force, an earlier demo's dataset files are replaced (only
    // those: anything else in the folder is the user's).
    // A capture that failed or warned is named with its problem, as
    // `tokenize` names it: the summary's "1 failed" said which was not.
    let s = match build_dataset_with(&cfg, &dir, !a.quiet, a.force) {
        Ok(s) => s,
        Err(e) => {
            if let Some(nf) = e.downcast_ref::<NoFlows>() {
                println!("{}", nf.read);
            }
            return Err(e);
        }
    };
    if s.read.files_failed + s.read.files_warned > 0 {
        println!("{}", s.read);
    }
    println!("{s}");
    Ok(dir)
}

/// Captures in `dir` fall into at least 2 classes (their folders): said
/// before anything is read, tokenized or written.
fn check_classes(dir: &Path) -> anyhow::Result<()> {
    let classes: std::collections::BTreeSet<String> = collect_captures(&[dir.to_path_buf()])?
        .iter()
        .filter_map(|(p, root)| folder_label(root, p))
        .collect();
    anyhow::ensure!(
        classes.len() >= 2,
        "--data {}: need at least 2 classes, one folder of captures each (found {}{})",
        dir.display(),
        classes.len(),
        classes
            .first()
            .map(|c| format!(": {c}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Synthetic labelled pcaps (one folder per class).
fn synth_captures(dir: &Path, seed: u64) -> anyhow::Result<PathBuf> {
    let s = synthesize(&SynthConfig {
        flows_per_file: crate::traffic::capture::synth::FLOWS_PER_FILE,
        out: dir.to_path_buf(),
        flows_per_class: 150,
        seed,
        force: true,
    })?;
    println!(
        "synthesised {} flows of {} classes ({} packets) in {}",
        s.flows,
        s.classes.len(),
        s.packets,
        dir.display()
    );
    Ok(dir.to_path_buf())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    super::refuse_file_as_out_folder(&a.out)?;
    let used = std::fs::read_dir(&a.out).is_ok_and(|mut d| d.next().is_some());
    anyhow::ensure!(
        a.force || !used,
        "{} is not empty: choose another --out or pass --force to replace an earlier demo's files",
        a.out.display()
    );
    // A missing GPU or --data is said before any work is done or written.
    drop(a.device.gpu()?);
    if let Some(d) = &a.data {
        anyhow::ensure!(
            d.is_dir(),
            "--data {}: not a folder (captures in one folder per class, or a tokenized dataset)",
            d.display()
        );
        if !d.join("dataset.json").exists() {
            check_classes(d)?;
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let data = dataset(&a)?;
    let info = load_dataset_info(&data)?;
    anyhow::ensure!(
        info.classes.len() >= 2,
        "{}: need at least 2 classes",
        data.display()
    );
    let (train, val, test) = (
        open_part(&data, "train")?,
        open_part(&data, "val")?,
        open_part(&data, "test")?,
    );
    let seq_len = a.seq_len.min(train.seq_len());
    let mut cfg = ModelConfig::named("tiny")?;
    cfg.vocab = info.vocab_size;
    cfg.max_seq = seq_len;
    println!(
        "[{:>5.1}s] dataset {}: {} train / {} val / {} test flows, {} classes, vocab {}",
        t0.elapsed().as_secs_f64(),
        data.display(),
        train.len(),
        val.len(),
        test.len(),
        info.classes.len(),
        info.vocab_size
    );

    let pt_dir = a.out.join("pretrain");
    let pt = pretrain(
        &PretrainOpts {
            cfg: cfg.clone(),
            steps: a.pretrain_steps,
            batch: 16,
            seq_len,
            lr: 1e-3,
            warmup: 15,
            clip: 1.0,
            seed: a.seed,
            save_every: 0,
            out: pt_dir,
            resume: false,
            progress: !a.quiet,
            force: a.force,
            stop_after: None,
            device: a.device,
            precision: crate::engine::Precision::F32,
            keep_at: Vec::new(),
        },
        &train,
        info.vocab_hash,
    )?;
    let h = &pt.history;
    let avg = |s: &[(u64, f32, f32)]| s.iter().map(|x| x.1).sum::<f32>() / s.len().max(1) as f32;
    // The first and last steps' means, over windows that do not overlap on a short run.
    let w = (h.len() / 2).clamp(1, 10);
    println!(
        "[{:>5.1}s] pretrained {} steps ({:.0} tokens/s): LM loss {:.3} -> {:.3} (ln V = {:.3})",
        t0.elapsed().as_secs_f64(),
        h.len(),
        pt.tokens_per_s,
        avg(&h[..h.len().min(w)]),
        avg(&h[h.len().saturating_sub(w)..]),
        (info.vocab_size as f64).ln()
    );

    let ft = finetune(
        &FinetuneOpts {
            cfg,
            init: Some(pt.checkpoint.clone()),
            classes: info.classes.clone(),
            out: a.out.join("finetune"),
            max_epochs: a.epochs,
            patience: 5,
            batch: 16,
            seq_len,
            lr: 1e-3,
            llrd: 0.9,
            aux_weight: 0.02,
            train_fraction: 1.0,
            max_per_class: Some(a.max_per_class),
            clip: 1.0,
            seed: a.seed,
            progress: !a.quiet,
            force: a.force,
            device: a.device,
            precision: crate::engine::Precision::F32,
            head_epochs: 0,
            head_lr: crate::train::head_fit::DEFAULT_HEAD_LR,
            tokenizer: Some(info.config.tokenizer.clone()),
        },
        &train,
        &val,
        info.vocab_hash,
    )?;
    println!(
        "[{:>5.1}s] fine-tuned {} ({:.0} tokens/s), best epoch {} with val macro-F1 {:.4}",
        t0.elapsed().as_secs_f64(),
        super::noun(ft.history.len() as u64, "epoch"),
        ft.tokens_per_s,
        ft.best_epoch,
        ft.best_val_macro_f1
    );

    let (model, params, _) = load_classifier(&ft.checkpoint)?;
    let loaded = crate::eval::predict::Loaded::new(a.device, params)?;
    let (_, _, pred, truth) = evaluate(&model, loaded.weights(), &test, 64, seq_len)?;
    let report = EvalReport::from_labels(info.classes.clone(), &truth, &pred)?;
    println!("{}", report.classification_report());
    let eval_dir = a.out.join("eval");
    println!(
        "confusion matrix (rows: true class, columns: predicted)\n{}",
        super::eval::confusion_for_terminal(&report, &eval_dir)
    );
    println!(
        "test: {}   (chance macro-F1 about {:.3})",
        report.summary(),
        1.0 / info.classes.len() as f64
    );
    report.write_all(&eval_dir, "tmoe demo: test set")?;
    super::eval::write_curves(&ft.checkpoint, &eval_dir)?;
    println!(
        "[{:>5.1}s] files: captures {}, dataset {}, pretrained {}, classifier {} (training logs *_log.jsonl beside them), metrics, confusion matrix (txt, csv, png, svg) and training curves (png, svg) in {}",
        t0.elapsed().as_secs_f64(),
        match &a.data {
            Some(_) => "given".into(),
            None => a.out.join("captures").display().to_string(),
        },
        data.display(),
        pt.checkpoint.display(),
        ft.checkpoint.display(),
        eval_dir.display()
    );
    Ok(())
}
