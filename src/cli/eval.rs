//! `tmoe eval`: a fine-tuned checkpoint on one split of a dataset -> metrics
//! table, per-class report, confusion matrix (text, CSV, PNG, SVG),
//! `metrics.json`, and training curves when the run's log is beside the
//! checkpoint. A pretrained checkpoint (no classifier head) -> its
//! next-token loss on the split beside unigram and bigram count models
//! fitted on the training split, `lm.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::args;
use crate::eval::evaluate::{EvalOpts, evaluate_split};
use crate::eval::plot::{self, History};
use crate::eval::report::EvalReport;
use crate::eval::routing::write_routing;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fine-tuned classifier (e.g. RUN/classifier.safetensors), or a
    /// pretrained model (PRETRAIN/model.safetensors): its next-token loss.
    /// A run folder stands for the first of the two it holds.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset directory (dataset.json, <split>.tmoe).
    #[arg(long)]
    pub data: PathBuf,
    /// Which part to evaluate: test, val or train.
    #[arg(long, default_value = "test", value_parser = args::SPLITS)]
    pub split: String,
    /// Output directory for the report files (created; an earlier report
    /// there is kept unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the files of an existing report directory.
    #[arg(long)]
    pub force: bool,
    /// Flows per model call.
    #[arg(long, value_parser = args::batch, default_value_t = 64)]
    pub batch: usize,
    /// Cut sequences to this many tokens (default: the fine-tuning length
    /// recorded in the checkpoint, else the shard's length).
    #[arg(long, value_parser = args::seq_len)]
    pub seq_len: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Engine: cpu, cuda (a GPU; needs --features cuda) or sim (the GPU
    /// engine's kernels in the simulator: slow, for checking a pipeline).
    #[arg(long, value_enum, default_value_t = crate::engine::Device::Cpu)]
    pub device: crate::engine::Device,
    /// Also count where the MoE layers route the split's tokens: per layer
    /// and expert, overall and per class (routing.json, routing.png,
    /// routing-per-class.png; counted in the same pass as the predictions).
    #[arg(long)]
    pub routing: bool,
    /// CPU engine precision: f32, or bf16 weights with f32 accumulation.
    /// The GPU engine (cuda, sim) always computes in bf16 (bf16
    /// weights, f32 sums): either value is accepted there and runs it.
    #[arg(long, value_enum, default_value_t = crate::engine::Precision::F32)]
    pub precision: crate::engine::Precision,
}

pub fn run(a: Args) -> Result<()> {
    let checkpoint = super::checkpoint_in_run(
        "--checkpoint",
        a.checkpoint,
        &["classifier.safetensors", "model.safetensors"],
    );
    let a = Args { checkpoint, ..a };
    // A missing or wrong --data is named before the checkpoint is read, as
    // the classifier's path (`open_for_dataset`) names it.
    let info = crate::traffic::dataset::build::load_dataset_info(&a.data)?;
    if crate::model::checkpoint::read_meta(&a.checkpoint)?
        .classes
        .is_empty()
    {
        return run_lm(&a, &info);
    }
    let report = evaluate(&a)?;
    println!("{}", report.summary());
    print_capture_vote(&report);
    println!("{}", report.classification_report());
    println!("{}", confusion_for_terminal(&report, &a.out));
    println!("reports written to {}", a.out.display());
    Ok(())
}

/// Widest confusion matrix printed whole (the numbered form of 30 or so
/// classes); past it, the most frequent confusions instead.
const TERMINAL_WIDTH: usize = 200;
const TOP_CONFUSIONS: usize = 15;

/// `report`'s confusion matrix as `eval` and `demo` print it, naming the
/// files in `out` that hold it whole.
pub(crate) fn confusion_for_terminal(report: &EvalReport, out: &Path) -> String {
    let whole = format!(
        "{} (and .csv, .png, .svg)",
        out.join("confusion.txt").display()
    );
    report
        .confusion
        .to_terminal(&report.classes, TERMINAL_WIDTH, TOP_CONFUSIONS, &whole)
}

/// The file a pretrained checkpoint's evaluation writes into `--out`.
pub const LM_REPORT: &str = "lm.json";

