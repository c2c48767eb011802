//! Device buffers for both executors: host memory for the simulator, device
//! memory (raw driver allocations) for the GPU.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;

use bytemuck::Pod;

/// A typed buffer of `len` elements owned by one executor. Kernel params take
/// its address through [`Buf::cptr`] / [`Buf::mptr`] (works on both executors).
pub struct Buf<T: Pod> {
    len: usize,
    pub(crate) mem: Mem,
    _t: PhantomData<T>,
}

pub(crate) enum Mem {
    Host(HostMem),
    #[cfg(feature = "cuda")]
    Device(super::cuda::DeviceMem),
}

impl<T: Pod> Buf<T> {
    pub(crate) fn new(len: usize, mem: Mem) -> Self {
        Buf {
            len,
            mem,
            _t: PhantomData,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.len * size_of::<T>()
    }
    /// The address kernels see (a host address on the simulator).
    pub fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Host(h) => h.ptr.as_ptr() as u64,
            #[cfg(feature = "cuda")]
            Mem::Device(d) => d.ptr,
        }
    }
    /// For a `const X*` field of a params struct.
    pub fn cptr<U>(&self) -> *const U {
        self.addr() as *const U
    }
    /// For an `X*` (output) field of a params struct.
    pub fn mptr<U>(&self) -> *mut U {
        self.addr() as *mut U
    }
    pub(crate) fn is_host(&self) -> bool {
        matches!(self.mem, Mem::Host(_))
    }
}

/// Zeroed, 256-byte aligned host allocation of exactly the requested size (so
/// that AddressSanitizer flags accesses one past the end).
pub(crate) struct HostMem {
    pub(crate) ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: HostMem owns its allocation; the simulator synchronises launches.
unsafe impl Send for HostMem {}
unsafe impl Sync for HostMem {}

impl HostMem {
    pub(crate) fn zeroed(bytes: usize) -> Self {
        let layout = Layout::from_size_align(bytes.max(1), 256).expect("buffer size overflows");
        // SAFETY: layout has non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HostMem { ptr, layout }
    }
    pub(crate) fn as_slice(&self, bytes: usize) -> &[u8] {
        // SAFETY: bytes <= allocation size (callers pass Buf::bytes()).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), bytes) }
    }
    pub(crate) fn as_mut_slice(&mut self, bytes: usize) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), bytes) }
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
