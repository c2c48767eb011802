//! The AVX-512 BF16 micro-kernel: an MR x NR tile held in 24 zmm
//! accumulators (MR rows x 4 vectors of 16 f32). Per k-pair it loads the
//! panel's 4 weight vectors once and, for each row, broadcasts that row's
//! bf16 pair to every lane and issues 4 `vdpbf16ps` (32 bf16 products each,
//! summed in pairs into f32). Activations are converted 32 at a time by
//! `vcvtne2ps2bf16` (round to nearest even).
//!
//! Only called through [`super::kernel::Kernel`] after the CPU was checked.

use std::arch::x86_64::*;
use std::mem::{MaybeUninit, transmute};

use crate::backend::cpu::alloc::as_uninit;

use super::kernel::Tile;
use super::pack::{Layout, MR, NR};

const NV: usize = NR / 16;

/// Lanes `0..n` (n <= 16).
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 }
}

/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `rows` index rows of `x` (width
/// `k`); `tile` holds `MR · ceil(k/2)` pairs.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_tile(x: &[f32], k: usize, rows: &[usize], tile: &mut [u32]) {
    let kp = k.div_ceil(2);
    // SAFETY: as this function's.
    unsafe { pack_rows(x, k, rows, kp, as_uninit(&mut tile[..MR * kp])) }
}

/// `rows` of `x` (width `k`) as bf16 pairs into `out`, row stride `stride`
/// (>= ceil(k/2), the rest of a row zero), every slot of `out` written:
/// zeros past `rows`.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `rows` index rows of `x`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_rows(
    x: &[f32],
    k: usize,
    rows: &[usize],
    stride: usize,
    out: &mut [MaybeUninit<u32>],
) {
    let kp = k.div_ceil(2);
    debug_assert!(stride >= kp);
    for (i, dst) in out.chunks_exact_mut(stride).enumerate() {
        let Some(&r) = rows.get(i) else {
            dst.fill(MaybeUninit::new(0));
            continue;
        };
        dst[kp..].fill(MaybeUninit::new(0));
        let src = &x[r * k..][..k];
        let mut c = 0;
        while c < k {
            let nf = (k - c).min(32);
            // SAFETY: masked loads read only src[c..c + nf]; the masked store
            // writes only dst[c/2..c/2 + ceil(nf/2)], inside `dst` (len >= kp).
            unsafe {
                let lo = _mm512_maskz_loadu_ps(lanes(nf), src.as_ptr().add(c));
                let hi = _mm512_maskz_loadu_ps(
                    lanes(nf.saturating_sub(16)),
                    src.as_ptr().add(c + 16.min(nf)),
                );
                let bh: __m512i = transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_mask_storeu_epi32(
                    dst.as_mut_ptr().add(c / 2) as *mut i32,
                    lanes(nf.div_ceil(2)),
                    bh,
                );
            }
            c += 32;
        }
    }
}

/// # Safety
/// As [`super::kernel::Kernel::tile`], on a CPU with AVX-512F and BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn tile(t: &Tile) {
    // SAFETY: as this function's.
    let mut acc = unsafe { initial(t) };
    let (a, b, kp, lda) = (t.a.as_ptr(), t.b.as_ptr(), t.kp, t.lda);
    debug_assert!(t.a.len() >= (MR - 1) * lda + kp && t.b.len() >= kp * NR);
    for q in 0..kp {
        // SAFETY: q < kp; the tile holds MR·kp pairs and the panel kp·NR.
        unsafe {
            let bq = b.add(q * NR) as *const i32;
            let mut bv = [transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NV];
            for (v, w) in bv.iter_mut().enumerate() {
                *w = transmute::<__m512i, __m512bh>(_mm512_loadu_epi32(bq.add(v * 16)));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av: __m512bh = transmute(_mm512_set1_epi32(*a.add(i * lda + q) as i32));
                for (r, &w) in row.iter_mut().zip(&bv) {
                    *r = _mm512_dpbf16_ps(*r, av, w);
                }
            }
        }
    }
    // SAFETY: as this function's. By value: with a reference, LLVM kept a
    // copy of the accumulators on the stack, stored on every k step.
    unsafe { write_tile(acc, t) }
}

/// k-pairs of the A tile [`tile_widen`] widens at a time (one 16-lane load a row).
const WIDEN_QC: usize = 16;

/// A chunk of the A tile widened to f32: `[row][pair]`, one 64-byte line a row.
#[repr(C, align(64))]
struct WideRows([[f32; WIDEN_QC]; MR]);

