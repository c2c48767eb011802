//! `tmoe finetune`: classifier fine-tuning with layer-wise lr decay and
//! early stopping on validation macro-F1, then the test-set figures.

use super::pretrain::Ffn;
use crate::cli::args;
use crate::model::batch::open_part;
use crate::model::checkpoint;
use crate::model::checkpoint::load_classifier;
use crate::model::{FfnKind, ModelConfig};
use crate::traffic::dataset::build::load_dataset_info;
use crate::train::finetune::{FinetuneOpts, FinetuneReport, evaluate_until, finetune_until};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("start")
        .required(true)
        .args(["init", "from_scratch"])
))]
pub struct Args {
    /// Labelled dataset directory (train/val/test.tmoe, dataset.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Pretrained checkpoint (its config is used); a run folder stands for
    /// its model.safetensors (pretrain) or classifier.safetensors (finetune).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Train from random weights ("w/o PT").
    #[arg(long)]
    pub from_scratch: bool,
    /// Model size when --from-scratch: tiny, small or base [default: tiny].
    /// With --init the checkpoint's is used, so it is refused there.
    #[arg(long, conflicts_with = "init")]
    pub config: Option<String>,
    /// FFN kind when --from-scratch [default: moe]. With --init the
    /// checkpoint's is used, so it is refused there.
    #[arg(long, value_enum, conflicts_with = "init")]
    pub ffn: Option<Ffn>,
    /// Run directory (classifier.safetensors, finetune_log.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    /// Most epochs (early stopping may end sooner).
    #[arg(long, value_parser = args::count, default_value_t = 40)]
    pub epochs: usize,
    /// Stop after this many epochs without a better validation macro-F1 (at least 1).
    #[arg(long, value_parser = args::count, default_value_t = 5)]
    pub patience: usize,
    /// Flows per step.
    #[arg(long, value_parser = args::batch, default_value_t = 32)]
    pub batch: usize,
    /// Base learning rate lr_0 (top layer and head).
    #[arg(long, value_parser = args::positive, default_value_t = 5e-5)]
    pub lr: f64,
    /// Layer-wise decay xi: lr_l = xi^(L-l)·lr_0.
    #[arg(long, value_parser = args::fraction_f32, default_value_t = 0.9)]
    pub llrd: f32,
    /// Drop the load-balancing loss (lambda = 0).
    #[arg(long)]
    pub no_aux_loss: bool,
    /// Use this fraction of the training flows.
    #[arg(long, value_parser = args::fraction, default_value_t = 1.0)]
    pub train_fraction: f64,
    /// At most this many training flows per class.
    #[arg(long, value_parser = args::count)]
    pub max_per_class: Option<usize>,
    /// Tokens per flow (default: the dataset's).
    #[arg(long, value_parser = args::seq_len)]
    pub seq_len: Option<usize>,
    /// Seed of new weights (the head; all with --from-scratch), the
    /// training subset and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Replace a classifier already in --out.
    #[arg(long)]
    pub force: bool,
    /// Engine: cpu, cuda (a GPU; needs --features cuda) or sim (the GPU
    /// engine's kernels in the simulator: slow, for checking a pipeline).
    #[arg(long, value_enum, default_value_t = crate::engine::Device::Cpu)]
    pub device: crate::engine::Device,
    /// Training precision on the CPU: f32, or bf16 mixed precision (the
    /// linear layers', experts' and LM head's products on bf16 operands
    /// with f32 sums, on AMX tiles where the CPU has them; weights,
    /// gradients and AdamW state f32). The GPU engine (cuda, sim) always
    /// computes in bf16 (bf16 weights, f32 sums): either value is accepted
    /// there and runs it.
    #[arg(long, value_enum, default_value_t = crate::engine::Precision::F32)]
    pub precision: crate::engine::Precision,
    /// LP-FT: first train the classifier head alone for this many epochs
    /// on the initial encoder's mean-pooled features (computed once, so
    /// epochs are cheap), then fine-tune the whole model; 0: no head fit.
    #[arg(long, default_value_t = 0)]
    pub head_epochs: usize,
    /// Peak learning rate of the head fit (--head-epochs).
    #[arg(long, value_parser = args::positive, default_value_t = crate::train::head_fit::DEFAULT_HEAD_LR)]
    pub head_lr: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let names = ["model.safetensors", "classifier.safetensors"];
    let init = a
        .init
        .map(|p| super::checkpoint_in_run("--init", p, &names));
    let a = Args { init, ..a };
    super::refuse_file_as_out_folder(&a.out)?;
    super::advise_cpu_precision(a.device, a.precision);
    let info = load_dataset_info(&a.data)?;
    anyhow::ensure!(
        !info.classes.is_empty(),
        "{}: dataset has no classes (tokenize with --labels)",
        a.data.display()
    );
    let (train, val, test) = (
        open_part(&a.data, "train")?,
        open_part(&a.data, "val")?,
        open_part(&a.data, "test")?,
    );
    // An empty validation part picked "best epoch 1 (val macro-F1 0.0000)"
    // from nothing, and an empty test part was scored "test accuracy
    // 0.0000": refused before any training, as `baseline` refuses one.
    for (name, part) in [("val", &val), ("test", &test)] {
        anyhow::ensure!(
            !part.is_empty(),
            "{}: the {name} part is empty (the best epoch is chosen on val, and test scores it): tokenize \
             more flows per class",
            a.data.display()
        );
    }
    let cfg = match &a.init {
        Some(p) => {
            let meta = checkpoint::read_meta(p)?;
            let hash = meta.vocab_hash;
            let cfg = serde_json::from_value::<ModelConfig>(meta.model_config)
                .map_err(|e| anyhow::anyhow!("{}: model_config: {e}", p.display()))?;
            // The same vocabulary (hash) in another size is damage on one
            // side: the shards' ids past the model's table panicked in the
            // embedding. (Another hash is refused by name later.)
            anyhow::ensure!(
                hash != info.vocab_hash || cfg.vocab == info.vocab_size,
                "{}: a model of {} vocabulary entries, but {} gives the same vocabulary (hash {hash:016x}) {} entries: one of the two is damaged",
                p.display(),
                cfg.vocab,
                a.data.join("dataset.json").display(),
                info.vocab_size
            );
            cfg
        }
        None => {
            let mut c = ModelConfig::named(a.config.as_deref().unwrap_or("tiny"))?
                .with_ffn(FfnKind::from(a.ffn.unwrap_or(Ffn::Moe)));
            c.vocab = info.vocab_size;
            c.max_seq = train.seq_len();
            c
        }
    };
    let seq_len = super::seq_len_within(a.seq_len, train.seq_len());
    let opts = FinetuneOpts {
        aux_weight: if a.no_aux_loss {
            0.0
        } else {
            cfg.aux_weight as f32
        },
        cfg,
        init: a.init,
        classes: info.classes.clone(),
        out: a.out,
        max_epochs: a.epochs,
        patience: a.patience,
        batch: a.batch,
        seq_len,
        lr: a.lr,
        llrd: a.llrd,
        train_fraction: a.train_fraction,
        max_per_class: a.max_per_class,
        clip: 1.0,
        seed: a.seed,
        progress: !a.quiet,
        force: a.force,
        device: a.device,
        precision: a.precision,
        head_epochs: a.head_epochs,
        head_lr: a.head_lr,
        tokenizer: Some(info.config.tokenizer.clone()),
    };
    let r = finetune_until(
        &opts,
        &train,
        &val,
        info.vocab_hash,
        super::interrupt::flag(),
    )?;
    if let Some(epoch) = r.interrupted_in {
        return Err(super::interrupt::Interrupted(interrupted_line(&r, epoch, a.epochs)).into());
    }
    let (model, params, _) = load_classifier(&r.checkpoint)?;
    let loaded = crate::eval::predict::Loaded::new(a.device, params)?;
    let flag = Some(super::interrupt::flag());
    let (acc, f1, _, _) = match evaluate_until(&model, loaded.weights(), &test, 64, seq_len, flag) {
        // The run itself had finished: only its test figures are missing.
        Err(e) if e.is::<crate::stop::Interrupted>() => {
            return Err(super::interrupt::Interrupted(format!(
                "interrupted while scoring the test set: the fine-tuning had finished (best epoch \
                 {}, val macro-F1 {:.4}); its checkpoint {} is final, and `tmoe eval` scores it",
                r.best_epoch,
                r.best_val_macro_f1,
                r.checkpoint.display()
            ))
            .into());
        }
        r => r?,
    };
    // Epoch 0, where LP-FT's head fit is logged, is not a fine-tuning epoch.
    let head_fit = if a.head_epochs > 0 {
        format!(" after a {}-epoch head fit", a.head_epochs)
    } else {
        String::new()
    };
    println!(
        "fine-tuned {}{head_fit} in {:.1} s ({:.0} tokens/s); best epoch {} (val macro-F1 {:.4}); test accuracy {acc:.4}, macro-F1 {f1:.4}; checkpoint {}",
        super::noun(
            r.history.iter().filter(|e| e.epoch > 0).count() as u64,
            "epoch"
        ),
        r.seconds,
        r.tokens_per_s,
        r.best_epoch,
        r.best_val_macro_f1,
        r.checkpoint.display()
    );
    Ok(())
}

/// What an interrupted fine-tuning left: its best finished epoch's
/// checkpoint (still marked unfinished), or nothing when no epoch had
/// finished (a file already there, with --force, is an earlier run's).
fn interrupted_line(r: &FinetuneReport, epoch: usize, epochs: usize) -> String {
    // Epoch 0 is LP-FT's head fit (or its scoring): no epoch had finished.
    let at = if epoch == 0 {
        format!("interrupted in the head fit (--head-epochs), before epoch 1 of {epochs}")
    } else {
        format!("interrupted in epoch {epoch} of {epochs}")
    };
    let ckpt = r.checkpoint.display();
    if !r.history.is_empty() {
        return format!(
            "{at}: the best checkpoint so far (epoch {}, marked unfinished) is in {ckpt}",
            r.best_epoch
        );
    }
    if r.checkpoint.exists() {
        format!(
            "{at}: no epoch had finished, nothing was saved ({ckpt} is an earlier run's, left as it was)"
        )
    } else {
        format!("{at}: no epoch had finished, nothing was saved")
    }
}
