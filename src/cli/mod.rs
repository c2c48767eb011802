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

/// Warns on stderr when `--precision bf16` on the CPU is likely slower than
/// the default f32 on this machine (its `vdpbf16ps` rate, measured in about
/// 40 ms, is not well above its f32 FMA rate). Advice only: bf16 still runs.
pub(crate) fn warn_if_bf16_slower(
    device: crate::engine::Device,
    precision: crate::engine::Precision,
) {
    if device == crate::engine::Device::Cpu
        && precision == crate::engine::Precision::Bf16
        && let Some(why) = crate::backend::cpu_bf16::peak::bf16_slower_here()
    {
        eprintln!("warning: --precision bf16: {why}");
    }
}
