//! The micro-kernel choice, made at run time, and the portable kernels:
//! plain Rust that widens each bf16 to f32 and accumulates in f32, in the
//! same order `vdpbf16ps` documents (odd k of a pair, then even), so it
//! works and is tested on any CPU; and its f32 twin for f32 panels.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use super::pack::{
    Elem, Layout, MR, NR, bf16_bits, hi_f32, lo_f32, pack_tile_f32, pack_tile_portable,
};
use crate::engine::float::sigmoid;

/// Which micro-kernel a product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (`tdpbf16ps`, Intel Sapphire Rapids+) for bf16 products
    /// whose k is a multiple of 32; the AVX-512 BF16 kernel for the rest
    /// and for f32 panels.
    AmxBf16,
    /// `vdpbf16ps` on 512-bit vectors (AVX-512 BF16: AMD Zen 4+, Intel
    /// Cooper Lake, Sapphire Rapids+), where it outruns the f32 FMA; f32
    /// panels with `vfmadd231ps`.
    Avx512Bf16,
    /// `vfmadd231ps` for both: bf16 panels widened to f32 in registers
    /// (`avx512::tile_widen`, the same bits as `vdpbf16ps`), where
    /// `vdpbf16ps` is missing (Intel Skylake-X to Ice Lake) or slower than
    /// the f32 FMA (the Intel Xeon of family 6, model 207 without AMX: 85
    /// against 186 GFLOP/s a core).
    Avx512Fma,
    /// Any CPU.
    Portable,
}

/// The environment variable that pins [`Kernel::detect`]'s choice (a
/// kernel's [`Kernel::name`]), for comparisons on one machine.
pub const KERNEL_ENV: &str = "TMOE_BF16_KERNEL";

impl Kernel {
    /// Every kernel, AMX first (by far the fastest where a CPU has it).
    pub const ALL: [Kernel; 4] = [
        Kernel::AmxBf16,
        Kernel::Avx512Bf16,
        Kernel::Avx512Fma,
        Kernel::Portable,
    ];

    /// The fastest kernel for bf16 panels on this CPU, chosen once per
    /// process: AMX tiles, else `vdpbf16ps` where it outruns the f32 FMA
    /// (measured once, in about 40 ms: AMD Zen 4 and 5 run it at twice the FMA's
    /// rate, the Intel Xeon without AMX at half), else bf16 widened to f32
    /// on the FMA, else the portable kernel. [`KERNEL_ENV`] pins it. The
    /// choice changes speed, not results: the widened kernel gives the
    /// portable one's bits, which `vdpbf16ps` documents too (AMX sums in
    /// another order).
    pub fn detect() -> Kernel {
        static CHOICE: OnceLock<Kernel> = OnceLock::new();
        *CHOICE.get_or_init(|| pinned().unwrap_or_else(choose))
    }

    /// The fastest kernel for f32 panels on this CPU (`None`: no AVX-512,
    /// where the f32 reference engine, on the `gemm` crate, is faster than
    /// the portable kernel). Every AVX-512 kernel runs f32 panels on the
    /// same FMA tile.
    pub fn detect_f32() -> Option<Kernel> {
        avx512f_detected().then_some(Kernel::Avx512Fma)
    }

