//! Next-token pretraining: LM loss + lambda·L_aux, AdamW, warmup + cosine,
//! global-norm clipping, periodic checkpoints and `--resume`.

use super::optim::{AdamW, AdamWConfig};
use super::optim_state;
use super::schedule::WarmupCosine;
use super::step::Task;
use super::trainer::Trainer;
use crate::engine::Device;
use crate::model::batch::{Sequences, make_batch};
use crate::model::checkpoint::{self, CheckpointMeta, Expect};
use crate::model::{Model, ModelConfig};
use crate::progress::progress_bar;
use crate::train::sampling::Shuffler;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct PretrainOpts {
    pub cfg: ModelConfig,
    pub steps: u64,
    pub batch: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup: u64,
    pub clip: f64,
    pub seed: u64,
    pub save_every: u64,
    pub out: PathBuf,
    pub resume: bool,
    pub progress: bool,
    /// Start afresh over an existing run in `out` (otherwise the run refuses to start).
    pub force: bool,
    /// Stop after this many steps, with a checkpoint there, as a run
    /// interrupted right after a checkpoint would; `resume` with the same
    /// `steps` continues it (same schedule, data order and optimizer state).
    pub stop_after: Option<u64>,
    /// The engine that trains (`cpu`, or the GPU engine on `cuda` / `sim`).
    pub device: Device,
    /// Training precision on the CPU engine: f32, or bf16 mixed precision
    /// (products on bf16 operands, f32 sums and state: `Products`).
    pub precision: crate::engine::Precision,
    /// Also keep the weights at these steps, as `model-step<N>.safetensors`
    /// (a pretraining-budget curve from one run).
    pub keep_at: Vec<u64>,
}

/// Where [`PretrainOpts::keep_at`] keeps the weights of `step`.
pub fn kept_path(out: &Path, step: u64) -> PathBuf {
    out.join(format!("model-step{step}.safetensors"))
}

#[derive(Clone, Debug)]
pub struct PretrainReport {
    pub checkpoint: PathBuf,
    /// The step the run started at: 0, or the resumed checkpoint's.
    pub start_step: u64,
    /// (step, LM loss, aux loss) per step.
    pub history: Vec<(u64, f32, f32)>,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// Stopped by [`pretrain_until`]'s flag before its end: the checkpoint
    /// is of the last step in `history` (as `stop_after` there would leave).
    pub interrupted: bool,
}

pub fn model_path(out: &Path) -> PathBuf {
    out.join("model.safetensors")
}

fn meta(opts: &PretrainOpts, vocab_hash: u64, step: u64) -> CheckpointMeta {
    let mut m = CheckpointMeta::new(
        serde_json::to_value(&opts.cfg).expect("config serialises"),
        vocab_hash,
        Vec::new(),
        step,
    );
    m.extra.insert("kind".into(), "pretrain".into());
    for (flag, value) in run_settings(opts) {
        m.extra.insert(format!("pretrain{flag}"), value);
    }
    m
}

