//! General products `c[m, n] (+)= op(a)[m, k] · op(b)[k, n]` of strided f32
//! operands on the packed kernels: what the training engine's products
//! need (the forward, and both backward products, whose operands are
//! transposed). `b` is packed into panels ([`pack_rhs`]: n·k values
//! against m·n·k multiply-adds; the LM head packs its table once for all
//! its row chunks), `a` is read in place when its rows are contiguous and
//! copied otherwise.
//!
//! With [`Elem::Bf16Pair`] this is mixed-precision training's product:
//! operands rounded to bf16 (to nearest even, as the kernels round
//! activations), sums in f32, as PyTorch's CPU autocast does for `linear`.
//! On AMX, k is zero-padded to a whole tile (32).

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::{Bf16Rows, matmul_into, matmul_rows_into};
use super::kernel::Kernel;
use super::pack::{Elem, Line, NR, PackedMat};
use crate::engine::{OpError, OpResult};

/// A strided f32 operand: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a read-only view; `product`'s callers keep the memory alive and
// unwritten for the call.
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

impl Strided {
    /// # Safety
    /// `(i, j)` must lie inside the operand's allocation.
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> f32 {
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }

    /// The same elements read transposed.
    fn t(self) -> Strided {
        Strided {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Row `i`'s `len` values when they are contiguous (`cs == 1`).
    ///
    /// # Safety
    /// As [`Strided::at`] for `(i, 0..len)`.
    #[inline(always)]
    unsafe fn row<'a>(self, i: usize, len: usize) -> &'a [f32] {
        unsafe { std::slice::from_raw_parts(self.ptr.offset(i as isize * self.rs), len) }
    }
}

/// The k a product is padded to: a whole AMX tile for bf16 on AMX.
pub fn padded_k(kernel: Kernel, elem: Elem, k: usize) -> usize {
    if kernel == Kernel::AmxBf16 && elem == Elem::Bf16Pair {
        k.next_multiple_of(32)
    } else {
        k
    }
}

/// bf16 bits of `x`, rounded to nearest even (quiet NaN kept): what
/// `vcvtne2ps2bf16` does, written so the packing loops vectorise.
#[inline(always)]
fn bf16_rne(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    if x.is_nan() {
        (b >> 16) | 0x40
    } else {
        rounded
    }
}

thread_local! {
    /// Buffers kept between products on this thread (see
    /// [`PackedMat::unwritten_in`]): a packed right-hand side, a copy of the
    /// left one, an output to add or transpose.
    static SPARE_RHS: std::cell::RefCell<Vec<Vec<Line>>> = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE_LHS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SPARE_OUT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// This thread's spare buffer `key` as `len` values (give it back with
/// `set`). Not cleared: stale values from an earlier product, which the
/// caller overwrites, all of them (a zero fill cost 6-9 % of a tiny
/// training step).
fn spare(key: &'static std::thread::LocalKey<Cell<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut v = key.take();
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v.truncate(len);
    v
}

/// Returns a packed matrix's storage to this thread's spare.
pub fn recycle(w: PackedMat) {
    SPARE_RHS.with_borrow_mut(|pool| {
        pool.push(w.into_storage());
        if pool.len() > SPARE_RHS_KEPT {
            // Keep the largest.
            let smallest = (0..pool.len())
                .min_by_key(|&i| pool[i].capacity())
                .unwrap_or(0);
            pool.swap_remove(smallest);
        }
    });
}

/// Packed matrices' storages kept per thread: SwiGLU's two gradients
/// (packed together, [`pack_produced`]) and a product's own.
const SPARE_RHS_KEPT: usize = 3;

/// A packed matrix's storage from this thread's spares (the largest; empty
/// if none): its pages already touched, so no page faults or zero fill
/// when `PackedMat::unwritten_in` grows it.
fn spare_rhs() -> Vec<Line> {
    SPARE_RHS.with_borrow_mut(|pool| {
        let largest = (0..pool.len()).max_by_key(|&i| pool[i].capacity());
        largest.map_or_else(Vec::new, |i| pool.swap_remove(i))
    })
}

/// Whether a piece of work this big should fan out over rayon (not from
/// inside a worker: the caller already parallelises).
fn fan_out(work: usize) -> bool {
    work >= 1 << 16 && rayon::current_thread_index().is_none()
}

/// `b [k, n]` as the panels of `W = bᵀ [n, padded_k]` (zeros past k), for
/// products on `kernel`.
///
/// Rows of b contiguous (`cs == 1`: activations, or dy in a weight
/// gradient): a slot row (one or two rows of b) at a time across every
/// panel, so b is read once in order. Columns contiguous (`rs == 1`: a
/// weight `[n, k]` read transposed, as the forward reads it): a panel at a
/// time, each column of b (a weight row) rounded to pairs in order and the
/// block then turned into slot rows. Otherwise: a panel at a time, gathered.
///
/// # Safety
/// `b` must address `k x n` elements in a live allocation.
pub unsafe fn pack_rhs(kernel: Kernel, elem: Elem, k: usize, n: usize, b: Strided) -> PackedMat {
    let kk = padded_k(kernel, elem, k);
    let mut w = PackedMat::unwritten_in(spare_rhs(), elem, n, kk);
    let fill = Fill {
        elem,
        k,
        n,
        kp: w.kp,
        filled: elem.slots(k),
        b,
        slots: SlotsPtr(w.slots_mut().as_mut_ptr()),
    };
    let panels = n.div_ceil(NR);
    // SAFETY (each call): the caller's contract on b; each call writes
    // slots no other call writes.
    match (b.cs == 1, fan_out(n * k)) {
        (true, true) => (0..fill.kp)
            .into_par_iter()
            .with_min_len(4)
            .for_each(|q| unsafe { fill.run(true, q) }),
        (true, false) => (0..fill.kp).for_each(|q| unsafe { fill.run(true, q) }),
        (false, true) => (0..panels)
            .into_par_iter()
            .for_each(|p| unsafe { fill.run(false, p) }),
        (false, false) => (0..panels).for_each(|p| unsafe { fill.run(false, p) }),
    }
    w
}

/// What [`pack_rhs`] writes and from where: every slot of `kp` slot rows in
/// each panel (the storage is reused unzeroed): values, then zeros past n
/// in the last panel and past k in every panel.
#[derive(Clone, Copy)]
struct Fill {
    elem: Elem,
    k: usize,
    n: usize,
    kp: usize,
    /// Slot rows holding values of b (the rest is k padding).
    filled: usize,
    b: Strided,
    slots: SlotsPtr,
}

impl Fill {
    /// Slot row `q` across every panel (`by_rows`), or every slot row of
    /// panel `i`. Compiled again for AVX-512 and chosen at run time: the
    /// crate's baseline (SSE2) rounds 4 values at a time.
    ///
    /// # Safety
    /// As [`pack_rhs`]; `i` a slot row or panel, written by this call only.
    unsafe fn run(self, by_rows: bool, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if crate::backend::cpu::simd::avx512() {
            // SAFETY: the CPU has AVX-512F; the rest is the caller's contract.
            unsafe { self.run_avx512(by_rows, i) };
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { self.run_any(by_rows, i) }
    }

    /// # Safety
    /// As [`Fill::run`], on a CPU with AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(self, by_rows: bool, i: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.run_any(by_rows, i) }
    }

    /// # Safety
    /// As [`Fill::run`].
    #[inline(always)]
    unsafe fn run_any(self, by_rows: bool, i: usize) {
        // Plain loops: `for_each` is a `fold` that may be compiled apart,
        // without the caller's AVX-512.
        if by_rows {
            for p in 0..self.n.div_ceil(NR) {
                unsafe { self.write(p, i) };
            }
        } else if self.b.rs == 1 && self.elem == Elem::Bf16Pair {
            unsafe { self.panel_from_columns(i) };
        } else {
            for q in 0..self.kp {
                unsafe { self.write(i, q) };
            }
        }
    }

    /// Panel p's slot row q, NR slots.
    ///
    /// # Safety
    /// `p` a panel, `q < kp`, written by this call only.
    #[inline(always)]
    unsafe fn slot_row<'a>(self, p: usize, q: usize) -> &'a mut [u32] {
        unsafe { std::slice::from_raw_parts_mut(self.slots.at((p * self.kp + q) * NR), NR) }
    }

    /// # Safety
    /// As [`Fill::slot_row`], and the caller's contract on b.
    #[inline(always)]
    unsafe fn write(self, p: usize, q: usize) {
        let row = unsafe { self.slot_row(p, q) };
        let nout = NR.min(self.n - p * NR);
        if q < self.filled {
            fill_slots(self.elem, self.k, self.b, p * NR, q, &mut row[..nout]);
            row[nout..].fill(0);
        } else {
            row.fill(0);
        }
    }

    /// Panel p of bf16 pairs from a b with contiguous columns: for a block
    /// of [`QB`] slot rows, each column's pairs are rounded in order (the
    /// loop vectorises), then the block is written slot row by slot row.
    /// Before, each pair was two scalar gathers a weight row apart.
    ///
    /// # Safety
    /// As [`Fill::write`] for every slot row of panel p; `b.rs == 1`.
    #[inline(always)]
    unsafe fn panel_from_columns(self, p: usize) {
        const QB: usize = 64;
        let (j0, k) = (p * NR, self.k);
        let nout = NR.min(self.n - j0);
        let mut block = [[0u32; QB]; NR];
        for q0 in (0..self.filled).step_by(QB) {
            let qn = QB.min(self.filled - q0);
            for (jj, out) in block[..nout].iter_mut().enumerate() {
                // SAFETY: column j0 + jj < n of b, rows 2·q0.. < k, contiguous (rs == 1).
                let col = unsafe {
                    let start = self
                        .b
                        .ptr
                        .offset((j0 + jj) as isize * self.b.cs + 2 * q0 as isize);
                    std::slice::from_raw_parts(start, (2 * (q0 + qn)).min(k) - 2 * q0)
                };
                let pairs = col.chunks_exact(2);
                let odd = pairs.remainder().first().copied();
                for (s, pr) in out.iter_mut().zip(pairs) {
                    *s = bf16_rne(pr[0]) | bf16_rne(pr[1]) << 16;
                }
                if let Some(lo) = odd {
                    out[qn - 1] = bf16_rne(lo);
                }
            }
            for qq in 0..qn {
                let row = unsafe { self.slot_row(p, q0 + qq) };
                for (s, col) in row[..nout].iter_mut().zip(&block) {
                    *s = col[qq];
                }
                row[nout..].fill(0);
            }
        }
        for q in self.filled..self.kp {
            unsafe { self.slot_row(p, q) }.fill(0);
        }
    }
}

/// The packed matrix's slots, written by several threads at disjoint places.
#[derive(Clone, Copy)]
struct SlotsPtr(*mut u32);
// SAFETY: each (panel, slot row) is written by one call only.
unsafe impl Send for SlotsPtr {}
unsafe impl Sync for SlotsPtr {}
impl SlotsPtr {
    /// # Safety
    /// `offset` must lie inside the slots.
    unsafe fn at(self, offset: usize) -> *mut u32 {
        unsafe { self.0.add(offset) }
    }
}

/// Slot row `q` of the panel whose first output is `j0`: b's row q (f32),
/// or rows 2q and 2q + 1 as bf16 pairs (a zero past k).
#[inline(always)]
fn fill_slots(elem: Elem, k: usize, b: Strided, j0: usize, q: usize, slots: &mut [u32]) {
    let nout = slots.len();
    // SAFETY (all reads): rows < k, columns j0 + jj < n: the caller's contract.
    match elem {
        Elem::F32 if b.cs == 1 => {
            let r = unsafe { b.row(q, j0 + nout) };
            for (s, &v) in slots.iter_mut().zip(&r[j0..]) {
                *s = v.to_bits();
            }
        }
        Elem::F32 => {
            for (jj, s) in slots.iter_mut().enumerate() {
                *s = unsafe { b.at(q, j0 + jj) }.to_bits();
            }
        }
        Elem::Bf16Pair => {
            let (p0, p1) = (2 * q, 2 * q + 1);
            if b.cs == 1 {
                let r0 = unsafe { b.row(p0, j0 + nout) };
                if p1 < k {
                    let r1 = unsafe { b.row(p1, j0 + nout) };
                    for ((s, &lo), &hi) in slots.iter_mut().zip(&r0[j0..]).zip(&r1[j0..]) {
                        *s = bf16_rne(lo) | bf16_rne(hi) << 16;
                    }
                } else {
                    for (s, &lo) in slots.iter_mut().zip(&r0[j0..]) {
                        *s = bf16_rne(lo);
                    }
                }
            } else {
                for (jj, s) in slots.iter_mut().enumerate() {
                    let lo = unsafe { b.at(p0, j0 + jj) };
                    let hi = if p1 < k {
                        unsafe { b.at(p1, j0 + jj) }
                    } else {
                        0.0
                    };
                    *s = bf16_rne(lo) | bf16_rne(hi) << 16;
                }
            }
        }
    }
}

/// `c[m, n] (+)= a[m, k] · W` where `w` came from [`pack_rhs`] for `kernel`
/// with this k; `c` has row stride `c_rs`.
///
/// # Safety
/// `a` must address `m x k` elements in a live allocation; `c` must hold
/// `m` rows of stride `c_rs >= w.n`, overlapping neither operand.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_packed(
    kernel: Kernel,
    m: usize,
    k: usize,
    a: Strided,
    w: &PackedMat,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
) -> OpResult<()> {
    let n = w.n;
    let kk = w.k;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 || kk != padded_k(kernel, w.elem, k) || c_rs < n {
        return Err(OpError::msg(
            "strided product",
            format!("k {k} against a packed k of {kk}, or row stride {c_rs} < n {n}"),
        ));
    }
    let in_place = a.cs == 1 && a.rs == kk as isize;
    let mut copy = Vec::new();
    let x: &[f32] = if in_place {
        // SAFETY: m contiguous rows of kk = k values: the caller's contract.
        unsafe { std::slice::from_raw_parts(a.ptr, m * kk) }
    } else {
        // SAFETY: the caller's contract on `a`.
        copy = unsafe { rows_of(m, k, kk, a) };
        &copy
    };
    let done = if !accumulate && c_rs == n {
        // SAFETY: the caller's m rows of n, all written by matmul_into on Ok.
        let out = unsafe { std::slice::from_raw_parts_mut(c.cast::<MaybeUninit<f32>>(), m * n) };
        matmul_into(kernel, x, None, m, w, None, out)
    } else {
        let mut y = spare(&SPARE_OUT, m * n);
        let done = matmul_into(kernel, x, None, m, w, None, as_uninit(&mut y));
        if done.is_ok() {
            // SAFETY: the caller's contract on c.
            unsafe { add_rows(&y, m, n, c, c_rs, accumulate) };
        }
        SPARE_OUT.set(y);
        done
    };
    if !in_place {
        SPARE_LHS.set(copy);
    }
    done
}

/// A written f32 buffer as the output `matmul_into` takes.
fn as_uninit(y: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and every f32 is a valid one.
    unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast(), y.len()) }
}

