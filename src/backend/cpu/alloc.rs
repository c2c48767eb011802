//! Keep freed memory for the next step. A training step frees and allocates
//! again the same large buffers (activations, saved state, gradients). glibc
//! returns blocks above its mmap threshold (128 KiB at first) and the top of
//! the heap to the kernel, so every step paid page faults and page zeroing
//! for memory it held a moment before (about 10% of a step in a profile).
//! Raising the mmap and trim thresholds lets `malloc` reuse those blocks.
//! Blocks above 32 MiB (glibc's largest threshold; the `small` dense twin's
//! FFN activations at batch 64 are 84 MB) were still mapped and unmapped on
//! every op, about 15 % of that forward in page faults: mmap is turned off
//! (`M_MMAP_MAX` 0), so they come from the heap and are reused as well.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::Float;

/// Called once by the CPU tape; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            const M_MMAP_MAX: i32 = -4;
            // SAFETY: mallopt only adjusts allocator tunables; any value is accepted or rejected.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20); // glibc's largest allowed value
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_MMAP_MAX, 0);
            }
        });
    }
}

/// A new vector of `n` elements that `f` writes, in parallel pieces of
/// `chunk`: each piece is zeroed just before `f` overwrites it, in cache and
/// on the worker that writes it, instead of one serial zero fill of the
/// whole buffer by the calling thread first (`vec![0; n]` on reused heap
/// memory is a `memset`: 8 % of a training step's samples at tiny, on the
/// main thread while the workers waited). `f(i, piece)` gets piece `i`.
pub fn par_written<F: Float>(n: usize, chunk: usize, f: impl Fn(usize, &mut [F]) + Sync) -> Vec<F> {
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, piece)| f(i, zeroed(piece)));
    // SAFETY: the pieces cover `..n`, each initialised by `zeroed`.
    unsafe { v.set_len(n) };
    v
}

/// [`par_written`] for two vectors of `n` elements written in one pass:
/// `f(i, piece_a, piece_b)`.
pub fn par_written2<F: Float>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [F], &mut [F]) + Sync,
) -> (Vec<F>, Vec<F>) {
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    a.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .zip(b.spare_capacity_mut()[..n].par_chunks_mut(chunk.max(1)))
        .enumerate()
        .for_each(|(i, (pa, pb))| f(i, zeroed(pa), zeroed(pb)));
    // SAFETY: the pieces cover `..n` of both, each initialised by `zeroed`.
    unsafe {
        a.set_len(n);
        b.set_len(n);
    }
    (a, b)
}

/// `piece` filled with zeros, as initialised elements.
fn zeroed<F: Float>(piece: &mut [MaybeUninit<F>]) -> &mut [F] {
    piece.fill(MaybeUninit::new(F::ZERO));
    // SAFETY: every element of `piece` was initialised just above.
    unsafe { &mut *(piece as *mut [MaybeUninit<F>] as *mut [F]) }
}

/// A new vector of `n` elements written through a raw pointer by `f` (a
/// product with `accumulate = false`), never zero-filled.
///
/// # Safety
/// `f` must write all `n` elements through the pointer and read none it has
/// not written.
pub unsafe fn written_by<F>(n: usize, f: impl FnOnce(*mut F)) -> Vec<F> {
    let mut v = Vec::with_capacity(n);
    f(v.as_mut_ptr());
    // SAFETY: the caller's contract: all n written.
    unsafe { v.set_len(n) };
    v
}
