//! The models: configuration, Traffic-MoE and its dense twin, parameter
//! counts, input batches and checkpoints.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod info;
pub mod init;
pub mod net;

pub use config::{FfnKind, ModelConfig};
pub use net::{Forward, IGNORE, Inputs, Model};
