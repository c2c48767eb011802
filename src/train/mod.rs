//! Training: which flows a step sees, the shared optimisation step,
//! pretraining and fine-tuning loops, the optimizer (AdamW + LLRD) and its
//! saved state, schedules.

mod epoch_log;
pub mod finetune;
pub mod head_fit;
pub mod optim;
pub mod optim_state;
pub mod pretrain;
pub mod sampling;
pub mod schedule;
pub mod step;
pub mod trainer;

/// A run stopped by its caller's flag (`pretrain_until`, `finetune_until`)
/// before its end, as an error where a caller cannot go on without the
/// run's result (a study's run): it saves nothing more, and is no failure.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

impl Interrupted {
    /// Fails with [`Interrupted`] once `stop` is set: the poll of a loop
    /// that stops by returning (a batch of features, a study's dataset
    /// build, a baseline's chunk of predictions).
    pub fn check(stop: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Interrupted.into());
        }
        Ok(())
    }
}

/// A fresh run's logs, removed again when the run ends (an error, a
/// divergence) before its checkpoint exists: a log without a checkpoint is
/// refused by the next run without `--force` (it may be the user's), so a
/// failed first run must not leave one. Armed only where the run began
/// without a checkpoint, and only for the logs that were not there (with
/// `--force`, one that was is replaced, never removed unwritten); once a
/// checkpoint is saved, the logs stay beside it.
pub(crate) struct FreshLogs {
    logs: Vec<std::path::PathBuf>,
    checkpoint: std::path::PathBuf,
    armed: bool,
}

impl FreshLogs {
    pub(crate) fn new(
        armed: bool,
        checkpoint: &std::path::Path,
        logs: &[std::path::PathBuf],
    ) -> Self {
        FreshLogs {
            logs: logs
                .iter()
                .filter(|l| l.symlink_metadata().is_err())
                .cloned()
                .collect(),
            checkpoint: checkpoint.to_path_buf(),
            armed,
        }
    }
}

impl Drop for FreshLogs {
    fn drop(&mut self) {
        if self.armed && !self.checkpoint.exists() {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}
