//! The pretraining budget ("make pretraining earn its place"): one
//! pretraining run of the Traffic-MoE, on the training split's flows plus
//! any unlabelled captures given (`--pretrain-extra`), keeps its weights at
//! each budget (steps; tokens and wall time recorded). At each budget:
//! - the LM loss on held-out flows (the validation split, never pretrained
//!   on), beside a unigram and a bigram table fitted on the same corpus: a
//!   model below the bigram table has learnt more than byte statistics;
//! - fine-tuning from those weights, on all training flows (capped per class
//!   as the other rows) and on the fractions of `--budget-fractions` (a
//!   quarter by default), for every seed, against
//!   the same model from scratch (the study's `moe-scratch` runs).
//!
//! The budgets are points of one schedule (warmup, then cosine to the
//! largest budget), so a smaller budget's weights were taken at a higher
//! learning rate than a run of that length would end with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Row, RunResult, StudyOpts, StudySummary, cached, dataset, run_path, run_with};
use crate::eval::lm::{CountLm, lm_loss};
use crate::model::batch::{Chain, Sequences, open_part};
use crate::model::checkpoint::{self, Expect};
use crate::model::{FfnKind, Model};
use crate::traffic::dataset::build::{DatasetConfig, load_dataset_info};
use crate::traffic::dataset::labels::LabelSource;
use crate::traffic::tokens::features::View;
use crate::traffic::tokens::tokenize::TokenizerConfig;
use crate::train::pretrain::{PretrainOpts, kept_path, pretrain_until};
use std::sync::atomic::AtomicBool;

/// Shares of the training flows each budget fine-tunes on: all, then the
/// few-shot fractions asked for.
pub fn fractions(o: &StudyOpts) -> Vec<f64> {
    let mut f: Vec<f64> = o
        .budget_fractions
        .iter()
        .copied()
        .filter(|&x| x > 0.0 && x < 1.0)
        .collect();
    f.push(1.0);
    // Largest first, as the report's columns read.
    f.sort_by(|a, b| b.total_cmp(a));
    f.dedup();
    f
}

/// The pretrained model at one budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BudgetPoint {
    pub steps: u64,
    /// Tokens pretrained on, and the run's wall time, up to this budget.
    pub tokens: u64,
    pub seconds: f64,
    /// Mean next-token loss (nats) on the held-out flows.
    pub heldout_loss: f64,
}

/// The count models on the same held-out targets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CountBaseline {
    pub unigram: f64,
    pub bigram: f64,
    /// Next-token targets in the held-out flows, and corpus flows counted.
    pub targets: u64,
    pub corpus_flows: usize,
}

/// The whole curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Budget {
    pub points: Vec<BudgetPoint>,
    pub baseline: CountBaseline,
    /// Fine-tuned from each budget (`row` is moe-pretrained) ...
    pub pretrained: Vec<(u64, RunResult)>,
    /// ... and the same model from scratch at the same fractions.
    pub scratch: Vec<RunResult>,
    pub pretrain_seed: u64,
    pub extra: Vec<PathBuf>,
    /// The shares of the training flows fine-tuned on.
    pub fractions: Vec<f64>,
}

/// The unlabelled extra captures, tokenized with the study's vocabulary.
fn extra_dataset(o: &StudyOpts, vocab: &Path, stop: &AtomicBool) -> Result<Option<PathBuf>> {
    if o.pretrain_extra.is_empty() {
        return Ok(None);
    }
    let dir = o.out.join("data-pretrain-extra");
    if !dir.join("dataset.json").exists() {
        let cfg = DatasetConfig {
            inputs: o.pretrain_extra.clone(),
            labels: LabelSource::None,
            vocab_file: Some(vocab.to_path_buf()),
            tokenizer: TokenizerConfig {
                seq_len: o.seq_len,
                view: View::Full,
                mask_identifiers: o.mask_identifiers,
                ..TokenizerConfig::default()
            },
            ..DatasetConfig::default()
        };
        super::build_reporting(&cfg, &dir, o.progress, stop).with_context(|| {
            format!(
                "tokenizing the extra pretraining captures into {}",
                dir.display()
            )
        })?;
    }
    Ok(Some(dir))
}

/// Where the held-out LM loss of the weights at budget `b` is stored.
fn lm_path(o: &StudyOpts, b: u64) -> PathBuf {
    o.out.join("runs").join(format!("budget-lm-{b}.json"))
}

/// Where a fine-tuning from the weights at budget `b` is stored.
fn budget_run_path(o: &StudyOpts, b: u64, seed: u64, f: f64) -> PathBuf {
    let few = if f < 1.0 {
        format!("-f{f}")
    } else {
        String::new()
    };
    o.out
        .join("runs")
        .join(format!("budget-{b}{few}-s{seed}.json"))
}