/// `c[i, j] (+)= y[i, j]` for `y [m, n]`.
///
/// # Safety
/// `c` must hold `m` rows of stride `c_rs >= n`, not overlapping `y`.
unsafe fn add_rows(y: &[f32], m: usize, n: usize, c: *mut f32, c_rs: usize, accumulate: bool) {
    for (i, row) in y[..m * n].chunks_exact(n).enumerate() {
        // SAFETY: row i of c, n values, not overlapping y.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), n) };
        if accumulate {
            dst.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
        } else {
            dst.copy_from_slice(row);
        }
    }
}

/// `c[m, n] (+)= a[m, k] · b[k, n]`: [`pack_rhs`] then [`product_packed`].
///
/// # Safety
/// As both.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    kernel: Kernel,
    elem: Elem,
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Strided,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
) -> OpResult<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY (both): the caller's contract.
    if packs_lhs(a, b, m, n) {
        // A weight gradient `dyᵀ · x`: a is transposed, b has contiguous
        // rows. Computing `cᵀ = bᵀ · aᵀ` packs dy (the larger) on the fast
        // path (two rows into k-pairs) and transposes only x.
        let w = unsafe { pack_rhs(kernel, elem, k, m, a.t()) };
        let done = unsafe { product_packed_lhs(kernel, m, n, k, &w, b, c, c_rs, accumulate) };
        recycle(w);
        done
    } else {
        let w = unsafe { pack_rhs(kernel, elem, k, n, b) };
        let done = unsafe { product_packed(kernel, m, k, a, &w, c, c_rs, accumulate) };
        recycle(w);
        done
    }
}

