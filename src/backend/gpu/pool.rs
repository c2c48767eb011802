//! A caching allocator: buffers of an executor made [`Executor::with_pool`]
//! go back to a free list on drop and are handed out again (zeroed when
//! asked) for a later request, so a training or inference loop, whose
//! shapes repeat every step, stops calling the driver's allocator after its
//! first step. It also counts the bytes in use and their high-water mark:
//! the "peak memory" of `tmoe bench model`.
//!
//! New allocations are exactly the size asked. On a GPU a request is also
//! served by a cached buffer up to an eighth larger ([`SLACK`]), so that
//! batches of nearby shapes share buffers: inference batches by length
//! (each batch as long as its longest flow) and the stream classifies
//! partial batches, where exact matching would cache a working set per
//! batch x length pair. A fixed-shape loop still gets its exact buffers
//! back, so its peak is the same as with exact matching. On the simulator
//! matching stays exact: a reused buffer is never larger than asked, so its
//! AddressSanitizer build still flags an access one past the end.
//!
//! The cache is bounded: it never holds more than the most bytes the run
//! ever had in use at once (a fixed-shape loop stays under that and frees
//! nothing); past it, the sizes returned least recently are evicted. An
//! evicted buffer may still be read by queued kernels, so it is only marked
//! (`Pool::take_evicted`); the executor frees it after synchronizing.
//! And when the driver is out of memory, the executor frees the whole
//! cache and asks once more (`Pool::trim`).
//!
//! A buffer dropped while kernels that use it are still queued is handed out
//! again at once, with no event to wait for: safe only because all device
//! work goes to one stream (the executor's, ordered with the legacy stream
//! its synchronous copies use), so the next user's work runs after the old.
//! A second stream (copies overlapping kernels, say) would need each free
//! buffer to wait for an event recorded where it was dropped.
//!
//! [`Executor::with_pool`]: super::Executor::with_pool

use std::collections::BTreeMap;
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
    /// Bytes cached (free, held for reuse).
    pub cached: usize,
    /// Buffers given back to the driver: evicted past the cache's bound,
    /// or trimmed when the driver was out of memory.
    pub freed: u64,
}

/// The caching pool of one executor (see the module's doc).
#[derive(Default)]
pub struct Pool {
    inner: Mutex<Inner>,
    /// Serve a request from a cached buffer up to [`SLACK`] larger (a
    /// GPU), not only from one of its exact size (the simulator).
    slack: bool,
}

/// How much larger than asked a reused buffer may be, as a fraction.
pub const SLACK: f64 = 0.125;

#[derive(Default)]
struct Inner {
    /// Free lists by exact size, ordered for the best fit.
    free: BTreeMap<usize, FreeList>,
    /// Evicted buffers and their sizes, waiting for the executor to free
    /// them after a sync.
    evicted: Vec<(usize, Mem)>,
    stats: PoolStats,
    /// The most bytes in use at once over the pool's life (the cache's
    /// bound; `stats.peak_in_use` restarts with each benchmark row).
    most_in_use: usize,
    /// Counts give-backs: a free list's last use, for eviction.
    clock: u64,
}

#[derive(Default)]
struct FreeList {
    bufs: Vec<Mem>,
    last_use: u64,
}

impl Inner {
    fn lend(&mut self, bytes: usize) {
        let s = &mut self.stats;
        s.in_use += bytes;
        s.peak_in_use = s.peak_in_use.max(s.in_use);
        self.most_in_use = self.most_in_use.max(s.in_use);
    }

    /// Moves the least recently used sizes to `evicted` until the cache is
    /// within its bound.
    fn evict_over_bound(&mut self) {
        while self.stats.cached > self.most_in_use {
            let Some((&bytes, _)) = self
                .free
                .iter()
                .filter(|(_, l)| !l.bufs.is_empty())
                .min_by_key(|(_, l)| l.last_use)
            else {
                return;
            };
            let list = self.free.remove(&bytes).unwrap_or_default();
            self.stats.cached -= bytes * list.bufs.len();
            self.evicted
                .extend(list.bufs.into_iter().map(|m| (bytes, m)));
        }
    }
}

