//! Traffic-MoE: a sparse mixture-of-experts foundation model for network
//! traffic classification.
//!
//! Data flows one way through the modules:
//! `traffic` (capture -> flows -> tokens -> shards) -> `model` (built on
//! `autograd` and the `backend` ops) -> `train` -> `eval`; `infer` classifies
//! flows outside training (the `tmoe classify` command and the C API, `capi`);
//! `baseline` holds the classic classifiers the model is compared with, and
//! `study` runs the comparison grid; `stop` is the caller's stop flag's
//! error, which the long loops of all of these poll.

pub(crate) mod atomic_file;
pub mod autograd;
pub mod backend;
pub mod baseline;
pub mod capi;
pub mod cli;
pub mod engine;
pub mod eval;
pub mod heap;
pub mod infer;
pub mod model;
pub mod os_text;
pub mod progress;
pub mod stop;
pub mod study;
pub mod testing;
pub mod traffic;
pub mod train;