/// Whether [`product`] packs `a` (as the panels of `aᵀ`, then computing
/// `cᵀ = bᵀ · aᵀ`) rather than `b`: for a weight gradient `dyᵀ · x` whose
/// dy is the wider (`n < m`).
pub fn packs_lhs(a: Strided, b: Strided, m: usize, n: usize) -> bool {
    a.cs != 1 && b.cs == 1 && n < m
}

/// `c[m, n] (+)= a · b` where `a [m, k]` comes packed as the panels of
/// `aᵀ` (`w`, from [`pack_rhs`] of `aᵀ`, or [`pack_produced`]): computed
/// as `cᵀ = bᵀ · aᵀ` and stored transposed, as [`product`] does when
/// [`packs_lhs`].
///
/// # Safety
/// `b` must address `k x n` elements in a live allocation; `c` as in
/// [`product_packed`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_packed_lhs(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    w: &PackedMat,
    b: Strided,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
) -> OpResult<()> {
    if w.n != m || c_rs < n {
        return Err(OpError::msg(
            "strided product",
            format!(
                "a packed left operand of {} rows for {m}, or row stride {c_rs} < n {n}",
                w.n
            ),
        ));
    }
    let mut y = spare(&SPARE_OUT, n * m);
    // SAFETY: bᵀ is `n x k` (the caller's contract on b); y holds n rows of m.
    let done = unsafe { product_packed(kernel, n, k, b.t(), w, y.as_mut_ptr(), m, false) };
    if done.is_ok() {
        // SAFETY: the caller's contract on c.
        unsafe { store_transposed(&y, n, m, c, c_rs, accumulate) };
    }
    SPARE_OUT.set(y);
    done
}

