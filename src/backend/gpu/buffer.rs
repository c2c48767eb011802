//! Device buffers for both executors: host memory for the simulator, device
//! memory (raw driver allocations) for the GPU; a buffer may also be a window
//! into another one (a parameter inside the parameter arena) or come from an
//! executor's caching pool (returned to it, not freed, on drop).

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use bytemuck::Pod;

use super::pool::Pool;

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
    /// Memory of a caching pool: handed back to it on drop.
    Pooled(PooledMem),
    /// A window of another buffer's memory: `addr` lies inside the allocation
    /// that `owner` keeps alive.
    View {
        _owner: Arc<dyn Send + Sync>,
        addr: u64,
        host: bool,
    },
}

impl Mem {
    pub(crate) fn addr(&self) -> u64 {
        match self {
            Mem::Host(h) => h.ptr.as_ptr() as u64,
            #[cfg(feature = "cuda")]
            Mem::Device(d) => d.ptr,
            Mem::Pooled(p) => p.mem.as_ref().map_or(0, |m| m.addr()),
            Mem::View { addr, .. } => *addr,
        }
    }
    pub(crate) fn is_host(&self) -> bool {
        match self {
            Mem::Host(_) => true,
            #[cfg(feature = "cuda")]
            Mem::Device(_) => false,
            Mem::Pooled(p) => p.mem.as_ref().is_none_or(|m| m.is_host()),
            Mem::View { host, .. } => *host,
        }
    }
}

/// A pool's allocation lent to a buffer.
pub(crate) struct PooledMem {
    pub(crate) mem: Option<Box<Mem>>,
    pub(crate) bytes: usize,
    pub(crate) pool: Arc<Pool>,
}

impl Drop for PooledMem {
    fn drop(&mut self) {
        if let Some(m) = self.mem.take() {
            self.pool.give_back(self.bytes, *m);
        }
    }
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
        self.mem.addr()
    }
    /// For a `const T*` field of a params struct (the C type of `T`: a
    /// bf16 buffer gives a bf16 pointer, never a float one).
    pub fn cptr(&self) -> *const T::C
    where
        T: DeviceType,
    {
        self.addr() as *const T::C
    }
    /// For a `T*` (output) field of a params struct.
    pub fn mptr(&self) -> *mut T::C
    where
        T: DeviceType,
    {
        self.addr() as *mut T::C
    }
    pub(crate) fn is_host(&self) -> bool {
        self.mem.is_host()
    }

    /// Elements `offset..offset + len` of a shared buffer as a buffer of their
    /// own (kept alive by the view): how parameters sit in the arena.
    pub fn view(this: &Arc<Buf<T>>, offset: usize, len: usize) -> Option<Buf<T>>
    where
        T: Send + Sync,
    {
        if offset.checked_add(len)? > this.len {
            return None;
        }
        Some(Buf::new(
            len,
            Mem::View {
                _owner: this.clone(),
                addr: this.addr() + (offset * size_of::<T>()) as u64,
                host: this.is_host(),
            },
        ))
    }
}

/// An element type kernels read, and its type in the bindgen'd params structs.
pub trait DeviceType: Pod {
    type C;
}
impl DeviceType for f32 {
    type C = f32;
}
impl DeviceType for u32 {
    type C = u32;
}
impl DeviceType for u8 {
    type C = u8;
}
impl DeviceType for i64 {
    type C = i64;
}
impl DeviceType for f64 {
    type C = f64;
}
impl DeviceType for half::bf16 {
    type C = super::params::bf16;
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
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
