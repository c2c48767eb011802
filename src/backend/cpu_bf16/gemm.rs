//! `y[m, n] = x[m, k] · Wᵀ (+ bias)`: f32 activations converted to the
//! weights' slots (bf16 pairs, or f32) one row block at a time, weights
//! packed at load ([`PackedMat`]), f32 accumulation. When the product is
//! big enough and we are not already inside a rayon worker (the MoE layer
//! runs its experts in parallel and their products serially), it is cut
//! into (row block, panel range) pieces that run in parallel (`split`).
//!
//! Within a piece: pack its rows once (f32 weights with contiguous rows:
//! read x in place, no copy), then for each weight panel of the range,
//! for each block of k (KC slots of a plain product: the panel's block,
//! 32 KiB, stays in L1), sweep the block's row tiles.

use std::mem::MaybeUninit;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::amx;
use super::kernel::{Kernel, Tile};
use super::pack::{Elem, Layout, MR, NR, PackedMat};
use crate::backend::cpu::alloc;
use crate::engine::{OpError, OpResult};

/// Rows per block of a serial product (16 tiles: the panel is reused 16 times).
const MAX_BLOCK: usize = 16 * MR;
/// Bytes of a parallel SwiGLU row block's rows of x (rows · kp slots · 4) to keep in L2.
const L2_SLICE: usize = 512 << 10;
/// L1 data cache bytes a short SwiGLU's block and panel may fill (`split`):
/// 48 KiB on AMD Zen 5 and Intel Sapphire Rapids.
const L1_BYTES: usize = 48 << 10;
/// Slots of k per block of a plain product (see `run_block`).
const KC: usize = 128;
/// Rows per AMX step (two row tiles of 16) and k-pairs per AMX tile (64
/// bytes of bf16 pairs): shared with `amx`, which exists on x86-64 only.
pub(super) const AMX_ROWS: usize = 32;
pub(super) const AMX_KT: usize = 16;
/// Rows per block of an AMX product.
const AMX_BLOCK: usize = 8 * AMX_ROWS;
/// Bytes of an AMX block's bf16 rows to keep in L2 (`split_amx`).
const AMX_L2_ROWS: usize = 1 << 20;
/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_MIN: usize = 1 << 18;

/// A raw output pointer shared by the blocks, each writing its own rows.
struct OutPtr<T>(*mut T);
impl<T> Clone for OutPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OutPtr<T> {}
// SAFETY: blocks write disjoint row ranges.
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}
impl<T> OutPtr<T> {
    fn at(self, offset: usize) -> *mut T {
        // SAFETY: callers pass offsets inside the output.
        unsafe { self.0.add(offset) }
    }
}

/// `x · Wᵀ + bias` for `m` rows. `rows`: row `i` of the product is row
/// `rows[i]` of `x` (a gather, e.g. an expert's tokens); `None`: row `i`.
/// `x` has `w.k` columns. The output is `[m, w.n]`, every element written
/// once (no zero fill).
pub fn matmul(
    kernel: Kernel,
    x: &[f32],
    rows: Option<&[u32]>,
    m: usize,
    w: &PackedMat,
    bias: Option<&[f32]>,
) -> OpResult<Vec<f32>> {
    let mut y = alloc::uninit(m * w.n);
    matmul_into(kernel, x, rows, m, w, bias, &mut y)?;
    // SAFETY: `matmul_into` returned Ok, so it wrote all m·n elements.
    Ok(unsafe { alloc::assume_init(y) })
}

/// [`matmul`] into `out` (its first `m · w.n` elements, all written on Ok).
pub fn matmul_into(
    kernel: Kernel,
    x: &[f32],
    rows: Option<&[u32]>,
    m: usize,
    w: &PackedMat,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) -> OpResult<()> {
    check(kernel, x, rows, m, w, bias)?;
    product_of(kernel, Lhs::F32(x, rows), m, w, bias, out, "bf16 matmul")
}