/// Slot rows per block of [`pack_produced`] (2·8 rows of b for bf16
/// pairs): small enough that a block's rows are still in L1/L2 when packed.
const PRODUCE_QB: usize = 8;

thread_local! {
    /// [`pack_produced`]'s blocks of rows, kept between blocks.
    static PRODUCED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`pack_rhs`] of `N` matrices `[k, n]` computed a block of rows at a
/// time: `produce(rows, blocks)` must write rows `rows` of each matrix into
/// its block (`rows.len() · n` values, row-major, all of them). Each block
/// is packed as soon as it is written, while still in cache, instead of
/// the whole matrices written and read back: the same packed slots as
/// [`pack_rhs`] of the finished matrices (SwiGLU's output and gradients in
/// mixed-precision training, which need no f32 copy in memory at all).
/// Blocks run in parallel where the matrices are big enough.
pub fn pack_produced<const N: usize>(
    kernel: Kernel,
    elem: Elem,
    k: usize,
    n: usize,
    produce: impl Fn(std::ops::Range<usize>, [&mut [f32]; N]) + Sync,
) -> [PackedMat; N] {
    let kk = padded_k(kernel, elem, k);
    let mut ws: [PackedMat; N] =
        std::array::from_fn(|_| PackedMat::unwritten_in(spare_rhs(), elem, n, kk));
    let kp = ws.first().map_or(0, |w| w.kp);
    let filled = elem.slots(k);
    let bases: [SlotsPtr; N] = std::array::from_fn(|i| SlotsPtr(ws[i].slots_mut().as_mut_ptr()));
    let per_slot = match elem {
        Elem::Bf16Pair => 2,
        Elem::F32 => 1,
    };
    let block = |blk: usize| {
        let q0 = blk * PRODUCE_QB;
        let q1 = (q0 + PRODUCE_QB).min(filled);
        let rows = q0 * per_slot..(q1 * per_slot).min(k);
        let len = rows.len() * n;
        PRODUCED.with_borrow_mut(|buf| {
            if buf.len() < N * len {
                buf.resize(N * len, 0.0);
            }
            let mut chunks = buf.chunks_exact_mut(len.max(1));
            let blocks: [&mut [f32]; N] =
                std::array::from_fn(|_| &mut chunks.next().expect("N blocks")[..len]);
            produce(rows.clone(), blocks);
            for (i, base) in bases.iter().enumerate() {
                // The block as a matrix of its own rows whose slot row 0 is
                // slot row q0 of every panel.
                let fill = Fill {
                    elem,
                    k: rows.len(),
                    n,
                    kp,
                    filled: q1 - q0,
                    b: Strided {
                        ptr: buf[i * len..].as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    // SAFETY: slot row q0 of panel 0 lies inside the matrix.
                    slots: SlotsPtr(unsafe { base.at(q0 * NR) }),
                };
                for q in 0..q1 - q0 {
                    // SAFETY: b holds the block's rows (written by
                    // `produce`); slot rows q0.. of each panel are this
                    // block's only.
                    unsafe { fill.run(true, q) };
                }
            }
        });
    };
    let blocks = if n == 0 {
        0
    } else {
        filled.div_ceil(PRODUCE_QB)
    };
    if fan_out(n * k) {
        (0..blocks).into_par_iter().for_each(block);
    } else {
        (0..blocks).for_each(block);
    }
    // The k padding's slot rows: zeros.
    for base in &bases {
        for p in 0..n.div_ceil(NR) {
            for q in filled..kp {
                // SAFETY: slot row q < kp of panel p, written here only.
                unsafe { std::slice::from_raw_parts_mut(base.at((p * kp + q) * NR), NR) }.fill(0);
            }
        }
    }
    ws
}

/// `c [m, n] = a · b` with `a` rows already rounded ([`Bf16Rows`]) and
/// `b [k, n]` packed here, as [`product`] packs it: the same bits as
/// [`product`] of the f32 rows `a` was rounded from.
///
/// # Safety
/// `b` must address `a.k x n` elements (its unpadded k) in a live
/// allocation.
pub unsafe fn product_rows(
    kernel: Kernel,
    a: &Bf16Rows,
    k: usize,
    n: usize,
    b: Strided,
    c: &mut [MaybeUninit<f32>],
) -> OpResult<()> {
    // SAFETY: the caller's contract.
    let w = unsafe { pack_rhs(kernel, Elem::Bf16Pair, k, n, b) };
    let done = matmul_rows_into(kernel, a, &w, c);
    recycle(w);
    done
}

/// `c[i, j] (+)= y[j, i]` for `y [n, m]`, in 16 x 16 blocks.
///
/// # Safety
/// `c` must hold `m` rows of stride `c_rs >= n`, not overlapping `y`.
unsafe fn store_transposed(
    y: &[f32],
    n: usize,
    m: usize,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
) {
    /// c's base, shared by the blocks of rows, each writing its own rows.
    #[derive(Clone, Copy)]
    struct Rows(*mut f32);
    // SAFETY: each block writes rows no other block writes.
    unsafe impl Send for Rows {}
    unsafe impl Sync for Rows {}
    impl Rows {
        /// Row `i` (a method, so that the closure below takes the whole
        /// Sync wrapper, not its raw pointer).
        fn row(self, i: usize, c_rs: usize) -> *mut f32 {
            self.0.wrapping_add(i * c_rs)
        }
    }
    let rows = Rows(c);
    let block = |b: usize| {
        let i0 = b * TB;
        let mut j_done = 0;
        #[cfg(target_arch = "x86_64")]
        if i0 + TB <= m && crate::backend::cpu::simd::avx512() {
            // SAFETY: AVX-512F; rows i0..i0 + 16 < m of c, this block's.
            j_done = unsafe {
                store_transposed_blocks(y, n, m, rows.row(0, c_rs), c_rs, i0, accumulate)
            };
        }
        for i in i0..(i0 + TB).min(m) {
            // SAFETY: row i of c, columns < n; this block's row.
            let row = unsafe { std::slice::from_raw_parts_mut(rows.row(i, c_rs), n) };
            for j in j_done..n {
                let v = y[j * m + i];
                if accumulate {
                    row[j] += v;
                } else {
                    row[j] = v;
                }
            }
        }
    };
    let blocks = m.div_ceil(TB);
    // A serial pass here left the other cores idle after a parallel product
    // (a weight gradient of the small dense twin: 384 x 5,120 values).
    if fan_out(m * n) {
        (0..blocks).into_par_iter().for_each(block);
    } else {
        (0..blocks).for_each(block);
    }
}

/// Rows `i0..i0 + 16` of [`store_transposed`]'s `c`, columns in whole
/// blocks of 16: 16 loads of y, a register transpose, 16 row stores (or
/// adds). Returns the columns done (a multiple of 16).
///
/// # Safety
/// AVX-512F; as [`store_transposed`], with `i0 + 16 <= m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_transposed_blocks(
    y: &[f32],
    n: usize,
    m: usize,
    c: *mut f32,
    c_rs: usize,
    i0: usize,
    accumulate: bool,
) -> usize {
    use std::arch::x86_64::*;
    let whole = n / TB * TB;
    debug_assert!(i0 + TB <= m && y.len() >= n * m);
    for j0 in (0..whole).step_by(TB) {
        // r[j] = y(j0 + j, i0..i0 + 16): 16 contiguous values.
        let mut r: [__m512; TB] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(y.as_ptr().add((j0 + j) * m + i0)) });
        transpose16(&mut r);
        for (i, v) in r.iter().enumerate() {
            // SAFETY: row i0 + i of c, columns j0..j0 + 16 <= n.
            unsafe {
                let at = c.add((i0 + i) * c_rs + j0);
                let v = if accumulate {
                    _mm512_add_ps(_mm512_loadu_ps(at), *v)
                } else {
                    *v
                };
                _mm512_storeu_ps(at, v);
            }
        }
    }
    whole
}

