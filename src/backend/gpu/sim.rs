//! The simulator executor: calls the C++ runtime (cuda/sim/runtime.cpp) that
//! build.rs compiled into the crate together with every kernel.

use std::ffi::{CString, c_char, c_int, c_void};

use super::error::{GpuError, Result};
use super::launch::{KernelParams, Launch};

// cuda/sim/runtime.cpp's entry points (also handed to the fake CUDA driver).
unsafe extern "C" {
    pub(crate) fn tmoe_sim_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        smem: usize,
        params: *const c_void,
        params_size: usize,
        reverse: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    /// A kernel's params size and launch bound; 0 when there is no such kernel.
    #[cfg(feature = "cuda")]
    pub(crate) fn tmoe_sim_kernel_info(
        name: *const c_char,
        params_size: *mut usize,
        max_threads: *mut u32,
    ) -> c_int;
}

/// Runs kernels on the CPU; buffers are host memory. Launches are synchronous.
/// Between barriers, a block's threads run one after another in index order,
/// or from the highest index down when `reverse` (the tests run both: a
/// missing `__syncthreads` / `__syncwarp` gives a stale read in one of them).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimExecutor {
    pub reverse: bool,
}

impl SimExecutor {
    pub fn launch<P: KernelParams>(&self, l: &Launch<P>) -> Result<()> {
        let name = CString::new(l.kernel)
            .map_err(|_| GpuError::Invalid(format!("kernel name {:?} contains NUL", l.kernel)))?;
        let bytes = l.param_bytes();
        let mut err = vec![0u8; 1024];
        // SAFETY: all pointers are valid for the call; the runtime checks the
        // kernel name and the params size, and writes at most err.len() bytes.
        let rc = unsafe {
            tmoe_sim_launch(
                name.as_ptr(),
                l.grid.as_ptr(),
                l.block.as_ptr(),
                l.smem as usize,
                bytes.as_ptr().cast(),
                bytes.len(),
                c_int::from(self.reverse),
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        Err(GpuError::Sim(
            String::from_utf8_lossy(&err[..end]).into_owned(),
        ))
    }
}
