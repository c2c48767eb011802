//! The AMX kernel (Intel Advanced Matrix Extensions: Sapphire Rapids and
//! later Xeons): `tdpbf16ps` multiplies a 16 x 32 bf16 tile of activations
//! by a 32 x 16 tile of weights into 16 x 16 f32 sums, 16 384 FLOPs in one
//! instruction (one core measured about 3 TFLOP/s of it on the 2-core Xeon,
//! against about 80 for `vdpbf16ps`).
//!
//! The weights need no other packing: a panel's k-pair rows (one `u32` per
//! k-pair and output, [`super::pack`]) are exactly the "VNNI" layout of
//! the B tile: 16 k-pairs x 16 outputs is 16 rows of 64 bytes at the
//! panel's row stride (NR x 4 = 256 bytes). Activations are rounded to bf16
//! rows (round to nearest even, as for the other kernels) of `kp16`
//! k-pairs, zero-padded to a multiple of 16 pairs and of 32 rows.
//!
//! One step computes a 32 x 32 block of outputs: tiles 0-3 hold the sums
//! (rows 0-15 / 16-31 x columns 0-15 / 16-31), 4-5 the two row tiles of
//! activations and 6-7 the two column tiles of weights: four loads per four
//! products. The sums leave the tiles once, into a 32 x NR spill, and the
//! epilogue (bias, or SwiGLU's `silu(gate) · up`) is the portable kernels'
//! (`kernel::epilogue_row`, with a division: overlapped with the next
//! step's tile products here, it costs nothing, whereas the AVX-512 tile
//! computes SwiGLU on its registers without one, `avx512::silu_mul`).
//!
//! Within a sum the products of a k-pair are added in the order the
//! instruction defines (even k, then odd), tile after tile of k: not the
//! `vdpbf16ps` order, so the bits differ from the AVX-512 kernel's by
//! rounding, and the tests compare the two with a tolerance.
//!
//! Linux gives a process the tile registers only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`): [`detected`]
//! asks once. `TMOE_NO_AMX=1` turns the kernel off (A/B runs).

use std::arch::asm;
use std::sync::OnceLock;

use super::gemm::{AMX_KT as KT, AMX_ROWS as ROWS};
use super::kernel::epilogue_row;
use super::pack::{Layout, NR};

/// Whether this process may run the AMX kernel: the CPU has AMX-TILE,
/// AMX-BF16 and AVX-512 BF16 (for the activation rounding), the OS saves
/// the tile state, and Linux granted the tile data to this process.
pub fn detected() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| !std::env::var("TMOE_NO_AMX").is_ok_and(|v| v == "1") && probe())
}