/// Rows per block of the transposing copy (a 16 x 16 block of f32 is 16
/// cache lines read and 16 written).
const TB: usize = 16;

/// Rows `i0..i0 + 16` of `a` (whose columns are contiguous, `rs == 1`)
/// into `out` (16 rows of `kk`), columns `0..` in whole blocks of 16:
/// each block 16 loads of 16 values, a register transpose, 16 stores.
/// Returns the columns written (a multiple of 16); the caller does the
/// rest. Was a scalar gather: 12 % of a tiny MoE bf16 training step on the
/// AVX-512 BF16 kernel.
///
/// # Safety
/// AVX-512F; `(i0 + i, j)` inside a for i < 16, j < k; `out` 16 rows of
/// `kk >= k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_blocks(a: Strided, i0: usize, k: usize, kk: usize, out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let whole = k / TB * TB;
    for j0 in (0..whole).step_by(TB) {
        // r[j] = a(i0..i0 + 16, j0 + j): 16 contiguous values.
        let mut r: [__m512; TB] = std::array::from_fn(|j| unsafe {
            _mm512_loadu_ps(a.ptr.offset(i0 as isize + (j0 + j) as isize * a.cs))
        });
        transpose16(&mut r);
        for (i, v) in r.iter().enumerate() {
            // SAFETY: row i of out, columns j0..j0 + 16 <= k <= kk.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(i * kk + j0), *v) };
        }
    }
    whole
}

