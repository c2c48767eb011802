//! The fake CUDA driver (cuda/sim/fake_driver.cpp, feature `cuda`): a
//! `libcuda.so` whose kernels run in this crate's simulator, so that the GPU
//! executor's host code (cudarc's calls, the stream, pinned staging, events,
//! the shared-memory attribute) runs without a GPU, in tests and, with
//! `TMOE_FAKE_CUDA=1`, in `tmoe ... --device cuda`.
//!
//! It must be loaded before cudarc first looks for libcuda: cudarc then
//! `dlopen`s "libcuda.so", which the dynamic loader matches against the soname
//! of the library already loaded. [`install`] does both steps; the executor
//! calls [`from_env`] before opening the device.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::sim::{tmoe_sim_kernel_info, tmoe_sim_launch};

/// The fake driver this build compiled (build.rs).
pub const BUILT: &str = env!("TMOE_FAKE_DRIVER");

/// The environment variable that selects the fake driver: `1` for [`BUILT`],
/// or the path of a `libcuda.so` built from cuda/sim/fake_driver.cpp.
pub const ENV: &str = "TMOE_FAKE_CUDA";

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    *const u32,
    *const u32,
    usize,
    *const c_void,
    usize,
    c_int,
    *mut c_char,
    usize,
) -> c_int;
type KernelInfoFn = unsafe extern "C" fn(*const c_char, *mut usize, *mut u32, *mut u32) -> c_int;

/// The simulator's kernel facts for the driver, plus the kernel's static
/// shared memory, which only ptxas knows (build.rs's table).
unsafe extern "C" fn kernel_info(
    name: *const c_char,
    params_size: *mut usize,
    max_threads: *mut u32,
    static_smem: *mut u32,
) -> c_int {
    // SAFETY: the driver passes a NUL-terminated name and valid out pointers.
    unsafe {
        let known = tmoe_sim_kernel_info(name, params_size, max_threads);
        let name = std::ffi::CStr::from_ptr(name).to_str().unwrap_or("");
        *static_smem = super::cuda::static_smem(name);
        known
    }
}

/// What the host asked of the driver so far (cuda/sim/fake_driver.cpp's
/// `Counters`, field for field).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeCounters {
    pub mem_alloc: u64,
    pub mem_free: u64,
    pub host_alloc: u64,
    pub host_free: u64,
    pub htod_sync: u64,
    pub htod_async: u64,
    pub dtoh_sync: u64,
    pub dtod_async: u64,
    pub memset_sync: u64,
    pub memset_async: u64,
    pub launches: u64,
    pub ctx_syncs: u64,
    pub event_syncs: u64,
    pub stream_syncs: u64,
    pub attr_sets: u64,
    pub modules: u64,
    pub bytes_allocated: u64,
    pub peak_bytes_allocated: u64,
    /// The most operations ever queued and not yet run.
    pub max_queued: u64,
    /// Bytes set by cuMemsetD8 and cuMemsetD8Async.
    pub memset_bytes: u64,
}

impl FakeCounters {
    /// Every counter of `self` minus `earlier` (the high-water marks kept).
    pub fn since(&self, earlier: &FakeCounters) -> FakeCounters {
        FakeCounters {
            mem_alloc: self.mem_alloc - earlier.mem_alloc,
            mem_free: self.mem_free - earlier.mem_free,
            host_alloc: self.host_alloc - earlier.host_alloc,
            host_free: self.host_free - earlier.host_free,
            htod_sync: self.htod_sync - earlier.htod_sync,
            htod_async: self.htod_async - earlier.htod_async,
            dtoh_sync: self.dtoh_sync - earlier.dtoh_sync,
            dtod_async: self.dtod_async - earlier.dtod_async,
            memset_sync: self.memset_sync - earlier.memset_sync,
            memset_async: self.memset_async - earlier.memset_async,
            launches: self.launches - earlier.launches,
            ctx_syncs: self.ctx_syncs - earlier.ctx_syncs,
            event_syncs: self.event_syncs - earlier.event_syncs,
            stream_syncs: self.stream_syncs - earlier.stream_syncs,
            attr_sets: self.attr_sets - earlier.attr_sets,
            modules: self.modules - earlier.modules,
            bytes_allocated: self.bytes_allocated,
            peak_bytes_allocated: self.peak_bytes_allocated,
            max_queued: self.max_queued,
            memset_bytes: self.memset_bytes - earlier.memset_bytes,
        }
    }
}