/// `lhs · Wᵀ + bias` for `m` rows into `out` (its first `m · w.n`
/// elements, all written on Ok): what [`matmul_into`] and
/// [`matmul_rows_into`] share once their operands are checked.
fn product_of(
    kernel: Kernel,
    lhs: Lhs,
    m: usize,
    w: &PackedMat,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
    op: &'static str,
) -> OpResult<()> {
    let n = w.n;
    if out.len() < m * n {
        return Err(OpError::msg(
            op,
            format!("output of {} for {m} x {n}", out.len()),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let out = OutPtr(out.as_mut_ptr().cast::<f32>());
    for_pieces(kernel, m, w, |r0, mb, range| {
        #[cfg(target_arch = "x86_64")]
        if uses_amx(kernel, w) {
            return run_block_amx(lhs, r0, mb, range, w, bias, amx::Out::F32(out.at(r0 * n)));
        }
        match lhs {
            Lhs::F32(x, rows) => run_block(kernel, x, rows, r0, mb, range, w, bias, out.at(r0 * n)),
            Lhs::Rows(a) => {
                // Whole tiles of the rows read in place (the padding rows
                // are zeros).
                let kp = w.kp;
                let a_tile = |t: usize| -> &[u32] { &a.data[(r0 + t * MR) * kp..][..MR * kp] };
                let tiles = mb.div_ceil(MR);
                run_tiles(kernel, tiles, mb, a_tile, range, w, bias, out.at(r0 * n));
            }
        }
    });
    Ok(())
}

/// Runs `run(r0, rows, panels)` over a product's pieces (`split_amx`,
/// `split`): in parallel when the product is big enough and we are not
/// inside a rayon worker.
fn for_pieces(
    kernel: Kernel,
    m: usize,
    w: &PackedMat,
    run: impl Fn(usize, usize, std::ops::Range<usize>) + Sync,
) {
    let big = m * w.n * w.k >= PARALLEL_MIN;
    let parallel = big && m > MR && rayon::current_thread_index().is_none();
    let panels = w.panels();
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let (block, groups) = if uses_amx(kernel, w) {
        split_amx(m, w, threads)
    } else if parallel {
        split(m, w, threads)
    } else {
        (MAX_BLOCK, 1)
    };
    let per_group = panels.div_ceil(groups);
    let piece = |i: usize| {
        let (blk, g) = (i / groups, i % groups);
        let r0 = blk * block;
        let p0 = (g * per_group).min(panels);
        run(r0, block.min(m - r0), p0..(p0 + per_group).min(panels));
    };
    let count = m.div_ceil(block) * groups;
    if parallel {
        (0..count).into_par_iter().for_each(piece);
    } else {
        (0..count).for_each(piece);
    }
}

/// Activations already rounded to bf16 pairs as the kernels read them:
/// `m` rows of `kp` slots (zeros past `k` values; on AMX `kp` a multiple of
/// 16), then zero rows up to a multiple of 32 and of [`MR`]. Written once
/// as bf16 instead of as f32 that a product reads again to round and pack:
/// SwiGLU's hidden between an FFN's two products ([`swiglu_rows`],
/// [`matmul_rows`]), and in mixed-precision training SwiGLU's output and
/// gradients ([`UnwrittenRows`]).
pub struct Bf16Rows {
    pub m: usize,
    /// The k of the weights it multiplies (padded to a whole AMX tile there).
    pub k: usize,
    pub kp: usize,
    data: Vec<u32>,
}

/// Rows a [`Bf16Rows`] of `m` rows holds: whole AMX steps and whole tiles.
fn padded_rows(m: usize) -> usize {
    m.next_multiple_of(AMX_ROWS).max(m.next_multiple_of(MR))
}

/// A [`Bf16Rows`] being written a block of rows at a time, from several
/// threads ([`RowsWriter`]); its padding rows are zeros already.
pub struct UnwrittenRows {
    m: usize,
    k: usize,
    kp: usize,
    data: Vec<MaybeUninit<u32>>,
    kernel: Kernel,
    /// Values per row (before the padding of k).
    width: usize,
}

impl UnwrittenRows {
    /// `m` rows of `width` values for products on `kernel` against weights
    /// packed for this width ([`super::strided::pack_rhs`]'s padding of k).
    pub fn new(kernel: Kernel, m: usize, width: usize) -> UnwrittenRows {
        let k = super::strided::padded_k(kernel, Elem::Bf16Pair, width);
        let kp = Elem::Bf16Pair.slots(k);
        let mut data = alloc::uninit(padded_rows(m) * kp);
        data[m * kp..].fill(MaybeUninit::new(0));
        UnwrittenRows {
            m,
            k,
            kp,
            data,
            kernel,
            width,
        }
    }

    /// A handle through which the threads write disjoint rows.
    pub fn writer(&mut self) -> RowsWriter {
        RowsWriter {
            ptr: self.data.as_mut_ptr(),
            m: self.m,
            kp: self.kp,
            width: self.width,
            kernel: self.kernel,
        }
    }

    /// The rows, once every row `..m` was written through [`Self::writer`].
    ///
    /// # Safety
    /// Every row `..m` was written.
    pub unsafe fn assume_written(self) -> Bf16Rows {
        Bf16Rows {
            m: self.m,
            k: self.k,
            kp: self.kp,
            // SAFETY: rows ..m written (the caller's contract), the rest zeroed.
            data: unsafe { alloc::assume_init(self.data) },
        }
    }
}

/// Writes rows of an [`UnwrittenRows`]; copies share it across threads.
#[derive(Clone, Copy)]
pub struct RowsWriter {
    ptr: *mut MaybeUninit<u32>,
    m: usize,
    kp: usize,
    width: usize,
    kernel: Kernel,
}

// SAFETY: the writers write disjoint rows (`write`'s contract).
unsafe impl Send for RowsWriter {}
unsafe impl Sync for RowsWriter {}

impl RowsWriter {
    /// Rows `r0..` rounded from `src` (whole rows of the width), as the
    /// products on the kernel round their f32 rows: the same bits.
    ///
    /// # Safety
    /// The rows lie below `m` and no other thread writes them during the call.
    pub unsafe fn write(self, r0: usize, src: &[f32]) {
        let rows = src.len() / self.width.max(1);
        assert!(
            r0 + rows <= self.m,
            "bf16 rows: row {} past {}",
            r0 + rows,
            self.m
        );
        // SAFETY: rows r0.. r0 + rows, inside the buffer, this caller's only.
        let out =
            unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r0 * self.kp), rows * self.kp) };
        const CHUNK: usize = 16;
        for (c, dst) in out.chunks_mut(CHUNK * self.kp).enumerate() {
            let n = dst.len() / self.kp;
            let idx: [usize; CHUNK] = std::array::from_fn(|i| c * CHUNK + i);
            self.kernel
                .round_rows(src, self.width, &idx[..n], self.kp, dst);
        }
    }
}

