//! `tmoe eval`'s library side: a fine-tuned classifier checked against a
//! dataset (the same vocabulary and class list), then scored on one split:
//! the report (per flow and per capture) and, when asked, the routing counts
//! of the same pass. The CLI only parses arguments and writes files.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::engine::{Device, Param, Precision};
use crate::eval::captures::capture_vote;
use crate::eval::predict::{Loaded, predict_probs_routed, predicted_classes, resolve_seq_len};
use crate::eval::report::EvalReport;
use crate::eval::routing::RoutingCounts;
use crate::model::Model;
use crate::model::batch::{Sequences, open_part};
use crate::model::checkpoint::{self, CheckpointMeta, Expect, load_classifier};
use crate::traffic::dataset::build::{DatasetInfo, load_dataset_info};
use crate::traffic::dataset::shard::Shard;

/// A classifier whose vocabulary and classes are the dataset's.
pub struct Checked {
    pub model: Model,
    pub params: Vec<Param>,
    pub meta: CheckpointMeta,
    pub info: DatasetInfo,
}

/// Loads `checkpoint` and refuses it unless it was trained on `data`'s
/// vocabulary and class list.
pub fn open_for_dataset(checkpoint: &Path, data: &Path) -> Result<Checked> {
    let info = load_dataset_info(data)?;
    anyhow::ensure!(
        !info.classes.is_empty(),
        "{}: the dataset has no classes (it was tokenized without labels)",
        data.display()
    );
    let (model, params, meta) = load_classifier(checkpoint)?;
    check_fits(checkpoint, &meta, data, &info, Some(&info.classes))?;
    Ok(Checked {
        model,
        params,
        meta,
        info,
    })
}

/// Refuses `checkpoint` (its `meta`) unless it was trained on the
/// vocabulary of the dataset `data` (`info`), tokenized the same way, and
/// with `classes` when given (a pretrained model has none).
pub fn check_fits(
    checkpoint: &Path,
    meta: &CheckpointMeta,
    data: &Path,
    info: &DatasetInfo,
    classes: Option<&[String]>,
) -> Result<()> {
    checkpoint::check_meta(
        checkpoint,
        meta,
        &Expect {
            vocab_hash: Some(info.vocab_hash),
            classes,
            ..Default::default()
        },
    )
    .with_context(|| format!("checkpoint does not fit dataset {}", data.display()))?;
    // The same vocabulary tokenized otherwise (another view, masking) is
    // not the data the model was trained on.
    if let Some(t) = crate::infer::classifier::trained_tokenizer(checkpoint, meta)? {
        crate::infer::classifier::same_tokens(&t, &info.config.tokenizer, checkpoint, data)?;
    }
    Ok(())
}

/// Opens `data/<split>.tmoe`; [`open_part`] checks it against the
/// dataset's `dataset.json` (its vocabulary, and labels within the class
/// list).
pub fn open_split(data: &Path, split: &str) -> Result<Shard> {
    anyhow::ensure!(
        crate::traffic::dataset::split::Part::NAMES.contains(&split),
        "--split must be train, val or test (got `{split}`)"
    );
    open_part(data, split)
}

/// How a split is scored.
#[derive(Clone, Debug)]
pub struct EvalOpts {
    pub split: String,
    pub batch: usize,
    /// None: the fine-tuning length recorded in the checkpoint.
    pub seq_len: Option<usize>,
    pub device: Device,
    pub precision: Precision,
    /// Count the MoE routing in the same pass.
    pub routing: bool,
    pub progress: bool,
}

/// A scored split.
pub struct Evaluation {
    pub report: EvalReport,
    /// None unless asked for, or for a dense model (nothing is routed).
    pub routing: Option<RoutingCounts>,
    pub classes: Vec<String>,
    /// The model's config as the checkpoint records it.
    pub meta: CheckpointMeta,
}

/// Scores `checkpoint` on `data`'s split: accuracy, macro P/R/F1 per flow,
/// per capture (majority vote), and the run's details in `report.info`.
pub fn evaluate_split(checkpoint: &Path, data: &Path, o: &EvalOpts) -> Result<Evaluation> {
    let c = open_for_dataset(checkpoint, data)?;
    let shard = open_split(data, &o.split)?;
    let idx: Vec<usize> = (0..shard.count())
        .filter(|&i| shard.label(i).is_some())
        .collect();
    anyhow::ensure!(
        !idx.is_empty(),
        "{}: the {} split has no labelled flows",
        data.display(),
        o.split
    );
    let (mut seq_len, mut seq_len_from) = resolve_seq_len(o.seq_len, &c.meta, shard.seq_len());
    // The shards hold no more than the dataset's tokens a flow: flows are
    // scored at that length, and the report says so.
    if seq_len > shard.seq_len() {
        eprintln!(
            "warning: {}: its flows are {} tokens (as tokenized), shorter than the {seq_len} of the {seq_len_from}: \
             scoring {}-token flows (tokenize with --seq-len {seq_len} to score the length the model was fine-tuned on)",
            data.display(),
            shard.seq_len(),
            shard.seq_len()
        );
        (seq_len, seq_len_from) = (shard.seq_len(), "data");
    }
    let t0 = Instant::now();
    let loaded = Loaded::with_precision(o.device, c.params, o.precision)?;
    let mut routing = o
        .routing
        .then(|| RoutingCounts::for_model(&c.model.cfg, c.info.classes.len()))
        .flatten();
    let probs = predict_probs_routed(
        &c.model,
        loaded.weights(),
        &shard,
        &idx,
        o.batch,
        seq_len,
        o.progress,
        routing.as_mut(),
        None,
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    let pred = predicted_classes(&probs, c.info.classes.len(), checkpoint)?;
    let truth: Vec<u32> = idx
        .iter()
        .map(|&i| shard.label(i).expect("labelled"))
        .collect();
    let mut report = EvalReport::from_labels(c.info.classes.clone(), &truth, &pred)?;
    let files: Vec<u32> = idx.iter().map(|&i| shard.meta(i).file_id).collect();
    let info = [
        ("per_capture", json!(capture_vote(&files, &truth, &pred))),
        ("checkpoint", json!(checkpoint.display().to_string())),
        ("data", json!(data.display().to_string())),
        ("split", json!(o.split)),
        ("model", c.meta.model_config.clone()),
        ("checkpoint_step", json!(c.meta.step)),
        // Where its fine-tuning run stopped, if it did not finish.
        (
            "checkpoint_unfinished",
            json!(checkpoint::unfinished_run(&c.meta)),
        ),
        ("seq_len", json!(seq_len)),
        ("seq_len_from", json!(seq_len_from)),
        ("seconds", json!(seconds)),
        ("flows_per_s", json!(idx.len() as f64 / seconds.max(1e-9))),
    ];
    for (k, v) in info {
        report.info.insert(k.into(), v);
    }
    Ok(Evaluation {
        report,
        routing,
        classes: c.info.classes,
        meta: c.meta,
    })
}
