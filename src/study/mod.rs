//! `tmoe study`: the paper's comparison rows on one set of captures, over
//! seeds, in one report. Every run writes its result to `runs/<row>-s<seed>.json`
//! and is skipped when that file exists, so an interrupted study resumes.
//!
//! Rows (Tables 2-3 of the paper): Traffic-MoE pretrained and from scratch,
//! the dense twin pretrained, Traffic-MoE without the aux loss, header only,
//! payload only, AppScanner and k-NN, a linear probe on the frozen
//! pretrained encoder (and, as its control, on an untrained one); Table 4:
//! top-1 and top-4 routing. Pretraining reads
//! the training split's flows only (labels unused), never validation or test.
//! Every run reports accuracy per flow and per capture (majority vote).
//!
//! Expert heatmaps (Figures 9-10): for each seed, where the pretrained
//! Traffic-MoE routes the test flows' tokens before and after fine-tuning
//! (`routing/s<seed>/{pretrained,finetuned}/`, as `eval --routing` writes).
//!
//! Shortcut checks in every report: exact duplicates the dataset dropped
//! before splitting (so none cross splits), the share of test flows whose
//! nearest training flow (1-NN on packet sizes, directions, gaps) has their
//! label, and header-only beside payload-only scores.

pub mod budget;
mod clock;
pub mod probe;
pub mod report;
mod settings;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineOpts, Method};
use crate::engine::Device;
use crate::eval::captures::capture_vote;
use crate::eval::predict::{Loaded, predict_probs_routed, predicted_classes};
use crate::eval::report::EvalReport;
use crate::eval::routing::{RoutingCounts, write_routing};
use crate::model::batch::{Sequences, open_part};
use crate::model::checkpoint::load_classifier;
use crate::model::{FfnKind, ModelConfig};
use crate::traffic::dataset::build::{
    DatasetConfig, NoFlows, build_dataset_until, load_dataset_info,
};
use crate::traffic::dataset::labels::LabelSource;
use crate::traffic::dataset::shard::Shard;
use crate::traffic::dataset::split::SplitBy;
use crate::traffic::tokens::features::View;
use crate::traffic::tokens::tokenize::TokenizerConfig;
use crate::train::finetune::{FinetuneOpts, finetune_until};
use crate::train::pretrain::{PretrainOpts, pretrain_until};
use clock::{RunClock, flows};

/// One row of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Row {
    MoePretrained,
    MoeScratch,
    DensePretrained,
    MoeNoAux,
    MoeHeader,
    MoePayload,
    Appscanner,
    Knn,
    /// A logistic regression on the frozen pretrained encoder's mean-pooled
    /// features (`probe.rs`).
    MoeProbe,
    /// The same probe on an encoder that was never trained: what random
    /// features alone give.
    MoeProbeRandom,
    /// Table 4: top-1 and top-4 routing, from scratch (experts d'/k wide, as
    /// top-2's d'/2: the same active parameters per token).
    MoeTop1,
    MoeTop4,
    /// LP-FT: the pretrained Traffic-MoE with its head fitted first on the
    /// frozen encoder's features (`train/head_fit.rs`), then fine-tuned as
    /// `moe-pretrained` is.
    MoeLpFt,
    /// The same from scratch: what fitting the head first gives without
    /// pretraining.
    MoeScratchLpFt,
}

/// Epochs of the LP-FT rows' head fit (on features computed once: about
/// as long as one fine-tuning epoch of the tiny model in all).
pub const LP_FT_HEAD_EPOCHS: usize = 100;