/// Whether an FFN's `pair` (SwiGLU) then `down` can pass [`Bf16Rows`]
/// between them: both on AMX tiles.
pub fn rows_between(kernel: Kernel, pair: &PackedMat, down: &PackedMat) -> bool {
    uses_amx(kernel, pair)
        && uses_amx(kernel, down)
        && pair.layout == Layout::Swiglu
        && down.layout == Layout::Plain
        && down.k == pair.n
}

/// `silu(x·gateᵀ)·(x·upᵀ)` of a SwiGLU `pair` for `m` rows of `x` (row
/// `i` is row `rows[i]` of `x`, as in [`matmul`]), as the bf16 rows of a
/// next product whose packed k is `kp` slots: the same bits as [`matmul`]
/// then that product's own rounding of its rows.
pub fn swiglu_rows(
    kernel: Kernel,
    x: &[f32],
    rows: Option<&[u32]>,
    m: usize,
    pair: &PackedMat,
    kp: usize,
) -> OpResult<Bf16Rows> {
    check(kernel, x, rows, m, pair, None)?;
    if !uses_amx(kernel, pair) || pair.layout != Layout::Swiglu || kp != pair.n.div_ceil(2) {
        return Err(OpError::msg(
            "bf16 swiglu rows",
            format!(
                "needs a SwiGLU pair on AMX tiles and kp {}",
                pair.n.div_ceil(2)
            ),
        ));
    }
    let padded = padded_rows(m);
    // The product writes every slot of the m rows (kp is n's pairs); the
    // padding rows are zeros.
    let mut data = Vec::with_capacity(padded * kp);
    data.spare_capacity_mut()[m * kp..padded * kp].fill(MaybeUninit::new(0));
    #[cfg(target_arch = "x86_64")]
    {
        let out = OutPtr(data.as_mut_ptr());
        for_pieces(kernel, m, pair, |r0, mb, range| {
            run_block_amx(
                Lhs::F32(x, rows),
                r0,
                mb,
                range,
                pair,
                None,
                amx::Out::Pairs {
                    c: out.at(r0 * kp),
                    stride: kp,
                },
            )
        });
    }
    // SAFETY: rows m.. zeroed above; every slot of rows ..m written by the
    // pieces (the AMX kernel, checked above: each panel's pairs of each row).
    unsafe { data.set_len(padded * kp) };
    Ok(Bf16Rows {
        m,
        k: pair.n,
        kp,
        data,
    })
}

