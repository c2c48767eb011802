//! `tmoe demo`: the whole pipeline on the CPU in a few minutes:
//! captures (synthetic, or --data) -> tokens -> pretraining -> fine-tuning
//! -> test metrics and confusion matrix. Sized for 2 cores and 5 minutes:
//! model `tiny` (vocabulary from the data, default 512 + 5 entries), short
//! sequences, a short pretraining run, a few capped fine-tuning epochs.

use crate::model::ModelConfig;
use crate::traffic::dataset::{DatasetConfig, build_dataset, load_dataset_info};
use crate::traffic::labels::LabelSource;
use crate::traffic::split::SplitBy;
use crate::traffic::tokenize::TokenizerConfig;
use crate::train::batch::open_part;
use crate::train::finetune::{FinetuneOpts, evaluate, finetune, load_classifier};
use crate::train::pretrain::{PretrainOpts, pretrain};
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
    #[arg(long, default_value_t = 150)]
    pub pretrain_steps: u64,
    /// Fine-tuning epochs (early stopping, patience 2).
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Tokens per flow.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Training flows per class for fine-tuning.
    #[arg(long, default_value_t = 60)]
    pub max_per_class: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub quiet: bool,
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
    if dir.join("dataset.json").exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let s = build_dataset(&cfg, &dir, !a.quiet)?;
    println!("{s}");
    Ok(dir)
}

fn synth_captures(_dir: &Path, _seed: u64) -> anyhow::Result<PathBuf> {
    anyhow::bail!(
        "synthetic traffic (traffic::synth) is not available in this build: pass --data <captures or dataset dir>"
    )
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&a.out)?;
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
    if pt_dir.exists() {
        std::fs::remove_dir_all(&pt_dir)?;
    }
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
        },
        &train,
        info.vocab_hash,
    )?;
    let h = &pt.history;
    let avg = |s: &[(u64, f32, f32)]| s.iter().map(|x| x.1).sum::<f32>() / s.len().max(1) as f32;
    println!(
        "[{:>5.1}s] pretrained {} steps ({:.0} tokens/s): LM loss {:.3} -> {:.3} (ln V = {:.3})",
        t0.elapsed().as_secs_f64(),
        h.len(),
        pt.tokens_per_s,
        avg(&h[..h.len().min(10)]),
        avg(&h[h.len().saturating_sub(10)..]),
        (info.vocab_size as f64).ln()
    );

    let ft = finetune(
        &FinetuneOpts {
            cfg,
            init: Some(pt.checkpoint.clone()),
            classes: info.classes.clone(),
            out: a.out.join("finetune"),
            max_epochs: a.epochs,
            patience: 2,
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
        },
        &train,
        &val,
        info.vocab_hash,
    )?;
    println!(
        "[{:>5.1}s] fine-tuned {} epochs ({:.0} tokens/s), best epoch {} with val macro-F1 {:.4}",
        t0.elapsed().as_secs_f64(),
        ft.history.len(),
        ft.tokens_per_s,
        ft.best_epoch,
        ft.best_val_macro_f1
    );

    let (model, params, _) = load_classifier(&ft.checkpoint)?;
    let (_, _, pred, truth) = evaluate(&model, &params, &test, 64, seq_len)?;
    let report = metrics_table(&pred, &truth, &info.classes);
    println!("{report}");
    std::fs::write(a.out.join("test_report.txt"), &report)?;
    println!(
        "[{:>5.1}s] files: dataset {}, pretrained {}, classifier {}, logs *_log.jsonl, report {}",
        t0.elapsed().as_secs_f64(),
        data.display(),
        pt.checkpoint.display(),
        ft.checkpoint.display(),
        a.out.join("test_report.txt").display()
    );
    Ok(())
}

/// Accuracy, macro precision / recall / F1, per-class rows and the confusion matrix (text).
pub fn metrics_table(pred: &[u32], truth: &[u32], classes: &[String]) -> String {
    use std::fmt::Write;
    let c = classes.len();
    let mut cm = vec![vec![0usize; c]; c];
    for (&p, &t) in pred.iter().zip(truth) {
        cm[t as usize][p as usize] += 1;
    }
    let mut s = String::new();
    let (mut ps, mut rs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
    let _ = writeln!(
        s,
        "{:<24} {:>9} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "F1", "support"
    );
    for i in 0..c {
        let tp = cm[i][i] as f64;
        let support: usize = cm[i].iter().sum();
        let predicted: usize = (0..c).map(|r| cm[r][i]).sum();
        if support == 0 && predicted == 0 {
            continue;
        }
        let p = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let r = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        ps.push(p);
        rs.push(r);
        fs.push(f);
        let _ = writeln!(
            s,
            "{:<24} {p:>9.4} {r:>9.4} {f:>9.4} {support:>8}",
            classes[i]
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let acc =
        pred.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len().max(1) as f64;
    let _ = writeln!(
        s,
        "\naccuracy {acc:.4}   macro precision {:.4}   macro recall {:.4}   macro F1 {:.4}   ({} flows, {} classes, chance macro-F1 about {:.3})",
        mean(&ps),
        mean(&rs),
        mean(&fs),
        truth.len(),
        fs.len(),
        1.0 / fs.len().max(1) as f64
    );
    let _ = writeln!(
        s,
        "\nconfusion matrix (rows: true class, columns: predicted; class ids in dataset order)"
    );
    let present: Vec<usize> = (0..c)
        .filter(|&i| cm[i].iter().sum::<usize>() > 0 || (0..c).any(|r| cm[r][i] > 0))
        .collect();
    let _ = write!(s, "{:>4}", "");
    for &j in &present {
        let _ = write!(s, "{j:>5}");
    }
    let _ = writeln!(s);
    for &i in &present {
        let _ = write!(s, "{i:>4}");
        for &j in &present {
            let _ = write!(s, "{:>5}", cm[i][j]);
        }
        let _ = writeln!(s, "  {}", classes[i]);
    }
    s
}