#[cfg(target_os = "linux")]
fn probe() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if !(is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bf16")
        && is_x86_feature_detected!("xsave"))
    {
        return false;
    }
    // CPUID.(7,0).EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS manages the state.
    let (lo, _hi): (u32, u32);
    // SAFETY: XSAVE (hence OSXSAVE-gated xgetbv) is present: checked above.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack))
    };
    if lo & (3 << 17) != 3 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: the arch_prctl system call with two integer arguments; the
    // kernel clobbers rcx and r11.
    unsafe {
        asm!("syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn probe() -> bool {
    false
}

/// The longest k (in pairs) of a plain product that runs a step of rows
/// against a group of panels before the next step ([`block`]).
const ROW_ORDER_MAX_KP: usize = 192;
/// Bytes of weights (half of L2) a step of rows sweeps in that order.
const ROW_ORDER_GROUP: usize = 1 << 20;

/// Palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// Where [`block`] writes its outputs (from the block's first row).
#[derive(Clone, Copy)]
pub(super) enum Out {
    /// f32, row stride `n` (the product's outputs).
    F32(*mut f32),
    /// bf16 pairs of consecutive outputs, row stride `stride` slots: the
    /// activations of a next product on AMX, rounded as `pack_rows` rounds
    /// them (to nearest even), so that product reads them as they are. For
    /// SwiGLU pairs, whose panels hold an even number of outputs.
    Pairs { c: *mut u32, stride: usize },
}

/// `mb` rows of the product (activations `a`: bf16 pairs, row stride
/// `kp16`, zero rows up to a multiple of [`ROWS`]) against every panel of
/// `panels`, written through the epilogue to `out` (`n` outputs a row).
///
/// # Safety
/// [`detected`]; `w`'s slots are bf16 pairs with `kp` a multiple of [`KT`]
/// (`kp16 == kp`); `out` is valid for `mb` rows of `n` outputs.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block(
    a: &[u32],
    kp16: usize,
    mb: usize,
    panels: std::ops::Range<usize>,
    w: &super::pack::PackedMat,
    bias: Option<&[f32]>,
    out: Out,
    n: usize,
) {
    debug_assert!(matches!(out, Out::F32(_)) || (w.layout == Layout::Swiglu && bias.is_none()));
    debug_assert!(w.kp == kp16 && kp16.is_multiple_of(KT));
    debug_assert!(a.len() >= mb.next_multiple_of(ROWS) * kp16);
    let per = w.outputs_per_panel();
    // A step of a plain product without bias whose 32 rows and 64 outputs
    // all exist: its sums are the outputs, stored from the tiles straight
    // into C. The others go through a 32-row spill and the epilogue.
    let direct = |r0: usize, nout: usize| {
        w.layout == Layout::Plain && bias.is_none() && r0 + ROWS <= mb && nout == NR
    };
    // Two spills: a step's sums land in one while the epilogue of the step
    // before reads the other, a slice of rows after each tile of k, so
    // that the vector work runs beside the tile products instead of after
    // them: x1.20-1.30 on SwiGLU products at 256 x 5,120 x 384 against the
    // same code finishing each step at once (one thread, in one process),
    // x1.07-1.10 on the small dense twin's bf16 inference
    // (bench/results/cpu/xeon-amx-2026-12-05/ab-amx-pipelined-epilogue-*.txt).
    let mut spills = [[[0f32; NR]; ROWS]; 2];
    let spills = spills.as_mut_ptr();
    let mut next = 0;
    let mut pending: Option<Pending> = None;
    // The epilogue of `rows` of a pending step.
    let finish = |p: Pending, rows: std::ops::Range<usize>| {
        // SAFETY: spill p.buf holds the step's sums (stored by an earlier
        // `step`); no step writes it until this step's rows are finished.
        let spill = unsafe { &*spills.add(p.buf) };
        for i in rows {
            let row = &spill[i];
            match out {
                Out::F32(c) => {
                    // SAFETY: row p.r0 + i < mb, outputs col .. col + nout <= n.
                    let y = unsafe {
                        std::slice::from_raw_parts_mut(c.add((p.r0 + i) * n + p.col), p.nout)
                    };
                    let b = bias.map(|b| &b[p.col..p.col + p.nout]);
                    // SAFETY: AVX-512F, as for the other kernels' epilogue.
                    unsafe { epilogue(row, y, w.layout, b) };
                }
                Out::Pairs { c, stride } => {
                    // SAFETY: row p.r0 + i < mb; pairs col/2 .. of its stride
                    // (col even: panels of NR/2 outputs).
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            c.add((p.r0 + i) * stride + p.col / 2),
                            p.nout.div_ceil(2),
                        )
                    };
                    // SAFETY: AVX-512 BF16, which AMX implies ([`detected`]).
                    unsafe { epilogue_pairs(row, dst, p.nout) };
                }
            }
        }
    };
    let ktiles = kp16 / KT;
    // One step's 32 rows against panel p: straight into C (the `halves`
    // given), or both halves through a spill, whose epilogue runs during
    // the next step through a spill (or at the end of the block).
    let mut at = |r0: usize, p: usize, halves: std::ops::Range<usize>| {
        let col = p * per;
        let nout = per.min(n - col);
        let panel = w.panel(p);
        // SAFETY (every `step` below): 32 rows of kp16 slots from r0
        // (padded rows included); the panel's kp rows of NR slots; the
        // output holds 32 rows of 32 f32 at its stride.
        let a0 = unsafe { a.as_ptr().add(r0 * kp16) };
        if let (true, Out::F32(c)) = (direct(r0, nout), out) {
            if let Some(p) = pending.take() {
                finish(p, 0..p.rows);
            }
            for half in halves {
                // SAFETY: rows r0 .. r0 + 32 <= mb, outputs col .. col + 64 <= n.
                unsafe {
                    step(
                        a0,
                        kp16 * 4,
                        panel.as_ptr().add(half * 32),
                        ktiles,
                        c.add(r0 * n + col + half * 32),
                        n * 4,
                        |_| {},
                    )
                };
            }
            return;
        }
        // Both halves first (SwiGLU's epilogue needs the gate and the up
        // sums of a row), into the whole spill: a step writes all 32 rows.
        let before = pending.take();
        // SAFETY: spill `next` is not the pending one's.
        let rows = unsafe { spills.add(next) }.cast::<f32>();
        for half in 0..2 {
            // The pending step's rows, spread over this step's 2·ktiles tiles of k.
            let side = |kt: usize| {
                if let Some(p) = before {
                    let slot = half * ktiles + kt;
                    let share = |s: usize| s * p.rows / (2 * ktiles);
                    finish(p, share(slot)..share(slot + 1));
                }
            };
            // SAFETY: half · 32 < NR, inside the spill's first row.
            unsafe {
                step(
                    a0,
                    kp16 * 4,
                    panel.as_ptr().add(half * 32),
                    ktiles,
                    rows.add(half * 32),
                    NR * 4,
                    side,
                )
            };
        }
        pending = Some(Pending {
            r0,
            rows: ROWS.min(mb - r0),
            col,
            nout,
            buf: next,
        });
        next ^= 1;
    };
    // SAFETY: the CPU has AMX and this process the tile state ([`detected`]).
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    if w.layout == Layout::Plain && kp16 <= ROW_ORDER_MAX_KP {
        // A plain product of short k: its steps' stores weigh as much as
        // their products, so each step of rows sweeps a group of panels
        // and writes its rows of C in order (which the prefetchers
        // follow), re-reading the group's weights from L2: x1.03-1.40 at
        // k 128-384 against the order below, interleaved in one process
        // (bench/results/cpu/xeon-amx-2026-12-04-night/amx-step-orders-in-process.txt).
        // Groups of at most ROW_ORDER_GROUP bytes of weights: x1.2-1.3
        // over one group of all panels at n 5,120, k 384 (3.9 MB of weights).
        // Not for SwiGLU pairs: all their panels per step measured x0.8 at
        // 512 x 5,120 x 384, grouped no better than the order below.
        let per_group = (ROW_ORDER_GROUP / (kp16 * NR * 4)).max(1);
        let mut g0 = panels.start;
        while g0 < panels.end {
            let group = g0..(g0 + per_group).min(panels.end);
            for r0 in (0..mb).step_by(ROWS) {
                for p in group.clone() {
                    at(r0, p, 0..2);
                }
            }
            g0 = group.end;
        }
    } else {
        // Half a panel (32 outputs) at a time against every step of rows,
        // so the half's weights stay in cache while rows stream (the order
        // above measured x0.9 at k 5,120); the steps through the spill
        // take both halves at once.
        for p in panels {
            let nout = per.min(n - p * per);
            for half in 0..2 {
                for r0 in (0..mb).step_by(ROWS).filter(|&r0| direct(r0, nout)) {
                    at(r0, p, half..half + 1);
                }
            }
            for r0 in (0..mb).step_by(ROWS).filter(|&r0| !direct(r0, nout)) {
                at(r0, p, 0..2);
            }
        }
    }
    // SAFETY: as ldtilecfg above; frees the tile state for context switches.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
    if let Some(p) = pending {
        finish(p, 0..p.rows);
    }
}