/// An FFN's two products, `down · silu·up(pair · x)`, for `m` rows of `x`
/// (gathered by `rows`, as in [`matmul`]), into `out` (its first
/// `m · down.n` elements, all written on Ok). On AMX the hidden passes
/// between them as [`Bf16Rows`] (half the bytes written, none re-read to
/// round; the same bits as the f32 hidden).
pub fn swiglu_down_into(
    kernel: Kernel,
    x: &[f32],
    rows: Option<&[u32]>,
    m: usize,
    pair: &PackedMat,
    down: &PackedMat,
    out: &mut [MaybeUninit<f32>],
) -> OpResult<()> {
    if rows_between(kernel, pair, down) {
        let h = swiglu_rows(kernel, x, rows, m, pair, down.kp)?;
        return matmul_rows_into(kernel, &h, down, out);
    }
    let h = matmul(kernel, x, rows, m, pair, None)?;
    matmul_into(kernel, &h, None, m, down, None, out)
}

/// [`swiglu_down_into`] into a new vector.
pub fn swiglu_down(
    kernel: Kernel,
    x: &[f32],
    m: usize,
    pair: &PackedMat,
    down: &PackedMat,
) -> OpResult<Vec<f32>> {
    let mut y = alloc::uninit(m * down.n);
    swiglu_down_into(kernel, x, None, m, pair, down, &mut y)?;
    // SAFETY: `swiglu_down_into` returned Ok, so it wrote all m·n outputs.
    Ok(unsafe { alloc::assume_init(y) })
}

/// [`matmul`] of bf16 rows from [`swiglu_rows`] on AMX tiles.
pub fn matmul_rows(kernel: Kernel, a: &Bf16Rows, w: &PackedMat) -> OpResult<Vec<f32>> {
    let mut y = alloc::uninit(a.m * w.n);
    matmul_rows_into(kernel, a, w, &mut y)?;
    // SAFETY: `matmul_rows_into` returned Ok, so it wrote all m·n outputs.
    Ok(unsafe { alloc::assume_init(y) })
}

/// [`matmul_rows`] into `out` (its first `a.m · w.n` elements, all written
/// on Ok).
pub fn matmul_rows_into(
    kernel: Kernel,
    a: &Bf16Rows,
    w: &PackedMat,
    out: &mut [MaybeUninit<f32>],
) -> OpResult<()> {
    if !kernel.available()
        || w.elem != Elem::Bf16Pair
        || w.layout != Layout::Plain
        || w.kp != a.kp
        || w.k != a.k
    {
        return Err(OpError::msg(
            "bf16 matmul of rows",
            format!(
                "rows of k {} ({} slots) against weights of k {} ({} slots, {:?}) on {}",
                a.k,
                a.kp,
                w.k,
                w.kp,
                w.elem,
                kernel.name()
            ),
        ));
    }
    product_of(
        kernel,
        Lhs::Rows(a),
        a.m,
        w,
        None,
        out,
        "bf16 matmul of rows",
    )
}

