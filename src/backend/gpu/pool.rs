//! A caching allocator: buffers of an executor made [`Executor::with_pool`]
//! go back to a free list on drop and are handed out again (zeroed) for the
//! next request of the same size, so a training or inference loop, whose
//! shapes repeat every step, stops calling the driver's allocator after its
//! first step. It also counts the bytes in use and their high-water mark:
//! the "peak memory" of `tmoe bench model`.
//!
//! Sizes are matched exactly: a reused buffer is never larger than asked, so
//! the simulator's AddressSanitizer build still flags an access one past the
//! end.
//!
//! A buffer dropped while kernels that use it are still queued is handed out
//! again at once, with no event to wait for: safe only because all device
//! work goes to one stream (the executor's, ordered with the legacy stream
//! its synchronous copies use), so the next user's work runs after the old.
//! A second stream (copies overlapping kernels, say) would need each free
//! buffer to wait for an event recorded where it was dropped.
//!
//! [`Executor::with_pool`]: super::Executor::with_pool

use std::collections::HashMap;
use std::sync::Mutex;

use super::buffer::Mem;

/// Bytes in use, cached and their peaks (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Bytes lent to live buffers.
    pub in_use: usize,
    /// The most bytes in use at once since the last [`Pool::reset_peak`].
    pub peak_in_use: usize,
    /// Bytes held from the driver (in use + cached).
    pub reserved: usize,
    /// Requests served from the cache / by a new allocation.
    pub hits: u64,
    pub misses: u64,
}

#[derive(Default)]
pub struct Pool {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    free: HashMap<usize, Vec<Mem>>,
    stats: PoolStats,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached allocation of exactly `bytes` bytes, if there is one (counted
    /// as in use).
    pub(crate) fn take(&self, bytes: usize) -> Option<Mem> {
        let mut g = self.lock();
        let m = g.free.get_mut(&bytes).and_then(Vec::pop);
        let s = &mut g.stats;
        if m.is_some() {
            s.hits += 1;
            s.in_use += bytes;
            s.peak_in_use = s.peak_in_use.max(s.in_use);
        }
        m
    }

    /// Counts a new allocation of `bytes` as reserved and in use.
    pub(crate) fn note_new(&self, bytes: usize) {
        let s = &mut self.lock().stats;
        s.misses += 1;
        s.reserved += bytes;
        s.in_use += bytes;
        s.peak_in_use = s.peak_in_use.max(s.in_use);
    }

    pub(crate) fn give_back(&self, bytes: usize, mem: Mem) {
        let mut g = self.lock();
        g.stats.in_use -= bytes;
        g.free.entry(bytes).or_default().push(mem);
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Starts a new high-water mark from the bytes in use now.
    pub fn reset_peak(&self) {
        let s = &mut self.lock().stats;
        s.peak_in_use = s.in_use;
    }

    /// Frees every cached allocation (buffers in use are untouched).
    pub fn trim(&self) {
        let freed: Vec<(usize, Vec<Mem>)> = self.lock().free.drain().collect();
        let bytes: usize = freed.iter().map(|(b, v)| b * v.len()).sum();
        self.lock().stats.reserved -= bytes;
        drop(freed);
    }
}
