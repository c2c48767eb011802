//! Inference outside the training pipeline: a loaded classifier
//! ([`classifier`], shared by `tmoe classify` and embedders), the pipeline
//! that classifies captures in parallel across files ([`pipeline`]), and a
//! streaming front end ([`stream`]) that turns frames, as a network monitor
//! sees them, into classified flows. The C API (`crate::capi`, `include/traffic_moe.h`)
//! wraps the stream.

pub mod classifier;
pub mod flow_feed;
pub mod latency;
pub mod pipeline;
pub mod runner;
pub mod stream;
