//! One launch description for both executors.

/// A kernel-parameter struct from cuda/params.h. Implemented for every `*Params`
/// struct in the generated params_bindings.rs; unsafe because the bytes are handed to a kernel as they are.
///
/// # Safety
/// The type must be a `#[repr(C)]` plain-old-data struct matching its C twin.
pub unsafe trait KernelParams: Copy + 'static {}

/// Everything needed to run a kernel once: `extern "C" __global__ void kernel(const P p)`.
#[derive(Clone, Copy, Debug)]
pub struct Launch<P: KernelParams> {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes (`TMOE_DYNAMIC_SMEM`).
    pub smem: u32,
    pub params: P,
}

impl<P: KernelParams> Launch<P> {
    /// A 1-D launch: `blocks` blocks of `threads` threads, no dynamic shared memory.
    pub fn linear(kernel: &'static str, blocks: u32, threads: u32, params: P) -> Self {
        Launch {
            kernel,
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            smem: 0,
            params,
        }
    }

    pub fn with_smem(mut self, bytes: u32) -> Self {
        self.smem = bytes;
        self
    }

    /// The params struct as the bytes the kernel receives.
    pub fn param_bytes(&self) -> &[u8] {
        // SAFETY: P is a repr(C) POD struct (KernelParams contract).
        unsafe {
            std::slice::from_raw_parts((&self.params as *const P).cast::<u8>(), size_of::<P>())
        }
    }
}