impl Row {
    /// Every row, in report order: Tables 2-3 (with LP-FT beside full
    /// fine-tuning) and the probe, then Table 4.
    /// A study runs them all unless `--rows` picks some.
    pub const ALL: [Row; 14] = [
        Row::MoePretrained,
        Row::MoeScratch,
        Row::MoeLpFt,
        Row::MoeScratchLpFt,
        Row::DensePretrained,
        Row::MoeNoAux,
        Row::MoeHeader,
        Row::MoePayload,
        Row::Appscanner,
        Row::Knn,
        Row::MoeProbe,
        Row::MoeProbeRandom,
        Row::MoeTop1,
        Row::MoeTop4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Row::MoePretrained => "moe-pretrained",
            Row::MoeScratch => "moe-scratch",
            Row::DensePretrained => "dense-pretrained",
            Row::MoeNoAux => "moe-no-aux",
            Row::MoeHeader => "moe-header",
            Row::MoePayload => "moe-payload",
            Row::Appscanner => "appscanner",
            Row::Knn => "knn",
            Row::MoeProbe => "moe-probe",
            Row::MoeProbeRandom => "moe-probe-random",
            Row::MoeTop1 => "moe-top1",
            Row::MoeTop4 => "moe-top4",
            Row::MoeLpFt => "moe-lp-ft",
            Row::MoeScratchLpFt => "moe-scratch-lp-ft",
        }
    }

    /// Whether the head is fitted alone before fine-tuning (LP-FT).
    fn fits_head_first(self) -> bool {
        matches!(self, Row::MoeLpFt | Row::MoeScratchLpFt)
    }

    fn view(self) -> View {
        match self {
            Row::MoeHeader => View::Header,
            Row::MoePayload => View::Payload,
            _ => View::Full,
        }
    }

    fn pretrained(self) -> Option<FfnKind> {
        match self {
            Row::MoePretrained | Row::MoeProbe | Row::MoeLpFt => Some(FfnKind::Moe),
            Row::DensePretrained => Some(FfnKind::Dense),
            _ => None,
        }
    }
}

/// What a study runs.
#[derive(Clone, Debug)]
pub struct StudyOpts {
    pub captures: Vec<PathBuf>,
    pub labels: LabelSource,
    pub out: PathBuf,
    pub rows: Vec<Row>,
    pub seeds: Vec<u64>,
    /// The model (its vocabulary size is the dataset's).
    pub cfg: ModelConfig,
    pub seq_len: usize,
    /// A vocabulary learnt elsewhere (e.g. on an unlabelled corpus), so that
    /// not even the test flows' bytes shape it; None: learnt on the
    /// dataset's flows (labels unused).
    pub vocab_file: Option<PathBuf>,
    pub vocab_size: usize,
    pub split_by: SplitBy,
    pub mask_identifiers: bool,
    pub pretrain_steps: u64,
    pub epochs: usize,
    pub max_per_class: Option<usize>,
    /// Few-shot: also fine-tune the pretrained and the from-scratch
    /// Traffic-MoE on these fractions (< 1) of the training flows.
    pub fractions: Vec<f64>,
    pub lr: f64,
    pub batch: usize,
    pub device: Device,
    pub progress: bool,
    /// Pretraining budgets (steps) for the budget curve ([`budget`]); empty:
    /// none.
    pub budgets: Vec<u64>,
    /// Unlabelled captures added to the budget run's pretraining corpus
    /// (e.g. all other captures at hand), tokenized with the study's vocabulary.
    pub pretrain_extra: Vec<PathBuf>,
    /// Few-shot fractions (< 1) each budget also fine-tunes on, beside all
    /// the training flows.
    pub budget_fractions: Vec<f64>,
}

impl StudyOpts {
    /// The capture paths given, as the report and the errors name them.
    fn captures_shown(&self) -> String {
        let shown: Vec<String> = self
            .captures
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        shown.join(", ")
    }
}

/// One finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub row: Row,
    pub seed: u64,
    /// Share of the training flows fine-tuned on (few-shot runs; 1 otherwise).
    #[serde(default = "one")]
    pub fraction: f64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub test_flows: u64,
    /// Labelled training flows the row learnt from (after the fraction and
    /// the per-class cap); absent in results stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_flows: Option<u64>,
    /// Accuracy per capture (majority vote of its test flows); absent in
    /// results stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_capture: Option<f64>,
    pub seconds: f64,
}

