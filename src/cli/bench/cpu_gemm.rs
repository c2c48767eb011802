//! `tmoe bench cpu-gemm`: the packed CPU engine's GEMM (`backend::cpu_bf16`)
//! at the tiny model's product shapes (batch 64 x sequence 64 = 4,096 token
//! rows), a 512³ square and the small model's QKV, expert and dense-twin
//! products, on each bf16 kernel this CPU runs (AMX tiles, AVX-512 BF16,
//! bf16 widened onto the f32 FMA, portable), its f32 panels (the f32
//! inference engine) where the CPU has AVX-512F, and the f32 `gemm` crate
//! the training engine uses: GFLOP/s (2·m·n·k, useful outputs only; a
//! SwiGLU pair counts both its gate and up products) and the share of the
//! peak of the instruction each runs on.
//!
//! The peaks are measured, not assumed: one core's rate on a loop of
//! independent `tdpbf16ps` (16,384 FLOP each), `vdpbf16ps` (64) or
//! `vfmadd231ps` (32), and the same loop on every thread rayon uses at once
//! (the peak the shares are of: the threads' rates summed), each the best
//! of five runs; the clock
//! `/proc/cpuinfo` reports is printed beside them, with the FLOP per cycle
//! that implies.

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::backend::cpu::linear;
use crate::backend::cpu_bf16::pack::Elem;
use crate::backend::cpu_bf16::{Kernel, PackedMat, matmul_into};
use crate::cli::args;

#[derive(clap::Args, Debug)]
pub struct CpuGemmArgs {
    /// Timed repetitions per shape (median and fastest reported).
    #[arg(long, value_parser = args::count, default_value_t = 20)]
    pub iters: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing report.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    kernel: &'static str,
    m: usize,
    n: usize,
    k: usize,
    median_ms: f64,
    gflops: f64,
    /// The fastest call's time and rate.
    best_ms: f64,
    best_gflops: f64,
    /// Of the measured peak of its instruction (`tdpbf16ps` for AMX,
    /// `vdpbf16ps` for AVX-512 BF16, `vfmadd231ps` for f32 panels and bf16
    /// widened to f32; null for the `gemm` crate's entries),
    /// at the median and at the fastest call.
    peak_share: Option<f64>,
    best_peak_share: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    threads: usize,
    cpu_mhz: Option<f64>,
    /// One core's `vdpbf16ps` rate (null without AVX-512 BF16).
    peak_gflops_one_core: Option<f64>,
    /// Every thread running it at once, summed (as the `_peak_gflops` below).
    peak_gflops: Option<f64>,
    peak_flop_per_cycle_one_core: Option<f64>,
    /// One core's `vfmadd231ps` rate (null without AVX-512F).
    f32_peak_gflops_one_core: Option<f64>,
    f32_peak_gflops: Option<f64>,
    /// One core's `tdpbf16ps` rate (AMX tiles; null where there are none).
    amx_peak_gflops_one_core: Option<f64>,
    amx_peak_gflops: Option<f64>,
    entries: Vec<Entry>,
    command: String,
}

/// Seconds of untimed calls before each timed series.
const WARM_UP_S: f64 = 0.3;

/// Median and fastest of `iters` timed calls (after [`WARM_UP_S`] of
/// untimed ones), in ms. Both are kept: on a shared VM the median moves
/// with the neighbours' load, the fastest call shows what the code does
/// when left alone.
pub(super) fn timings_ms(iters: usize, mut f: impl FnMut()) -> (f64, f64) {
    // Warm up for a while, not once: the first shape timed after one
    // warm-up call ran at half speed for most of its calls (qkv at 35 % of
    // the peak, 74 % when timed again later in the same run, EPYC VM).
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < WARM_UP_S {
        f();
    }
    let mut t: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

/// A share of a peak as ` (NN %)`, nothing where there is no peak.
pub(super) fn pct(share: Option<f64>) -> String {
    share.map_or(String::new(), |s| format!(" ({:.0} %)", s * 100.0))
}

pub(super) fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1001) as f32 - 500.0) / 1000.0)
        .collect()
}

fn cpu_mhz() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