    /// Whether this CPU can run it (checked before every product: a cached flag).
    pub fn available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::AmxBf16 => amx_detected(),
            Kernel::Avx512Bf16 => avx512_bf16_detected(),
            Kernel::Avx512Fma => avx512f_detected(),
        }
    }

    /// Whether its vector code (attention, f32 panels) may use AVX-512F.
    pub fn has_avx512f(self) -> bool {
        matches!(
            self,
            Kernel::AmxBf16 | Kernel::Avx512Bf16 | Kernel::Avx512Fma
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::AmxBf16 => "amx-bf16",
            Kernel::Avx512Bf16 => "avx512-bf16",
            Kernel::Avx512Fma => "avx512-fma",
            Kernel::Portable => "portable",
        }
    }

    /// Packs up to MR rows of `x` (width `k`), picked by `rows`, into `tile`
    /// as `elem` slots.
    pub(super) fn pack_tile(
        self,
        elem: Elem,
        x: &[f32],
        k: usize,
        rows: &[usize],
        tile: &mut [u32],
    ) {
        match (self, elem) {
            (_, Elem::F32) => pack_tile_f32(x, k, rows, tile),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `vcvtne2ps2bf16` needs AVX-512F and AVX-512 BF16, both
            // checked here (the FMA kernel's CPU may lack BF16); the portable
            // kernel keeps its own rounding, so it is tested on every CPU.
            (_, Elem::Bf16Pair) if self.has_avx512f() && avx512_bf16_detected() => unsafe {
                super::avx512::pack_tile(x, k, rows, tile)
            },
            _ => pack_tile_portable(x, k, rows, tile),
        }
    }

    /// Rows `idx` of `x` (width `k`) as bf16 pairs into `out`, row stride
    /// `stride` (>= the pairs; zeros past them, and rows past `idx`), as
    /// [`Kernel::pack_tile`] rounds them for this kernel: every slot written.
    pub(super) fn round_rows(
        self,
        x: &[f32],
        k: usize,
        idx: &[usize],
        stride: usize,
        out: &mut [MaybeUninit<u32>],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `pack_tile`.
            _ if self.has_avx512f() && avx512_bf16_detected() => unsafe {
                super::avx512::pack_rows(x, k, idx, stride, out)
            },
            _ => {
                for (i, dst) in out.chunks_exact_mut(stride).enumerate() {
                    let src = idx.get(i).map(|&r| &x[r * k..][..k]);
                    for (q, d) in dst.iter_mut().enumerate() {
                        let pair = src.filter(|_| 2 * q < k).map_or(0, |s| {
                            bf16_bits(s[2 * q])
                                | s.get(2 * q + 1).map_or(0, |&v| bf16_bits(v)) << 16
                        });
                        d.write(pair);
                    }
                }
            }
        }
    }

    /// One MR x NR tile of the product.
    ///
    /// # Safety
    /// `t.c` must be valid for writes of `t.mr` rows of stride `t.ldc` and
    /// `t.nout` columns; the kernel must be `available()`.
    pub(super) unsafe fn tile(self, t: &Tile) {
        match (self, t.elem) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::AmxBf16 | Kernel::Avx512Bf16, Elem::Bf16Pair) => unsafe {
                super::avx512::tile(t)
            },
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx512Fma, Elem::Bf16Pair) => unsafe { super::avx512::tile_widen(t) },
            #[cfg(target_arch = "x86_64")]
            (Kernel::AmxBf16 | Kernel::Avx512Bf16 | Kernel::Avx512Fma, Elem::F32) => unsafe {
                super::avx512::tile_f32(t)
            },
            (_, Elem::F32) => unsafe { tile_portable_f32(t) },
            _ => unsafe { tile_portable(t) },
        }
    }
}

/// The kernel [`KERNEL_ENV`] names, if this CPU runs it (a warning
/// otherwise: the automatic choice then stands).
fn pinned() -> Option<Kernel> {
    let name = std::env::var(KERNEL_ENV).ok()?;
    let names = Kernel::ALL.map(Kernel::name).join(", ");
    match Kernel::ALL.into_iter().find(|k| k.name() == name) {
        Some(k) if k.available() => Some(k),
        Some(_) => {
            eprintln!("warning: {KERNEL_ENV}={name}: this CPU cannot run it; choosing by itself");
            None
        }
        None => {
            eprintln!("warning: {KERNEL_ENV}={name} names no kernel (one of: {names}); ignored");
            None
        }
    }
}

/// [`Kernel::detect`]'s choice on this CPU.
fn choose() -> Kernel {
    if Kernel::AmxBf16.available() {
        Kernel::AmxBf16
    } else if Kernel::Avx512Bf16.available() && vdpbf16ps_outruns_fma() {
        Kernel::Avx512Bf16
    } else if avx512f_detected() {
        Kernel::Avx512Fma
    } else {
        Kernel::Portable
    }
}

/// Whether one core's `vdpbf16ps` FLOP rate beats its `vfmadd231ps` one
/// (`peak::rates_here`). The widened kernel reaches about the same share of
/// the FMA rate as `vdpbf16ps`'s kernel of its own (`tmoe bench cpu-gemm`),
/// and the two rates differ by 2x either way on the CPUs measured, so the
/// plain comparison decides.
fn vdpbf16ps_outruns_fma() -> bool {
    match super::peak::rates_here() {
        (Some(bf16), Some(f32)) => bf16 > f32,
        _ => false,
    }
}

