//! A caller's stop flag (`tmoe`'s Ctrl-C; any `&AtomicBool` a library
//! caller passes) and the error its polls fail with. Neutral ground: the
//! capture readers, the dataset build, training, evaluation, baselines and
//! the study all poll it, and none of them should depend on another for it.

/// A run stopped by its caller's flag (`pretrain_until`, `finetune_until`,
/// a dataset build, a baseline) before its end, as an error where a caller
/// cannot go on without the run's result (a study's run): it saves nothing
/// more, and is no failure.
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
