//! Inference outside the training pipeline: a loaded classifier
//! ([`classifier`], shared by `tmoe classify` and embedders), the pipeline
//! that classifies captures in parallel across files ([`pipeline`]), and a
//! streaming front end ([`stream`]) that turns frames, as a network monitor
//! sees them, into classified flows: on the caller's thread ([`runner`], as
//! the C API (`crate::capi`, `include/traffic_moe.h`) drives it), or with
//! reading and the model on two threads ([`overlap`], `classify --stream`).

pub mod background;
pub mod classifier;
pub mod flow_feed;
pub mod latency;
pub mod overlap;
pub mod pipeline;
pub mod runner;
pub mod stream;
