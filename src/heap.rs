//! A heap meter for the CPU engines' "peak memory": the bytes the process's
//! Rust allocations hold, and their high-water mark, as the GPU engine's
//! caching pool counts device memory (`tmoe bench model` reports both the
//! same way: weights included, and the bytes held before the timed runs).
//!
//! [`Counting`] wraps the system allocator; only the `tmoe` binary installs
//! it (`#[global_allocator]`), so the library and the static library
//! embedders link keep their own allocator. It counts requested bytes, not
//! pages: not allocator overhead, thread stacks or what glibc keeps after a
//! free (`backend::cpu::alloc`), so it measures the model, not the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the bytes it lends.
pub struct Counting;

impl Counting {
    fn grew(by: usize) {
        let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    /// A fresh allocation of `size` bytes at `p` (null: it failed).
    fn counted(p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            Self::failed(size);
        } else {
            Self::grew(size);
        }
        p
    }

    /// Before Rust aborts on a failed allocation ("memory allocation of N
    /// bytes failed"), says what it means for a `tmoe` run. Large requests
    /// only (a batch's tensors), once; writes from a stack buffer, since
    /// the heap is what failed.
    fn failed(size: usize) {
        static SAID: AtomicBool = AtomicBool::new(false);
        if size < (1 << 20) || SAID.swap(true, Ordering::Relaxed) {
            return;
        }
        use std::io::Write;
        let mut buf = [0u8; 400];
        let mut msg = std::io::Cursor::new(&mut buf[..]);
        let _ = writeln!(
            msg,
            "tmoe: out of memory: {} MiB more asked for, {} MiB already held; a smaller --batch \
             (or --seq, --seq-len) needs less (a training step holds every activation until its backward)",
            size >> 20,
            CURRENT.load(Ordering::Relaxed) >> 20
        );
        let n = msg.position() as usize;
        let _ = std::io::stderr().write_all(&buf[..n]);
    }
}

// SAFETY: every call is System's; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        Self::counted(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        Self::counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            Self::failed(new_size);
        } else {
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Called by a binary that installed [`Counting`], so that [`stats`] answers.
pub fn mark_installed() {
    INSTALLED.store(true, Ordering::SeqCst);
}

/// Bytes held now and the most held since the last [`reset_peak`]; None
/// where [`Counting`] is not the global allocator.
pub fn stats() -> Option<(usize, usize)> {
    INSTALLED.load(Ordering::SeqCst).then(|| {
        (
            CURRENT.load(Ordering::Relaxed),
            PEAK.load(Ordering::Relaxed),
        )
    })
}

/// Starts a new high-water mark from what is held now.
pub fn reset_peak() {
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
}