impl RunResult {
    /// A result stored at `path` is the run that path names: a result file
    /// copied or renamed (another row's, seed's or fraction's) was counted
    /// as this run's.
    fn check(&self, path: &Path, row: Row, seed: u64, fraction: f64) -> Result<()> {
        anyhow::ensure!(
            self.row == row && self.seed == seed && (self.fraction - fraction).abs() <= 1e-12,
            "{}: holds the result of {} seed {} fraction {}, not of {} seed {seed} fraction {fraction} \
             (a result file copied or renamed? remove it and this run is made again)",
            path.display(),
            self.row.name(),
            self.seed,
            self.fraction,
            row.name()
        );
        // Scores a run makes: one past [0, 1] (a file edited or damaged)
        // was drawn in the report's bar chart, where a macro-F1 of -1e308
        // overflowed plotters' pixel arithmetic (a panic).
        for (what, v) in [
            ("accuracy", self.accuracy),
            ("macro_precision", self.macro_precision),
            ("macro_recall", self.macro_recall),
            ("macro_f1", self.macro_f1),
            ("per_capture", self.per_capture.unwrap_or(0.0)),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&v),
                "{}: {what} {v:?} is not a score (0 to 1); remove the file and this run is made again",
                path.display()
            );
        }
        Ok(())
    }
}

/// What a call did: runs executed now and runs found done.
#[derive(Clone, Debug, Default)]
pub struct StudySummary {
    pub ran: usize,
    pub skipped: usize,
    pub results: Vec<RunResult>,
    /// The pretraining-budget curve, when asked for.
    pub budget: Option<budget::Budget>,
    pub seconds: f64,
    /// Stopped by [`run_until`]'s flag: `results` are the runs done (now
    /// or before), and no report was written.
    pub interrupted: bool,
}

fn dataset_dir(out: &Path, view: View) -> PathBuf {
    out.join(format!("data-{}", view_name(view)))
}

fn view_name(view: View) -> &'static str {
    match view {
        View::Full => "full",
        View::Header => "header",
        View::Payload => "payload",
    }
}

/// Builds the dataset of `view` unless it is there; refuses one with a
/// single class (every row would score 1.0: nothing to compare). Stopped
/// by `stop`, the build fails with [`crate::stop::Interrupted`] and
/// leaves no `dataset.json` (the next call builds it again).
fn dataset(o: &StudyOpts, view: View, stop: &AtomicBool) -> Result<PathBuf> {
    let dir = dataset_dir(&o.out, view);
    if !dir.join("dataset.json").exists() {
        build(o, view, &dir, stop)?;
    }
    let classes = crate::traffic::dataset::build::load_dataset_info(&dir)?.classes;
    if classes.len() < 2 {
        // Not kept: the same call, once the other classes' captures are
        // there, must build the dataset anew rather than find this one.
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the one-class dataset {}", dir.display()))?;
        anyhow::bail!(
            "{}: the captures give {} class{} ({}): a study compares classifiers, which needs two or more",
            o.captures_shown(),
            classes.len(),
            if classes.len() == 1 { "" } else { "es" },
            classes.join(", ")
        );
    }
    Ok(dir)
}

fn build(o: &StudyOpts, view: View, dir: &Path, stop: &AtomicBool) -> Result<()> {
    let cfg = DatasetConfig {
        inputs: o.captures.clone(),
        labels: o.labels.clone(),
        vocab_file: o.vocab_file.clone(),
        vocab_size: o.vocab_size,
        tokenizer: TokenizerConfig {
            seq_len: o.seq_len,
            view,
            mask_identifiers: o.mask_identifiers,
            ..TokenizerConfig::default()
        },
        split_by: o.split_by,
        ..DatasetConfig::default()
    };
    build_reporting(&cfg, dir, true, stop)
        .with_context(|| format!("building the {} dataset", view_name(view)))?;
    Ok(())
}

