//! One optimisation step shared by pretraining and fine-tuning:
//! forward on the tape, backward, global-norm clipping, AdamW.

use super::batch::Batch;
use super::optim::{AdamW, Param, clip_grad_norm, zero_grads};
use crate::autograd::{ParamStore, Tape};
use crate::model::{Inputs, Model};

#[derive(Clone, Copy, Debug, Default)]
pub struct StepStats {
    pub loss: f32,
    pub aux: f32,
    pub grad_norm: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Next-token prediction.
    Lm,
    /// Sequence classification with the batch labels.
    Classify,
}

#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &Model,
    params: &mut Vec<Param>,
    opt: &mut AdamW,
    batch: &Batch,
    task: Task,
    aux_weight: f32,
    lr: f32,
    clip: f64,
) -> anyhow::Result<StepStats> {
    let x = Inputs {
        ids: &batch.ids,
        mask: &batch.mask,
        b: batch.b,
        s: batch.s,
    };
    let mut tape = Tape::<f32>::new();
    let f = {
        let p = params.values();
        match task {
            Task::Lm => model.lm_forward(&mut tape, &p, &x, aux_weight)?,
            Task::Classify => {
                model.cls_forward(&mut tape, &p, &x, Some(&batch.labels), aux_weight)?
            }
        }
    };
    zero_grads(params);
    tape.backward(f.loss, params)?;
    drop(tape);
    let grad_norm = clip_grad_norm(params, clip);
    anyhow::ensure!(
        grad_norm.is_finite(),
        "gradient norm is {grad_norm}: training diverged (try a lower --lr)"
    );
    opt.step(params, lr)?;
    Ok(StepStats {
        loss: f.task_loss,
        aux: f.aux,
        grad_norm,
    })
}

/// A progress bar with loss and tokens/s in its message (hidden off a terminal).
pub fn progress_bar(len: u64, what: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}
