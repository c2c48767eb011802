//! `tmoe bench kernels`: times each kernel at a model's shapes (by default
//! `base`: d 768, batch 64 x sequence 512 tokens; `--config`, `--batch`,
//! `--seq` choose another) and reports time, achieved bandwidth and its share
//! of the device's peak, and the CUDA kernels each entry launches (the names
//! ncu and nsys show). On the simulator (no GPU) it runs a smoke of the
//! launch path instead and says so: every kernel launches and completes, and
//! only a few outputs are looked at (rmsnorm's first row, attention's
//! finiteness, ...); it is not a correctness check, which is the `kernel_*`
//! tests' job.

use std::path::PathBuf;

use half::bf16;
use serde::Serialize;

use super::{
    GPU_BATCH, GPU_SEQ, KernelResult, ModelShape, Recorder, Reps, attention_kernels, draw_report,
    gemm_kernels, median_ms, refuse_existing, train_kernels, write_report,
};
use crate::backend::gpu::ops::{embed, rmsnorm};
use crate::backend::gpu::{Executor, executor::DeviceInfo};
use crate::cli::args;

/// The groups `bench kernels` runs its entries in (each group's `want`
/// name; a group may time several entries, each several kernels).
const GROUPS: &[&str] = &[
    "rmsnorm",
    "embed",
    "rope",
    "swiglu",
    "router",
    "lb_loss",
    "moe_permute",
    "moe_gather",
    "moe_combine",
    "xent",
    "pool",
    "adamw",
    "grad_norm",
    "add_fwd",
    "gelu_fwd",
    "gelu_bwd",
    "bias_grad",
    "cast_f32_bf16",
    "rowdot_fwd",
    "rowdot_bwd_dz",
    "rowdot_bwd_dw",
    "gemm_fwd",
    "gemm_dx",
    "gemm_dw",
    "gemm_moe",
    "attn_fwd",
    "attn_bwd",
];

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// Executor: `cuda` (default when available) or `sim`.
    #[arg(long)]
    pub exec: Option<String>,
    /// Only the entries whose name contains this (a name from the table,
    /// e.g. `rmsnorm_bwd`, `gemm_moe`, `attn_bwd`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Timed runs per entry, median reported (the simulator runs each once).
    #[arg(long, value_parser = args::count, default_value_t = 50)]
    pub iters: usize,
    /// Untimed runs per entry before the timed ones, on a GPU. With
    /// `--warmup 0` each entry's kernels launch exactly `--iters` times
    /// (for ncu / nsys).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Model config whose shapes the kernels run at: tiny, small or base
    /// (default: base on a GPU; on the simulator, without --config, --batch
    /// or --seq, each entry's own small smoke shape).
    #[arg(long)]
    pub config: Option<String>,
    /// Flows per batch (default: 64 on a GPU, 2 on the simulator).
    #[arg(long, value_parser = args::batch)]
    pub batch: Option<usize>,
    /// Tokens per flow (default: 512 on a GPU, 32 on the simulator).
    #[arg(long, value_parser = args::seq_len)]
    pub seq: Option<usize>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON results to this file (and, on a GPU, a bar chart
    /// beside it with the extension `.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file (and its chart).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    device: DeviceInfo,
    /// Measured cuMemcpyDtoD bandwidth, bytes/s (read + write), GPU only.
    copy_bandwidth: Option<f64>,
    note: String,
    /// The model shape the entries ran at (each entry's own in `results`).
    shape: String,
    results: Vec<KernelResult>,
}