/// A parallel product's pieces: `(rows per block, panel groups)`.
///
/// SwiGLU pairs (one block of k, the whole row): blocks as tall as keeps
/// their rows of x within [`L2_SLICE`], evened out over the rows, then
/// enough panel groups for about four pieces per thread: +2-15 % on the
/// small dense twin's gate/up products (batch 8 and 64) against the plain
/// products' split, in an interleaved A/B on the 2-core Xeon.
///
/// Plain products: about four row blocks per thread, at most
/// [`MAX_BLOCK`] rows, all panels each. Tall blocks cut into panel groups
/// measured 5-20 % slower there (the down projection at small, k 5,120,
/// most), where a block's k blocks revisit its outputs.
///
/// SwiGLU pairs of a short k split as plain products: a block's packed
/// rows and a panel together fit in L1 ([`L1_BYTES`]; the tiny model's k
/// of 128: 24 + 16 KiB), so no tile waits on L2. On an AMD EPYC Zen 5
/// (2 threads, interleaved runs): +12-16 % on the tiny model's gate/up
/// products (k 128), while at k 384 (small's experts, 72 + 48 KiB) the
/// tall blocks stay 6 % faster.
fn split(m: usize, w: &PackedMat, threads: usize) -> (usize, usize) {
    let fits_l1 = (MAX_BLOCK + NR) * w.kp * 4 <= L1_BYTES;
    if w.layout == Layout::Plain || fits_l1 {
        let per = m.div_ceil(4 * threads);
        return (per.div_ceil(MR).clamp(1, MAX_BLOCK / MR) * MR, 1);
    }
    let tallest = (L2_SLICE / (4 * w.kp.max(1)) / MR).max(1) * MR;
    let blocks = m.div_ceil(tallest);
    let block = m.div_ceil(blocks).div_ceil(MR) * MR;
    let groups = (4 * threads).div_ceil(blocks).clamp(1, w.panels().max(1));
    (block, groups)
}

/// Whether a product runs on AMX tiles: the kernel is AMX, the weights
/// bf16 and k a whole number of tiles (32); the rest run on the AVX-512
/// BF16 micro-kernel.
fn uses_amx(kernel: Kernel, w: &PackedMat) -> bool {
    cfg!(target_arch = "x86_64")
        && kernel == Kernel::AmxBf16
        && w.elem == Elem::Bf16Pair
        && w.kp.is_multiple_of(AMX_KT)
}

/// An AMX product's pieces, `(rows per block, panel groups)`: row blocks of
/// whole 32-row steps, at most [`AMX_BLOCK`] rows, so a panel read into L1
/// serves many steps, and no more than keep the block's bf16 rows within
/// [`AMX_L2_ROWS`] bytes (a long k, e.g. the small dense twin's 5,120: the
/// rows are re-read for every panel); panel groups for about two pieces
/// per thread.
fn split_amx(m: usize, w: &PackedMat, threads: usize) -> (usize, usize) {
    let steps = m.div_ceil(AMX_ROWS);
    let fit = (AMX_L2_ROWS / (AMX_ROWS * w.kp.max(1) * 4)).max(1);
    let per_block = steps.min(AMX_BLOCK / AMX_ROWS).min(fit);
    let blocks = steps.div_ceil(per_block);
    let groups = (2 * threads).div_ceil(blocks).clamp(1, w.panels().max(1));
    (per_block * AMX_ROWS, groups)
}

/// The activations of an AMX product.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    /// f32 rows of x (gathered by the indices), rounded per block.
    F32(&'a [f32], Option<&'a [u32]>),
    /// Rows already rounded and laid out.
    Rows(&'a Bf16Rows),
}