/// Runs what is missing of the budget curve.
/// Stopped by `stop` (`run_until`'s), fails with [`crate::stop::Interrupted`]:
/// its pretraining starts again on the next call (the kept weights' costs
/// count from a run's start), finished fine-tunings and held-out losses
/// are kept (one stopped part-way is not stored).
pub fn run(
    o: &StudyOpts,
    s: &mut StudySummary,
    stop: &AtomicBool,
    t: std::time::Instant,
) -> Result<Budget> {
    let mut budgets = o.budgets.clone();
    budgets.sort_unstable();
    budgets.dedup();
    budgets.retain(|&b| b > 0);
    anyhow::ensure!(!budgets.is_empty(), "--budgets needs a step count above 0");
    let max = *budgets.last().expect("non-empty");
    let data = dataset(o, View::Full, stop)?;
    let info = load_dataset_info(&data)?;
    let train = open_part(&data, "train")?;
    let val = open_part(&data, "val")?;
    let extra_dir = extra_dataset(o, &data.join("vocab.txt"), stop)?;
    let extra = extra_dir
        .as_deref()
        .map(|d| open_part(d, "train"))
        .transpose()?;
    let mut parts: Vec<&dyn Sequences> = vec![&train];
    if let Some(e) = &extra {
        parts.push(e);
    }
    let corpus = Chain::new(parts);
    let mut cfg = o.cfg.clone().with_ffn(FfnKind::Moe);
    cfg.vocab = info.vocab_size;
    cfg.max_seq = cfg.max_seq.max(o.seq_len);
    cfg.n_classes = 0;

    // One pretraining run, weights kept at every budget.
    let seed = o.seeds.first().copied().unwrap_or(1);
    let run_dir = o.out.join(format!("pretrain-budget-s{seed}"));
    // The weights at a budget are read only by its results: where those are
    // all stored (a study run again to redraw its report, or the weights
    // removed to save disk), nothing is pretrained again.
    let unscored = |b: u64| {
        !lm_path(o, b).exists()
            || o.seeds.iter().any(|&seed| {
                fractions(o)
                    .into_iter()
                    .any(|f| !budget_run_path(o, b, seed, f).exists())
            })
    };
    if budgets
        .iter()
        .any(|&b| !kept_path(&run_dir, b).exists() && unscored(b))
    {
        if o.progress {
            eprintln!(
                "study: pretraining {max} steps on {} flows for the budget curve",
                corpus.count()
            );
        }
        let opts = PretrainOpts {
            cfg: cfg.clone(),
            steps: max,
            batch: o.batch,
            seq_len: o.seq_len,
            lr: 3e-4,
            warmup: (max / 10).max(1),
            clip: 1.0,
            seed,
            save_every: max,
            out: run_dir.clone(),
            resume: false,
            progress: o.progress,
            force: true,
            stop_after: None,
            device: o.device,
            precision: crate::engine::Precision::F32,
            keep_at: budgets.clone(),
        };
        let r = pretrain_until(&opts, &corpus, info.vocab_hash, stop)?;
        anyhow::ensure!(!r.interrupted, crate::stop::Interrupted);
    }

    // Held-out LM loss per budget, and the count models.
    let held: Vec<usize> = (0..val.count()).collect();
    let mut points = Vec::new();
    for &b in &budgets {
        let path = lm_path(o, b);
        let ckpt = kept_path(&run_dir, b);
        let p = cached(&path, s, || {
            let meta = checkpoint::read_meta(&ckpt)?;
            // Every tensor comes from the file: zeros, not random draws.
            let (model, mut params) = Model::zeroed(cfg.clone())?;
            checkpoint::load_into(
                &ckpt,
                &Expect {
                    vocab_hash: Some(info.vocab_hash),
                    ..Default::default()
                },
                &mut params,
            )?;
            let batching = (o.batch, o.seq_len);
            let (loss, _) = lm_loss(&model, &params, &val, &held, batching, stop)?;
            let num = |k: &str| meta.extra.get(k).and_then(|v| v.parse::<f64>().ok());
            Ok(BudgetPoint {
                steps: b,
                tokens: num("tokens").unwrap_or(0.0) as u64,
                seconds: num("seconds").unwrap_or(0.0),
                heldout_loss: loss,
            })
        })?;
        points.push(p);
    }
    let baseline = cached(&o.out.join("runs").join("budget-countlm.json"), s, || {
        let all: Vec<usize> = (0..corpus.count()).collect();
        let lm = CountLm::fit(&[(&corpus, &all)], o.seq_len, info.vocab_size);
        let (unigram, bigram) = lm.losses(&val, &held, o.seq_len);
        let targets = (0..val.count())
            .map(|i| val.n_tokens(i).min(o.seq_len).saturating_sub(1) as u64)
            .sum();
        Ok(CountBaseline {
            unigram,
            bigram,
            targets,
            corpus_flows: corpus.count(),
        })
    })?;

    // Fine-tuning from each budget (None: from scratch), per seed and
    // fraction.
    let plan: Vec<(Option<u64>, f64, u64)> = (o.seeds.iter())
        .flat_map(|&seed| fractions(o).into_iter().map(move |f| (seed, f)))
        .flat_map(|(seed, f)| {
            let from = std::iter::once(None).chain(budgets.iter().map(|&b| Some(b)));
            from.map(move |b| (b, f, seed))
        })
        .collect();
    let mut clock = super::RunClock::new(plan.iter().map(|&(b, f, _)| (b, f)).collect(), t);
    let mut pretrained = Vec::new();
    let mut scratch = Vec::new();
    for (i, &(b, f, seed)) in plan.iter().enumerate() {
        let flows = super::flows(f);
        let (row, path, what) = match b {
            None => (
                Row::MoeScratch,
                run_path(&o.out, Row::MoeScratch, seed, f),
                format!("moe-scratch (budget curve), {flows}, seed {seed}"),
            ),
            Some(b) => (
                Row::MoePretrained,
                budget_run_path(o, b, seed, f),
                format!("pretrained {b} steps, {flows}, seed {seed}"),
            ),
        };
        let ckpt = b.map(|b| (b, kept_path(&run_dir, b)));
        let init = ckpt.as_ref().map(|(b, p)| (*b, p.as_path()));
        let r = cached(&path, s, || {
            clock.make(i, &what, o.progress, || {
                run_with(o, row, seed, f, init, stop)
            })
        })?;
        r.check(&path, row, seed, f)?;
        match b {
            None => scratch.push(r),
            Some(b) => pretrained.push((b, r)),
        }
    }
    Ok(Budget {
        points,
        baseline,
        pretrained,
        scratch,
        pretrain_seed: seed,
        extra: o.pretrain_extra.clone(),
        fractions: fractions(o),
    })
}