/// A step whose sums wait in spill `buf` for the epilogue: its first row
/// and row count, and its panel's first output and output count.
#[derive(Clone, Copy)]
struct Pending {
    r0: usize,
    rows: usize,
    col: usize,
    nout: usize,
    buf: usize,
}

/// SwiGLU's `nout` outputs of a spill row as bf16 pairs (a zero high half
/// past an odd `nout`), rounded by the instruction `pack_rows` rounds
/// activations with (`vcvtne2ps2bf16`): the bits it would give.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn epilogue_pairs(row: &[f32; NR], dst: &mut [u32], nout: usize) {
    use std::arch::x86_64::{__m512i, _mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_storeu_si512};
    let mut h = [0f32; NR / 2];
    epilogue_row(row, &mut h[..nout], Layout::Swiglu, None);
    let mut pairs = [0u32; NR / 4];
    // SAFETY: h holds 32 f32, pairs 16 u32.
    unsafe {
        let lo = _mm512_loadu_ps(h.as_ptr());
        let hi = _mm512_loadu_ps(h.as_ptr().add(16));
        let bh: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(pairs.as_mut_ptr().cast(), bh);
    }
    dst.copy_from_slice(&pairs[..dst.len()]);
}

#[target_feature(enable = "avx512f")]
unsafe fn epilogue(row: &[f32; NR], out: &mut [f32], layout: Layout, bias: Option<&[f32]>) {
    epilogue_row(row, out, layout, bias);
}

