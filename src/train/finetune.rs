//! Fine-tuning a classifier: masked mean pooling -> MLP head, CE + lambda·L_aux,
//! layer-wise lr decay (lr_l = xi^(L-l)·lr_0), warmup + cosine over the epoch
//! budget, early stopping on validation macro-F1.

use super::head_fit::{HeadFitOpts, fit_head_until};
use super::optim::Param;
use super::optim::{AdamW, AdamWConfig};
use super::schedule::WarmupCosine;
use super::step::Task;
use super::trainer::Trainer;
use crate::engine::Device;
use crate::eval::confusion::ConfusionMatrix;
use crate::eval::metrics::Metrics;
use crate::eval::predict::{Loaded, Weights, pooled_features, predict_probs_routed};
use crate::model::batch::{Sequences, make_batch};
use crate::model::checkpoint::{self, CheckpointMeta, Expect};
use crate::model::{Model, ModelConfig};
use crate::progress::progress_bar;
use crate::stop::Interrupted;
use crate::train::sampling::{Shuffler, cap_per_class, subsample};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct FinetuneOpts {
    /// Model config; `n_classes` is set from `classes`.
    pub cfg: ModelConfig,
    /// Pretrained checkpoint, or None to train from scratch ("w/o PT").
    pub init: Option<PathBuf>,
    pub classes: Vec<String>,
    pub out: PathBuf,
    pub max_epochs: usize,
    pub patience: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub lr: f64,
    /// Layer-wise decay factor xi.
    pub llrd: f32,
    pub aux_weight: f32,
    pub train_fraction: f64,
    /// At most this many training flows per class (None: all).
    pub max_per_class: Option<usize>,
    pub clip: f64,
    pub seed: u64,
    pub progress: bool,
    /// Replace an existing classifier in `out` (otherwise the run refuses to start).
    pub force: bool,
    /// The engine that trains (`cpu`, or the GPU engine on `cuda` / `sim`).
    pub device: Device,
    /// Training precision on the CPU engine: f32, or bf16 mixed precision
    /// (products on bf16 operands, f32 sums and state: `Products`).
    pub precision: crate::engine::Precision,
    /// Epochs of LP-FT's first stage (`head_fit.rs`): the head trained
    /// alone on the initial encoder's features before fine-tuning; 0: none.
    pub head_epochs: usize,
    /// The head fit's peak learning rate (`head_fit::DEFAULT_HEAD_LR`).
    pub head_lr: f64,
    /// How the training flows were tokenized (the dataset's settings),
    /// recorded in the checkpoint: `classify --vocab` tokenizes new flows
    /// the same way (view, identifier masking, packets, payload bytes).
    pub tokenizer: Option<crate::traffic::tokens::tokenize::TokenizerConfig>,
}

#[derive(Clone, Debug)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f32,
    pub val_macro_f1: f64,
    pub val_accuracy: f64,
}

#[derive(Clone, Debug)]
pub struct FinetuneReport {
    pub checkpoint: PathBuf,
    pub best_epoch: usize,
    pub best_val_macro_f1: f64,
    pub history: Vec<EpochLog>,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// The epoch [`finetune_until`]'s flag stopped (its steps or its
    /// scoring abandoned, unscored; 0: LP-FT's head fit, or its scoring):
    /// the checkpoint, if any, is the best finished epoch's, and stays
    /// marked unfinished.
    pub interrupted_in: Option<usize>,
}

/// Predicted class per sequence (argmax of the head's probabilities; the
/// lower class wins a tie), through the same batched inference as `tmoe eval`.
pub fn predict(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    idx: &[usize],
    batch: usize,
    seq_len: usize,
) -> anyhow::Result<Vec<u32>> {
    predict_until(model, weights, data, idx, (batch, seq_len), None)
}

/// [`predict`], failing with [`Interrupted`] once `stop` is set (polled
/// before each batch).
fn predict_until(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    idx: &[usize],
    (batch, seq_len): (usize, usize),
    stop: Option<&AtomicBool>,
) -> anyhow::Result<Vec<u32>> {
    let c = model.cfg.n_classes;
    let probs = predict_probs_routed(model, weights, data, idx, batch, seq_len, false, None, stop)?;
    Ok(probs
        .chunks_exact(c)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |bi, (i, &v)| if v > row[bi] { i } else { bi }) as u32
        })
        .collect())
}

/// (accuracy, macro-F1), with the averaging rules of `eval::metrics`
/// (classes present in truth or prediction).
pub fn accuracy_macro_f1(
    pred: &[u32],
    truth: &[u32],
    n_classes: usize,
) -> anyhow::Result<(f64, f64)> {
    let cm = ConfusionMatrix::from_labels(n_classes, truth, pred)?;
    let m = Metrics::from_confusion(&cm);
    Ok((m.accuracy, m.macro_f1))
}