/// The loaded fake driver (kept loaded for the life of the process).
pub struct FakeDriver {
    path: PathBuf,
    counters: unsafe extern "C" fn(*mut FakeCounters),
    error: unsafe extern "C" fn(*mut c_char, usize) -> usize,
    set_total_mem: unsafe extern "C" fn(usize),
}

static LOADED: OnceLock<Result<FakeDriver, String>> = OnceLock::new();

/// Loads the fake driver at `path` and hands it the simulator. Must run
/// before the process first opens the CUDA executor (afterwards cudarc has
/// its libcuda); a second call returns the first one's driver, or an error
/// when it named another file.
pub fn install(path: &Path) -> Result<&'static FakeDriver, String> {
    let d = LOADED
        .get_or_init(|| load(path))
        .as_ref()
        .map_err(Clone::clone)?;
    if d.path != path {
        return Err(format!(
            "the fake CUDA driver {} is loaded already; cannot load {}",
            d.path.display(),
            path.display()
        ));
    }
    Ok(d)
}

/// The driver installed by [`install`], if any.
pub fn installed() -> Option<&'static FakeDriver> {
    LOADED.get().and_then(|r| r.as_ref().ok())
}

/// Installs the driver `TMOE_FAKE_CUDA` names (`1`: [`BUILT`]); None when the
/// variable is unset or empty.
pub fn from_env() -> Option<Result<&'static FakeDriver, String>> {
    let v = std::env::var_os(ENV).filter(|v| !v.is_empty())?;
    let path = if v == "1" {
        PathBuf::from(BUILT)
    } else {
        PathBuf::from(v)
    };
    Some(install(&path))
}

fn load(path: &Path) -> Result<FakeDriver, String> {
    let fail =
        |e: libloading::Error| format!("loading the fake CUDA driver {}: {e}", path.display());
    // SAFETY: the library is ours (cuda/sim/fake_driver.cpp): its initialisers
    // only set up a mutex-guarded state, and it stays loaded (forgotten below)
    // while the symbols taken from it are used.
    unsafe {
        let lib = libloading::Library::new(path).map_err(fail)?;
        let install: libloading::Symbol<unsafe extern "C" fn(LaunchFn, KernelInfoFn)> =
            lib.get(b"tmoe_fake_driver_install").map_err(fail)?;
        install(tmoe_sim_launch, kernel_info);
        let d = FakeDriver {
            path: path.to_path_buf(),
            counters: *lib.get(b"tmoe_fake_driver_counters").map_err(fail)?,
            error: *lib.get(b"tmoe_fake_driver_error").map_err(fail)?,
            set_total_mem: *lib.get(b"tmoe_fake_driver_set_total_mem").map_err(fail)?,
        };
        std::mem::forget(lib);
        Ok(d)
    }
}

impl FakeDriver {
    pub fn counters(&self) -> FakeCounters {
        let mut c = FakeCounters::default();
        // SAFETY: writes one Counters struct, whose layout FakeCounters mirrors.
        unsafe { (self.counters)(&mut c) };
        c
    }

    /// The first kernel failure (sticky, as a GPU fault is), if any.
    pub fn error(&self) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: writes at most buf.len() bytes, NUL-terminated.
        let n = unsafe { (self.error)(buf.as_mut_ptr().cast(), buf.len()) };
        (n > 0).then(|| {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        })
    }

    /// The device memory the driver reports and allows (16 GiB by default).
    pub fn set_total_mem(&self, bytes: usize) {
        // SAFETY: a plain setter.
        unsafe { (self.set_total_mem)(bytes) }
    }
}
