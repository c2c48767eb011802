//! Collects benchmark results and turns times into shares of the hardware
//! limits: bandwidth for memory-bound kernels, bf16 tensor throughput for
//! compute-bound ones (GEMM, attention).

use serde::Serialize;

use crate::backend::gpu::Executor;
use crate::backend::gpu::executor::DeviceInfo;

/// One benchmark result.
#[derive(Debug, Serialize)]
pub struct KernelResult {
    pub kernel: String,
    pub shape: String,
    pub executor: String,
    pub ms: f64,
    /// The CUDA kernels one call launches (the names ncu and nsys show).
    pub launches: Vec<String>,
    /// Bytes per call: each input read once, each output written once (a
    /// `+=` output read too), scratch partials written and read back;
    /// re-reads of the same data not counted (see `bench kernels`' note).
    pub bytes: u64,
    pub gb_per_s: f64,
    pub pct_of_peak: Option<f64>,
    /// Share of the measured device-to-device copy bandwidth (the practical roof).
    pub pct_of_copy: Option<f64>,
    /// Compute-bound kernels: useful floating-point operations per second.
    pub tflops: Option<f64>,
    /// Compute-bound kernels: share of the device's dense bf16 tensor peak.
    pub pct_of_tensor_peak: Option<f64>,
}

pub struct Recorder<'a> {
    ex: &'a Executor,
    device: DeviceInfo,
    copy_bandwidth: Option<f64>,
    pub results: Vec<KernelResult>,
}

impl<'a> Recorder<'a> {
    pub fn new(ex: &'a Executor, device: DeviceInfo, copy_bandwidth: Option<f64>) -> Self {
        Recorder {
            ex,
            device,
            copy_bandwidth,
            results: Vec::new(),
        }
    }

    /// A memory-bound kernel: `bytes` moved per call in `ms` (its kernels:
    /// those launched since the last `median_ms` began).
    pub fn mem(&mut self, kernel: &str, shape: &str, bytes: u64, ms: f64) {
        self.push(kernel, shape, bytes, None, ms);
    }

    /// A compute-bound kernel: `flops` useful operations (2 per multiply-add)
    /// and `bytes` compulsory traffic per call in `ms`.
    pub fn compute(&mut self, kernel: &str, shape: &str, flops: f64, bytes: u64, ms: f64) {
        self.push(kernel, shape, bytes, Some(flops), ms);
    }

    fn push(&mut self, kernel: &str, shape: &str, bytes: u64, flops: Option<f64>, ms: f64) {
        let gpu = self.ex.is_gpu();
        let bps = bytes as f64 / (ms * 1e-3);
        let share = |roof: Option<f64>| roof.filter(|_| gpu).map(|r| 100.0 * bps / r);
        let fps = flops.map(|f| f / (ms * 1e-3));
        self.results.push(KernelResult {
            kernel: kernel.into(),
            shape: shape.into(),
            executor: self.ex.name().into(),
            ms,
            launches: self
                .ex
                .take_launches()
                .into_iter()
                .map(String::from)
                .collect(),
            bytes,
            gb_per_s: bps / 1e9,
            pct_of_peak: share(self.device.peak_bandwidth),
            pct_of_copy: share(self.copy_bandwidth),
            tflops: fps.map(|f| f / 1e12),
            pct_of_tensor_peak: fps
                .zip(self.device.peak_bf16_flops.filter(|_| gpu))
                .map(|(f, p)| 100.0 * f / p),
        });
    }
}