/// One 32 x 32 block over `ktiles` tiles of k: `a` (row stride `lda`
/// bytes), `b` the panel's first column of the block (row stride NR slots),
/// sums to `c` (row stride `ldc` bytes). `side(kt)` runs after tile kt's
/// products are issued: vector work the core does while they execute.
///
/// # Safety
/// Tiles configured by [`CONFIG`]; the pointers cover what is read and
/// written; `side` does not touch what `c` addresses.
#[inline(always)]
unsafe fn step(
    a: *const u32,
    lda: usize,
    b: *const u32,
    ktiles: usize,
    c: *mut f32,
    ldc: usize,
    mut side: impl FnMut(usize),
) {
    let ldb = NR * 4;
    // SAFETY: as this function's: each tile load reads 16 rows of 64 bytes.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for kt in 0..ktiles {
            let (a, b) = (
                a.cast::<u8>().add(kt * 64),
                b.cast::<u8>().add(kt * KT * ldb),
            );
            asm!(
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tileloadd tmm5, [{a2} + {lda}*1]",
                "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a = in(reg) a,
                a2 = in(reg) a.add(16 * lda),
                b = in(reg) b,
                lda = in(reg) lda,
                ldb = in(reg) ldb,
                options(nostack, readonly),
            );
            side(kt);
        }
        asm!(
            "tilestored [{c} + {ldc}*1], tmm0",
            "tilestored [{c} + {ldc}*1 + 64], tmm1",
            "tilestored [{c2} + {ldc}*1], tmm2",
            "tilestored [{c2} + {ldc}*1 + 64], tmm3",
            c = in(reg) c,
            c2 = in(reg) c.cast::<u8>().add(16 * ldc),
            ldc = in(reg) ldc,
            options(nostack),
        );
    }
}

/// One core's `tdpbf16ps` GFLOP/s ceiling: `iters` rounds of four
/// independent products on tiles of ones. Returns the FLOPs done.
///
/// # Safety
/// [`detected`].
pub unsafe fn peak_flops_loop(iters: u64) -> f64 {
    let ones = vec![0x3F80_3F80u32; 16 * 16];
    // SAFETY: as this function's; each load reads 16 rows of 64 bytes of `ones`.
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
            "tileloadd tmm4, [{p} + {s}*1]",
            "tileloadd tmm5, [{p} + {s}*1]",
            "tileloadd tmm6, [{p} + {s}*1]",
            "tileloadd tmm7, [{p} + {s}*1]",
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            "3:",
            "tilerelease",
            cfg = in(reg) CONFIG.0.as_ptr(),
            p = in(reg) ones.as_ptr(),
            s = in(reg) 64usize,
            n = inout(reg) iters => _,
            options(nostack),
        );
    }
    iters as f64 * 4.0 * 16.0 * 16.0 * 32.0 * 2.0
}
