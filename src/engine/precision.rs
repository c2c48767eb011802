//! `--precision f32|bf16`, taken by every command that runs the model
//! (`pretrain`, `finetune`, `eval`, `classify`, `bench model`, `bench
//! classify`) on every device, with one meaning:
//!
//! - `f32`: on the CPU, f32 products (the reference engine, or f32 weights on
//!   the packed inference engine).
//! - `bf16`: bf16 operands, f32 sums: on the CPU the packed bf16 inference
//!   engine (`backend::cpu_bf16`), and for training mixed precision (bf16
//!   products, f32 weights, gradients and AdamW state).
//!
//! The GPU engine (`cuda`, `sim`) always computes that way (bf16 weight
//! copies and activations, f32 sums and master weights): `bf16` is what it
//! runs, and `f32` runs it too, as it has no f32 path ([`Precision::on`]).

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

    /// The precision the engine of `device` computes in when given this one:
    /// itself on the CPU, bf16 on the GPU engine (which has no f32 path).
    pub fn on(self, device: super::Device) -> Precision {
        match device {
            super::Device::Cpu => self,
            super::Device::Cuda | super::Device::Sim => Precision::Bf16,
        }
    }
}
