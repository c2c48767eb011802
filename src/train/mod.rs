//! Training: batches, the shared optimisation step, pretraining and
//! fine-tuning loops, the optimizer (AdamW + LLRD), schedules, checkpoints.

pub mod batch;
pub mod checkpoint;
pub mod finetune;
pub mod optim;
pub mod pretrain;
pub mod schedule;
pub mod step;
pub mod trainer;