/// [`build_dataset_with`], with the captures it skipped reported on stderr as
/// `tokenize` reports them (the read summary, each problem naming its
/// file): a capture that failed was dropped without a word, and a study of
/// nothing but unreadable files said only "0 flows read".
///
/// `dir` is the study's own folder for the dataset, and without its
/// `dataset.json` it is a build that did not finish (a killed call's
/// `vocab.txt` and shards): its files are replaced, as `tokenize --force`
/// replaces them (the call stopped at "exists and is not empty; pass --force",
/// a flag `study` does not have, until the folder was removed by hand).
pub(crate) fn build_reporting(
    cfg: &DatasetConfig,
    dir: &Path,
    progress: bool,
    stop: &AtomicBool,
) -> Result<()> {
    match build_dataset_until(cfg, dir, progress, true, stop) {
        Ok(s) => {
            if s.read.files_failed + s.read.files_warned > 0 {
                eprintln!("{}", s.read);
            }
            Ok(())
        }
        Err(e) => {
            if let Some(nf) = e.downcast_ref::<NoFlows>() {
                eprintln!("{}", nf.read);
            }
            Err(e)
        }
    }
}

/// The pretrained checkpoint of `ffn` on the full view's training flows:
/// made, found whole, or resumed from where an interrupted study left it
/// (stopped by `stop`, it saved its step; the study's settings, checked
/// when it started, are the pretraining's).
fn pretrained(o: &StudyOpts, ffn: FfnKind, seed: u64, stop: &AtomicBool) -> Result<PathBuf> {
    let data = dataset(o, View::Full, stop)?;
    let out = o
        .out
        .join(format!("pretrain-{ffn:?}-s{seed}").to_lowercase());
    let ckpt = out.join("model.safetensors");
    let resume = ckpt.exists();
    if resume && crate::model::checkpoint::read_meta(&ckpt)?.step >= o.pretrain_steps {
        return Ok(ckpt);
    }
    let info = load_dataset_info(&data)?;
    let train = open_part(&data, "train")?;
    let mut cfg = o.cfg.clone().with_ffn(ffn);
    cfg.vocab = info.vocab_size;
    cfg.max_seq = cfg.max_seq.max(o.seq_len);
    let opts = PretrainOpts {
        cfg,
        steps: o.pretrain_steps,
        batch: o.batch,
        seq_len: o.seq_len,
        lr: 3e-4,
        warmup: (o.pretrain_steps / 10).max(1),
        clip: 1.0,
        seed,
        save_every: o.pretrain_steps.max(1),
        out,
        resume,
        progress: o.progress,
        force: !resume,
        stop_after: None,
        device: o.device,
        precision: crate::engine::Precision::F32,
        keep_at: Vec::new(),
    };
    let r = pretrain_until(&opts, &train, info.vocab_hash, stop)?;
    anyhow::ensure!(!r.interrupted, crate::stop::Interrupted);
    Ok(r.checkpoint)
}

fn one() -> f64 {
    1.0
}

fn run_path(out: &Path, row: Row, seed: u64, fraction: f64) -> PathBuf {
    let few = if fraction < 1.0 {
        format!("-f{fraction}")
    } else {
        String::new()
    };
    out.join("runs")
        .join(format!("{}{few}-s{seed}.json", row.name()))
}

/// Where the study keeps a seed's routing counts after `stage`
/// (`pretrained` or `finetuned`).
pub fn routing_dir(out: &Path, seed: u64, stage: &str) -> PathBuf {
    out.join("routing").join(format!("s{seed}")).join(stage)
}

/// The labelled flows of a part, and each one's capture.
fn labelled_with_files(shard: &Shard) -> (Vec<usize>, Vec<u32>) {
    let idx: Vec<usize> = (0..shard.count())
        .filter(|&i| shard.label(i).is_some())
        .collect();
    let files = idx.iter().map(|&i| shard.meta(i).file_id).collect();
    (idx, files)
}

fn run_one(
    o: &StudyOpts,
    row: Row,
    seed: u64,
    fraction: f64,
    stop: &AtomicBool,
) -> Result<RunResult> {
    run_with(o, row, seed, fraction, None, stop)
}

/// A pretrained checkpoint from a pretraining-budget run, instead of the
/// row's own pretraining: (steps, checkpoint).
type BudgetInit<'a> = Option<(u64, &'a Path)>;

