//! The precision of CPU inference: `--precision f32|bf16`.
//!
//! - `f32`: the CPU engine (`backend::cpu`), the reference.
//! - `bf16`: the bf16 CPU inference engine (`backend::cpu_bf16`): weights in
//!   bf16, products accumulated in f32; faster, forward only.
//!
//! The GPU engine always computes in bf16 (with fp32 master weights), so the
//! choice only exists on the CPU.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}