/// [`tile`] without `vdpbf16ps`, for CPUs where it is missing or slower
/// than the f32 FMA (`Kernel::Avx512Fma`). A bf16 is the high half of an
/// f32, so a pair widens in two instructions: the odd k is the pair with
/// its low half masked off, the even k the pair shifted up 16 bits. Per
/// k-pair: the panel's 4 weight vectors widened to 4 odd vectors, each
/// row's odd value broadcast against them by `vfmadd231ps`, then the same
/// for the even ones (4 masks or shifts and 24 FMAs each); the tile's rows are
/// widened [`WIDEN_QC`] pairs at a time into a stack buffer the broadcasts
/// read. Odd k first, then even, each product exact in f32 (bf16 has 8
/// significant bits) and rounded once into the sum: `vdpbf16ps`'s own
/// arithmetic, so the same bits wherever no value is subnormal (it
/// flushes those to zero). 56 vector instructions per 48 FMAs, so at most
/// 86 % of the FMA peak; on the Intel Xeon without AMX (family 6, model
/// 207), where `vdpbf16ps` runs at 45 % of the FMA's FLOP rate, this tile
/// ran the model's products 1.4-1.8x faster than the `vdpbf16ps` one
/// (`tmoe bench cpu-gemm`, 2026-12-07).
///
/// # Safety
/// As [`super::kernel::Kernel::tile`], on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_widen(t: &Tile) {
    // SAFETY: as this function's.
    let mut acc = unsafe { initial(t) };
    let (a, b, kp, lda) = (t.a.as_ptr(), t.b.as_ptr(), t.kp, t.lda);
    debug_assert!(t.a.len() >= (MR - 1) * lda + kp && t.b.len() >= kp * NR);
    let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
    let (mut odd, mut even) = (
        WideRows([[0.0; WIDEN_QC]; MR]),
        WideRows([[0.0; WIDEN_QC]; MR]),
    );
    let mut q0 = 0;
    while q0 < kp {
        let qn = WIDEN_QC.min(kp - q0);
        for i in 0..MR {
            // SAFETY: row i's pairs q0..q0 + qn lie inside the tile (its
            // rows hold kp pairs, stride lda); the buffers are aligned lines.
            unsafe {
                let p = _mm512_maskz_loadu_epi32(lanes(qn), a.add(i * lda + q0) as *const i32);
                let o = _mm512_castsi512_ps(_mm512_and_si512(p, high));
                let e = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(p));
                _mm512_store_ps(odd.0[i].as_mut_ptr(), o);
                _mm512_store_ps(even.0[i].as_mut_ptr(), e);
            }
        }
        for c in 0..qn {
            // SAFETY: q0 + c < kp; the panel holds kp·NR pairs.
            unsafe {
                let bq = b.add((q0 + c) * NR) as *const i32;
                let mut w = [_mm512_setzero_ps(); NV];
                for (v, w) in w.iter_mut().enumerate() {
                    *w = _mm512_castsi512_ps(_mm512_and_si512(
                        _mm512_loadu_epi32(bq.add(v * 16)),
                        high,
                    ));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(odd.0[i][c]);
                    for (r, &w) in row.iter_mut().zip(&w) {
                        *r = _mm512_fmadd_ps(av, w, *r);
                    }
                }
                // Loaded again, not kept from the odd pass (a volatile
                // read LLVM cannot merge with the first): it kept all 4
                // raw vectors live and spilled two accumulators to the
                // stack every k-pair.
                for (v, w) in w.iter_mut().enumerate() {
                    let raw = std::ptr::read_volatile(bq.add(v * 16) as *const __m512i);
                    *w = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(even.0[i][c]);
                    for (r, &w) in row.iter_mut().zip(&w) {
                        *r = _mm512_fmadd_ps(av, w, *r);
                    }
                }
            }
        }
        q0 += qn;
    }
    // SAFETY: as this function's; by value, as in [`tile`].
    unsafe { write_tile(acc, t) }
}

