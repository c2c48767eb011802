//! Where the model runs: `--device cpu|cuda|sim`.
//!
//! - `cpu`: the CPU engine (plain Rust reference ops, f32).
//! - `cuda`: the GPU engine on a GPU (needs `--features cuda` and a device;
//!   otherwise a clear error, never a fallback).
//! - `sim`: the GPU engine with its kernels run by the SIMT simulator on the
//!   CPU: the same code path as `cuda`, slowly; for tests and for checking a
//!   pipeline without a GPU.

use crate::backend::gpu::Executor;
use crate::backend::gpu::engine::Gpu;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    Sim,
}

impl Device {
    /// The GPU engine for `cuda` and `sim`; None for `cpu`.
    pub fn gpu(self) -> anyhow::Result<Option<Gpu>> {
        Ok(match self {
            Device::Cpu => None,
            Device::Sim => Some(Gpu::new(&Executor::sim())),
            Device::Cuda => {
                let ex = Executor::cuda().map_err(|e| {
                    anyhow::anyhow!(
                        "--device cuda: {e} (use --device cpu, or build with --features cuda on a machine with an NVIDIA GPU)"
                    )
                })?;
                Some(Gpu::new(&ex))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Sim => "sim",
        }
    }
}