/// Transposes 16 x 16 f32 in registers: `r[j]` lane i becomes `r[i]` lane j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [std::arch::x86_64::__m512; TB]) {
    use std::arch::x86_64::*;
    let (pd, ps) = (_mm512_castps_pd, _mm512_castpd_ps);
    // Within each 128-bit lane L: 4 x 4 transposes, so that r[4q + c]
    // lane L holds column 4L + c of rows 4q..4q + 4.
    let mut t = *r;
    for q in 0..8 {
        t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    for q in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
        r[4 * q] = ps(_mm512_unpacklo_pd(pd(t0), pd(t2)));
        r[4 * q + 1] = ps(_mm512_unpackhi_pd(pd(t0), pd(t2)));
        r[4 * q + 2] = ps(_mm512_unpacklo_pd(pd(t1), pd(t3)));
        r[4 * q + 3] = ps(_mm512_unpackhi_pd(pd(t1), pd(t3)));
    }
    // Then column 4L + c is lane L of r[c], r[4 + c], r[8 + c], r[12 + c].
    let s = *r;
    for c in 0..4 {
        let (a, b, cc, d) = (s[c], s[4 + c], s[8 + c], s[12 + c]);
        let u0 = _mm512_shuffle_f32x4::<0x44>(a, b);
        let u1 = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let u2 = _mm512_shuffle_f32x4::<0x44>(cc, d);
        let u3 = _mm512_shuffle_f32x4::<0xEE>(cc, d);
        r[c] = _mm512_shuffle_f32x4::<0x88>(u0, u2);
        r[4 + c] = _mm512_shuffle_f32x4::<0xDD>(u0, u2);
        r[8 + c] = _mm512_shuffle_f32x4::<0x88>(u1, u3);
        r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(u1, u3);
    }
}