/// The f32 twin of [`tile`]: per slot, the panel's 4 weight vectors times
/// each row's value broadcast, by `vfmadd231ps`.
///
/// # Safety
/// As [`super::kernel::Kernel::tile`], on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_f32(t: &Tile) {
    // SAFETY: as this function's.
    let mut acc = unsafe { initial(t) };
    let (a, b, kp, lda) = (t.a.as_ptr(), t.b.as_ptr(), t.kp, t.lda);
    debug_assert!(t.a.len() >= (MR - 1) * lda + kp && t.b.len() >= kp * NR);
    for q in 0..kp {
        // SAFETY: q < kp; the tile holds MR·kp slots and the panel kp·NR.
        unsafe {
            let bq = b.add(q * NR) as *const f32;
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, w) in bv.iter_mut().enumerate() {
                *w = _mm512_loadu_ps(bq.add(v * 16));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(f32::from_bits(*a.add(i * lda + q)));
                for (r, &w) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(av, w, *r);
                }
            }
        }
    }
    // SAFETY: as this function's. By value: with a reference, LLVM kept a
    // copy of the accumulators on the stack, stored on every k step.
    unsafe { write_tile(acc, t) }
}

/// The accumulators a tile starts from: zero, or (a later block of k) what
/// `C` holds in the tile's rows and columns.
///
/// Not a `target_feature` function but `inline(always)`, as is
/// [`write_tile`]: inlined into the kernels (which enable AVX-512F), so the
/// accumulators stay in registers; as separate functions they passed
/// through 1.5 KiB of stack on the way in and out of every tile (2-5 %
/// of a product on an Intel Xeon, interleaved A/B).
///
/// # Safety
/// As [`super::kernel::Kernel::tile`], on a CPU with AVX-512F; only called
/// from the kernels above.
#[inline(always)]
unsafe fn initial(t: &Tile) -> [[__m512; NV]; MR] {
    // SAFETY: the CPU has AVX-512F (this function's contract).
    let mut acc = [[unsafe { _mm512_setzero_ps() }; NV]; MR];
    if t.accumulate {
        for (i, row) in acc.iter_mut().enumerate().take(t.mr) {
            for (v, r) in row.iter_mut().enumerate() {
                let col = v * 16;
                if col >= t.nout {
                    break;
                }
                // SAFETY: lanes below `nout` of row i < mr are C's.
                *r =
                    unsafe { _mm512_maskz_loadu_ps(lanes(t.nout - col), t.c.add(i * t.ldc + col)) };
            }
        }
    }
    acc
}

/// Writes an accumulator tile to `C`: `+ bias` (Plain) or `silu(g)·u` (Swiglu).
///
/// # Safety
/// As [`initial`].
#[inline(always)]
unsafe fn write_tile(acc: [[__m512; NV]; MR], t: &Tile) {
    if t.layout == Layout::Plain {
        for (i, row) in acc.iter().enumerate().take(t.mr) {
            for (v, &r) in row.iter().enumerate() {
                let col = v * 16;
                if col >= t.nout {
                    break;
                }
                let m = lanes(t.nout - col);
                // SAFETY: lanes below `nout` of row i < mr, which the caller
                // guarantees writable; the bias holds `nout` values.
                unsafe {
                    let val = match t.bias {
                        Some(bias) => {
                            _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, bias.as_ptr().add(col)))
                        }
                        None => r,
                    };
                    _mm512_mask_storeu_ps(t.c.add(i * t.ldc + col), m, val);
                }
            }
        }
    } else {
        // SwiGLU on the registers: gate vectors first, then up (the panel's
        // layout), `nout` outputs a row.
        for (i, row) in acc.iter().enumerate().take(t.mr) {
            for v in 0..NV / 2 {
                let col = v * 16;
                if col >= t.nout {
                    break;
                }
                // SAFETY: lanes below `nout` of row i < mr, which the caller
                // guarantees writable.
                unsafe {
                    let y = silu_mul(row[v], row[v + NV / 2]);
                    _mm512_mask_storeu_ps(t.c.add(i * t.ldc + col), lanes(t.nout - col), y);
                }
            }
        }
    }
}

