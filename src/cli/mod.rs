//! One file per `tmoe` subcommand: its clap arguments and its `run`.

pub mod baseline;
pub mod bench;
pub mod classify;
pub mod classify_stream;
pub mod demo;
pub mod dump_logits;
pub mod eval;
pub mod finetune;
pub mod flow_parts;
pub mod inspect;
pub mod model_info;
pub mod pretrain;
pub mod study;
pub mod synth;
pub mod tokenize;
pub mod vocab;
