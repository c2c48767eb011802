//! One optimisation step shared by pretraining and fine-tuning:
//! forward on the tape, backward, global-norm clipping, AdamW.

use super::optim::{AdamW, Param, clip_scale, global_grad_norm, zero_grads};
use crate::autograd::profile::{Pass, timed};
use crate::autograd::{ParamStore, Tape};
use crate::backend::cpu::Cpu;
use crate::model::Model;
use crate::model::batch::Batch;

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
    cpu: Cpu,
    model: &Model,
    params: &mut Vec<Param>,
    opt: &mut AdamW,
    batch: &Batch,
    task: Task,
    aux_weight: f32,
    lr: f32,
    clip: f64,
) -> anyhow::Result<StepStats> {
    let x = batch.inputs();
    let mut tape = Tape::<f32, Cpu>::with_cpu(cpu);
    let f = {
        let p = params.values();
        match task {
            Task::Lm => model.lm_forward(&mut tape, &p, &x, aux_weight)?,
            Task::Classify => model.cls_forward(&mut tape, &p, &x, &batch.labels, aux_weight)?,
        }
    };
    timed("zero_grad", Pass::Optimizer, || zero_grads(params));
    tape.backward(f.loss, params)?;
    timed("free_tape", Pass::Backward, || drop(tape));
    let grad_norm = timed("clip_norm", Pass::Optimizer, || global_grad_norm(params));
    anyhow::ensure!(
        grad_norm.is_finite(),
        "gradient norm is {grad_norm}: training diverged (try a lower --lr)"
    );
    // Clipping's factor goes into AdamW's pass rather than a pass of its own.
    let scale = clip_scale(grad_norm, clip).unwrap_or(1.0);
    timed("adamw", Pass::Optimizer, || {
        opt.step_scaled(params, lr, scale)
    })?;
    Ok(StepStats {
        loss: f.task_loss,
        aux: f.aux,
        grad_norm,
    })
}
