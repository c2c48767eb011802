//! The executor: one API over the simulator and the GPU.

use std::time::Instant;

use bytemuck::Pod;

use std::sync::{Arc, Mutex};

use super::buffer::{Buf, HostMem, Mem, PooledMem};
use super::error::{GpuError, Result};
use super::kernel_profile::{self, KernelTime};
use super::launch::{KernelParams, Launch};
use super::pool::{Pool, PoolStats};
use super::sim::SimExecutor;

/// Runs kernels and owns their buffers. Cheap to clone (clones share the
/// device, and the caching pool when there is one).
#[derive(Clone)]
pub struct Executor {
    kind: Kind,
    pool: Option<Arc<Pool>>,
    /// The kernels launched, each once, where a caller asked for them
    /// (`bench kernels` names what each entry launches: ncu's names).
    launches: Option<Arc<Mutex<Vec<&'static str>>>>,
}

#[derive(Clone)]
enum Kind {
    Sim(SimExecutor),
    #[cfg(feature = "cuda")]
    Cuda(super::cuda::CudaExecutor),
}

/// What `tmoe bench` reports about the device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    /// Peak DRAM bandwidth in bytes/s: the driver's memory clock x bus
    /// width; when the driver does not report them, the data sheet's for a
    /// device named in [`spec_peaks`]; else None (no % of peak rather than
    /// another device's).
    pub peak_bandwidth: Option<f64>,
    /// Dense bf16 tensor-core peak in FLOP/s (from the device name; None when
    /// the device is not in the table of [`spec_peaks`]).
    pub peak_bf16_flops: Option<f64>,
    pub mem_total: Option<usize>,
}

/// A GPU's peaks from NVIDIA's data sheets, which the driver does not
/// report: DRAM bandwidth (bytes/s) and dense bf16 tensor throughput
/// (FLOP/s, without sparsity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpecPeaks {
    pub bandwidth: Option<f64>,
    pub bf16_flops: Option<f64>,
}

/// The data-sheet peaks of the device the driver names `device_name`
/// (`NVIDIA H200`, `NVIDIA H100 80GB HBM3` for the SXM part, `NVIDIA H100
/// PCIe`, `NVIDIA H100 NVL`, `NVIDIA A100-SXM4-80GB`, ...); both None for a
/// device not in the table. The first entry the name contains wins, so the
/// more specific names come first (`GH200` before `H200`, `H100 PCIe` before
/// `H100`). A GH200's memory (HBM3 4.0 TB/s or HBM3e 4.9 TB/s) is not told
/// by its name: its bandwidth is left to the driver's clock query.
pub fn spec_peaks(device_name: &str) -> SpecPeaks {
    const TABLE: &[(&str, Option<f64>, f64)] = &[
        ("GH200", None, 989.4e12),
        ("H200 NVL", Some(4.8e12), 835.5e12),
        ("H200", Some(4.8e12), 989.4e12),
        ("H100 NVL", Some(3.9e12), 835.5e12),
        ("H100 PCIe", Some(2.0e12), 756.5e12),
        ("H100", Some(3.35e12), 989.4e12),
        ("A100-SXM4-80GB", Some(2.039e12), 312e12),
        ("A100 80GB PCIe", Some(1.935e12), 312e12),
        ("A100", Some(1.555e12), 312e12),
    ];
    TABLE
        .iter()
        .find(|(k, _, _)| device_name.contains(k))
        .map_or(
            SpecPeaks {
                bandwidth: None,
                bf16_flops: None,
            },
            |&(_, bandwidth, flops)| SpecPeaks {
                bandwidth,
                bf16_flops: Some(flops),
            },
        )
}

/// What [`DeviceInfo`] reports for a device named `name` whose driver gave
/// `queried` (memory clock x bus width, when it reported both; an H200's
/// gave 4,814 GB/s, its data sheet says 4.8 TB/s).
pub fn device_info_for(name: String, queried: Option<f64>, mem_total: Option<usize>) -> DeviceInfo {
    let spec = spec_peaks(&name);
    DeviceInfo {
        name,
        peak_bandwidth: queried.or(spec.bandwidth),
        peak_bf16_flops: spec.bf16_flops,
        mem_total,
    }
}

impl Executor {
    pub fn sim() -> Executor {
        Executor {
            kind: Kind::Sim(SimExecutor { reverse: false }),
            pool: None,
            launches: None,
        }
    }

