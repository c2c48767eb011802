//! Training: which flows a step sees, the shared optimisation step,
//! pretraining and fine-tuning loops, the optimizer (AdamW + LLRD) and its
//! saved state, schedules.

pub mod finetune;
pub mod head_fit;
pub mod optim;
pub mod optim_state;
pub mod pretrain;
pub mod sampling;
pub mod schedule;
pub mod step;
pub mod trainer;