/// `silu(g) · u` on 16 lanes without a division: e^-|g| by
/// [`exp`]'s polynomial with fused multiply-adds, and `1 / (1 + e)` by
/// `vrcp14ps` refined by one Newton step (within about 2 ulp of the
/// division). The division was most of the epilogue's cost on AMD Zen 4:
/// tiny bf16 inference ran nearly as fast with this silu as with none,
/// while FMAs alone, the division kept, gained nothing (a one-off
/// experiment). At the tiny model's k of 128 a tile has only 64 k steps
/// of products to spread the epilogue over.
///
/// Below e^-87.3 (|g| > 87.3) e stays at that floor instead of 0: silu
/// is then about 1e-36 · g instead of -0, far below any bf16 output.
///
/// # Safety
/// The CPU has AVX-512F; only called from functions that enable it.
#[inline(always)]
pub(super) unsafe fn silu_mul(g: __m512, u: __m512) -> __m512 {
    // SAFETY: AVX-512F (this function's contract).
    unsafe {
        let set = _mm512_set1_ps;
        // max returns its second operand when either is NaN: a NaN g stays NaN.
        let x = _mm512_max_ps(
            set(EXP_LO),
            _mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)),
        );
        let t = _mm512_fmadd_ps(x, set(std::f32::consts::LOG2_E), set(SHIFTER));
        let n = _mm512_sub_ps(t, set(SHIFTER));
        // r = x - n·ln2, ln2 in two parts.
        let r = _mm512_fnmadd_ps(n, set(LN2_LO), _mm512_fnmadd_ps(n, set(LN2_HI), x));
        let mut p = set(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, set(c));
        }
        let er = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), set(1.0));
        // e = e^-|g| in (0, 1], so 1 + e in (1, 2]: no overflow, no zero.
        let e = _mm512_mul_ps(er, pow2_of(t));
        let d = _mm512_add_ps(set(1.0), e);
        let r0 = _mm512_rcp14_ps(d);
        let inv = _mm512_mul_ps(r0, _mm512_fnmadd_ps(d, r0, set(2.0)));
        // sigmoid(g) = 1 / (1 + e) for g >= 0, e / (1 + e) below.
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(g, _mm512_setzero_ps());
        let sig = _mm512_mask_mul_ps(inv, below, e, inv);
        _mm512_mul_ps(_mm512_mul_ps(g, sig), u)
    }
}

/// `exp_f32`'s constants, verbatim (hence the allowed precision): the
/// clamp, the shifter that rounds to an integer in the low mantissa bits
/// (1.5 · 2^23), ln 2 in two parts, and the polynomial's coefficients from
/// the highest degree down.
const EXP_LO: f32 = -87.33654;
#[allow(clippy::excessive_precision)]
const EXP_HI: f32 = 88.3762626647949;
const SHIFTER: f32 = 12582912.0;
#[allow(clippy::excessive_precision)]
const LN2_HI: f32 = 0.693359375;
#[allow(clippy::excessive_precision)]
const LN2_LO: f32 = -2.12194440e-4;
#[allow(clippy::excessive_precision)]
const EXP_POLY: [f32; 6] = [
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
];

/// 2^n for `t = n + SHIFTER` (n in the low bits): `(n + 127) << 23`.
///
/// # Safety
/// The CPU has AVX-512F; only called from functions that enable it.
#[inline(always)]
unsafe fn pow2_of(t: __m512) -> __m512 {
    // SAFETY: AVX-512F (this function's contract).
    unsafe {
        let n = _mm512_sub_epi32(
            _mm512_castps_si512(t),
            _mm512_set1_epi32(SHIFTER.to_bits() as i32),
        );
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            n,
            _mm512_set1_epi32(127),
        )))
    }
}

/// [`crate::engine::float::exp_f32`] on 16 lanes, operation for operation
/// (separate multiplies and adds, no FMA: the same bits per lane).
///
/// # Safety
/// The CPU has AVX-512F; only called from functions that enable it.
#[inline(always)]
pub(super) unsafe fn exp(x: __m512) -> __m512 {
    // SAFETY: AVX-512F (this function's contract).
    unsafe {
        let set = _mm512_set1_ps;
        let (mul, add, sub) = (_mm512_mul_ps, _mm512_add_ps, _mm512_sub_ps);
        // min/max return their second operand when either is NaN: x last
        // keeps a NaN, as `clamp` does.
        let xc = _mm512_max_ps(set(EXP_LO), _mm512_min_ps(set(EXP_HI), x));
        let t = add(mul(xc, set(std::f32::consts::LOG2_E)), set(SHIFTER));
        let n = sub(t, set(SHIFTER));
        let r = sub(sub(xc, mul(n, set(LN2_HI))), mul(n, set(LN2_LO)));
        let mut p = set(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = add(mul(p, r), set(c));
        }
        let er = add(add(mul(mul(p, r), r), r), set(1.0));
        let y = mul(er, pow2_of(t));
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, set(EXP_LO));
        let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, set(EXP_HI));
        let y = _mm512_mask_blend_ps(below, y, _mm512_setzero_ps());
        _mm512_mask_blend_ps(above, y, set(f32::INFINITY))
    }
}