impl Pool {
    /// A pool that also reuses buffers up to [`SLACK`] larger than asked
    /// when `slack` (a GPU), else only buffers of the exact size (the
    /// simulator).
    pub fn new(slack: bool) -> Pool {
        Pool {
            slack,
            ..Pool::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached buffer for a request of `asked` bytes, and its size: one of
    /// exactly that size, else (with slack) the smallest up to [`SLACK`]
    /// larger. Counted as in use.
    pub(crate) fn take(&self, asked: usize) -> Option<(Mem, usize)> {
        let mut g = self.lock();
        let most = if self.slack {
            asked + (asked as f64 * SLACK) as usize
        } else {
            asked
        };
        let bytes = g
            .free
            .range(asked..=most)
            .find(|(_, l)| !l.bufs.is_empty())
            .map(|(&b, _)| b)?;
        let m = g.free.get_mut(&bytes)?.bufs.pop()?;
        g.stats.hits += 1;
        g.stats.cached -= bytes;
        g.lend(bytes);
        Some((m, bytes))
    }

    /// Counts a new allocation of `bytes` as reserved and in use.
    pub(crate) fn note_new(&self, bytes: usize) {
        let mut g = self.lock();
        g.stats.misses += 1;
        g.stats.reserved += bytes;
        g.lend(bytes);
    }

    pub(crate) fn give_back(&self, bytes: usize, mem: Mem) {
        let mut g = self.lock();
        g.stats.in_use -= bytes;
        g.stats.cached += bytes;
        g.clock += 1;
        let now = g.clock;
        let list = g.free.entry(bytes).or_default();
        list.bufs.push(mem);
        list.last_use = now;
        g.evict_over_bound();
    }

    /// The buffers evicted from the cache, for the executor to free once
    /// the work queued before is done (empty: nothing to do).
    pub(crate) fn take_evicted(&self) -> Vec<Mem> {
        let mut g = self.lock();
        let out = std::mem::take(&mut g.evicted);
        g.stats.reserved -= out.iter().map(|(b, _)| b).sum::<usize>();
        g.stats.freed += out.len() as u64;
        out.into_iter().map(|(_, m)| m).collect()
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Starts a new high-water mark from the bytes in use now.
    pub fn reset_peak(&self) {
        let s = &mut self.lock().stats;
        s.peak_in_use = s.in_use;
    }

    /// Frees every cached allocation (buffers in use are untouched). Only
    /// once the work queued before is done: [`Executor::trim_cache`]
    /// synchronizes first.
    ///
    /// [`Executor::trim_cache`]: super::Executor::trim_cache
    pub(crate) fn trim(&self) {
        {
            let mut g = self.lock();
            for (bytes, list) in std::mem::take(&mut g.free) {
                g.evicted.extend(list.bufs.into_iter().map(|m| (bytes, m)));
            }
            g.stats.cached = 0;
        }
        // The driver's frees, outside the lock.
        drop(self.take_evicted());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::buffer::HostMem;

    #[test]
    fn a_slightly_larger_buffer_serves_a_request_on_a_gpu() {
        for slack in [false, true] {
            let pool = Pool::new(slack);
            let (m, big) = (lend(&pool, 1100), lend(&pool, 5000));
            pool.give_back(1100, m);
            pool.give_back(5000, big);
            // 1,000 bytes: the 1,100-byte buffer is within an eighth.
            let got = pool.take(1000).map(|(_, b)| b);
            assert_eq!(got, slack.then_some(1100), "slack {slack}");
            // 4,000 bytes: 5,000 is too large to lend for it.
            assert!(pool.take(4000).is_none(), "slack {slack}");
            assert_eq!(pool.take(5000).map(|(_, b)| b), Some(5000));
        }
    }

    fn lend(pool: &Pool, bytes: usize) -> Mem {
        pool.note_new(bytes);
        Mem::Host(HostMem::zeroed(bytes))
    }

    #[test]
    fn the_cache_holds_no_more_than_the_most_ever_in_use() {
        let pool = Pool::new(false);
        // Ten batches of new shapes, 1,000 bytes in use at most at once.
        for shape in 0..10 {
            let a = lend(&pool, 600 + shape);
            let b = lend(&pool, 400 - shape);
            pool.give_back(600 + shape, a);
            pool.give_back(400 - shape, b);
            let s = pool.stats();
            assert!(s.cached <= 1000, "shape {shape}: {s:?}");
        }
        let evicted = pool.take_evicted();
        let s = pool.stats();
        assert_eq!(evicted.len(), 18, "{s:?}");
        assert_eq!((s.cached, s.reserved, s.freed), (1000, 1000, 18));
        // What was returned last stays cached: the last shape is a hit.
        assert!(pool.take(609).is_some() && pool.take(391).is_some());
        assert!(pool.take(600).is_none());
    }

    #[test]
    fn a_fixed_shape_loop_frees_nothing() {
        let pool = Pool::new(true);
        for step in 0..5 {
            let bufs: Vec<(usize, Mem)> = [3000, 70_000, 70_000, 1 << 20]
                .iter()
                .map(|&n| {
                    pool.take(n)
                        .map_or_else(|| (n, lend(&pool, n)), |(m, b)| (b, m))
                })
                .collect();
            for (b, m) in bufs {
                pool.give_back(b, m);
            }
            let s = pool.stats();
            assert_eq!(s.misses, 4, "step {step}: {s:?}");
            assert_eq!(s.peak_in_use, 3000 + 140_000 + (1 << 20), "exact sizes");
        }
        assert!(pool.take_evicted().is_empty());
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.cached, s.reserved, s.freed), (0, 0, 4));
    }
}
