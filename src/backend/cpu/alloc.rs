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

/// `n` zeros, filled in parallel pieces: a large `vec![0; n]` on reused
/// heap memory is one serial `memset` on the calling thread while the other
/// workers wait. For buffers that are accumulated into, or written sparsely.
pub fn zeros<F: Float>(n: usize) -> Vec<F> {
    par_written(n, 1 << 14, |_, _| ())
}

/// A new vector of `n` elements that `f` writes, in parallel pieces of
/// `chunk`: each piece is zeroed just before `f` overwrites it, in cache and
/// on the worker that writes it, instead of one serial zero fill of the
/// whole buffer by the calling thread first (`vec![0; n]` on reused heap
/// memory is a `memset`: 8 % of a training step's samples at tiny, on the
/// main thread while the workers waited). `f(i, piece)` gets piece `i`.
pub fn par_written<F: Float>(n: usize, chunk: usize, f: impl Fn(usize, &mut [F]) + Sync) -> Vec<F> {
    // SAFETY: `zeroed` writes all of each piece.
    unsafe { par_filled(n, chunk, |i, piece| f(i, zeroed(piece))) }
}

/// `K` new vectors written together in `count` parallel pieces: piece `i`
/// of vector `j` is the `sizes[j]` elements from `i * sizes[j]`, zeroed on
/// the worker just before `f(i, pieces)` writes it (as [`par_written`]).
/// For ops whose outputs are all blocked the same way, e.g. attention's
/// Q, K, V, probabilities and output, one block per (batch row, head).
pub fn par_pieces<F: Float, const K: usize>(
    count: usize,
    sizes: [usize; K],
    f: impl Fn(usize, [&mut [F]; K]) + Sync,
) -> [Vec<F>; K] {
    /// A base pointer shared by the workers, each of which forms a slice
    /// over its own piece only.
    struct Base<F>(*mut MaybeUninit<F>);
    // SAFETY: workers only touch disjoint pieces through it.
    unsafe impl<F> Sync for Base<F> {}
    let mut vs: [Vec<F>; K] = std::array::from_fn(|j| Vec::with_capacity(count * sizes[j]));
    let bases: [Base<F>; K] =
        std::array::from_fn(|j| Base(vs[j].spare_capacity_mut().as_mut_ptr()));
    (0..count).into_par_iter().for_each(|i| {
        let pieces = std::array::from_fn(|j| {
            // SAFETY: piece i of vector j lies within its capacity
            // (`count * sizes[j]`), and no other worker forms a slice over it.
            let p =
                unsafe { std::slice::from_raw_parts_mut(bases[j].0.add(i * sizes[j]), sizes[j]) };
            zeroed(p)
        });
        f(i, pieces);
    });
    for (v, &size) in vs.iter_mut().zip(&sizes) {
        // SAFETY: the `count` pieces cover `..count * size`, each initialised by `zeroed`.
        unsafe { v.set_len(count * size) };
    }
    vs
}

/// `piece` filled with zeros, as initialised elements.
fn zeroed<F: Float>(piece: &mut [MaybeUninit<F>]) -> &mut [F] {
    piece.fill(MaybeUninit::new(F::ZERO));
    // SAFETY: every element of `piece` was initialised just above.
    unsafe { assume_init_mut(piece) }
}

/// `n` elements not yet written, for writers that write every one of them
/// (a product's outputs, an elementwise op's): no zero fill, which cost
/// 5-10 % of a training step's samples when every such buffer got one.
/// [`assume_init`] once written.
pub fn uninit<F>(n: usize) -> Vec<MaybeUninit<F>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit elements need no initialisation.
    unsafe { v.set_len(n) };
    v
}

/// The elements of an [`uninit`] vector, all written.
///
/// # Safety
/// Every element of `v` was written.
pub unsafe fn assume_init<F>(v: Vec<MaybeUninit<F>>) -> Vec<F> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<F> has F's layout; the caller's contract: all
    // initialised; the allocation passes from one vector to the other.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<F>(), v.len(), v.capacity()) }
}

/// [`assume_init`] for a slice.
///
/// # Safety
/// Every element of `s` was written.
pub unsafe fn assume_init_mut<F>(s: &mut [MaybeUninit<F>]) -> &mut [F] {
    // SAFETY: as above.
    unsafe { &mut *(s as *mut [MaybeUninit<F>] as *mut [F]) }
}

/// A written slice seen as one to write again (`MaybeUninit::write` only
/// stores initialised values, so it stays initialised).
pub fn as_uninit<F>(s: &mut [F]) -> &mut [MaybeUninit<F>] {
    // SAFETY: the same layout; writes through the view store whole values.
    unsafe { &mut *(s as *mut [F] as *mut [MaybeUninit<F>]) }
}

/// [`par_written`] without the zero fill: `f(i, piece)` writes every
/// element of its piece through `MaybeUninit`.
///
/// # Safety
/// `f` writes all of each piece it is given.
pub unsafe fn par_filled<F: Send>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [MaybeUninit<F>]) + Sync,
) -> Vec<F> {
    let mut v = uninit(n);
    v.par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, piece)| f(i, piece));
    // SAFETY: the pieces cover the vector; the caller's contract.
    unsafe { assume_init(v) }
}