/// [`run_block`] on AMX tiles: the block's rows rounded to bf16 once (or
/// read as they are), then every panel of the range.
#[cfg(target_arch = "x86_64")]
fn run_block_amx(
    lhs: Lhs,
    r0: usize,
    mb: usize,
    panels: std::ops::Range<usize>,
    w: &PackedMat,
    bias: Option<&[f32]>,
    out: amx::Out,
) {
    let kp = w.kp;
    let len = mb.next_multiple_of(AMX_ROWS) * kp;
    // The block's rows in this thread's buffer (in L2 for every panel the
    // block runs against): rounded from f32 here, or copied as they are.
    A_TILES.with_borrow_mut(|a| {
        if a.len() < len {
            a.resize(len, 0);
        }
        match lhs {
            // SAFETY: `check` confirmed the AMX kernel (so AVX-512 BF16
            // and the tile state); `a` holds the rows padded to whole
            // steps, zeros past the block's rows.
            Lhs::F32(x, rows) => unsafe {
                let src: Vec<usize> = (r0..r0 + mb).map(|r| x_row(rows, r)).collect();
                super::avx512::pack_rows(x, w.k, &src, kp, alloc::as_uninit(&mut a[..len]));
            },
            // Padded to whole steps already (r0 is one: blocks are whole steps).
            Lhs::Rows(rows) => a[..len].copy_from_slice(&rows.data[r0 * kp..][..len]),
        }
        // SAFETY: as above (`matmul_rows` checks the same for rows);
        // `uses_amx` checked kp.
        unsafe { amx::block(&a[..len], kp, mb, panels, w, bias, out, w.n) };
    });
}

/// The row of x that row `r` of the product reads (a gather, or itself).
fn x_row(rows: Option<&[u32]>, r: usize) -> usize {
    rows.map_or(r, |idx| idx[r] as usize)
}

fn check(
    kernel: Kernel,
    x: &[f32],
    rows: Option<&[u32]>,
    m: usize,
    w: &PackedMat,
    bias: Option<&[f32]>,
) -> OpResult<()> {
    let fail = |msg: String| Err(OpError::msg("bf16 matmul", msg));
    if !kernel.available() {
        return fail(format!("this CPU cannot run the {} kernel", kernel.name()));
    }
    if w.k == 0 {
        return fail("k = 0: an empty product".into());
    }
    let k = w.k;
    let x_rows = x.len() / k;
    match rows {
        None if x_rows < m => return fail(format!("x holds {x_rows} rows of {k}, need {m}")),
        Some(r) if r.len() < m => return fail(format!("{} row indices for {m} rows", r.len())),
        Some(r) if r[..m].iter().any(|&i| i as usize >= x_rows) => {
            return fail(format!("a row index is past x's {x_rows} rows"));
        }
        _ => {}
    }
    if let Some(b) = bias
        && b.len() < w.n
    {
        return fail(format!("bias of {} for {} outputs", b.len(), w.n));
    }
    Ok(())
}

/// Rows `r0 .. r0 + mb` of the product, the outputs of `panels`, into `c`
/// (the rows' first output). Each output is one tile's sum over its k
/// blocks in order, however the product is cut: the bits do not depend on
/// the split.
#[allow(clippy::too_many_arguments)]
fn run_block(
    kernel: Kernel,
    x: &[f32],
    rows: Option<&[u32]>,
    r0: usize,
    mb: usize,
    panels: std::ops::Range<usize>,
    w: &PackedMat,
    bias: Option<&[f32]>,
    c: *mut f32,
) {
    let kp = w.kp;
    let tiles = mb.div_ceil(MR);
    // f32 slots of contiguous rows are x's own bits: whole tiles read x in
    // place (row stride k) instead of a packed copy; only a last tile short
    // of MR rows, which the kernel would read past x's end, is packed.
    let direct = w.elem == Elem::F32 && rows.is_none();
    let packed = if direct {
        usize::from(!mb.is_multiple_of(MR))
    } else {
        tiles
    };
    A_TILES.with_borrow_mut(|a| {
        // Reused per thread, grown as needed: `pack_tile` writes every slot
        // of a tile (zeros past its rows), so no fill.
        if a.len() < packed * MR * kp {
            a.resize(packed * MR * kp, 0);
        }
        let first = tiles - packed;
        for (j, tile) in a.chunks_exact_mut(MR * kp).take(packed).enumerate() {
            let t = first + j;
            let mut src = [0usize; MR];
            let mr = MR.min(mb - t * MR);
            for (i, s) in src.iter_mut().enumerate().take(mr) {
                let r = r0 + t * MR + i;
                *s = x_row(rows, r);
            }
            kernel.pack_tile(w.elem, x, w.k, &src[..mr], tile);
        }
        let x_bits: &[u32] = bytemuck::cast_slice(x);
        let a_tile = |t: usize| -> &[u32] {
            if t < first {
                &x_bits[(r0 + t * MR) * kp..]
            } else {
                &a[(t - first) * MR * kp..][..MR * kp]
            }
        };
        run_tiles(kernel, tiles, mb, a_tile, panels, w, bias, c);
    });
}

