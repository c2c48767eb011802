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