fn labelled(data: &dyn Sequences, idx: Vec<usize>) -> Vec<usize> {
    idx.into_iter()
        .filter(|&i| data.label(i).is_some())
        .collect()
}

/// The labelled training flows a run fine-tunes on: a `fraction` of them
/// (every class kept), then at most `max_per_class` per class, both drawn
/// with `seed`. The study's linear probe fits on the same flows.
pub fn training_flows(
    train: &dyn Sequences,
    fraction: f64,
    max_per_class: Option<usize>,
    seed: u64,
) -> Vec<usize> {
    let idx = labelled(train, subsample(train, fraction, seed));
    match max_per_class {
        Some(cap) => cap_per_class(train, idx, cap, seed),
        None => idx,
    }
}

/// Evaluate on all labelled sequences of `data`: (accuracy, macro-F1, predictions, truth).
pub fn evaluate(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    batch: usize,
    seq_len: usize,
) -> anyhow::Result<(f64, f64, Vec<u32>, Vec<u32>)> {
    evaluate_until(model, weights, data, batch, seq_len, None)
}

/// [`evaluate`], failing with [`Interrupted`] once `stop` is set (polled
/// before each batch: scoring a large validation set takes a while).
pub fn evaluate_until(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    batch: usize,
    seq_len: usize,
    stop: Option<&AtomicBool>,
) -> anyhow::Result<(f64, f64, Vec<u32>, Vec<u32>)> {
    let idx = labelled(data, (0..data.count()).collect());
    let pred = predict_until(model, weights, data, &idx, (batch, seq_len), stop)?;
    let truth: Vec<u32> = idx
        .iter()
        .map(|&i| data.label(i).expect("labelled"))
        .collect();
    let (a, f) = accuracy_macro_f1(&pred, &truth, model.cfg.n_classes)?;
    Ok((a, f, pred, truth))
}

/// The checkpoint metadata key of [`FinetuneOpts::tokenizer`].
pub const TOKENIZER_KEY: &str = "tokenizer";

pub fn model_path(out: &Path) -> PathBuf {
    out.join("classifier.safetensors")
}

/// The fine-tuning steps across epochs: which flows come next, the
/// schedule, and the counts the report and checkpoints give.
struct Steps {
    order: Shuffler,
    sched: WarmupCosine,
    per_epoch: u64,
    step: u64,
    tokens: usize,
    t0: Instant,
}

