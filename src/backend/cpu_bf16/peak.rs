//! This CPU's measured multiply-add rates, one core: `vdpbf16ps` (what bf16
//! panels run on where it is fast) and `vfmadd231ps` (f32 panels, and bf16
//! ones widened to f32 where `vdpbf16ps` is slower). Whether bf16 pays
//! depends on their ratio, which differs by CPU: on AMD Zen 4 `vdpbf16ps`
//! gave 2.3x the f32 rate, on an Intel Xeon (family 6, model 207) without
//! AMX half of it.

use std::sync::OnceLock;
use std::time::Instant;

use super::kernel::Kernel;

/// One core's `vdpbf16ps` GFLOP/s over `iters` rounds of 12 independent
/// instructions (after a tenth as warm-up); None without AVX-512 BF16.
pub fn bf16_gflops(iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if Kernel::Avx512Bf16.available() {
        // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (checked above).
        return Some(unsafe { gflops(super::avx512::peak_flops_loop, iters) });
    }
    let _ = iters;
    None
}

/// One core's `tdpbf16ps` GFLOP/s (AMX tiles), as [`bf16_gflops`]; None
/// where this CPU or OS gives no AMX tiles.
pub fn amx_gflops(iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if Kernel::AmxBf16.available() {
        // SAFETY: AMX is available to this process (checked above).
        return Some(unsafe { gflops(super::amx::peak_flops_loop, iters) });
    }
    let _ = iters;
    None
}

/// One core's `vfmadd231ps` GFLOP/s, as [`bf16_gflops`]; None without AVX-512F.
pub fn f32_gflops(iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if Kernel::detect_f32().is_some() {
        // SAFETY: the CPU has AVX-512F (checked above).
        return Some(unsafe { gflops(super::avx512::peak_flops_loop_f32, iters) });
    }
    let _ = iters;
    None
}

/// Rounds a peak is the best of: a peak is a maximum, and on a shared VM a
/// single run of a 30 ms loop lost up to 15 % to the neighbours (two cores
/// together on the Zen 5 VM of 2026-12-06: 784 to 914 GFLOP/s of
/// `vdpbf16ps` over four runs).
pub const PEAK_ROUNDS: usize = 5;

/// One core's `rate(iters)`, the best of [`PEAK_ROUNDS`] runs.
pub fn one_core(rate: fn(u64) -> Option<f64>, iters: u64) -> Option<f64> {
    (0..PEAK_ROUNDS)
        .filter_map(|_| rate(iters))
        .reduce(f64::max)
}

/// `rate(iters)` on every thread of rayon's pool at once, summed, the best
/// of [`PEAK_ROUNDS`] runs: what the cores deliver together. One core's
/// rate times the thread count assumed each vCPU runs at a core's full
/// rate, which cores sharing a power budget (all-core clocks below one
/// core's boost), two hyperthreads of one core or a VM's vCPUs sharing one
/// do not. None where `rate` is None.
pub fn all_threads(rate: fn(u64) -> Option<f64>, iters: u64) -> Option<f64> {
    (0..PEAK_ROUNDS)
        .filter_map(|_| {
            rayon::broadcast(|_| rate(iters))
                .into_iter()
                .sum::<Option<f64>>()
        })
        .reduce(f64::max)
}

/// Times `run(iters)` (returning the FLOPs it did) after `run(iters / 10)`.
///
/// # Safety
/// This CPU has the instructions `run` uses.
#[cfg(target_arch = "x86_64")]
unsafe fn gflops(run: unsafe fn(u64) -> f64, iters: u64) -> f64 {
    // SAFETY: as this function's.
    unsafe { run(iters / 10) };
    let t = Instant::now();
    let flops = unsafe { run(iters) };
    flops / t.elapsed().as_secs_f64() / 1e9
}

/// Why `--precision bf16` is likely slower than f32 on `kernel` with
/// these one-core rates of `vdpbf16ps` and the f32 FMA (None: bf16 should
/// pay). Widened onto the FMA, bf16 keeps the FMA's rate for its products
/// but adds the rounding of activations: on the Intel Xeon without AMX of
/// 2026-12-07 inference ran at x0.78-0.99 and training at x0.72-0.81 our
/// f32 (`bench/results/cpu/xeon-2026-12-07/ab-bf16-kernels-*.txt`). With
/// `vdpbf16ps` below 1.2x the f32 rate, that extra work outweighs its
/// faster products.
pub fn bf16_slower_reason(kernel: Kernel, bf16: Option<f64>, f32: Option<f64>) -> Option<String> {
    let env = super::kernel::KERNEL_ENV;
    let widened = "so bf16 is widened to f32 on the FMA: likely 1-30 % slower than f32 here \
                   (measured on an Intel Xeon without AMX), with half the weights' memory";
    match (kernel, bf16, f32) {
        (Kernel::AmxBf16, ..) => None,
        (Kernel::Portable, ..) => Some(format!(
            "bf16 runs on the portable kernel here (this CPU has no AVX-512, or {env} pins \
             it), slower than f32"
        )),
        (Kernel::Avx512Fma, Some(b), Some(f)) if b > f => Some(format!(
            "{env} pins the FMA kernel although vdpbf16ps runs at {b:.0} GFLOP/s a core \
             against {f:.0} for the f32 FMA; {widened}"
        )),
        (Kernel::Avx512Fma, Some(b), Some(f)) => Some(format!(
            "on this CPU vdpbf16ps runs at {b:.0} GFLOP/s a core against {f:.0} for the f32 \
             FMA, {widened}"
        )),
        (Kernel::Avx512Fma, ..) => Some(format!("this CPU has no AVX-512 BF16, {widened}")),
        (Kernel::Avx512Bf16, Some(b), Some(f)) if b < 1.2 * f => Some(format!(
            "on this CPU vdpbf16ps runs at {b:.0} GFLOP/s a core against {f:.0} for the f32 \
             FMA, so bf16 is likely no faster than f32 here"
        )),
        (Kernel::Avx512Bf16, ..) => None,
    }
}