/// A pretrained checkpoint: its next-token loss on the split, the count
/// models beside it, `lm.json` (`info`: the dataset's, read once by `run`).
fn run_lm(a: &Args, info: &crate::traffic::dataset::build::DatasetInfo) -> Result<()> {
    super::refuse_file_as_out_folder(&a.out)?;
    let out = a.out.join(LM_REPORT);
    super::refuse_existing_out(&out, a.force)?;
    anyhow::ensure!(
        !a.routing,
        "--routing counts classes' routing: {} is a pretrained model without classes",
        a.checkpoint.display()
    );
    super::advise_cpu_precision(a.device, a.precision);
    let (model, params, meta) = crate::model::checkpoint::load_classifier(&a.checkpoint)?;
    crate::eval::evaluate::check_fits(&a.checkpoint, &meta, &a.data, info, None)?;
    for part in [a.split.as_str(), "train"] {
        anyhow::ensure!(
            info.shards.contains_key(part),
            "{}: the dataset has no {part} split (parts: {}; a corpus tokenized without labels has only train: pass --split train)",
            a.data.display(),
            info.shards.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let shard = crate::eval::evaluate::open_split(&a.data, &a.split)?;
    let train = crate::eval::evaluate::open_split(&a.data, "train")?;
    // Pretraining's own length unless --seq-len says otherwise.
    let seq_len = a
        .seq_len
        .or_else(|| meta.extra.get("pretrain--seq-len")?.parse().ok())
        .unwrap_or_else(|| shard.seq_len());
    let loaded = crate::eval::predict::Loaded::with_precision(a.device, params, a.precision)?;
    let report = crate::eval::lm::evaluate_lm(
        &model,
        loaded.weights(),
        (&a.split, &shard),
        ("train", &train),
        info.vocab_size,
        a.batch,
        seq_len,
        !a.quiet,
    )?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut doc = serde_json::to_value(&report)?;
    doc["checkpoint"] = a.checkpoint.display().to_string().into();
    doc["data"] = a.data.display().to_string().into();
    doc["device"] = a.device.name().into();
    doc["precision"] = a.precision.on(a.device).name().into();
    crate::atomic_file::write_out(
        &out,
        (serde_json::to_string_pretty(&doc)? + "\n").as_bytes(),
    )?;
    println!("{}", report.summary());
    println!("written to {}", out.display());
    Ok(())
}

/// The per-capture majority vote line, when the report has one.
pub fn print_capture_vote(report: &EvalReport) {
    if let Some(v) = report.capture_vote() {
        println!("{v}\n");
    }
}

/// Runs the evaluation and writes every output file; returns the report.
pub fn evaluate(a: &Args) -> Result<EvalReport> {
    super::prepare_report_dir(&a.out, a.force)?;
    super::advise_cpu_precision(a.device, a.precision);
    let opts = EvalOpts {
        split: a.split.clone(),
        batch: a.batch,
        seq_len: a.seq_len,
        device: a.device,
        precision: a.precision,
        routing: a.routing,
        progress: !a.quiet,
    };
    let e = evaluate_split(&a.checkpoint, &a.data, &opts)?;
    if let Some(at) = crate::model::checkpoint::unfinished_run(&e.meta) {
        eprintln!("{}", super::unfinished_warning(&a.checkpoint, at));
    }
    let report = e.report;
    let title = format!(
        "{} split: accuracy {:.3}, macro-F1 {:.3}",
        a.split, report.metrics.accuracy, report.metrics.macro_f1
    );
    super::write_report_or_take_back(&a.out, || {
        report.write_all(&a.out, &title)?;
        if a.routing {
            match &e.routing {
                Some(counts) => write_routing(&a.out, counts, &e.classes)?,
                None => eprintln!("--routing: a dense model has no routing to count"),
            }
        }
        write_curves(&a.checkpoint, &a.out)
    })?;
    Ok(report)
}

/// `curves.{png,svg}` in `out` from the fine-tuning log beside
/// `checkpoint`, when there is one.
pub fn write_curves(checkpoint: &Path, out: &Path) -> Result<()> {
    match training_history(checkpoint)? {
        Some(history) => {
            for ext in ["png", "svg"] {
                plot::save_curves(&out.join(format!("curves.{ext}")), &history.panels())?;
            }
        }
        // Said, so that a missing curves.png is not taken for a failure.
        None if log_path(checkpoint).exists() => eprintln!(
            "note: no training curves (curves.png): {} holds no epoch's train_loss",
            log_path(checkpoint).display()
        ),
        None => eprintln!(
            "note: no training curves (curves.png): {} is not beside the checkpoint",
            log_path(checkpoint).display()
        ),
    }
    Ok(())
}

/// The fine-tuning log `finetune` writes beside its checkpoint.
fn log_path(checkpoint: &Path) -> std::path::PathBuf {
    checkpoint
        .parent()
        .unwrap_or(Path::new("."))
        .join("finetune_log.jsonl")
}

/// Reads `finetune_log.jsonl` beside the checkpoint (one JSON object per
/// epoch), if there is one.
pub fn training_history(checkpoint: &Path) -> Result<Option<History>> {
    let log = log_path(checkpoint);
    let text = match std::fs::read_to_string(&log) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A log there but unreadable (not UTF-8, say) was reported as "not
        // beside the checkpoint".
        Err(e) => return Err(e).with_context(|| format!("reading {}", log.display())),
    };
    let mut h = History::default();
    let last = text.lines().count();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A last line without its newline was cut short (a run killed,
            // or a full disk, while a log written in place took it): the
            // epochs before it still make the curves.
            Err(_) if n + 1 == last && !text.ends_with('\n') => {
                eprintln!(
                    "note: {}: line {} is cut short (its run was stopped while writing it): the curves leave it out",
                    log.display(),
                    n + 1
                );
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: line {} is not JSON", log.display(), n + 1));
            }
        };
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let push = |k: &str, to: &mut Vec<f64>| {
            if let Some(x) = field(k) {
                to.push(x);
            }
        };
        if h.first_epoch.is_none() {
            h.first_epoch = field("epoch").map(|e| e as usize);
        }
        push("train_loss", &mut h.train_loss);
        push("val_loss", &mut h.val_loss);
        push("val_macro_f1", &mut h.val_macro_f1);
        push("val_accuracy", &mut h.val_accuracy);
    }
    Ok((!h.train_loss.is_empty()).then_some(h))
}
