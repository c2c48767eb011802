//! Errors of the GPU layer (both executors).

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The simulator reported a launch error (divergence, deadlock, bad mask, ...).
    #[error("simulator: {0}")]
    Sim(String),
    /// A CUDA driver call failed: what we were doing, and the driver's error.
    #[cfg(feature = "cuda")]
    #[error("CUDA: {what}: {cause}")]
    Cuda {
        what: String,
        /// In the message, not `source()`: printed once in an error chain.
        cause: cudarc::driver::DriverError,
    },
    /// No usable GPU (no driver, no device, or built without `--features cuda`).
    #[error("no GPU available: {0}")]
    Unavailable(String),
    /// Bad arguments to a launch wrapper (sizes, buffer of the wrong executor, ...).
    #[error("invalid launch: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, GpuError>;