/// The settings a resumed run must share with the run it continues (the
/// batches it replays, its schedule's shape, its initial weights), by the
/// flag that sets them. `--steps` may grow (a larger one continues the
/// run), and the engine may change.
fn run_settings(opts: &PretrainOpts) -> [(&'static str, String); 6] {
    [
        ("--batch", opts.batch.to_string()),
        ("--seq-len", opts.seq_len.to_string()),
        ("--lr", opts.lr.to_string()),
        ("--warmup", opts.warmup.to_string()),
        ("--clip", opts.clip.to_string()),
        ("--seed", opts.seed.to_string()),
    ]
}

/// Refuses to resume a checkpoint written with other settings than `opts`,
/// naming each (a checkpoint that did not record them is taken as it is).
fn check_resume_settings(
    ckpt: &Path,
    m: &CheckpointMeta,
    opts: &PretrainOpts,
) -> anyhow::Result<()> {
    let differ: Vec<String> = run_settings(opts)
        .into_iter()
        .filter_map(|(flag, now)| {
            let then = m.extra.get(&format!("pretrain{flag}"))?;
            (*then != now).then(|| format!("{flag} {then} then, {now} now"))
        })
        .collect();
    anyhow::ensure!(
        differ.is_empty(),
        "{}: the run was started with other settings ({}): resume with the same ones, or pass --force to start afresh",
        ckpt.display(),
        differ.join("; ")
    );
    Ok(())
}

pub fn pretrain(
    opts: &PretrainOpts,
    train: &dyn Sequences,
    vocab_hash: u64,
) -> anyhow::Result<PretrainReport> {
    pretrain_until(opts, train, vocab_hash, &AtomicBool::new(false))
}

/// [`pretrain`], stopping early once `stop` is set (`tmoe`'s Ctrl-C): at
/// the end of the step under way, with the checkpoint and optimizer state
/// of that step, as `stop_after` that step would; `resume` with the same
/// `steps` continues it exactly. The report says so (`interrupted`).
pub fn pretrain_until(
    opts: &PretrainOpts,
    train: &dyn Sequences,
    vocab_hash: u64,
    stop: &AtomicBool,
) -> anyhow::Result<PretrainReport> {
    anyhow::ensure!(train.count() > 0, "pretraining data is empty");
    let ckpt = model_path(&opts.out);
    if opts.resume && !ckpt.exists() {
        let hint = if super::finetune::model_path(&opts.out).exists() {
            " (it holds classifier.safetensors: a fine-tuning run, which pretraining does not continue)"
        } else {
            ""
        };
        anyhow::bail!(
            "{}: no model.safetensors to resume{hint}; give --out the folder of an earlier pretraining run, or leave out --resume to start one",
            opts.out.display()
        );
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    // A resumed run takes every tensor from its checkpoint: zeros, not
    // random draws (6.8 s at base).
    let (model, mut params) = if opts.resume {
        Model::zeroed(opts.cfg.clone())?
    } else {
        Model::new(opts.cfg.clone(), opts.seed)?
    };
    let mut opt = AdamW::new(AdamWConfig::default(), &params);
    let mut start = 0;
    let end = opts.stop_after.map_or(opts.steps, |s| s.min(opts.steps));
    if opts.resume {
        let cfg_json = serde_json::to_value(&opts.cfg)?;
        let m = checkpoint::load_into(
            &ckpt,
            &Expect {
                model_config: Some(&cfg_json),
                vocab_hash: Some(vocab_hash),
                ..Default::default()
            },
            &mut params,
        )
        .with_context(|| format!("resuming from {}", ckpt.display()))?;
        checkpoint::ensure_finite_weights(&ckpt, &params)?;
        check_resume_settings(&ckpt, &m, opts)?;
        // The data order is replayed step by step up to it: a damaged step
        // would replay for ever.
        anyhow::ensure!(
            m.step <= opts.steps,
            "{}: saved at step {}, past this run's {} steps: nothing to resume (a larger --steps continues it)",
            ckpt.display(),
            m.step,
            opts.steps
        );
        let optim_path = optim_state::optimizer_path(&ckpt);
        opt = optim_state::load_optimizer(&optim_path, &params)?;
        // The weights are placed before the optimizer state: a run killed
        // between the two renames leaves moments of an earlier step beside them.
        anyhow::ensure!(
            u64::from(opt.step) == m.step,
            "{}: optimizer state of step {}, beside weights of step {} ({}): they are not one run's state; pass --force to start afresh",
            optim_path.display(),
            opt.step,
            m.step,
            ckpt.display()
        );
        start = m.step;
        if start >= end {
            // A complete run (or --stop-after at or before its step): nothing
            // to train, and the checkpoint stays as it is.
            return Ok(PretrainReport {
                checkpoint: ckpt,
                start_step: start,
                history: Vec::new(),
                tokens_per_s: 0.0,
                seconds: 0.0,
                interrupted: false,
            });
        }
        eprintln!("resumed {} at step {start}", ckpt.display());
    } else {
        anyhow::ensure!(
            opts.force || !ckpt.exists(),
            "{} already exists: pass --resume to continue it, --force to replace it, or choose another --out",
            ckpt.display()
        );
        // The run's other files without its checkpoint (a run stopped
        // before its first save, or the user's files of these names) were
        // replaced without --force.
        for other in [
            optim_state::optimizer_path(&ckpt),
            opts.out.join("pretrain_log.jsonl"),
        ] {
            anyhow::ensure!(
                opts.force || other.symlink_metadata().is_err(),
                "{} already exists (without {}): pass --force to replace it, or choose another --out",
                other.display(),
                ckpt.display()
            );
        }
    }
    // After the refusals above: a run that is refused never trains, so its
    // schedule is not worth a warning.
    if opts.warmup >= opts.steps {
        // The whole run would be warmup: no peak, no cosine decay.
        eprintln!(
            "warning: --warmup {} is not below --steps {}: the whole run is warmup (the rate climbs to {:.1} % of --lr {} and never decays); a --warmup of about a tenth of --steps ({}) gives warmup then cosine",
            opts.warmup,
            opts.steps,
            100.0 * opts.steps as f64 / opts.warmup.max(1) as f64,
            opts.lr,
            (opts.steps / 10).max(1)
        );
    }
    let sched = WarmupCosine {
        base_lr: opts.lr,
        warmup_steps: opts.warmup,
        total_steps: opts.steps,
        min_lr_ratio: 0.1,
    };
    let mut order = Shuffler::new((0..train.count()).collect(), opts.seed);
    // Replay the data order so a resumed run sees the batches it would have seen.
    for _ in 0..start {
        order.next_batch(opts.batch);
    }
    // A resumed run appends to its log; a fresh (or forced) one starts it anew.
    // Steps an interrupted run logged after its last checkpoint are dropped:
    // the resumed run computes them again.
    let log_path = opts.out.join("pretrain_log.jsonl");
    // Errors name the log: "No space left on device" alone names nothing.
    let written = || format!("writing {}", log_path.display());
    if opts.resume {
        trim_log(&log_path, start)?;
    }
    let _fresh = super::FreshLogs::new(
        !opts.resume && !ckpt.exists(),
        &ckpt,
        std::slice::from_ref(&log_path),
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(opts.resume)
        .truncate(!opts.resume)
        .open(&log_path)
        .with_context(written)?;
    let pb = progress_bar(opts.steps, "pretrain", opts.progress);
    pb.set_position(start);
    let t0 = Instant::now();
    let mut tokens = 0usize;
    let mut history = Vec::new();
    let mut tr = Trainer::new(opts.device, opts.precision, params, opt)?;
    let save = |tr: &Trainer, step: u64| -> anyhow::Result<()> {
        let (params, opt) = (tr.params()?, tr.optimizer()?);
        // Both written whole before either is placed: a full disk or an
        // error while writing the optimizer state (twice the weights' size)
        // left the new weights beside the old moments, a pair the resume
        // refuses, and the run could only start afresh. Now only a kill
        // between the two renames can part them.
        let weights = checkpoint::stage(&ckpt, &meta(opts, vocab_hash, step), &params, true)?;
        let moments =
            optim_state::stage_optimizer(&optim_state::optimizer_path(&ckpt), &opt, &params, true)?;
        weights.place(true)?;
        moments.place(true)?;
        Ok(())
    };
    let mut end = end;
    for step in start..end {
        let batch = make_batch(train, &order.next_batch(opts.batch), opts.seq_len);
        let lr = sched.lr_at(step) as f32;
        let st = tr.step(
            &model,
            &batch,
            Task::Lm,
            opts.cfg.aux_weight as f32,
            lr,
            opts.clip,
        )?;
        tokens += batch.n_tokens;
        let tps = tokens as f64 / t0.elapsed().as_secs_f64();
        history.push((step + 1, st.loss, st.aux));
        // Appended, not rewritten whole as the fine-tuning log is: a line
        // a step, and a long run's log is megabytes. Made whole first and
        // written in one call (writeln! on a file makes a call per piece),
        // so a kill leaves a cut line only at a full disk or mid-call; the
        // resume's trim_log drops such a line, nothing else reads the log.
        let line = format!(
            "{{\"step\":{},\"loss\":{},\"aux\":{},\"lr\":{},\"grad_norm\":{},\"tokens_per_s\":{:.0}}}\n",
            step + 1,
            st.loss,
            st.aux,
            lr,
            st.grad_norm,
            tps
        );
        log.write_all(line.as_bytes()).with_context(written)?;
        pb.set_message(format!(
            "loss {:.3} aux {:.3} {:.0} tok/s",
            st.loss, st.aux, tps
        ));
        pb.inc(1);
        if opts.save_every > 0 && (step + 1) % opts.save_every == 0 && step + 1 < opts.steps {
            save(&tr, step + 1)?;
        }
        if opts.keep_at.contains(&(step + 1)) {
            let mut m = meta(opts, vocab_hash, step + 1);
            // This run's cost so far (a resumed run counts from its resume).
            m.extra.insert("tokens".into(), tokens.to_string());
            m.extra
                .insert("seconds".into(), format!("{}", t0.elapsed().as_secs_f64()));
            checkpoint::save(&kept_path(&opts.out, step + 1), &m, &tr.params()?, true)?;
        }
        // Polled once a step is whole (logged, kept): the run ends here as
        // `stop_after` this step would, saved below.
        if step + 1 < end && stop.load(Ordering::SeqCst) {
            end = step + 1;
            break;
        }
    }
    let interrupted = end < opts.stop_after.map_or(opts.steps, |s| s.min(opts.steps));
    // Cleared, not left drawn: the caller's line of where it stopped follows.
    if interrupted {
        pb.finish_and_clear();
    } else {
        pb.finish();
    }
    save(&tr, end.max(start))?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(PretrainReport {
        checkpoint: ckpt,
        start_step: start,
        history,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        seconds,
        interrupted,
    })
}

/// Keeps the lines of a pretraining log up to `step` (the resumed checkpoint).
fn trim_log(path: &Path, step: u64) -> anyhow::Result<()> {
    // A damaged (non-UTF-8) log keeps its readable lines up to `step`: it
    // was skipped whole, so the lines of later steps stayed in it.
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let kept: String = String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    // Whole or not at all: rewritten in place, a kill or a full disk here
    // cut the log of every step before the checkpoint.
    crate::atomic_file::write_whole(path, kept.as_bytes())
        .with_context(|| format!("rewriting {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::trim_log;

    /// Set in the child that [`a_killed_trim_keeps_the_log`] starts: the
    /// log it trims.
    const CHILD: &str = "TMOE_TRIM_LOG_CHILD";

    /// A resume killed while it trimmed the log (here by SIGXFSZ: `ulimit
    /// -f` caps the size of a file it writes, as a full disk would) left
    /// the log cut short: the lines of the steps before the checkpoint,
    /// which the resumed run does not write again, were lost.
    #[test]
    fn a_killed_trim_keeps_the_log() {
        if let Some(path) = std::env::var_os(CHILD) {
            let _ = trim_log(std::path::Path::new(&path), 150);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("pretrain_log.jsonl");
        let line = |s: u64| format!("{{\"step\":{s},\"loss\":5.25,\"aux\":1.0,\"lr\":0.0003}}\n");
        let text: String = (1..=200).map(line).collect();
        std::fs::write(&log, &text).unwrap();
        let status = crate::testing::rerun_with_file_limit(
            "train::pretrain::tests::a_killed_trim_keeps_the_log",
            CHILD,
            log.as_os_str(),
        )
        .unwrap();
        assert!(!status.success(), "the child was not stopped: {status:?}");
        assert!(
            std::fs::read_to_string(&log).unwrap() == text,
            "the log was cut"
        );
        trim_log(&log, 150).unwrap();
        let kept: String = (1..=150).map(line).collect();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), kept);
    }
}
