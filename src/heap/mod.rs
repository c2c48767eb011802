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
//!
//! It also keeps a run inside the memory it may use ([`limit`]): an
//! allocation that would pass the limit ends the run at once with a message
//! that says what to change, where Linux would let it grow until the
//! kernel's out-of-memory killer ends it without a word (or the machine
//! swaps for minutes first).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The most bytes a run may hold ([`set_limit`]); `usize::MAX`: no limit.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Set once the run is ending at the limit: what the exit path allocates
/// (removing files) is let through.
static ENDING: AtomicBool = AtomicBool::new(false);
/// Output files being written, removed if the run ends at the limit
/// ([`OutputGuard`]).
static STARTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub mod limit;

/// The system allocator, counting the bytes it lends.
pub struct Counting;

impl Counting {
    fn grew(by: usize) {
        let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    /// Ends the run, with a message, when `more` bytes would take it past
    /// the limit: checked before the system allocator is asked, since with
    /// Linux's overcommit that call succeeds and the kernel kills later.
    fn admit(more: usize) {
        let limit = LIMIT.load(Ordering::Relaxed);
        if limit != usize::MAX
            && CURRENT.load(Ordering::Relaxed).saturating_add(more) > limit
            && !ENDING.swap(true, Ordering::Relaxed)
        {
            Self::over_limit(more, limit);
        }
    }

    /// Writes from a stack buffer (the heap is what ran out) and exits with
    /// status 1, as a failed command does; `process::exit` flushes what
    /// stdout holds.
    #[cold]
    fn over_limit(more: usize, limit: usize) -> ! {
        use std::io::Write;
        let mut buf = [0u8; 600];
        let mut msg = std::io::Cursor::new(&mut buf[..]);
        let _ = writeln!(
            msg,
            "tmoe: out of memory: this run holds {} MiB and asked for {} MiB more, past its limit of \
             {} MiB ({}). {}. TMOE_MEMORY_LIMIT sets another limit (e.g. 16G, or off)",
            CURRENT.load(Ordering::Relaxed) >> 20,
            more.div_ceil(1 << 20),
            limit >> 20,
            limit::source(),
            advice()
        );
        let n = msg.position() as usize;
        let _ = std::io::stderr().write_all(&buf[..n]);
        // A half-written output would make the next run refuse to replace
        // it. (Not if this thread holds the list: it was adding to it.)
        if let Ok(files) = STARTED.try_lock() {
            for p in files.iter() {
                let _ = std::fs::remove_file(p);
            }
        }
        std::process::exit(1)
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
            "tmoe: out of memory: {} MiB more asked for, {} MiB already held. {}",
            size >> 20,
            CURRENT.load(Ordering::Relaxed) >> 20,
            advice()
        );
        let n = msg.position() as usize;
        let _ = std::io::stderr().write_all(&buf[..n]);
    }
}

// SAFETY: every call is System's; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: the caller's contract, passed on.
        Self::counted(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: as above.
        Self::counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::admit(new_size.saturating_sub(layout.size()));
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

/// What an out-of-memory message tells the user to change: the model's
/// sizes (the default), or, for a command that runs no model (`tokenize`,
/// `vocab`, `synth`, ...), its input: "a smaller --batch" named an option
/// those commands do not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    Model = 0,
    Data = 1,
}

static ADVICE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(Advice::Model as u8);

/// Sets what the out-of-memory messages advise (see [`Advice`]).
pub fn set_advice(advice: Advice) {
    ADVICE.store(advice as u8, Ordering::Relaxed);
}

/// The advice of the out-of-memory messages, one sentence.
fn advice() -> &'static str {
    if ADVICE.load(Ordering::Relaxed) == Advice::Data as u8 {
        "Fewer captures at once need less (tokenize: a lower --max-flows holds fewer flows open)"
    } else {
        "A smaller --batch (or --seq, --seq-len) needs less: a training step holds every \
         activation until its backward"
    }
}

/// Holds the run to at most `bytes` of heap (`None`: no limit). Only
/// meaningful where [`Counting`] is the global allocator.
pub fn set_limit(bytes: Option<usize>) {
    LIMIT.store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// While alive, `path` (an output file the run is writing) is removed if
/// the run ends at its memory limit, as a failed run's output is.
pub struct OutputGuard(PathBuf);

impl OutputGuard {
    pub fn new(path: &Path) -> OutputGuard {
        let p = path.to_path_buf();
        lock_started().push(p.clone());
        OutputGuard(p)
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        let mut files = lock_started();
        if let Some(i) = files.iter().position(|p| *p == self.0) {
            files.swap_remove(i);
        }
    }
}

fn lock_started() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    STARTED.lock().unwrap_or_else(|e| e.into_inner())
}