fn run_with(
    o: &StudyOpts,
    row: Row,
    seed: u64,
    fraction: f64,
    budget: BudgetInit,
    stop: &AtomicBool,
) -> Result<RunResult> {
    let t = Instant::now();
    let data = dataset(o, row.view(), stop)?;
    let info = load_dataset_info(&data)?;
    let mut cfg = o
        .cfg
        .clone()
        .with_ffn(row.pretrained().unwrap_or(FfnKind::Moe));
    cfg.vocab = info.vocab_size;
    cfg.max_seq = cfg.max_seq.max(o.seq_len);
    let test = open_part(&data, "test")?;
    let (test_idx, files) = labelled_with_files(&test);
    let truth: Vec<u32> = test_idx
        .iter()
        .map(|&i| test.label(i).expect("labelled"))
        .collect();
    // The labelled training flows every row learns from: fine-tuning and
    // the probe draw them alike (crate::train::finetune::training_flows),
    // and the classic rows fit on these.
    let train = open_part(&data, "train")?;
    let train_rows =
        crate::train::finetune::training_flows(&train, fraction, o.max_per_class, seed);
    // Heatmaps: the pretrained MoE's routing on all its flows.
    let heatmaps = row == Row::MoePretrained && fraction >= 1.0 && budget.is_none();
    let pred: Vec<u32> = match row {
        Row::Appscanner | Row::Knn => {
            let method = if row == Row::Knn {
                Method::Knn
            } else {
                Method::Appscanner
            };
            // The flows the models fine-tune on (capped per class), so that
            // every row of the table learns from the same labelled flows.
            let opts = BaselineOpts {
                method,
                seed,
                train_rows: Some(train_rows.clone()),
                ..BaselineOpts::default()
            };
            // The baseline reads the same test part in the same order.
            crate::baseline::run_until(&data, &opts, stop)?.y_pred
        }
        Row::MoeProbe | Row::MoeProbeRandom => {
            let enc = if row == Row::MoeProbe {
                let ckpt = pretrained(o, FfnKind::Moe, seed, stop)?;
                probe::Encoder::open(&ckpt, &cfg, info.vocab_hash, o.device)?
            } else {
                probe::Encoder::random(&cfg, seed, o.device)?
            };
            let val = open_part(&data, "val")?;
            probe::fit_and_score(
                &enc,
                (&train, &val, &test),
                &test_idx,
                info.classes.len(),
                fraction,
                o.max_per_class,
                seed,
                (o.batch, o.seq_len),
                stop,
            )?
            .pred
        }
        _ => {
            let init = match budget {
                Some((_, ckpt)) => Some(ckpt.to_path_buf()),
                None => row
                    .pretrained()
                    .map(|ffn| pretrained(o, ffn, seed, stop))
                    .transpose()?,
            };
            if let (true, Some(ckpt)) = (heatmaps, &init) {
                let enc = probe::Encoder::open(ckpt, &cfg, info.vocab_hash, o.device)?;
                if let Some(mut counts) = enc.routing_counts(info.classes.len()) {
                    let batching = (o.batch, o.seq_len);
                    enc.features(&test, &test_idx, batching, Some(&mut counts), stop)?;
                    write_stage(o, seed, "pretrained", &counts, &info.classes)?;
                }
            }
            match row {
                Row::MoeTop1 => cfg.top_k = 1,
                Row::MoeTop4 => cfg.top_k = 4.min(cfg.n_experts),
                _ => {}
            }
            let name = match budget {
                Some((steps, _)) => format!("budget{steps}"),
                None => row.name().to_string(),
            };
            let run_dir = o.out.join("runs").join(format!("{name}-s{seed}"));
            let opts = FinetuneOpts {
                cfg,
                init,
                classes: info.classes.clone(),
                out: run_dir,
                max_epochs: o.epochs,
                patience: 3,
                batch: o.batch,
                seq_len: o.seq_len,
                lr: o.lr,
                llrd: 0.9,
                aux_weight: if row == Row::MoeNoAux { 0.0 } else { 0.02 },
                train_fraction: fraction,
                max_per_class: o.max_per_class,
                clip: 1.0,
                seed,
                progress: o.progress,
                force: true,
                device: o.device,
                precision: crate::engine::Precision::F32,
                head_epochs: if row.fits_head_first() {
                    LP_FT_HEAD_EPOCHS
                } else {
                    0
                },
                head_lr: crate::train::head_fit::DEFAULT_HEAD_LR,
                tokenizer: Some(info.config.tokenizer.clone()),
            };
            let val = open_part(&data, "val")?;
            let r = finetune_until(&opts, &train, &val, info.vocab_hash, stop)?;
            // The run's result is not stored: the next call fine-tunes it again.
            anyhow::ensure!(r.interrupted_in.is_none(), crate::stop::Interrupted);
            let (model, params, _) = load_classifier(&r.checkpoint)?;
            let loaded = Loaded::new(o.device, params)?;
            let mut counts = heatmaps
                .then(|| RoutingCounts::for_model(&model.cfg, info.classes.len()))
                .flatten();
            let probs = predict_probs_routed(
                &model,
                loaded.weights(),
                &test,
                &test_idx,
                o.batch,
                o.seq_len,
                false,
                counts.as_mut(),
                Some(stop),
            )?;
            if let Some(counts) = &counts {
                write_stage(o, seed, "finetuned", counts, &info.classes)?;
            }
            predicted_classes(&probs, info.classes.len(), &r.checkpoint)?
        }
    };
    anyhow::ensure!(
        pred.len() == truth.len(),
        "{}: {} predictions for {} test flows",
        row.name(),
        pred.len(),
        truth.len()
    );
    let report = EvalReport::from_labels(info.classes.clone(), &truth, &pred)?;
    let m = &report.metrics;
    Ok(RunResult {
        row,
        seed,
        fraction,
        accuracy: m.accuracy,
        macro_precision: m.macro_precision,
        macro_recall: m.macro_recall,
        macro_f1: m.macro_f1,
        test_flows: m.samples,
        train_flows: Some(train_rows.len() as u64),
        per_capture: Some(capture_vote(&files, &truth, &pred).accuracy),
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn write_stage(
    o: &StudyOpts,
    seed: u64,
    stage: &str,
    counts: &RoutingCounts,
    classes: &[String],
) -> Result<()> {
    let dir = routing_dir(&o.out, seed, stage);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_routing(&dir, counts, classes)
}

/// The result stored at `path`, or `compute`d and stored there.
fn cached<T: Serialize + for<'de> Deserialize<'de>>(
    path: &Path,
    s: &mut StudySummary,
    compute: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if let Ok(text) = std::fs::read_to_string(path) {
        s.skipped += 1;
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a study result", path.display()));
    }
    let r = compute()?;
    // Whole or not at all: a result cut short (a killed run, a full disk)
    // stopped every later call at "not a study result" until removed by hand.
    crate::atomic_file::write_whole(path, (serde_json::to_string_pretty(&r)? + "\n").as_bytes())?;
    s.ran += 1;
    Ok(r)
}

/// `v` without repeats, in the order first named.
fn first_of_each<T: PartialEq + Copy>(v: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for &x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Runs every (row, seed) not yet done, then writes the report.
pub fn run(o: &StudyOpts) -> Result<StudySummary> {
    run_until(o, &AtomicBool::new(false))
}

/// [`run`], stopping early once `stop` is set (`tmoe`'s Ctrl-C): before
/// the next run, or inside one (its pretraining saves its step and is
/// resumed by the next call; its dataset build, fine-tuning, baseline or
/// probe is done again: a run's result is stored only once it ends), or
/// in the report's shortcut 1-NN (no report then). Each finished
/// run's result is stored as it ends, so calling again with the same
/// options continues; the summary says it stopped (`interrupted`).
pub fn run_until(o: &StudyOpts, stop: &AtomicBool) -> Result<StudySummary> {
    // A seed, row or fraction named twice runs once: repeated, its stored
    // result was counted again in the mean and ± as if another seed's.
    let o = &StudyOpts {
        seeds: first_of_each(&o.seeds),
        rows: first_of_each(&o.rows),
        fractions: first_of_each(&o.fractions),
        ..o.clone()
    };
    let t = Instant::now();
    std::fs::create_dir_all(o.out.join("runs"))
        .with_context(|| format!("creating {}", o.out.display()))?;
    settings::check_or_record(o)?;
    let mut s = StudySummary::default();
    // (row, fraction) pairs: every row on all flows, then the few-shot runs.
    let mut grid: Vec<(Row, f64)> = o.rows.iter().map(|&r| (r, 1.0)).collect();
    for &f in o.fractions.iter().filter(|&&f| f > 0.0 && f < 1.0) {
        grid.push((Row::MoePretrained, f));
        grid.push((Row::MoeScratch, f));
    }
    let plan: Vec<(Row, f64, u64)> = (o.seeds.iter())
        .flat_map(|&seed| {
            grid.iter()
                .map(move |&(row, fraction)| (row, fraction, seed))
        })
        .collect();
    let mut clock = RunClock::new(plan.iter().map(|&(r, f, _)| (r, f)).collect(), t);
    for (i, &(row, fraction, seed)) in plan.iter().enumerate() {
        let path = run_path(&o.out, row, seed, fraction);
        if stop.load(Ordering::SeqCst) {
            s.interrupted = true;
            break;
        }
        let what = format!("{}, {}, seed {seed}", row.name(), flows(fraction));
        let result = match cached(&path, &mut s, || {
            clock
                .make(i, &what, o.progress, || {
                    run_one(o, row, seed, fraction, stop)
                })
                .with_context(|| format!("{} seed {seed}", row.name()))
        }) {
            Err(e) if e.is::<crate::stop::Interrupted>() => {
                s.interrupted = true;
                break;
            }
            r => r?,
        };
        result.check(&path, row, seed, fraction)?;
        // Stored before the classic rows learnt from the capped flows:
        // it fit on every training flow, unlike the rows beside it.
        anyhow::ensure!(
            !(matches!(row, Row::Appscanner | Row::Knn)
                && o.max_per_class.is_some()
                && result.train_flows.is_none()),
            "{}: a {} result from before the classic rows fit on the capped flows (it fit on every training flow); remove it and this run is made again",
            path.display(),
            row.name()
        );
        s.results.push(result);
    }
    if !s.interrupted && !o.budgets.is_empty() {
        match budget::run(o, &mut s, stop, t) {
            Err(e) if e.is::<crate::stop::Interrupted>() => s.interrupted = true,
            r => s.budget = Some(r.context("the pretraining-budget runs")?),
        }
    }
    s.seconds = t.elapsed().as_secs_f64();
    // A report of the runs done so far would pass for the study's.
    if !s.interrupted {
        match report::write(o, &s, stop) {
            // Its shortcut check's 1-NN was stopped: no report yet.
            Err(e) if e.is::<crate::stop::Interrupted>() => s.interrupted = true,
            r => r?,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::{StudySummary, cached};
    use std::path::Path;

    /// Set in the child that [`a_result_cut_short_by_a_kill_is_not_left`]
    /// starts: the result file it writes.
    const CHILD: &str = "TMOE_STUDY_CACHED_CHILD";

    fn big() -> anyhow::Result<Vec<f64>> {
        Ok(vec![12345.678; 2000])
    }

    /// A call killed while it stored a run's result (here by SIGXFSZ:
    /// `ulimit -f` caps the size of a file it writes, as a full disk would)
    /// left the result cut short under its name, and every later call
    /// stopped at "not a study result" until it was removed by hand.
    #[test]
    fn a_result_cut_short_by_a_kill_is_not_left() {
        if let Some(path) = std::env::var_os(CHILD) {
            let _ = cached(Path::new(&path), &mut StudySummary::default(), big);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moe-pretrained-s1.json");
        let status = crate::testing::rerun_with_file_limit(
            "study::tests::a_result_cut_short_by_a_kill_is_not_left",
            CHILD,
            path.as_os_str(),
        )
        .unwrap();
        assert!(!status.success(), "the child was not stopped: {status:?}");
        assert!(!path.exists(), "a killed call left {}", path.display());
        // The next call makes the run again.
        let mut s = StudySummary::default();
        assert_eq!(cached(&path, &mut s, big).unwrap(), big().unwrap());
        assert_eq!((s.ran, s.skipped), (1, 0));
        assert_eq!(cached(&path, &mut s, big).unwrap(), big().unwrap());
        assert_eq!((s.ran, s.skipped), (1, 1));
    }
}
