//! Compute backends. `cpu` is the plain-Rust reference (f32, and f64 for
//! gradient checks); `cpu_bf16` the bf16 CPU inference engine (bf16
//! weights, f32 accumulation, forward only); `gpu` holds the launch code
//! shared by the CUDA executor and the SIMT simulator.

pub mod cpu;
pub mod cpu_bf16;
pub mod gpu;