/// The instruction's own ceiling on one core: `iters` rounds of 12
/// independent `vdpbf16ps` (more than latency x throughput, so none waits).
/// Returns the FLOPs done (2 per bf16 pair: 64 per instruction).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn peak_flops_loop(iters: u64) -> f64 {
    let one: __m512bh = unsafe { transmute(_mm512_set1_epi32(0x3F80_3F80)) };
    let mut acc = [_mm512_setzero_ps(); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, one, one);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    std::hint::black_box(sum);
    iters as f64 * 12.0 * 64.0
}

/// [`peak_flops_loop`] for `vfmadd231ps` (32 FLOP each): the f32 panels'
/// ceiling.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn peak_flops_loop_f32(iters: u64) -> f64 {
    let (x, y) = (_mm512_set1_ps(1.0), _mm512_set1_ps(1e-9));
    let mut acc = [_mm512_setzero_ps(); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(x, y, *a);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    std::hint::black_box(sum);
    iters as f64 * 12.0 * 32.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::float::exp_f32;

    /// [`silu_mul`] against silu in f64: within 4 ulp of f32 (relative
    /// 2^-21) wherever silu is a normal f32 above 1e-30; 0 in, 0 out; a NaN
    /// stays NaN; past the polynomial's floor (g < -87.3) a magnitude below
    /// 1e-35 · |g|.
    #[test]
    fn vector_silu_is_within_4_ulp_of_f64() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("SKIP vector_silu_is_within_4_ulp_of_f64: this CPU has no AVX-512F");
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn silu16(g: &[f32; 16], u: &[f32; 16]) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F (checked by the caller); 16 floats each.
            unsafe {
                let y = silu_mul(_mm512_loadu_ps(g.as_ptr()), _mm512_loadu_ps(u.as_ptr()));
                _mm512_storeu_ps(out.as_mut_ptr(), y);
            }
            out
        }
        let mut gs: Vec<f32> = (0..20_000)
            .map(|i| (i as f32 - 10_000.0) * 0.0097)
            .collect();
        gs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            87.0,
            -87.0,
            100.0,
            -100.0,
            f32::NAN,
        ]);
        gs.resize(gs.len().next_multiple_of(16), 1.0);
        let mut worst = 0f64;
        for (c, chunk) in gs.chunks_exact(16).enumerate() {
            let g: [f32; 16] = chunk.try_into().unwrap();
            let u: [f32; 16] = std::array::from_fn(|i| 0.5 + ((c * 16 + i) % 7) as f32 * 0.25);
            // SAFETY: AVX-512F checked above.
            let got = unsafe { silu16(&g, &u) };
            for i in 0..16 {
                let (x, y) = (g[i] as f64, got[i] as f64);
                let want = x / (1.0 + (-x).exp()) * u[i] as f64;
                if g[i].is_nan() {
                    assert!(got[i].is_nan(), "silu(NaN) = {}", got[i]);
                } else if g[i] < -87.4 {
                    assert!(y.abs() <= 1e-35 * x.abs(), "silu({x}) = {y}");
                } else if want.abs() < 1e-30 {
                    assert!((y - want).abs() <= 1e-30, "silu({x}) = {y}, want {want}");
                } else {
                    let rel = (y - want).abs() / want.abs();
                    worst = worst.max(rel);
                    assert!(
                        rel <= 2f64.powi(-21),
                        "silu({x})·{} = {y}, want {want}",
                        u[i]
                    );
                }
            }
        }
        eprintln!("vector silu: worst relative error {worst:.2e}");
    }

    /// [`exp`] against the scalar `exp_f32` it mirrors: the same bits over
    /// both tails, the clamp limits, ±0, infinities and NaN.
    #[test]
    #[allow(clippy::excessive_precision)] // exp_f32's clamp limit, verbatim
    fn vector_exp_has_the_scalar_bits() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("SKIP vector_exp_has_the_scalar_bits: this CPU has no AVX-512F");
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn exp16(x: &[f32; 16]) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F (checked by the caller); 16 floats each.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp(_mm512_loadu_ps(x.as_ptr()))) };
            out
        }
        let mut xs = vec![
            0.0f32,
            -0.0,
            -87.33654,
            -87.34,
            88.3762626647949,
            88.4,
            -1e-30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        xs.extend((0..4000).map(|i| (i as f32 - 3000.0) * 0.0311));
        xs.resize(xs.len().next_multiple_of(16), 1.0);
        for chunk in xs.chunks_exact(16) {
            let x: [f32; 16] = chunk.try_into().unwrap();
            // SAFETY: AVX-512F checked above.
            let got = unsafe { exp16(&x) };
            for (g, &x) in got.iter().zip(&x) {
                let want = exp_f32(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "e^{x}: {g} vs {want}"
                );
            }
        }
    }
}