    /// The simulator with each block's threads scheduled from the highest
    /// index down (see [`SimExecutor`]).
    pub fn sim_reversed() -> Executor {
        Executor {
            kind: Kind::Sim(SimExecutor { reverse: true }),
            pool: None,
            launches: None,
        }
    }

    /// The same device with a caching allocator of its own (see [`Pool`]):
    /// every buffer allocated through the result is cached on drop (on a
    /// GPU reused for requests up to an eighth smaller, on the simulator
    /// only for its exact size).
    pub fn with_pool(&self) -> Executor {
        Executor {
            kind: self.kind.clone(),
            pool: Some(Arc::new(Pool::new(self.is_gpu()))),
            launches: self.launches.clone(),
        }
    }

    /// Frees the pool's cache once the work queued so far is done.
    pub fn trim_cache(&self) -> Result<()> {
        if let Some(pool) = &self.pool {
            self.synchronize()?;
            pool.trim();
        }
        Ok(())
    }

    /// The caching pool's counters (None without a pool).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.pool.as_ref().map(|p| p.stats())
    }

    /// The caching pool, if this executor has one.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.pool.as_ref()
    }

    /// (free, total) device memory in bytes, from the driver (GPU only).
    pub fn mem_info(&self) -> Option<(usize, usize)> {
        match &self.kind {
            Kind::Sim(_) => None,
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.mem_info().ok(),
        }
    }

    /// The GPU executor (device 0): fails cleanly when built without the `cuda`
    /// feature, when no driver is installed, or when no device is present.
    pub fn cuda() -> Result<Executor> {
        #[cfg(feature = "cuda")]
        {
            super::cuda::CudaExecutor::shared().map(|c| Executor {
                kind: Kind::Cuda(c),
                pool: None,
                launches: None,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(GpuError::Unavailable(
                "built without `--features cuda`".into(),
            ))
        }
    }

    pub fn name(&self) -> &'static str {
        match &self.kind {
            Kind::Sim(s) if s.reverse => "sim-reversed",
            Kind::Sim(_) => "sim",
            #[cfg(feature = "cuda")]
            Kind::Cuda(_) => "cuda",
        }
    }

    pub fn is_gpu(&self) -> bool {
        !matches!(self.kind, Kind::Sim(_))
    }

    /// A buffer of `len` zeroed elements.
    pub fn alloc_zeroed<T: Pod>(&self, len: usize) -> Result<Buf<T>> {
        self.alloc(len, true)
    }

    /// A buffer whose contents are unspecified until written, for an output
    /// its kernel writes in full: no memset on a GPU (zeroing an activation
    /// costs as much DRAM traffic as writing it). On the simulator every
    /// byte is 0xFF (NaN as f32 and bf16, 0xFFFFFFFF as u32), or 0x7F on the
    /// reversed one (3.4e38, 0x7F7F7F7F), so an op that reads what its
    /// kernel did not write shows up in the tests: 0xFFFFFFFF is also the
    /// kernels' "none" index (an unwritten padding row would pass for one),
    /// and a NaN vanishes in `fmaxf`, hence the second poison.
    pub fn alloc_uninit<T: Pod>(&self, len: usize) -> Result<Buf<T>> {
        self.alloc(len, false)
    }

    fn alloc<T: Pod>(&self, len: usize, zero: bool) -> Result<Buf<T>> {
        let asked = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| GpuError::Invalid("buffer size overflows".into()))?;
        let Some(pool) = &self.pool else {
            return Ok(Buf::new(len, self.fresh(asked, zero)?));
        };
        let evicted = pool.take_evicted();
        if !evicted.is_empty() {
            // Queued kernels may still read them.
            self.synchronize()?;
            drop(evicted);
        }
        let (mem, bytes) = match pool.take(asked) {
            Some((m, bytes)) => {
                if zero {
                    self.zero_raw(m.addr(), m.is_host(), asked)?;
                } else if m.is_host() {
                    poison(m.addr(), asked, self.poison_byte());
                }
                (m, bytes)
            }
            None => {
                let m = match self.fresh(asked, zero) {
                    Ok(m) => m,
                    // Out of device memory with buffers cached: free them
                    // and ask once more.
                    Err(_) if pool.stats().cached > 0 => {
                        self.trim_cache()?;
                        self.fresh(asked, zero)?
                    }
                    Err(e) => return Err(e),
                };
                pool.note_new(asked);
                (m, asked)
            }
        };
        Ok(Buf::new(
            len,
            Mem::Pooled(PooledMem {
                mem: Some(Box::new(mem)),
                bytes,
                pool: pool.clone(),
            }),
        ))
    }

    /// The byte [`Executor::alloc_uninit`] fills simulator memory with.
    fn poison_byte(&self) -> u8 {
        match &self.kind {
            Kind::Sim(s) if s.reverse => 0x7F,
            _ => 0xFF,
        }
    }

    fn fresh(&self, bytes: usize, zero: bool) -> Result<Mem> {
        Ok(match &self.kind {
            Kind::Sim(_) => {
                let m = HostMem::zeroed(bytes);
                if !zero {
                    poison(m.ptr.as_ptr() as u64, bytes, self.poison_byte());
                }
                Mem::Host(m)
            }
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => Mem::Device(c.alloc(bytes, zero)?),
        })
    }

    pub fn upload<T: Pod>(&self, data: &[T]) -> Result<Buf<T>> {
        let mut b = self.alloc_uninit::<T>(data.len())?;
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
        self.check_kind("write", buf.is_host())?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        match &self.kind {
            // SAFETY: the buffer holds `bytes.len()` bytes at its address and
            // `&mut` gives exclusive access.
            Kind::Sim(_) => unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.addr() as *mut u8, bytes.len())
            },
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.write_raw(buf.addr(), bytes)?,
        }
        Ok(())
    }

    /// Copies a buffer back to the host (waits for queued work).
    pub fn download<T: Pod>(&self, buf: &Buf<T>) -> Result<Vec<T>> {
        self.check_kind("download", buf.is_host())?;
        let mut out = vec![T::zeroed(); buf.len()];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        match &self.kind {
            // SAFETY: the buffer holds `dst.len()` bytes at its address.
            Kind::Sim(_) => unsafe {
                std::ptr::copy_nonoverlapping(buf.addr() as *const u8, dst.as_mut_ptr(), dst.len())
            },
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.read_raw(buf.addr(), dst)?,
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
        self.copy_range(src, 0, dst, 0, src.len())
    }

    /// Copies `src[src_off..][..n]` to `dst[dst_off..][..n]` on the device
    /// (queued like a launch; overlapping ranges are refused).
    pub fn copy_range<T: Pod>(
        &self,
        src: &Buf<T>,
        src_off: usize,
        dst: &Buf<T>,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        let fits = |b: &Buf<T>, off: usize| off.checked_add(n).is_some_and(|e| e <= b.len());
        if !fits(src, src_off) || !fits(dst, dst_off) {
            return Err(GpuError::Invalid(format!(
                "copy of {n} elements from {src_off} of {} to {dst_off} of {}",
                src.len(),
                dst.len()
            )));
        }
        self.check_kind("copy source", src.is_host())?;
        self.check_kind("copy destination", dst.is_host())?;
        let sz = size_of::<T>();
        let (s, d, bytes) = (
            src.addr() + (src_off * sz) as u64,
            dst.addr() + (dst_off * sz) as u64,
            n * sz,
        );
        // A GPU's device-to-device copy leaves overlapping ranges undefined,
        // where the simulator's memmove gets them right: refused on both.
        if bytes > 0 && s < d + bytes as u64 && d < s + bytes as u64 {
            return Err(GpuError::Invalid(format!(
                "copy of {n} elements from {src_off} to {dst_off}: the ranges overlap"
            )));
        }
        match &self.kind {
            Kind::Sim(_) => sim_timed(kernel_profile::COPY, || {
                // SAFETY: both ranges were checked to lie inside live buffers
                // (dst is borrowed shared, like a kernel output pointer).
                unsafe { std::ptr::copy(s as *const u8, d as *mut u8, bytes) };
                Ok(())
            }),
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.copy_raw(s, d, bytes),
        }
    }

    /// Sets `buf[off..][..n]` to zero bytes (queued like a launch).
    pub fn zero_range<T: Pod>(&self, buf: &Buf<T>, off: usize, n: usize) -> Result<()> {
        if off.checked_add(n).is_none_or(|e| e > buf.len()) {
            return Err(GpuError::Invalid(format!(
                "zeroing {n} elements from {off} of a buffer of {}",
                buf.len()
            )));
        }
        self.check_kind("zero", buf.is_host())?;
        let sz = size_of::<T>();
        self.zero_raw(buf.addr() + (off * sz) as u64, buf.is_host(), n * sz)
    }

    fn zero_raw(&self, addr: u64, host: bool, bytes: usize) -> Result<()> {
        self.check_kind("zero", host)?;
        match &self.kind {
            Kind::Sim(_) => sim_timed(kernel_profile::MEMSET, || {
                // SAFETY: callers pass a range inside a live allocation.
                unsafe { std::ptr::write_bytes(addr as *mut u8, 0, bytes) };
                Ok(())
            }),
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.zero_raw(addr, bytes),
        }
    }

    fn check_kind(&self, what: &str, host: bool) -> Result<()> {
        if host == self.is_gpu() {
            return Err(GpuError::Invalid(format!(
                "{what}: buffer belongs to another executor"
            )));
        }
        Ok(())
    }

    /// The same executor, noting from now on the name of every kernel it
    /// launches (read with [`Executor::take_launches`]).
    pub fn noting_launches(self) -> Executor {
        Executor {
            launches: Some(Arc::default()),
            ..self
        }
    }

    /// The kernels launched since the last call, in first-launch order,
    /// each once (none unless [`Executor::noting_launches`]).
    pub fn take_launches(&self) -> Vec<&'static str> {
        self.launches.as_ref().map_or_else(Vec::new, |l| {
            std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner()))
        })
    }

    /// Queues a kernel (the simulator runs it at once).
    pub fn launch<P: KernelParams>(&self, l: &Launch<P>) -> Result<()> {
        check_params_type::<P>(l.kernel)?;
        if let Some(log) = &self.launches {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if !log.contains(&l.kernel) {
                log.push(l.kernel);
            }
        }
        match &self.kind {
            Kind::Sim(s) => sim_timed(l.kernel, || s.launch(l)),
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.launch(l),
        }
    }

    /// Stops the kernel profile (see [`kernel_profile`]) and returns its
    /// sums, longest first: on a GPU after waiting for the timed work.
    pub fn kernel_profile_stop(&self) -> Result<Vec<KernelTime>> {
        kernel_profile::stop_timing();
        #[cfg(feature = "cuda")]
        if let Kind::Cuda(c) = &self.kind {
            c.resolve_timings()?;
        }
        Ok(kernel_profile::take())
    }

    pub fn synchronize(&self) -> Result<()> {
        match &self.kind {
            Kind::Sim(_) => Ok(()),
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.synchronize(),
        }
    }

    /// Milliseconds taken by the work `f` queues (CUDA events on the GPU,
    /// wall-clock on the simulator).
    pub fn time_ms(&self, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        match &self.kind {
            Kind::Sim(_) => {
                let t = Instant::now();
                f()?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            }
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.time_ms(f),
        }
    }

    pub fn device_info(&self) -> DeviceInfo {
        match &self.kind {
            Kind::Sim(_) => DeviceInfo {
                name: "SIMT simulator (CPU, not a GPU)".into(),
                peak_bandwidth: None,
                peak_bf16_flops: None,
                mem_total: None,
            },
            #[cfg(feature = "cuda")]
            Kind::Cuda(c) => c.device_info(),
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

/// A kernel gets the params struct its signature names (build.rs's table):
/// the simulator only compares sizes, and the driver copies the kernel's
/// declared size from whatever pointer it is given.
fn check_params_type<P>(kernel: &str) -> Result<()> {
    let table = super::registry::KERNELS;
    let Ok(i) = table.binary_search_by(|(k, _, _)| (*k).cmp(kernel)) else {
        return Ok(()); // unknown kernels are each executor's error
    };
    let want = table[i].2;
    let got = std::any::type_name::<P>();
    if got.rsplit("::").next() == Some(want) {
        return Ok(());
    }
    Err(GpuError::Invalid(format!(
        "launching {kernel} with {got}, but its params struct is {want}"
    )))
}

/// `f()` on the simulator, which runs work as it is queued: timed on the
/// host for the kernel profile when it is on.
fn sim_timed(what: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    if !kernel_profile::on() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    kernel_profile::add(what, t.elapsed().as_secs_f64());
    r
}

/// Fills simulator memory with `byte` (see [`Executor::alloc_uninit`]).
fn poison(addr: u64, bytes: usize, byte: u8) {
    // SAFETY: called on a host allocation of at least `bytes` bytes that no
    // one else uses yet (fresh, or just taken from the pool).
    unsafe { std::ptr::write_bytes(addr as *mut u8, byte, bytes) }
}
