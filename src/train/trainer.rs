//! The model's weights and optimizer on one engine, stepped the same way on
//! each: the CPU engine (host parameters, the Rust AdamW) or the GPU engine
//! (the parameter arena on the device, one `adamw_step` launch). Pretraining
//! and fine-tuning drive a `Trainer`; checkpoints download from it.

use super::optim::{AdamW, Param};
use super::step::{StepStats, Task, train_step};
use crate::autograd::profile::{Pass, timed};
use crate::autograd::{ParamStore, Tape};
use crate::backend::cpu::Cpu;
use crate::backend::cpu::matmul::Products;
use crate::backend::gpu::engine::{Gpu, GpuParams};
use crate::engine::{Device, Precision};
use crate::eval::predict::Weights;
use crate::model::Model;
use crate::model::batch::Batch;

pub enum Trainer {
    Cpu {
        params: Vec<Param>,
        opt: AdamW,
        /// The engine, with its products' precision.
        cpu: Cpu,
    },
    Gpu {
        gpu: Gpu,
        store: Box<GpuParams>,
        /// Hyper-parameters and lr groups (the moments live on the device).
        opt: AdamW,
    },
}

impl Trainer {
    /// Weights and optimizer state on `device` (uploaded for a GPU engine).
    /// `precision` bf16 on the CPU is mixed precision ([`Products`]); the
    /// GPU engine always is.
    pub fn new(
        device: Device,
        precision: Precision,
        params: Vec<Param>,
        opt: AdamW,
    ) -> anyhow::Result<Trainer> {
        Ok(match device.gpu()? {
            None => {
                let products = match precision {
                    Precision::F32 => Products::F32,
                    Precision::Bf16 => Products::bf16().ok_or_else(|| {
                        anyhow::anyhow!(
                            "--precision bf16: this CPU has no AVX-512, so bf16 training would \
                             run on the portable kernel, far slower than f32 here; use f32"
                        )
                    })?,
                };
                Trainer::Cpu {
                    params,
                    opt,
                    cpu: Cpu::with_products(products),
                }
            }
            Some(gpu) => {
                // The CPU engine's AdamW checks this on every step; the
                // device's tables would take a missing lr group as 1.
                opt.check(&params)?;
                let mut store = GpuParams::upload(gpu.executor(), &params)?;
                store.upload_state(&opt.m, &opt.v, opt.step)?;
                let opt = AdamW {
                    m: Vec::new(),
                    v: Vec::new(),
                    ..opt
                };
                Trainer::Gpu {
                    gpu,
                    store: Box::new(store),
                    opt,
                }
            }
        })
    }

    /// One step: forward, backward, global-norm clipping, AdamW.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        model: &Model,
        batch: &Batch,
        task: Task,
        aux_weight: f32,
        lr: f32,
        clip: f64,
    ) -> anyhow::Result<StepStats> {
        match self {
            Trainer::Cpu { params, opt, cpu } => {
                train_step(*cpu, model, params, opt, batch, task, aux_weight, lr, clip)
            }
            Trainer::Gpu { gpu, store, opt } => {
                let x = batch.inputs();
                let mut tape = Tape::with_backend(gpu.clone());
                let f = {
                    let p = store.values();
                    match task {
                        Task::Lm => model.lm_forward(&mut tape, &p, &x, aux_weight)?,
                        Task::Classify => {
                            model.cls_forward(&mut tape, &p, &x, &batch.labels, aux_weight)?
                        }
                    }
                };
                timed("zero_grad", Pass::Optimizer, || store.zero_grads())?;
                tape.backward(f.loss, store.as_mut())?;
                timed("free_tape", Pass::Backward, || drop(tape));
                let norm = timed("adamw", Pass::Optimizer, || {
                    store.adamw_step(&opt.cfg, &opt.group_lr, lr, clip as f32)
                })?;
                anyhow::ensure!(
                    norm.is_finite(),
                    "gradient norm is {norm}: training diverged (try a lower --lr)"
                );
                opt.step += 1;
                Ok(StepStats {
                    loss: f.task_loss,
                    aux: f.aux,
                    grad_norm: norm,
                })
            }
        }
    }

    /// The weights where they live, for inference (validation during fine-tuning).
    pub fn weights(&self) -> Weights<'_> {
        match self {
            Trainer::Cpu { params, .. } => Weights::Cpu(params),
            Trainer::Gpu { gpu, store, .. } => Weights::Gpu(gpu, store),
        }
    }

    /// The weights on the host (a copy for a GPU engine).
    pub fn params(&self) -> anyhow::Result<Vec<Param>> {
        Ok(match self {
            Trainer::Cpu { params, .. } => params.clone(),
            Trainer::Gpu { store, .. } => store.download()?,
        })
    }

    /// The optimizer with its moments on the host (for a checkpoint).
    pub fn optimizer(&self) -> anyhow::Result<AdamW> {
        Ok(match self {
            Trainer::Cpu { opt, .. } => opt.clone(),
            Trainer::Gpu { store, opt, .. } => {
                let (m, v, step) = store.download_state()?;
                AdamW {
                    m,
                    v,
                    step,
                    ..opt.clone()
                }
            }
        })
    }
}