/// `a` as contiguous rows of `kk` values (zeros past k).
///
/// # Safety
/// `a` must address `m x k` elements.
unsafe fn rows_of(m: usize, k: usize, kk: usize, a: Strided) -> Vec<f32> {
    let mut x = spare(&SPARE_LHS, m * kk);
    let fill = |(blk, out): (usize, &mut [f32])| {
        let i0 = blk * TB;
        let rows = out.len() / kk;
        if a.cs == 1 {
            for (i, row) in out.chunks_exact_mut(kk).enumerate() {
                // SAFETY: row i0 + i of a, k contiguous values.
                row[..k].copy_from_slice(unsafe { a.row(i0 + i, k) });
                row[k..].fill(0.0);
            }
            return;
        }
        for row in out.chunks_exact_mut(kk) {
            row[k..].fill(0.0);
        }
        // The transpose of contiguous rows (a weight gradient's `dyᵀ`):
        // whole 16 x 16 blocks in registers, the edge columns below.
        #[cfg(target_arch = "x86_64")]
        let done = if a.rs == 1 && rows == TB && crate::backend::cpu::simd::avx512() {
            // SAFETY: AVX-512F is present; (i0..i0 + 16, 0..k) lie inside a.
            unsafe { transpose_blocks(a, i0, k, kk, out) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        // Transposed or strided: 16 x 16 blocks, so reads walk a's rows.
        for j0 in (done..k).step_by(TB) {
            for j in j0..(j0 + TB).min(k) {
                for i in 0..rows {
                    // SAFETY: (i0 + i, j) inside a: the caller's contract.
                    out[i * kk + j] = unsafe { a.at(i0 + i, j) };
                }
            }
        }
    };
    if fan_out(m * k) {
        x.par_chunks_mut(TB * kk).enumerate().for_each(fill);
    } else {
        x.chunks_mut(TB * kk).enumerate().for_each(fill);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register transpose against the scalar gather it replaced, on
    /// every shape class: whole blocks, an edge of columns, a short block
    /// of rows, padding past k.
    #[test]
    fn transposed_rows_equal_the_scalar_gather() {
        for (m, k, kk) in [
            (16, 16, 16),
            (32, 48, 48),
            (37, 45, 64),
            (128, 517, 518),
            (5, 7, 8),
        ] {
            let src: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 3.0).collect();
            // a = srcᵀ viewed as [m, k]: src is [k, m] row-major.
            let a = Strided {
                ptr: src.as_ptr(),
                rs: 1,
                cs: m as isize,
            };
            // SAFETY: a addresses m x k elements of src.
            let got = unsafe { rows_of(m, k, kk, a) };
            for i in 0..m {
                for j in 0..kk {
                    let want = if j < k { src[j * m + i] } else { 0.0 };
                    assert_eq!(got[i * kk + j], want, "m {m} k {k} kk {kk} at ({i}, {j})");
                }
            }
            SPARE_LHS.set(got);
        }
    }

    /// The transposing store (register blocks, edges, rows in parallel)
    /// against the plain loop, storing and accumulating, past a row stride.
    #[test]
    fn transposed_store_equals_the_plain_loop() {
        for (m, n) in [(16, 16), (37, 45), (128, 517), (5, 70), (300, 260)] {
            let y: Vec<f32> = (0..n * m).map(|v| (v % 977) as f32 * 0.25 - 7.0).collect();
            let c_rs = n + 3;
            let c0: Vec<f32> = (0..m * c_rs).map(|v| (v % 101) as f32 * 0.5).collect();
            for accumulate in [false, true] {
                let mut got = c0.clone();
                // SAFETY: got holds m rows of c_rs >= n; y is [n, m].
                unsafe { store_transposed(&y, n, m, got.as_mut_ptr(), c_rs, accumulate) };
                for i in 0..m {
                    for j in 0..c_rs {
                        let base = c0[i * c_rs + j];
                        let want = match (j < n, accumulate) {
                            (false, _) => base,
                            (true, false) => y[j * m + i],
                            (true, true) => base + y[j * m + i],
                        };
                        assert_eq!(
                            got[i * c_rs + j],
                            want,
                            "m {m} n {n} acc {accumulate} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}
