//! The executor: one API over the simulator and the GPU.

use std::time::Instant;

use bytemuck::Pod;

use super::buffer::{Buf, HostMem, Mem};
use super::error::{GpuError, Result};
use super::launch::{KernelParams, Launch};
use super::sim::SimExecutor;

/// Runs kernels and owns their buffers. Cheap to clone.
#[derive(Clone)]
pub enum Executor {
    Sim(SimExecutor),
    #[cfg(feature = "cuda")]
    Cuda(super::cuda::CudaExecutor),
}

/// What `tmoe bench` reports about the device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    /// Peak DRAM bandwidth in bytes/s (queried, or a documented fallback).
    pub peak_bandwidth: Option<f64>,
    /// Dense bf16 tensor-core peak in FLOP/s (from the device name; None when
    /// the device is not in the table of `cuda::bf16_tensor_peak`).
    pub peak_bf16_flops: Option<f64>,
    pub mem_total: Option<usize>,
}

impl Executor {
    pub fn sim() -> Executor {
        Executor::Sim(SimExecutor { reverse: false })
    }

    /// The simulator with each block's threads scheduled from the highest
    /// index down (see [`SimExecutor`]).
    pub fn sim_reversed() -> Executor {
        Executor::Sim(SimExecutor { reverse: true })
    }

    /// The GPU executor (device 0): fails cleanly when built without the `cuda`
    /// feature, when no driver is installed, or when no device is present.
    pub fn cuda() -> Result<Executor> {
        #[cfg(feature = "cuda")]
        {
            super::cuda::CudaExecutor::shared().map(Executor::Cuda)
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(GpuError::Unavailable(
                "built without `--features cuda`".into(),
            ))
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Executor::Sim(s) if s.reverse => "sim-reversed",
            Executor::Sim(_) => "sim",
            #[cfg(feature = "cuda")]
            Executor::Cuda(_) => "cuda",
        }
    }

    pub fn is_gpu(&self) -> bool {
        !matches!(self, Executor::Sim(_))
    }

    pub fn alloc_zeroed<T: Pod>(&self, len: usize) -> Result<Buf<T>> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| GpuError::Invalid("buffer size overflows".into()))?;
        Ok(Buf::new(
            len,
            match self {
                Executor::Sim(_) => Mem::Host(HostMem::zeroed(bytes)),
                #[cfg(feature = "cuda")]
                Executor::Cuda(c) => Mem::Device(c.alloc_zeroed(bytes)?),
            },
        ))
    }

    pub fn upload<T: Pod>(&self, data: &[T]) -> Result<Buf<T>> {
        let mut b = self.alloc_zeroed::<T>(data.len())?;
        self.write(&mut b, data)?;
        Ok(b)
    }

    pub fn write<T: Pod>(&self, buf: &mut Buf<T>, data: &[T]) -> Result<()> {
        if data.len() != buf.len() {
            return Err(GpuError::Invalid(format!(
                "write of {} elements into a buffer of {}",
                data.len(),
                buf.len()
            )));
        }
        let bytes = buf.bytes();
        match &mut buf.mem {
            Mem::Host(h) => h
                .as_mut_slice(bytes)
                .copy_from_slice(bytemuck::cast_slice(data)),
            #[cfg(feature = "cuda")]
            Mem::Device(d) => d.write(bytemuck::cast_slice(data))?,
        }
        Ok(())
    }

    /// Copies a buffer back to the host (waits for queued work).
    pub fn download<T: Pod>(&self, buf: &Buf<T>) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); buf.len()];
        match &buf.mem {
            Mem::Host(h) => {
                bytemuck::cast_slice_mut(&mut out).copy_from_slice(h.as_slice(buf.bytes()))
            }
            #[cfg(feature = "cuda")]
            Mem::Device(d) => d.read(bytemuck::cast_slice_mut(&mut out))?,
        }
        Ok(out)
    }

    /// Copies `src` into `dst` on the device (same length; queued like a launch).
    pub fn copy<T: Pod>(&self, src: &Buf<T>, dst: &Buf<T>) -> Result<()> {
        if src.len() != dst.len() {
            return Err(GpuError::Invalid(format!(
                "copy of {} elements into a buffer of {}",
                src.len(),
                dst.len()
            )));
        }
        let bytes = src.bytes();
        match (&src.mem, &dst.mem) {
            (Mem::Host(s), Mem::Host(d)) => {
                // SAFETY: two distinct live allocations of `bytes` bytes each
                // (dst is borrowed shared, like a kernel output pointer).
                unsafe { std::ptr::copy(s.ptr.as_ptr(), d.ptr.as_ptr(), bytes) };
                Ok(())
            }
            #[cfg(feature = "cuda")]
            (Mem::Device(s), Mem::Device(d)) => match self {
                Executor::Cuda(c) => c.copy(s, d, bytes),
                Executor::Sim(_) => {
                    Err(GpuError::Invalid("device buffers on the simulator".into()))
                }
            },
            #[cfg(feature = "cuda")]
            _ => Err(GpuError::Invalid(
                "copy between host and device buffers".into(),
            )),
        }
    }

    /// Queues a kernel (the simulator runs it at once).
    pub fn launch<P: KernelParams>(&self, l: &Launch<P>) -> Result<()> {
        match self {
            Executor::Sim(s) => s.launch(l),
            #[cfg(feature = "cuda")]
            Executor::Cuda(c) => c.launch(l),
        }
    }

    pub fn synchronize(&self) -> Result<()> {
        match self {
            Executor::Sim(_) => Ok(()),
            #[cfg(feature = "cuda")]
            Executor::Cuda(c) => c.synchronize(),
        }
    }

    /// Milliseconds taken by the work `f` queues (CUDA events on the GPU,
    /// wall-clock on the simulator).
    pub fn time_ms(&self, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        match self {
            Executor::Sim(_) => {
                let t = Instant::now();
                f()?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            }
            #[cfg(feature = "cuda")]
            Executor::Cuda(c) => c.time_ms(f),
        }
    }

    pub fn device_info(&self) -> DeviceInfo {
        match self {
            Executor::Sim(_) => DeviceInfo {
                name: "SIMT simulator (CPU, not a GPU)".into(),
                peak_bandwidth: None,
                peak_bf16_flops: None,
                mem_total: None,
            },
            #[cfg(feature = "cuda")]
            Executor::Cuda(c) => c.device_info(),
        }
    }

    /// Checks that a buffer belongs to this executor's kind of memory.
    pub(crate) fn check_buf<T: Pod>(&self, what: &str, b: &Buf<T>, len: usize) -> Result<()> {
        if b.len() != len {
            return Err(GpuError::Invalid(format!(
                "{what}: {} elements, expected {len}",
                b.len()
            )));
        }
        if b.is_host() == self.is_gpu() {
            return Err(GpuError::Invalid(format!(
                "{what}: buffer belongs to another executor"
            )));
        }
        Ok(())
    }
}
