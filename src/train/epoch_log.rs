//! The fine-tuning logs (`finetune_log.jsonl`, `head_fit_log.jsonl`): one
//! JSON object a line, which `tmoe eval` reads for its training curves.
//!
//! Rewritten whole (temporary file, fsync, rename) at each epoch rather
//! than appended: a run killed or stopped by a full disk mid-write leaves
//! the log of the epochs before, never a line cut short. A fine-tuning log
//! holds a line per epoch (tens, a few KB), so rewriting it costs nothing
//! next to an epoch. A log that is a link (or a device) is written through.
//! The pretraining log, a line per step, is appended instead
//! (`super::pretrain`).

use super::finetune::EpochLog;
use std::path::Path;

/// A fine-tuning epoch's line.
fn epoch_line(e: &EpochLog) -> String {
    format!(
        "{{\"epoch\":{},\"train_loss\":{},\"val_accuracy\":{},\"val_macro_f1\":{}}}\n",
        e.epoch, e.train_loss, e.val_accuracy, e.val_macro_f1
    )
}

/// Writes `finetune_log.jsonl` at `path`: a line per epoch of `history`.
pub(crate) fn write_epochs(path: &Path, history: &[EpochLog]) -> anyhow::Result<()> {
    let text: String = history.iter().map(epoch_line).collect();
    crate::atomic_file::write_out(path, text.as_bytes())
}

/// Writes `head_fit_log.jsonl` at `path`: a line per head epoch's loss.
pub(crate) fn write_head_fit(path: &Path, losses: &[f32]) -> anyhow::Result<()> {
    let text: String = losses
        .iter()
        .enumerate()
        .map(|(i, loss)| format!("{{\"head_epoch\":{},\"train_loss\":{loss}}}\n", i + 1))
        .collect();
    crate::atomic_file::write_out(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::{EpochLog, epoch_line, write_epochs};

    /// Set in the child that [`a_killed_epoch_write_keeps_the_log`]
    /// starts: the log it writes.
    const CHILD: &str = "TMOE_EPOCH_LOG_CHILD";

    fn epochs(n: usize) -> Vec<EpochLog> {
        (1..=n)
            .map(|epoch| EpochLog {
                epoch,
                train_loss: 0.612_345_6,
                val_macro_f1: 1.0 / 3.0,
                val_accuracy: 2.0 / 3.0,
            })
            .collect()
    }

    /// A run killed while it logged an epoch (here by SIGXFSZ: `ulimit -f`
    /// caps the size of a file it writes, as a full disk would) left the
    /// log's last line cut short, which `eval` then read.
    #[test]
    fn a_killed_epoch_write_keeps_the_log() {
        if let Some(path) = std::env::var_os(CHILD) {
            let _ = write_epochs(std::path::Path::new(&path), &epochs(10));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("finetune_log.jsonl");
        let nine: String = epochs(9).iter().map(epoch_line).collect();
        std::fs::write(&log, &nine).unwrap();
        // Nine lines fit under the child's 1 KiB, the tenth does not.
        assert!(
            nine.len() < 1024 && nine.len() * 10 / 9 > 1024,
            "{}",
            nine.len()
        );
        let status = crate::testing::rerun_with_file_limit(
            "train::epoch_log::tests::a_killed_epoch_write_keeps_the_log",
            CHILD,
            log.as_os_str(),
        )
        .unwrap();
        assert!(!status.success(), "the child was not stopped: {status:?}");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            nine,
            "the log was cut"
        );
    }
}