fn avx512f_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn amx_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::amx::detected()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx512_bf16_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One micro-kernel call: an A tile times a B panel into a C tile.
pub(super) struct Tile<'a> {
    /// `MR` rows of activation slots, row stride `lda` (rows past `mr` are
    /// zero); the product runs over the first `kp` of each row.
    pub a: &'a [u32],
    pub lda: usize,
    /// `[kp][NR]` weight slots.
    pub b: &'a [u32],
    pub kp: usize,
    /// Add to what `C` holds (a later block of k; `Plain` only) instead of
    /// overwriting it.
    pub accumulate: bool,
    /// The tile's first output element and the row stride of `C`.
    pub c: *mut f32,
    pub ldc: usize,
    /// Valid rows (<= MR) and outputs (<= the panel's) of this tile.
    pub mr: usize,
    pub nout: usize,
    /// Added to every row (`Plain` only): this panel's outputs.
    pub bias: Option<&'a [f32]>,
    pub layout: Layout,
    /// What a slot of `a` and `b` holds.
    pub elem: Elem,
}

/// The accumulators a tile starts from: zero, or what `C` holds.
///
/// # Safety
/// As [`Kernel::tile`].
unsafe fn initial(t: &Tile) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    if t.accumulate {
        for (i, row) in acc.iter_mut().enumerate().take(t.mr) {
            // SAFETY: the caller guarantees `mr` rows of `nout` columns.
            let c = unsafe { std::slice::from_raw_parts(t.c.add(i * t.ldc), t.nout) };
            row[..t.nout].copy_from_slice(c);
        }
    }
    acc
}

unsafe fn tile_portable(t: &Tile) {
    let mut acc = unsafe { initial(t) };
    let (mut be, mut bo) = ([0f32; NR], [0f32; NR]);
    for q in 0..t.kp {
        let bq = &t.b[q * NR..][..NR];
        for j in 0..NR {
            be[j] = lo_f32(bq[j]);
            bo[j] = hi_f32(bq[j]);
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = t.a[i * t.lda + q];
            let (ae, ao) = (lo_f32(ai), hi_f32(ai));
            for j in 0..NR {
                row[j] = row[j] + ao * bo[j] + ae * be[j];
            }
        }
    }
    unsafe { store(&acc, t) }
}

/// The f32 twin of [`tile_portable`]: one multiply-add per slot.
unsafe fn tile_portable_f32(t: &Tile) {
    let mut acc = unsafe { initial(t) };
    for q in 0..t.kp {
        let bq = &t.b[q * NR..][..NR];
        for (i, row) in acc.iter_mut().enumerate() {
            let a = f32::from_bits(t.a[i * t.lda + q]);
            for (r, &b) in row.iter_mut().zip(bq) {
                *r += a * f32::from_bits(b);
            }
        }
    }
    unsafe { store(&acc, t) }
}

/// Writes an accumulator tile: `+ bias` (Plain) or `silu(gate)·up` (Swiglu).
///
/// # Safety
/// As [`Kernel::tile`].
#[inline(always)]
pub(super) unsafe fn store(acc: &[[f32; NR]; MR], t: &Tile) {
    for (i, row) in acc.iter().enumerate().take(t.mr) {
        // SAFETY: the caller guarantees `mr` rows of `nout` writable columns.
        let out = unsafe { std::slice::from_raw_parts_mut(t.c.add(i * t.ldc), t.nout) };
        epilogue_row(row, out, t.layout, t.bias);
    }
}

/// One row of sums into `out` (the panel's `out.len()` outputs of it):
/// `+ bias` (Plain) or `silu(gate)·up` (Swiglu). The portable and AMX
/// kernels' epilogue; the AVX-512 tiles compute SwiGLU on their registers
/// (`avx512::silu_mul`: no division; both within about 2 ulp of silu).
#[inline(always)]
pub(super) fn epilogue_row(row: &[f32; NR], out: &mut [f32], layout: Layout, bias: Option<&[f32]>) {
    match (layout, bias) {
        (Layout::Plain, None) => out.copy_from_slice(&row[..out.len()]),
        (Layout::Plain, Some(b)) => {
            for ((o, &v), &bb) in out.iter_mut().zip(row).zip(b) {
                *o = v + bb;
            }
        }
        (Layout::Swiglu, _) => {
            let (g, u) = row.split_at(NR / 2);
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        }
    }
}