/// `tmoe bench kernels`.
pub(super) fn run(args: KernelArgs) -> anyhow::Result<()> {
    refuse_existing(args.out.as_deref(), args.force)?;
    let ex = match args.exec.as_deref() {
        Some("sim") => Executor::sim(),
        Some("cuda") => Executor::cuda()?,
        None => Executor::cuda().unwrap_or_else(|e| {
            eprintln!("cuda executor unavailable ({e}); using the simulator");
            Executor::sim()
        }),
        Some(other) => anyhow::bail!("--exec must be `cuda` or `sim`, not `{other}`"),
    }
    .noting_launches();
    let device = ex.device_info();
    let shape = model_shape(&args, ex.is_gpu())?;
    let (rows, d, vocab) = match &shape {
        Some(m) => (m.tokens(), m.cfg.d, m.cfg.vocab),
        None => (64, 96, 1000),
    };
    // On the simulator: a launch-path smoke, one run, no GB/s claims.
    let iters = if ex.is_gpu() {
        Reps {
            warmup: args.warmup,
            iters: args.iters,
        }
    } else {
        Reps {
            warmup: 0,
            iters: 1,
        }
    };
    let shape_text = match &shape {
        Some(m) => format!(
            "model {} (d {}, heads {}, experts {} top-{}, expert ffn {}, vocab {}) at batch {} x seq {}",
            m.cfg.name,
            m.cfg.d,
            m.cfg.heads,
            m.cfg.n_experts,
            m.cfg.top_k,
            m.cfg.expert_ff(),
            m.cfg.vocab,
            m.batch,
            m.seq
        ),
        None => "the simulator's smoke shapes (each entry's own, below)".into(),
    };
    let note = if ex.is_gpu() {
        format!(
            "median of {} runs after {} warm-up run(s), each after 256 MiB written to evict the L2; bytes = what the kernel must move: \
             each input read once, each output written once (a += output read too), \
             its own scratch partials written and read back; re-reads of the same data \
             (GEMM tiles, a gathered token's k copies, xent's second pass) not counted",
            iters.iters, iters.warmup
        )
    } else {
        "simulator: not a GPU; a smoke of the launch path (every kernel launches and completes; few outputs checked: not a correctness test), timings are CPU wall-clock and meaningless".into()
    };
    // Entries run in groups (`rmsnorm` times rmsnorm_fwd and rmsnorm_bwd): a
    // group runs when its name contains the filter or the filter contains
    // the group's name (`rmsnorm_bwd`, and the kernel `rmsnorm_dw_reduce`).
    // A filter that names no group (a CUDA kernel's name as ncu shows it,
    // `gemm_tn_grouped`) runs them all; either way the entries kept are
    // those whose name, or a launched kernel's, contains it.
    let filter = args.filter.as_deref();
    let by_group = |g: &str, f: &str| g.contains(f) || f.contains(g);
    let names_a_group = filter.is_none_or(|f| GROUPS.iter().any(|g| by_group(g, f)));
    let want = |group: &str| {
        debug_assert!(GROUPS.contains(&group), "{group} is missing from GROUPS");
        !names_a_group || filter.is_none_or(|f| by_group(group, f))
    };
    let copy_bandwidth = if ex.is_gpu() {
        Some(copy_roof(&ex, iters)?)
    } else {
        None
    };
    let mut rec = Recorder::new(&ex, device.clone(), copy_bandwidth);
    let row_shape = format!("rows {rows} d {d}");

    let (n, rows_u, d_u) = (rows * d, rows as u64, d as u64);
    let x: Vec<bf16> = (0..n)
        .map(|i| bf16::from_f32(((i % 251) as f32 - 125.0) / 50.0))
        .collect();
    let xb = ex.upload(&x)?;
    let wb = ex.upload(&vec![1.0f32; d])?;
    if want("rmsnorm") {
        let yb = ex.alloc_zeroed::<bf16>(n)?;
        let rstd = ex.alloc_zeroed::<f32>(rows)?;
        let ms = median_ms(&ex, iters, || {
            rmsnorm::fwd(&ex, &xb, &wb, &yb, &rstd, rows, d, 1e-5)
        })?;
        smoke_rmsnorm(&x, &ex.download(&yb)?, d)?;
        rec.mem(
            "rmsnorm_fwd",
            &row_shape,
            rows_u * d_u * 4 + d_u * 4 + rows_u * 4,
            ms,
        );
        let dxb = ex.alloc_zeroed::<bf16>(n)?;
        let dwb = ex.alloc_zeroed::<f32>(d)?;
        let scratch = ex.alloc_zeroed::<f32>(rmsnorm::bwd_scratch_len(rows, d))?;
        // dy is its own buffer: with dy = x the hardware would read it once.
        let dyb = ex.upload(&x)?;
        let ms = median_ms(&ex, iters, || {
            rmsnorm::bwd(&ex, &xb, &wb, &rstd, &dyb, &dxb, &dwb, &scratch, rows, d)
        })?;
        // x, dy read; dx written; rstd, w read; the per-block dw partials
        // written and read back by the reduce; dw read and written (+=).
        let partials = rmsnorm::bwd_scratch_len(rows, d) as u64 * 8;
        rec.mem(
            "rmsnorm_bwd",
            &row_shape,
            rows_u * d_u * 6 + rows_u * 4 + d_u * 12 + partials,
            ms,
        );
    }
    if want("embed") {
        let ids: Vec<u32> = (0..rows as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % vocab as u32)
            .collect();
        let idb = ex.upload(&ids)?;
        let embed_shape = format!("rows {rows} d {d} vocab {vocab}");
        let table = ex.alloc_zeroed::<f32>(vocab * d)?;
        let out = ex.alloc_zeroed::<bf16>(n)?;
        let ms = median_ms(&ex, iters, || {
            embed::fwd(&ex, &idb, &table, &out, rows, d, vocab)
        })?;
        rec.mem(
            "embed_fwd",
            &embed_shape,
            rows_u * 4 + rows_u * d_u * (4 + 2),
            ms,
        );
        let table16 = ex.alloc_zeroed::<bf16>(vocab * d)?;
        let ms = median_ms(&ex, iters, || {
            embed::fwd_bf16(&ex, &idb, &table16, &out, rows, d, vocab)
        })?;
        rec.mem(
            "embed_fwd_bf16",
            &embed_shape,
            rows_u * 4 + rows_u * d_u * (2 + 2),
            ms,
        );
        let scratch = embed::EmbedBwdScratch::alloc(&ex, rows, d, vocab)?;
        let ms = median_ms(&ex, iters, || {
            embed::bwd(&ex, &idb, &xb, &table, &scratch, vocab)
        })?;
        // ids + dout read, touched table rows read + written (these ids are
        // distinct: one per row). fp32 partials exist only for ids repeated
        // inside a tile of 256 rows, none here.
        rec.mem(
            "embed_bwd",
            &embed_shape,
            rows_u * 4 + rows_u * d_u * 2 + rows_u * d_u * 8,
            ms,
        );
    }

    let shape = shape.as_ref();
    train_kernels::run(&ex, iters, shape, &want, &mut rec)?;
    gemm_kernels::run(&ex, iters, shape, &want, &mut rec)?;
    attention_kernels::run(&ex, iters, shape, &want, &mut rec)?;

    if let Some(f) = filter {
        rec.results
            .retain(|r| r.kernel.contains(f) || r.launches.iter().any(|k| k.contains(f)));
        anyhow::ensure!(
            !rec.results.is_empty(),
            "--filter {f}: no entry's name, nor any CUDA kernel it launches, contains it; \
             the benchmarks are {} (some time several kernels: the table without --filter \
             lists every entry and the kernels it launches)",
            GROUPS.join(", ")
        );
    }
    let report = Report {
        device,
        copy_bandwidth,
        note,
        shape: shape_text,
        results: rec.results,
    };
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        write_report(path, &json)?;
        if ex.is_gpu() {
            let png = path.with_extension("png");
            draw_report(&serde_json::from_str(&json)?, &png)?;
            eprintln!("chart: {}", png.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The model shape the entries run at: the config at batch x sequence
/// (defaults: base, 64 x 512 on a GPU; tiny, 2 x 32 on the simulator), or
/// `None` on the simulator when no shape option is given: each entry's own
/// smoke shape (odd sizes that also take the kernels' scalar paths).
fn model_shape(a: &KernelArgs, gpu: bool) -> anyhow::Result<Option<ModelShape>> {
    if !gpu && a.config.is_none() && a.batch.is_none() && a.seq.is_none() {
        return Ok(None);
    }
    let name = a
        .config
        .as_deref()
        .unwrap_or(if gpu { "base" } else { "tiny" });
    Ok(Some(ModelShape {
        cfg: crate::model::ModelConfig::named(name)?,
        batch: a.batch.unwrap_or(if gpu { GPU_BATCH } else { 2 }),
        seq: a.seq.unwrap_or(if gpu { GPU_SEQ } else { 32 }),
    }))
}

/// Bandwidth of a 512 MiB device-to-device copy (bytes read + written per
/// second): what the hardware gives a plain streaming kernel in practice.
fn copy_roof(ex: &Executor, iters: Reps) -> anyhow::Result<f64> {
    let n = 128 << 20; // f32 elements
    let (a, b) = (ex.alloc_zeroed::<f32>(n)?, ex.alloc_zeroed::<f32>(n)?);
    let ms = median_ms(ex, iters, || ex.copy(&a, &b))?;
    Ok(2.0 * (n * 4) as f64 / (ms * 1e-3))
}

/// The first row of y must be the normalised x (weight 1): catches a kernel
/// that runs but computes nothing.
fn smoke_rmsnorm(x: &[bf16], y: &[bf16], d: usize) -> anyhow::Result<()> {
    let ms: f64 = x[..d].iter().map(|v| v.to_f64().powi(2)).sum::<f64>() / d as f64;
    let r = 1.0 / (ms + 1e-5).sqrt();
    for j in 0..d {
        let want = x[j].to_f64() * r;
        anyhow::ensure!(
            (y[j].to_f64() - want).abs() <= 1e-2 * (1.0 + want.abs()),
            "rmsnorm smoke: y[{j}] = {}, want {want}",
            y[j]
        );
    }
    Ok(())
}

fn print_table(r: &Report) {
    let gbps = |b: Option<f64>| b.map_or("n/a".into(), |p| format!("{:.0} GB/s", p / 1e9));
    println!(
        "device: {}  peak bandwidth: {}  device copy: {}  bf16 tensor peak: {}",
        r.device.name,
        gbps(r.device.peak_bandwidth),
        gbps(r.copy_bandwidth),
        r.device
            .peak_bf16_flops
            .map_or("n/a".into(), |f| format!("{:.0} TFLOP/s", f / 1e12))
    );
    println!("{}", r.note);
    println!("shape: {}", r.shape);
    let pct = |p: Option<f64>| p.map_or("-".into(), |p| format!("{p:.1}"));
    let (mem, compute): (Vec<_>, Vec<_>) = r.results.iter().partition(|k| k.tflops.is_none());
    if !mem.is_empty() {
        println!(
            "{:<32} {:>9} {:>9} {:>7} {:>7}  shape (CUDA kernels launched)",
            "kernel", "ms", "GB/s", "% peak", "% copy"
        );
        for k in mem {
            println!(
                "{:<32} {:>9.4} {:>9.1} {:>7} {:>7}  {} ({})",
                k.kernel,
                k.ms,
                k.gb_per_s,
                pct(k.pct_of_peak),
                pct(k.pct_of_copy),
                k.shape,
                k.launches.join(", ")
            );
        }
    }
    if !compute.is_empty() {
        println!(
            "{:<32} {:>9} {:>9} {:>7} {:>9}  shape (CUDA kernels launched)",
            "kernel (compute)", "ms", "TFLOP/s", "% peak", "GB/s"
        );
        for k in compute {
            println!(
                "{:<32} {:>9.4} {:>9.1} {:>7} {:>9.1}  {} ({})",
                k.kernel,
                k.ms,
                k.tflops.unwrap_or(0.0),
                pct(k.pct_of_tensor_peak),
                k.gb_per_s,
                k.shape,
                k.launches.join(", ")
            );
        }
    }
}