/// One core's `vdpbf16ps` and `vfmadd231ps` GFLOP/s ([`bf16_gflops`],
/// [`f32_gflops`]), measured once per process in about 40 ms: the best of
/// five short runs of each, interleaved, since one run on a shared machine
/// can lose half its time to another process. [`Kernel::detect`] chooses
/// by them and [`bf16_slower_here`] reports them: one measurement, so the
/// two cannot disagree.
pub fn rates_here() -> (Option<f64>, Option<f64>) {
    static RATES: OnceLock<(Option<f64>, Option<f64>)> = OnceLock::new();
    *RATES.get_or_init(|| {
        let best = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        let (mut b, mut f) = (None, None);
        for _ in 0..5 {
            b = best(b, bf16_gflops(500_000));
            f = best(f, f32_gflops(500_000));
        }
        (b, f)
    })
}

/// [`bf16_slower_reason`] for the kernel [`Kernel::detect`] chose, on the
/// rates it chose by ([`rates_here`]).
pub fn bf16_slower_here() -> Option<String> {
    let kernel = Kernel::detect();
    if kernel == Kernel::AmxBf16 {
        // Tens of times the f32 FMA rate (about 3 TFLOP/s a core against
        // 160 on the Xeon of 2026-12-04): bf16 pays.
        return None;
    }
    let (b, f) = rates_here();
    bf16_slower_reason(kernel, b, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_flagged_only_where_it_cannot_pay() {
        let why = bf16_slower_reason;
        // Zen 4's ratio (940 vs 415 GFLOP/s for 2 cores) on vdpbf16ps: no word.
        assert_eq!(why(Kernel::Avx512Bf16, Some(470.0), Some(207.0)), None);
        // vdpbf16ps barely above the FMA: likely no faster.
        assert!(why(Kernel::Avx512Bf16, Some(110.0), Some(100.0)).is_some());
        // The Intel Xeon without AMX (85 vs 186 a core): widened, both
        // rates named.
        let w = why(Kernel::Avx512Fma, Some(85.0), Some(186.0)).unwrap();
        assert!(w.contains("85 GFLOP/s") && w.contains("186") && w.contains("widened"));
        // AVX-512F without BF16: widened.
        let w = why(Kernel::Avx512Fma, None, Some(186.0)).unwrap();
        assert!(
            w.contains("no AVX-512 BF16") && w.contains("widened"),
            "{w}"
        );
        // The FMA kernel pinned where vdpbf16ps is the faster: said so.
        let w = why(Kernel::Avx512Fma, Some(470.0), Some(207.0)).unwrap();
        assert!(w.contains("TMOE_BF16_KERNEL pins"), "{w}");
        // No AVX-512 at all: the portable kernel.
        assert!(
            why(Kernel::Portable, None, None)
                .unwrap()
                .contains("portable")
        );
        // AMX tiles: bf16 pays whatever the other rates.
        assert_eq!(why(Kernel::AmxBf16, Some(1.0), Some(100.0)), None);
    }

    #[test]
    fn all_threads_sums_every_threads_rate() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (some, none) =
            pool.install(|| (all_threads(|n| Some(n as f64), 2), all_threads(|_| None, 2)));
        assert_eq!(some, Some(6.0), "3 threads at 2 each");
        assert_eq!(none, None);
        assert_eq!(one_core(|n| Some(n as f64), 2), Some(2.0));
        assert_eq!(one_core(|_| None, 2), None);
        // Where the CPU has it, measured on every thread at once: positive.
        if let Some(f) = pool.install(|| all_threads(f32_gflops, 100_000)) {
            assert!(f.is_finite() && f > 0.0, "{f}");
        }
    }

    #[test]
    fn measured_rates_are_positive_where_the_cpu_has_the_instruction() {
        // Positive and finite, not fast: a debug build on a loaded machine
        // measured 0.86 GFLOP/s (this is not a benchmark).
        let ok = |r: f64| r.is_finite() && r > 0.0;
        if let Some(f) = f32_gflops(100_000) {
            assert!(ok(f), "{f}");
        }
        if let Some(b) = bf16_gflops(100_000) {
            assert!(ok(b), "{b}");
        }
        if let Some(a) = amx_gflops(10_000) {
            assert!(ok(a), "{a}");
        }
    }
}
