//! A fine-tuned classifier with the tokenizer it was trained with: checks that
//! the two belong together, then classifies flows in batches.

use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::{Device, Precision};
use crate::eval::predict::{Loaded, argmax, finite_rows, predict_probs_on, resolve_seq_len};
use crate::model::Model;
use crate::model::batch::MemSequences;
use crate::model::checkpoint::load_classifier;
use crate::traffic::capture::reader::ReadConfig;
use crate::traffic::dataset::build::load_dataset_info;
use crate::traffic::tokens::tokenize::{FlowTokenizer, TokenizerConfig};
use crate::traffic::types::Flow;

/// Where the vocabulary comes from: the training dataset's folder (which also
/// gives its packet minimum and idle timeout) or a bare `vocab.txt`.
#[derive(Clone, Copy, Debug)]
pub enum VocabSource<'a> {
    Dataset(&'a Path),
    VocabFile(&'a Path),
}

pub struct Classifier {
    pub model: Model,
    /// The weights on the engine that runs them (uploaded once for a GPU).
    pub weights: Loaded,
    pub classes: Vec<String>,
    pub tokenizer: FlowTokenizer,
    /// Tokens per flow fed to the model (the fine-tuning length by default).
    pub seq_len: usize,
    /// The dataset's packet minimum, when the vocabulary came from a dataset.
    pub dataset_min_packets: Option<usize>,
    /// Flow idle timeout in seconds (the dataset's, else 120).
    pub idle_timeout_s: f64,
    /// The checkpoint's path, for errors that name it.
    pub checkpoint: std::path::PathBuf,
    /// Where its fine-tuning run was, if it did not finish
    /// ([`crate::model::checkpoint::unfinished_run`]).
    pub unfinished: Option<String>,
}

impl Classifier {
    /// Loads `checkpoint` and the vocabulary; refuses a checkpoint without a
    /// class list and a vocabulary other than the one it was trained on.
    /// `seq_len` overrides the fine-tuning length recorded in the checkpoint.
    /// `device`: the engine that runs the model (`cuda` without a GPU is an
    /// error).
    pub fn open(
        checkpoint: &Path,
        vocab: VocabSource,
        seq_len: Option<usize>,
        device: Device,
    ) -> Result<Self> {
        Self::open_with_precision(checkpoint, vocab, seq_len, device, Precision::F32)
    }

    /// [`Self::open`] with the CPU engine's precision: `Bf16` packs the
    /// weights as bf16 for the bf16 CPU engine (f32 accumulation; faster
    /// where `vdpbf16ps` runs at full rate, as on AMD Zen 4, not on every CPU
    /// with AVX-512 BF16), `F32` keeps them as trained.
    pub fn open_with_precision(
        checkpoint: &Path,
        vocab: VocabSource,
        seq_len: Option<usize>,
        device: Device,
        precision: Precision,
    ) -> Result<Self> {
        let (model, params, meta) = load_classifier(checkpoint)?;
        anyhow::ensure!(
            !meta.classes.is_empty() && model.cfg.n_classes == meta.classes.len(),
            "{}: not a classifier checkpoint (no class list)",
            checkpoint.display()
        );
        let trained_as = trained_tokenizer(checkpoint, &meta)?;
        let (tokenizer, source, dataset_min_packets, idle_timeout_s) = match vocab {
            VocabSource::Dataset(dir) => {
                let info = load_dataset_info(dir)?;
                let mut tokenizer = FlowTokenizer::from_dataset(dir, &info)?;
                if let Some(t) = &trained_as {
                    same_tokens(t, tokenizer.config(), checkpoint, dir)?;
                    // The flows are cut where the training flows were, not
                    // where this dataset's were (it may have been tokenized
                    // with another --seq-len): new captures are tokenized
                    // afresh, so they can be as long as the model's.
                    if tokenizer.seq_len() != t.seq_len {
                        tokenizer = tokenizer
                            .with_seq_len(t.seq_len)
                            .with_context(|| format!("dataset {}", dir.display()))?;
                    }
                }
                (
                    tokenizer,
                    dir.join("vocab.txt"),
                    Some(info.config.min_packets),
                    info.config.idle_timeout_s,
                )
            }
            // The settings the model was trained with, where recorded.
            VocabSource::VocabFile(v) => (
                match trained_as {
                    Some(t) => {
                        FlowTokenizer::new(crate::traffic::tokens::vocab::Vocab::load(v)?, t)
                            .with_context(|| {
                                format!("{}: its tokenizer settings", checkpoint.display())
                            })?
                    }
                    None => FlowTokenizer::from_vocab_file(v)?,
                },
                v.to_path_buf(),
                None,
                120.0,
            ),
        };
        anyhow::ensure!(
            tokenizer.hash() == meta.vocab_hash,
            "{}: vocabulary hash {:016x} differs from the checkpoint's {:016x} ({}): classify with the vocabulary the model was trained on",
            source.display(),
            tokenizer.hash(),
            meta.vocab_hash,
            checkpoint.display()
        );
        let (seq_len, _) = resolve_seq_len(seq_len, &meta, tokenizer.seq_len());
        let weights = Loaded::with_precision(device, params, precision)
            .with_context(|| format!("loading {} on {}", checkpoint.display(), device.name()))?;
        let unfinished = crate::model::checkpoint::unfinished_run(&meta).map(str::to_string);
        Ok(Classifier {
            unfinished,
            model,
            weights,
            classes: meta.classes,
            tokenizer,
            seq_len,
            dataset_min_packets,
            idle_timeout_s,
            checkpoint: checkpoint.to_path_buf(),
        })
    }

    /// Reader settings that keep what the tokenizer uses, with the dataset's
    /// idle timeout.
    pub fn read_config(&self) -> ReadConfig {
        let tc = self.tokenizer.config();
        ReadConfig {
            max_packets: tc.packets,
            payload_bytes: tc.payload_bytes_read(),
            idle_timeout_ns: (self.idle_timeout_s * 1e9) as u64,
            ..ReadConfig::default()
        }
    }

    /// (class id, probability of that class) per flow, in order.
    pub fn classify(&self, flows: &[Flow], batch: usize) -> Result<Vec<(u32, f32)>> {
        let mut seqs = MemSequences::new(self.seq_len);
        for f in flows {
            seqs.push(&self.tokenizer.encode(f), None);
        }
        self.classify_tokens(&seqs, batch)
    }

    /// [`Self::classify`] with a panic turned into an error: the streams
    /// count a failed batch's flows as dropped (and the background worker
    /// must not leave them in flight), which an unwind would skip.
    pub fn classify_caught(&self, flows: &[Flow], batch: usize) -> Result<Vec<(u32, f32)>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.classify(flows, batch)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the model panicked")))
    }

    /// [`Self::classify`] for flows already tokenized (cut to `self.seq_len`).
    /// Batches are formed by length inside `seqs`, so give it many flows.
    pub fn classify_tokens(&self, seqs: &MemSequences, batch: usize) -> Result<Vec<(u32, f32)>> {
        let idx: Vec<usize> = (0..seqs.lens.len()).collect();
        let probs = predict_probs_on(
            &self.model,
            self.weights.weights(),
            seqs,
            &idx,
            batch,
            self.seq_len,
            false,
        )
        .context("classifying flows")?;
        let rows = finite_rows(
            &probs,
            self.classes.len(),
            &self.checkpoint,
            "no verdicts made",
        )?;
        Ok(rows.map(argmax).collect())
    }
}

