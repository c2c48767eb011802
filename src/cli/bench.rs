//! `tmoe bench`: benchmarks: the kernels (`bench kernels`, in `kernels`),
//! the model and its dense twin, classification end to end, the CPU
//! engine's GEMM and attention.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::backend::gpu::Executor;

/// Entries of the attention kernels (FlashAttention-2 forward and backward).
mod attention_kernels;
/// The results as a bar chart (`bench chart`, and next to `--out` JSON).
mod chart;
/// Classification end to end and under load (`bench classify`).
pub mod classify;
/// The bf16 CPU engine's GEMM: GFLOP/s and share of the bf16 peak (`bench cpu-gemm`).
pub mod cpu_attention;
pub mod cpu_gemm;
/// Entries of the tensor-core GEMMs (TFLOP/s).
mod gemm_kernels;
/// `bench kernels`: its options, the shape and filter, the table.
mod kernels;
/// Traffic-MoE against its dense twin on an engine (`bench model`).
pub mod model;
/// Results and their shares of the hardware limits.
mod recorder;
/// Entries of the training / MoE kernels (`kernels` helper).
mod train_kernels;

pub use kernels::KernelArgs;
pub use recorder::KernelResult;

/// `--out` of a benchmark: an existing file is kept unless `force`, and
/// one that could not be written is refused before the run, not after it.
pub(crate) fn refuse_existing(out: Option<&std::path::Path>, force: bool) -> anyhow::Result<()> {
    match out {
        Some(out) => super::check_out_file_in_new_folder(out, force),
        None => Ok(()),
    }
}

/// Writes a benchmark's report as JSON to `out`, or prints it on stdout
/// without one (the table is on stderr either way).
pub(crate) fn emit_json(
    report: &impl Serialize,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    match out {
        Some(out) => write_report(out, &json)?,
        None => println!("{json}"),
    }
    Ok(())
}

/// Writes a report to `out`, making its folder when missing.
fn write_report(out: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Whole or not at all: a killed run left an earlier report cut short.
    crate::atomic_file::write_out(out, text.as_bytes())
}

/// The GPU benchmark shape: model `base` (its config, not a restatement) at
/// batch 64 x sequence 512 tokens, the paper's efficiency setting.
pub(crate) const GPU_BATCH: usize = 64;
pub(crate) const GPU_SEQ: usize = 512;

/// The shapes the kernel entries run at: a model config at batch x
/// sequence (its real layer shapes, as the GPU engine launches them).
pub(crate) struct ModelShape {
    pub cfg: crate::model::ModelConfig,
    pub batch: usize,
    pub seq: usize,
}

impl ModelShape {
    pub fn tokens(&self) -> usize {
        self.batch * self.seq
    }
}

/// How often [`median_ms`] runs the work: `warmup` untimed runs (GPU
/// only), then `iters` timed ones.
#[derive(Clone, Copy, Debug)]
pub struct Reps {
    pub warmup: usize,
    pub iters: usize,
}

impl From<usize> for Reps {
    /// `iters` timed runs after one warm-up.
    fn from(iters: usize) -> Reps {
        Reps { warmup: 1, iters }
    }
}
use recorder::Recorder;
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Time every kernel family (GB/s and % of peak bandwidth on a GPU; on
    /// the simulator only a smoke of the launch path, not a correctness check).
    Kernels(KernelArgs),
    /// Draw a `bench kernels --out` JSON as a bar chart (% of the copy roof).
    Chart(ChartArgs),
    /// Traffic-MoE vs its dense twin: throughput, latency, peak memory, expert
    /// load per batch size, and the MoE/dense ratios beside the paper's.
    Model(model::ModelArgs),
    /// Classification end to end (capture files through the pipeline) and
    /// under load (frames through the stream, unpaced and paced): flows/s,
    /// packets/s, verdict latency, peak memory, MoE vs dense.
    Classify(classify::ClassifyArgs),
    /// The packed CPU engine's GEMM (AMX, bf16 and f32 panels) beside the
    /// `gemm` crate at the tiny and small models' shapes: GFLOP/s and share
    /// of the measured peak of each instruction.
    CpuGemm(cpu_gemm::CpuGemmArgs),
    /// The CPU training engine's attention blocks, forward and backward: the
    /// vector loops beside the gemm blocks, GFLOP/s and share of the f32 peak.
    CpuAttention(cpu_attention::CpuAttentionArgs),
}