thread_local! {
    /// A block's packed activation tiles, kept between products: at most
    /// MAX_BLOCK rows of k slots a thread (1.9 MiB at the small dense
    /// twin's k of 5,120), or a SwiGLU block's L2_SLICE.
    static A_TILES: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every tile of a block against every panel of `panels`: `a_tile(t)` is
/// tile t's first slot (row stride kp, packed or in place).
#[allow(clippy::too_many_arguments)]
fn run_tiles<'a>(
    kernel: Kernel,
    tiles: usize,
    mb: usize,
    a_tile: impl Fn(usize) -> &'a [u32],
    panels: std::ops::Range<usize>,
    w: &PackedMat,
    bias: Option<&[f32]>,
    c: *mut f32,
) {
    let (kp, n) = (w.kp, w.n);
    let per = w.outputs_per_panel();
    let kc = w.kc();
    for p in panels {
        let col = p * per;
        let nout = per.min(n - col);
        let panel = w.panel(p);
        for k0 in (0..kp).step_by(kc) {
            let klen = kc.min(kp - k0);
            let last = k0 + kc >= kp;
            for t in 0..tiles {
                let tile = Tile {
                    a: &a_tile(t)[k0..],
                    lda: kp,
                    b: &panel[k0 * NR..],
                    kp: klen,
                    accumulate: k0 > 0,
                    // SAFETY: row t·MR and column col of this block, inside the output.
                    c: unsafe { c.add(t * MR * n + col) },
                    ldc: n,
                    mr: MR.min(mb - t * MR),
                    nout,
                    bias: if last {
                        bias.map(|b| &b[col..col + nout])
                    } else {
                        None
                    },
                    layout: w.layout,
                    elem: w.elem,
                };
                // SAFETY: `check` confirmed the kernel; the tile's rows and
                // columns lie inside this block's part of the output.
                unsafe { kernel.tile(&tile) };
            }
        }
    }
}

impl PackedMat {
    /// Slots of k per block: [`KC`] for a plain product with long rows, so
    /// the panel's block (KC · NR slots, 32 KiB) stays in L1 across the
    /// block's tiles instead of streaming the whole panel from L2 or L3 once
    /// per tile (the dense twin's down projection at small: k 5,120, a
    /// 640 KiB panel). A SwiGLU pair needs its full sums for the epilogue,
    /// and its k (the model width) is short: one block.
    fn kc(&self) -> usize {
        if self.layout == Layout::Plain {
            KC
        } else {
            self.kp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SwiGLU pair of the tiny model's k (128) splits as a plain product
    /// (short blocks, all panels: L1-resident), one of small's k (384)
    /// into tall blocks and panel groups, as before.
    #[test]
    fn short_swiglu_splits_as_plain() {
        let (n, m) = (512, 4096);
        let pair = |k: usize| {
            let w = vec![0.5f32; n * k];
            PackedMat::swiglu(&w, &w, n, k)
        };
        let tiny = pair(128);
        let plain = PackedMat::new(&vec![0.5f32; n * 128], n, 128);
        assert_eq!(split(m, &tiny, 2), split(m, &plain, 2));
        assert_eq!(split(m, &tiny, 2), (MAX_BLOCK, 1));
        let (block, groups) = split(m, &pair(384), 2);
        assert!(
            block > MAX_BLOCK && groups > 1,
            "k 384: {block} rows, {groups} groups"
        );
    }
}