impl Steps {
    /// One epoch's steps; their mean training loss, or None once `stop`
    /// is set (polled before each step: the epoch is abandoned there).
    fn epoch(
        &mut self,
        tr: &mut Trainer,
        model: &Model,
        train: &dyn Sequences,
        opts: &FinetuneOpts,
        epoch: usize,
        stop: &AtomicBool,
    ) -> anyhow::Result<Option<f32>> {
        let pb = progress_bar(
            self.per_epoch,
            &format!("finetune epoch {epoch}"),
            opts.progress,
        );
        let mut loss_sum = 0.0;
        for _ in 0..self.per_epoch {
            if stop.load(Ordering::SeqCst) {
                pb.finish_and_clear();
                return Ok(None);
            }
            let batch = make_batch(train, &self.order.next_in_pass(opts.batch), opts.seq_len);
            let lr = self.sched.lr_at(self.step) as f32;
            let st = tr.step(
                model,
                &batch,
                Task::Classify,
                opts.aux_weight,
                lr,
                opts.clip,
            )?;
            self.step += 1;
            self.tokens += batch.n_tokens;
            loss_sum += st.loss;
            pb.set_message(format!(
                "loss {:.3} {:.0} tok/s",
                st.loss,
                self.tokens as f64 / self.t0.elapsed().as_secs_f64()
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
        Ok(Some(loss_sum / self.per_epoch as f32))
    }
}

/// LP-FT's first stage: the initial encoder's (pretrained, or the init's)
/// features of the training flows, computed once on `opts.device`, then
/// the head fitted on them alone. Returns each epoch's loss (for
/// `head_fit_log.jsonl`, written once epoch 0 is scored). Both parts poll
/// `stop` (per batch, per step) and fail with [`Interrupted`], nothing
/// written.
fn fit_head_first(
    opts: &FinetuneOpts,
    model: &Model,
    params: &mut [Param],
    train: &dyn Sequences,
    train_idx: &[usize],
    stop: &AtomicBool,
) -> anyhow::Result<Vec<f32>> {
    let t0 = Instant::now();
    let features = {
        let loaded = Loaded::new(opts.device, params.to_vec())?;
        pooled_features(
            model,
            loaded.weights(),
            train,
            train_idx,
            opts.batch.max(32),
            opts.seq_len,
            opts.progress,
            None,
            Some(stop),
        )?
    };
    let labels: Vec<u32> = train_idx
        .iter()
        .map(|&i| train.label(i).expect("training flows are labelled"))
        .collect();
    let fit = HeadFitOpts {
        epochs: opts.head_epochs,
        batch: opts.batch,
        lr: opts.head_lr,
        seed: opts.seed,
    };
    let losses = fit_head_until(model, params, &features, &labels, &fit, stop)?;
    if opts.progress {
        eprintln!(
            "head fitted first (LP-FT): {} epochs on {} flows' features, loss {:.4} -> {:.4} ({:.1} s)",
            losses.len(),
            labels.len(),
            losses[0],
            losses[losses.len() - 1],
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(losses)
}

pub fn finetune(
    opts: &FinetuneOpts,
    train: &dyn Sequences,
    val: &dyn Sequences,
    vocab_hash: u64,
) -> anyhow::Result<FinetuneReport> {
    finetune_until(opts, train, val, vocab_hash, &AtomicBool::new(false))
}

/// [`finetune`], stopping early once `stop` is set (`tmoe`'s Ctrl-C):
/// before the next training step or scoring batch, the epoch under way
/// abandoned unscored; in LP-FT's head fit (its features or its steps),
/// with nothing saved (`interrupted_in` 0). The best finished epoch's
/// checkpoint, if one was saved, is left as it is, marked unfinished
/// (which it is); the report says where it stopped (`interrupted_in`).
/// There is no resuming a fine-tuning run.
pub fn finetune_until(
    opts: &FinetuneOpts,
    train: &dyn Sequences,
    val: &dyn Sequences,
    vocab_hash: u64,
    stop: &AtomicBool,
) -> anyhow::Result<FinetuneReport> {
    let started = Instant::now();
    let mut cfg = opts.cfg.clone();
    cfg.n_classes = opts.classes.len();
    anyhow::ensure!(
        cfg.n_classes >= 2,
        "fine-tuning needs at least 2 classes, got {}",
        cfg.n_classes
    );
    let ckpt = model_path(&opts.out);
    // The checkpoint, and the logs a run writes beside it (without the
    // checkpoint, from a run stopped before its first save or the user's
    // files of these names, they were replaced without --force).
    for own in [
        ckpt.clone(),
        opts.out.join("finetune_log.jsonl"),
        opts.out.join("head_fit_log.jsonl"),
    ] {
        anyhow::ensure!(
            opts.force || own.symlink_metadata().is_err(),
            "{} already exists: choose another --out or pass --force to replace it",
            own.display()
        );
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let _fresh = super::FreshLogs::new(
        !ckpt.exists(),
        &ckpt,
        &[
            opts.out.join("finetune_log.jsonl"),
            opts.out.join("head_fit_log.jsonl"),
        ],
    );
    // The pretrained backbone, without its (absent) classifier head.
    let backbone = Expect {
        vocab_hash: Some(vocab_hash),
        allow_missing_prefixes: &["head."],
        ..Default::default()
    };
    if let Some(init) = &opts.init {
        let context = || format!("loading pretrained weights from {}", init.display());
        // The vocabulary first: a checkpoint of another dataset would
        // otherwise be refused for a shape that follows from it.
        let meta = checkpoint::read_meta(init).with_context(context)?;
        checkpoint::check_meta(init, &meta, &backbone).with_context(context)?;
        anyhow::ensure!(
            meta.classes.is_empty() || meta.classes == opts.classes,
            "{}: a classifier of other classes than the dataset's (it has {}, the dataset {}): --init takes a pretrained model (model.safetensors from `tmoe pretrain`), or a classifier of the same classes",
            init.display(),
            meta.classes.len(),
            opts.classes.len()
        );
        // Before allocating: the config may come from the file's metadata.
        checkpoint::check_layout(init, &cfg, &backbone).with_context(context)?;
    }
    let (model, mut params) = Model::new(cfg.clone(), opts.seed)?;
    if let Some(init) = &opts.init {
        checkpoint::load_into(init, &backbone, &mut params)
            .with_context(|| format!("loading pretrained weights from {}", init.display()))?;
        checkpoint::ensure_finite_weights(init, &params)?;
    }
    let train_idx = training_flows(train, opts.train_fraction, opts.max_per_class, opts.seed);
    anyhow::ensure!(!train_idx.is_empty(), "no labelled training flows");
    // LP-FT: the fitted head is "epoch 0", a candidate like any epoch.
    let head_losses = match opts.head_epochs {
        0 => None,
        _ => match fit_head_first(opts, &model, &mut params, train, &train_idx, stop) {
            // Nothing written yet: no epoch, no log.
            Err(e) if e.is::<Interrupted>() => {
                return Ok(FinetuneReport {
                    checkpoint: ckpt,
                    best_epoch: 0,
                    best_val_macro_f1: -1.0,
                    history: Vec::new(),
                    tokens_per_s: 0.0,
                    seconds: started.elapsed().as_secs_f64(),
                    interrupted_in: Some(0),
                });
            }
            r => Some(r?),
        },
    };
    let head_loss = head_losses.as_deref().and_then(|l| l.last().copied());
    let steps_per_epoch = train_idx.len().div_ceil(opts.batch) as u64;
    let total = steps_per_epoch * opts.max_epochs as u64;
    let sched = WarmupCosine {
        base_lr: opts.lr,
        warmup_steps: (total / 20).max(1),
        total_steps: total,
        min_lr_ratio: 0.1,
    };
    let opt =
        AdamW::new(AdamWConfig::default(), &params).with_layerwise_decay(cfg.layers, opts.llrd);
    let mut tr = Trainer::new(opts.device, opts.precision, params, opt)?;
    let mut steps = Steps {
        order: Shuffler::new(train_idx.clone(), opts.seed),
        sched,
        per_epoch: steps_per_epoch,
        step: 0,
        tokens: 0,
        t0: Instant::now(),
    };
    let log_path = opts.out.join("finetune_log.jsonl");
    // Emptied first: with --force, an earlier run's epochs must not stand
    // beside this run's until its first epoch ends.
    super::epoch_log::write_epochs(&log_path, &[])?;
    let (mut best_f1, mut best_epoch, mut bad, mut saved) = (-1.0, 0, 0, false);
    let mut history = Vec::new();
    let mut interrupted_in = None;
    for epoch in (if head_loss.is_some() { 0 } else { 1 })..=opts.max_epochs {
        // Epoch 0 is the head fit's (LP-FT): its last loss stands for the
        // epoch's training loss.
        let train_loss = match (epoch, head_loss) {
            (0, Some(loss)) => loss,
            _ => match steps.epoch(&mut tr, &model, train, opts, epoch, stop)? {
                Some(loss) => loss,
                None => {
                    interrupted_in = Some(epoch);
                    break;
                }
            },
        };
        let scored = evaluate_until(
            &model,
            tr.weights(),
            val,
            opts.batch.max(32),
            opts.seq_len,
            Some(stop),
        );
        let (acc, f1, _, _) = match scored {
            // Trained, not scored: no candidate, as if stopped in its steps.
            Err(e) if e.is::<Interrupted>() => {
                interrupted_in = Some(epoch);
                break;
            }
            r => r?,
        };
        if opts.progress {
            eprintln!(
                "epoch {epoch}: train loss {train_loss:.4}, val accuracy {acc:.4}, val macro-F1 {f1:.4}"
            );
        }
        history.push(EpochLog {
            epoch,
            train_loss,
            val_macro_f1: f1,
            val_accuracy: acc,
        });
        super::epoch_log::write_epochs(&log_path, &history)?;
        if let (0, Some(losses)) = (epoch, &head_losses) {
            super::epoch_log::write_head_fit(&opts.out.join("head_fit_log.jsonl"), losses)?;
        }
        if f1 > best_f1 {
            (best_f1, best_epoch, bad) = (f1, epoch, 0);
            let mut m = CheckpointMeta::new(
                serde_json::to_value(&cfg)?,
                vocab_hash,
                opts.classes.clone(),
                steps.step,
            );
            m.extra.insert("kind".into(), "finetune".into());
            m.extra.insert("val_macro_f1".into(), format!("{f1}"));
            // Until the run ends (removed below): eval and classify say so.
            m.extra.insert(
                checkpoint::UNFINISHED_KEY.into(),
                format!("epoch {epoch} of {}", opts.max_epochs),
            );
            // eval/classify tokenise new flows to the length the classifier learnt.
            m.extra.insert("seq_len".into(), opts.seq_len.to_string());
            if let Some(t) = &opts.tokenizer {
                m.extra
                    .insert(TOKENIZER_KEY.into(), serde_json::to_string(t)?);
            }
            // Replaces this run's earlier best; a previous run's file was refused above.
            checkpoint::save(&ckpt, &m, &tr.params()?, true)?;
            saved = true;
        } else {
            bad += 1;
            if bad >= opts.patience {
                break;
            }
        }
    }
    // Every epoch ran, or early stopping ended the run: its best is final.
    if saved && interrupted_in.is_none() {
        checkpoint::mark_finished(&ckpt)?;
    }
    let (tokens, seconds) = (steps.tokens, steps.t0.elapsed().as_secs_f64());
    Ok(FinetuneReport {
        checkpoint: ckpt,
        best_epoch,
        best_val_macro_f1: best_f1,
        history,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        seconds,
        interrupted_in,
    })
}
