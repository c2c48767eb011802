//! Traffic2Token: packet captures -> bidirectional flows -> token sequences ->
//! dataset shards. One folder per step; data flows one way, from `capture`
//! to `dataset`, and nothing reaches back.

pub mod types;

pub mod capture;
pub mod dataset;
pub mod flows;
pub mod tokens;