#[derive(clap::Args, Debug)]
pub struct ChartArgs {
    /// A JSON report written by `tmoe bench kernels --out`.
    pub json: PathBuf,
    /// Image to write (`.png` or `.svg`; default: the JSON's path with `.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing image.
    #[arg(long)]
    pub force: bool,
}
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Kernels(k) => kernels::run(k),
        What::Chart(c) => chart_cmd(c),
        What::Model(m) => model::run(m),
        What::Classify(c) => classify::run(c),
        What::CpuGemm(g) => cpu_gemm::run(g),
        What::CpuAttention(c) => cpu_attention::run(c),
    }
}
fn chart_cmd(a: ChartArgs) -> anyhow::Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.json.with_extension("png"));
    // Even forced, the chart would replace the report it is drawn from.
    anyhow::ensure!(
        !super::is_same_file(&out, &a.json),
        "--out {} is the report being drawn ({}); choose another --out",
        out.display(),
        a.json.display()
    );
    super::refuse_existing_out(&out, a.force)?;
    let text = std::fs::read_to_string(&a.json)
        .with_context(|| format!("reading {}", a.json.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON report", a.json.display()))?;
    draw_report(&report, &out).with_context(|| format!("drawing {}", a.json.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Bars from a report (older reports have no copy roof: % of peak then).
fn draw_report(report: &serde_json::Value, out: &std::path::Path) -> anyhow::Result<()> {
    let results = report["results"]
        .as_array()
        .context("no `results` array (is this a `bench kernels` report?)")?;
    let copy = report["copy_bandwidth"].as_f64();
    let field = if copy.is_some() {
        "pct_of_copy"
    } else {
        "pct_of_peak"
    };
    let bars: Vec<chart::Bar> = results
        .iter()
        .filter_map(|r| {
            Some(chart::Bar {
                kernel: r["kernel"].as_str()?.to_string(),
                pct: r[field].as_f64()?,
            })
        })
        .collect();
    anyhow::ensure!(
        !bars.is_empty(),
        "no GPU results in the report (simulator runs have no bandwidth figures)"
    );
    let device = report["device"]["name"].as_str().unwrap_or("GPU");
    chart::save_bars(
        out,
        &format!("{device}: kernel bandwidth"),
        &roof_label(report),
        &bars,
    )
}

/// What the bars' 100 % is: the measured copy, else the spec peak, with its
/// GB/s where the report gives it.
fn roof_label(report: &serde_json::Value) -> String {
    let gbs = |bytes_per_s: f64| format!(" ({:.0} GB/s)", bytes_per_s / 1e9);
    match report["copy_bandwidth"].as_f64() {
        Some(c) => format!("device copy{}", gbs(c)),
        None => format!(
            "spec peak{}",
            report["device"]["peak_bandwidth"]
                .as_f64()
                .map_or(String::new(), gbs)
        ),
    }
}
/// Bytes written between timed runs to evict the L2 (see [`median_ms`]).
pub const L2_FLUSH_BYTES: usize = 256 << 20;

/// The median time of `reps.iters` runs of the work `f` queues, after
/// `reps.warmup` untimed ones (a plain count: one), each run on a GPU after
/// [`L2_FLUSH_BYTES`] written (not timed).
pub fn median_ms(
    ex: &Executor,
    reps: impl Into<Reps>,
    mut f: impl FnMut() -> crate::backend::gpu::error::Result<()>,
) -> anyhow::Result<f64> {
    let reps = reps.into();
    ex.take_launches(); // from here on: the kernels this work launches
    // Each run starts with a cold L2 (as Triton's do_bench does): 256 MiB
    // written before it, over four times the 50-60 MB L2 of an H100 or
    // H200, evicts the inputs the run before left there; otherwise a small
    // entry read them from L2 and reported more than DRAM bandwidth.
    let flush = if ex.is_gpu() {
        for _ in 0..reps.warmup {
            f()?; // module load, caches
        }
        ex.synchronize()?;
        Some(ex.alloc_uninit::<u8>(L2_FLUSH_BYTES)?)
    } else {
        None
    };
    let mut t: Vec<f64> = (0..reps.iters)
        .map(|_| {
            if let Some(b) = &flush {
                ex.zero_range(b, 0, b.len())?;
            }
            ex.time_ms(&mut f)
        })
        .collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}
#[cfg(test)]
mod tests {
    use super::roof_label;
    use serde_json::json;

    #[test]
    fn the_roof_label_gives_bandwidth_only_where_the_report_has_it() {
        let copy = json!({"copy_bandwidth": 4.31e12, "device": {"peak_bandwidth": 4.8e12}});
        assert_eq!(roof_label(&copy), "device copy (4310 GB/s)");
        let spec = json!({"device": {"peak_bandwidth": 4.8e12}});
        assert_eq!(roof_label(&spec), "spec peak (4800 GB/s)");
        // A report without either (a test's, a hand-made one) said "NaN GB/s".
        assert_eq!(roof_label(&json!({"device": {}})), "spec peak");
    }
}