/// The tokenizer settings a fine-tuned checkpoint records (absent in
/// checkpoints written before they were recorded).
pub fn trained_tokenizer(
    checkpoint: &Path,
    meta: &crate::model::checkpoint::CheckpointMeta,
) -> Result<Option<TokenizerConfig>> {
    meta.extra
        .get(crate::train::finetune::TOKENIZER_KEY)
        .map(|t| {
            serde_json::from_str(t).with_context(|| {
                format!(
                    "{}: its recorded tokenizer settings do not parse",
                    checkpoint.display()
                )
            })
        })
        .transpose()
}

/// A dataset whose flows are tokenized otherwise than the model's training
/// flows (another view, masking, packets or payload bytes; the length is
/// the checkpoint's anyway) would feed it tokens it never saw: refused.
pub fn same_tokens(
    trained: &TokenizerConfig,
    dataset: &TokenizerConfig,
    checkpoint: &Path,
    dir: &Path,
) -> Result<()> {
    let key = |t: &TokenizerConfig| (t.view, t.mask_identifiers, t.packets, t.payload_bytes);
    anyhow::ensure!(
        key(trained) == key(dataset),
        "{}: tokenizes flows with view {:?}, mask_identifiers {}, {} packets of {} payload bytes, \
         but {} was trained on view {:?}, mask_identifiers {}, {} packets of {} payload bytes: \
         use its own dataset (classify: or --vocab alone, which uses the checkpoint's settings)",
        dir.display(),
        dataset.view,
        dataset.mask_identifiers,
        dataset.packets,
        dataset.payload_bytes,
        checkpoint.display(),
        trained.view,
        trained.mask_identifiers,
        trained.packets,
        trained.payload_bytes
    );
    Ok(())
}