pub fn run(a: CpuGemmArgs) -> anyhow::Result<()> {
    super::refuse_existing(a.out.as_deref(), a.force)?;
    let threads = rayon::current_num_threads();
    use crate::backend::cpu_bf16::peak;
    let one = peak::one_core(peak::bf16_gflops, 20_000_000);
    let peak = peak::all_threads(peak::bf16_gflops, 20_000_000);
    let mhz = cpu_mhz();
    let f32_one = peak::one_core(peak::f32_gflops, 20_000_000);
    let f32_peak = peak::all_threads(peak::f32_gflops, 20_000_000);
    let amx_one = peak::one_core(peak::amx_gflops, 2_000_000);
    let amx_peak = peak::all_threads(peak::amx_gflops, 2_000_000);
    let show = |p: Option<f64>| p.map_or("n/a".into(), |p| format!("{p:.1}"));
    if amx_one.is_some() {
        eprintln!(
            "AMX tdpbf16ps peak: {} GFLOP/s on one core, {} on {threads} threads at once",
            show(amx_one),
            show(amx_peak)
        );
    }
    eprintln!(
        "f32 FMA peak: {} GFLOP/s on one core, {} on {threads} threads at once",
        show(f32_one),
        show(f32_peak),
    );
    eprintln!(
        "bf16 peak: {} GFLOP/s on one core ({} FLOP/cycle at {} MHz), {} on {threads} threads at once",
        show(one),
        one.zip(mhz)
            .map_or("n/a".into(), |(p, m)| format!("{:.1}", p * 1e3 / m)),
        mhz.map_or("n/a".into(), |m| format!("{m:.0}")),
        show(peak),
    );
    // (name, m, n, k, swiglu): tiny at 64 x 64 tokens, and a square.
    let c = crate::model::ModelConfig::named("tiny")?;
    let s = crate::model::ModelConfig::named("small")?;
    let t = 64 * 64;
    let shapes = [
        ("qkv", t, 3 * c.d, c.d, false),
        ("attn_out", t, c.d, c.d, false),
        ("shared_gate_up_swiglu", t, c.shared_ff, c.d, true),
        ("shared_down", t, c.d, c.shared_ff, false),
        ("dense_gate_up_swiglu", t, c.dense_ff(), c.d, true),
        ("dense_down", t, c.d, c.dense_ff(), false),
        ("square_512", 512, 512, 512, false),
        ("small_qkv", t, 3 * s.d, s.d, false),
        (
            "small_expert_gate_up_swiglu",
            1024,
            s.expert_ff(),
            s.d,
            true,
        ),
        ("small_expert_down", 1024, s.d, s.expert_ff(), false),
        ("small_dense_down", 512, s.d, s.dense_ff(), false),
    ];
    let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.available()).collect();
    eprintln!(
        "bf16 kernel chosen for the model here: {}",
        Kernel::detect().name()
    );
    let mut entries = Vec::new();
    for &(name, m, n, k, swiglu) in &shapes {
        let x = values(m * k);
        // A SwiGLU pair computes 2n outputs (gate and up) and writes n.
        let cols = if swiglu { 2 * n } else { n };
        let w = values(cols * k);
        let flops = 2.0 * (m * cols * k) as f64;
        let packed = if swiglu {
            PackedMat::swiglu(&w[..n * k], &w[n * k..], n, k)
        } else {
            PackedMat::new(&w, n, k)
        };
        let packed_f32 = if swiglu {
            PackedMat::swiglu_as(Elem::F32, &w[..n * k], &w[n * k..], n, k)
        } else {
            PackedMat::new_as(Elem::F32, &w, n, k)
        };
        let mut record = |kernel: &'static str, (ms, best_ms): (f64, f64), ceiling: Option<f64>| {
            let (gflops, best_gflops) = (flops / ms / 1e6, flops / best_ms / 1e6);
            let share = ceiling.map(|p| gflops / p);
            let best_share = ceiling.map(|p| best_gflops / p);
            eprintln!(
                "{name:>22} m {m:>5} n {cols:>4} k {k:>4} {kernel:>12}: median {ms:>8.3} ms {gflops:>6.1} GFLOP/s{}, best {best_gflops:>6.1}{}",
                pct(share),
                pct(best_share),
            );
            entries.push(Entry {
                name: name.into(),
                kernel,
                m,
                n: cols,
                k,
                median_ms: ms,
                gflops,
                best_ms,
                best_gflops,
                peak_share: share,
                best_peak_share: best_share,
            });
        };
        // Every entry writes into a buffer allocated once, as the `gemm`
        // crate's does (a fresh 6 MB output per call is page faults, not
        // the kernel).
        let mut y = vec![MaybeUninit::<f32>::uninit(); m * cols];
        for &kernel in &kernels {
            let t = timings_ms(a.iters, || {
                matmul_into(kernel, &x, None, m, &packed, None, &mut y).expect("valid shapes");
                std::hint::black_box(&y);
            });
            let ceiling = match kernel {
                Kernel::AmxBf16 => amx_peak,
                // bf16 widened to f32: the FMA's ceiling.
                Kernel::Avx512Fma => f32_peak,
                _ => peak,
            };
            record(kernel.name(), t, ceiling);
        }
        if let Some(kernel) = Kernel::detect_f32() {
            let t = timings_ms(a.iters, || {
                matmul_into(kernel, &x, None, m, &packed_f32, None, &mut y).expect("valid shapes");
                std::hint::black_box(&y);
            });
            record("f32-packed", t, f32_peak);
        }
        let mut y = vec![0f32; m * cols];
        let t = timings_ms(a.iters, || linear::fwd(&x, &w, None, m, k, cols, &mut y));
        record("f32-gemm", t, None);
    }
    let report = Report {
        threads,
        cpu_mhz: mhz,
        peak_gflops_one_core: one,
        peak_gflops: peak,
        peak_flop_per_cycle_one_core: one.zip(mhz).map(|(p, m)| p * 1e3 / m),
        f32_peak_gflops_one_core: f32_one,
        f32_peak_gflops: f32_peak,
        amx_peak_gflops_one_core: amx_one,
        amx_peak_gflops: amx_peak,
        entries,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    super::emit_json(&report, a.out.as_deref())?;
    if let Some(out) = &a.out {
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
