//! `tmoe bench model`: Traffic-MoE against its dense twin (same parameter
//! count) on one engine, the paper's efficiency comparison (section 3.7,
//! Figure 8): per batch size, throughput (flows/s, tokens/s), mean and p99
//! latency per batch, peak device memory (the caching pool's high-water
//! mark, weights included as in the paper, and the activation peak above the
//! weights; on the CPU the heap's, `crate::heap`), and the routed experts'
//! load; then the MoE/dense ratios beside
//! the paper's. Inference is the classifier forward on an inference tape
//! (what `tmoe classify` runs); `--train` times a full step instead
//! (forward, backward, AdamW).
//!
//! Weights are uploaded once and inputs staged before timing; each batch size
//! gets warm-up runs (which also fill the caching pool) before the timed ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::autograd::profile::{self, Profile};
use crate::backend::gpu::Executor;
use crate::backend::gpu::kernel_profile::{self, KernelTime};
use crate::backend::gpu::pool::Pool;
use crate::cli::args;
use crate::engine::{Device, Param, Precision};
use crate::eval::plot::{Panel, Series, YAxis, save_curves};
use crate::eval::predict::{Loaded, class_logits, lm_loss_batch};
use crate::heap;
use crate::infer::latency::quantile;
use crate::model::batch::Batch;
use crate::model::{FfnKind, Model, ModelConfig};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::step::Task;
use crate::train::trainer::Trainer;

/// Figure 8 of the paper (journal version), batch 64: MoE relative to dense.
const PAPER_THROUGHPUT: f64 = 1.3745;
const PAPER_LATENCY: f64 = 1.0 - 0.2725;
const PAPER_MEMORY: f64 = 1.0 - 0.2704;
/// Classes of the benchmark's classifier head (the head is tiny either way).
const CLASSES: usize = 16;

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Engine: cpu, cuda or sim (the GPU engine in the simulator: slow, small shapes).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Precision on the CPU: f32 (inference: f32 weights packed for the
    /// AVX-512F kernel, or the reference engine on a CPU without it) or bf16
    /// (inference: bf16 weights, f32 accumulation; with --train, mixed
    /// precision: bf16 operands, f32 sums, weights and AdamW state). The
    /// GPU engine (cuda, sim) always computes in bf16: either value is
    /// accepted there and runs it.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Model config: tiny, small or base (default: base on cuda, tiny elsewhere).
    #[arg(long)]
    pub config: Option<String>,
    /// Batch sizes, comma-separated (default: 8,16,32,64 on cuda, 8 on cpu, 2 on sim).
    #[arg(long, value_parser = args::batch, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Tokens per flow (default: 512 on cuda, 64 on cpu, 32 on sim).
    #[arg(long, value_parser = args::seq_len)]
    pub seq: Option<usize>,
    /// Time a training step (fwd + bwd + AdamW) instead of inference.
    #[arg(long)]
    pub train: bool,
    /// Which model and loss: the classifier's (fine-tuning: cross entropy
    /// over the pooled flow, the default; without --train its forward to
    /// the class logits) or pretraining's (`lm`: next-token prediction
    /// through the tied LM head over the config's whole vocabulary, no
    /// classifier head; without --train the loss alone, no tape, as a
    /// held-out evaluation runs it).
    #[arg(long, value_enum, default_value_t = Objective::Classify)]
    pub objective: Objective,
    /// Timed runs per batch size (after warm-up).
    #[arg(long, value_parser = args::count)]
    pub iters: Option<usize>,
    /// Only the MoE model, or only the dense twin.
    #[arg(long, value_enum)]
    pub only: Option<crate::cli::pretrain::Ffn>,
    /// Write the JSON report here, and the chart beside it (`.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Also time each op kind, forward and backward, and the optimizer:
    /// a table per batch size (and in the JSON). Host time: on cuda, ops
    /// only queue kernels, so there it shows launch cost, not kernel time;
    /// on cuda and sim a second table gives each kernel's device time
    /// (CUDA events around every launch and copy; the simulator's host
    /// time) and how long the device sat idle (at least: on a device
    /// waiting for the host a kernel's time includes its launch call).
    /// The CPU inference forward splits its batch across threads: there the
    /// times are thread time, and shares are of all ops.
    #[arg(long)]
    pub profile: bool,
}

/// What a timed training step optimises.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// The classifier's cross entropy (+ aux loss), as `tmoe finetune`.
    Classify,
    /// Next-token prediction (+ aux loss), as `tmoe pretrain`.
    Lm,
}

#[derive(Debug, Serialize)]
struct Row {
    ffn: &'static str,
    batch: usize,
    seq: usize,
    iters: usize,
    flows_per_s: f64,
    tokens_per_s: f64,
    mean_latency_ms: f64,
    p99_latency_ms: f64,
    /// High-water mark, weights + activations: the device pool's on a GPU
    /// engine, the heap's (Rust allocations, `crate::heap`) on the CPU.
    peak_bytes: Option<usize>,
    /// Bytes held before the run (weights, optimizer state).
    weight_bytes: Option<usize>,
    /// Share of routed (token, slot) pairs per expert, layer after layer.
    expert_load: Vec<Vec<f64>>,
    /// With --profile: host time per op kind and pass over the timed runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Profile>,
    /// With --profile on a GPU engine: device time per kernel over the
    /// timed runs, longest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernels: Option<Vec<KernelTime>>,
}

#[derive(Debug, Serialize)]
struct Ratio {
    batch: usize,
    throughput: f64,
    mean_latency: f64,
    peak_memory: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    device: &'static str,
    device_name: String,
    /// `--precision`: of inference, or with `--train` of the training step
    /// (bf16: mixed precision); bf16 on the GPU engine, which computes in
    /// bf16 whichever is given (`Precision::on`).
    precision: &'static str,
    config: String,
    mode: &'static str,
    params_moe: usize,
    params_dense: usize,
    rows: Vec<Row>,
    /// MoE / dense (throughput > 1 and latency, memory < 1 favour MoE).
    ratios: Vec<Ratio>,
    paper_batch64: Ratio,
    command: String,
}

fn random_batch(b: usize, s: usize, vocab: usize, seed: u64) -> Batch {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let ids = (0..b * s)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            5 + (x % (vocab as u64 - 5)) as u32
        })
        .collect();
    Batch {
        ids,
        mask: vec![1; b * s],
        labels: (0..b).map(|i| (i % CLASSES) as u32).collect(),
        b,
        s,
        n_tokens: b * s,
    }
}

/// Expert shares per layer from a flat `[layers, T, k]` routing.
fn load(routing: &[u32], layers: usize, n: usize) -> Vec<Vec<f64>> {
    if routing.is_empty() || n == 0 {
        return Vec::new();
    }
    routing
        .chunks(routing.len() / layers)
        .map(|l| {
            let mut c = vec![0f64; n];
            l.iter().for_each(|&e| c[e as usize] += 1.0);
            c.iter().map(|v| v / l.len() as f64).collect()
        })
        .collect()
}

/// Where a row's memory figures come from: the GPU engine's caching pool
/// (device memory), or on the CPU the heap meter (where `tmoe` installed it).
enum Meter {
    Pool(Arc<Pool>),
    Heap,
}

impl Meter {
    fn of(gpu: Option<&Executor>) -> Option<Meter> {
        match gpu {
            Some(x) => x.pool().cloned().map(Meter::Pool),
            None => heap::stats().map(|_| Meter::Heap),
        }
    }

    /// Starts a new high-water mark; returns the bytes held now.
    fn start(&self) -> usize {
        match self {
            Meter::Pool(p) => {
                p.reset_peak();
                p.stats().in_use
            }
            Meter::Heap => {
                heap::reset_peak();
                heap::stats().map_or(0, |(now, _)| now)
            }
        }
    }

    /// The most bytes held since [`Meter::start`].
    fn peak(&self) -> usize {
        match self {
            Meter::Pool(p) => p.stats().peak_in_use,
            Meter::Heap => heap::stats().map_or(0, |(_, peak)| peak),
        }
    }
}

enum Engine {
    Infer(Loaded),
    Train(Box<Trainer>),
}

/// Times one model at every batch size.
fn bench_one(
    a: &ModelArgs,
    cfg: &ModelConfig,
    seq: usize,
    iters: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<usize> {
    let (model, params) = Model::new(cfg.clone(), 0)?;
    let n_params: usize = params.iter().map(Param::numel).sum();
    let mut engine = if a.train {
        let opt = AdamW::new(AdamWConfig::default(), &params);
        Engine::Train(Box::new(Trainer::new(a.device, a.precision, params, opt)?))
    } else {
        Engine::Infer(Loaded::with_precision(a.device, params, a.precision)?)
    };
    let pretrain = a.objective == Objective::Lm;
    let executor = |e: &Engine| match e {
        Engine::Infer(Loaded::Gpu(g, _)) => Some(g.executor().clone()),
        Engine::Infer(Loaded::Cpu(_) | Loaded::CpuBf16(..)) => None,
        Engine::Train(t) => match t.as_ref() {
            Trainer::Gpu { gpu, .. } => Some(gpu.executor().clone()),
            Trainer::Cpu { .. } => None,
        },
    };
    let ffn = if cfg.ffn == FfnKind::Moe {
        "moe"
    } else {
        "dense"
    };
    for &b in &a.batch {
        let batch = random_batch(b, seq, cfg.vocab, b as u64);
        let x = batch.inputs();
        // `keep`: also read the routing back (a sync per layer: warm-up only).
        let run = |e: &mut Engine, keep: bool| -> anyhow::Result<Vec<u32>> {
            Ok(match e {
                Engine::Infer(l) if pretrain => lm_loss_batch(&model, l.weights(), &x, keep)?.2,
                Engine::Infer(l) => class_logits(&model, l.weights(), &x, keep)?.1,
                Engine::Train(t) => {
                    let task = match a.objective {
                        Objective::Classify => Task::Classify,
                        Objective::Lm => Task::Lm,
                    };
                    t.step(&model, &batch, task, 0.02, 1e-4, 1.0)?;
                    Vec::new()
                }
            })
        };
        let routing = run(&mut engine, true)?;
        run(&mut engine, false)?;
        let device = executor(&engine);
        let meter = Meter::of(device.as_ref());
        let held = meter.as_ref().map(Meter::start);
        let mut lat = Vec::with_capacity(iters);
        let gpu = device.filter(|_| a.profile);
        if a.profile {
            profile::start();
        }
        if gpu.is_some() {
            kernel_profile::start();
        }
        for _ in 0..iters {
            let t = Instant::now();
            run(&mut engine, false)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let profiled = a.profile.then(profile::stop);
        let kernels = gpu.map(|x| x.kernel_profile_stop()).transpose()?;
        let peak = meter.as_ref().map(Meter::peak);
        let mean = lat.iter().sum::<f64>() / lat.len() as f64;
        let row = Row {
            ffn,
            batch: b,
            seq,
            iters,
            flows_per_s: b as f64 / (mean / 1e3),
            tokens_per_s: (b * seq) as f64 / (mean / 1e3),
            mean_latency_ms: mean,
            p99_latency_ms: quantile(&lat, 0.99).unwrap_or(f64::NAN),
            peak_bytes: peak,
            weight_bytes: held,
            expert_load: load(
                &routing,
                cfg.layers,
                if ffn == "moe" { cfg.n_experts } else { 0 },
            ),
            profile: profiled,
            kernels,
        };
        eprintln!(
            "{ffn:>5} batch {b:>3}: {:>10.1} flows/s {:>12.0} tokens/s  mean {:>9.3} ms  p99 {:>9.3} ms  peak {}",
            row.flows_per_s,
            row.tokens_per_s,
            row.mean_latency_ms,
            row.p99_latency_ms,
            peak.map_or("n/a".into(), |p| format!(
                "{:.1} MiB",
                p as f64 / (1 << 20) as f64
            )),
        );
        match &row.profile {
            Some(p) if p.entries.is_empty() => {
                eprintln!("  profile: no op ran on a tape (nothing to attribute)")
            }
            Some(p) => eprintln!("{}", p.per_step(iters, mean / 1e3)),
            None => {}
        }
        if let Some(kernels) = &row.kernels {
            let table = kernel_profile::PerStep {
                kernels,
                steps: iters,
                step_s: mean / 1e3,
            };
            eprintln!("{table}");
        }
        rows.push(row);
    }
    Ok(n_params)
}

pub fn run(mut a: ModelArgs) -> anyhow::Result<()> {
    let on_gpu = a.device == Device::Cuda;
    let config = a
        .config
        .clone()
        .unwrap_or_else(|| if on_gpu { "base" } else { "tiny" }.into());
    if a.batch.is_empty() {
        a.batch = match a.device {
            Device::Cuda => vec![8, 16, 32, 64],
            Device::Cpu => vec![8],
            Device::Sim => vec![2],
        };
    }
    let seq = a.seq.unwrap_or(match a.device {
        Device::Cuda => 512,
        Device::Cpu => 64,
        Device::Sim => 32,
    });
    let iters = a.iters.unwrap_or(if on_gpu { 20 } else { 3 });
    let pretrain = a.objective == Objective::Lm;
    super::refuse_existing(a.out.as_deref(), a.force)?;
    // The chart written beside the report.
    let png = a.out.as_ref().map(|o| o.with_extension("png"));
    super::refuse_existing(png.as_deref(), a.force)?;
    let mut cfg = ModelConfig::named(&config)?;
    // Pretraining's model has no classifier head.
    cfg.n_classes = if pretrain { 0 } else { CLASSES };
    cfg.max_seq = cfg.max_seq.max(seq);
    crate::cli::advise_cpu_precision(a.device, a.precision);
    let device_name = match (a.device.gpu()?, a.precision) {
        (Some(g), _) => g.executor().device_info().name,
        (None, Precision::F32) if a.train => "CPU".into(),
        (None, Precision::Bf16) if a.train => format!(
            "CPU, bf16 mixed-precision training, products on {}",
            crate::backend::cpu_bf16::Kernel::detect().name()
        ),
        // Every f32 packed kernel multiplies in AVX-512F FMAs (the bf16 one
        // only packs its panels its own way).
        (None, Precision::F32) => match crate::backend::cpu_bf16::Kernel::detect_f32() {
            Some(_) => "CPU, f32 on the packed AVX-512F kernels".into(),
            None => "CPU, f32 reference engine".into(),
        },
        (None, Precision::Bf16) => format!(
            "CPU, bf16 kernel {}",
            crate::backend::cpu_bf16::Kernel::detect().name()
        ),
    };
    eprintln!(
        "tmoe bench model: {config} on {} ({device_name}), sequence {seq}, {}; {} per batch size after a warm-up{}",
        a.device.name(),
        match (a.train, pretrain) {
            (true, true) => format!(
                "pretraining step (next-token loss over {} vocabulary entries)",
                cfg.vocab
            ),
            (true, false) => "training step (classifier)".into(),
            (false, true) => format!(
                "LM forward with its loss, no tape (next-token loss over {} vocabulary entries)",
                cfg.vocab
            ),
            (false, false) => "inference (classifier forward)".into(),
        },
        crate::cli::noun(iters as u64, "timed run"),
        // The p99 of fewer than 100 runs is their slowest.
        if iters < 100 {
            " (p99: the slowest of them; --iters 100 or more for a percentile)"
        } else {
            ""
        }
    );
    let mut rows = Vec::new();
    let (mut params_moe, mut params_dense) = (0, 0);
    let only = a.only;
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        let skip = match only {
            Some(crate::cli::pretrain::Ffn::Moe) => ffn != FfnKind::Moe,
            Some(crate::cli::pretrain::Ffn::Dense) => ffn != FfnKind::Dense,
            None => false,
        };
        if skip {
            continue;
        }
        let n = bench_one(&a, &cfg.clone().with_ffn(ffn), seq, iters, &mut rows)?;
        if ffn == FfnKind::Moe {
            params_moe = n;
        } else {
            params_dense = n;
        }
    }
    let ratios: Vec<Ratio> = a
        .batch
        .iter()
        .filter_map(|&b| {
            let m = rows.iter().find(|r| r.ffn == "moe" && r.batch == b)?;
            let d = rows.iter().find(|r| r.ffn == "dense" && r.batch == b)?;
            Some(Ratio {
                batch: b,
                throughput: m.flows_per_s / d.flows_per_s,
                mean_latency: m.mean_latency_ms / d.mean_latency_ms,
                peak_memory: m
                    .peak_bytes
                    .zip(d.peak_bytes)
                    .map(|(x, y)| x as f64 / y as f64),
            })
        })
        .collect();
    for r in &ratios {
        eprintln!(
            "MoE/dense at batch {:>3}: throughput x{:.3} (paper x{PAPER_THROUGHPUT:.3}), latency x{:.3} (paper x{PAPER_LATENCY:.3}), peak memory {} (paper x{PAPER_MEMORY:.3})",
            r.batch,
            r.throughput,
            r.mean_latency,
            r.peak_memory.map_or("n/a".into(), |m| format!("x{m:.3}")),
        );
    }
    let report = Report {
        date: chrono_like_now(),
        device: a.device.name(),
        device_name,
        precision: a.precision.on(a.device).name(),
        config,
        mode: match (a.train, pretrain) {
            (true, true) => "pretrain",
            (true, false) => "train",
            (false, true) => "lm-forward",
            (false, false) => "inference",
        },
        params_moe,
        params_dense,
        rows,
        ratios,
        paper_batch64: Ratio {
            batch: 64,
            throughput: PAPER_THROUGHPUT,
            mean_latency: PAPER_LATENCY,
            peak_memory: Some(PAPER_MEMORY),
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    super::emit_json(&report, a.out.as_deref())?;
    if let Some(out) = &a.out {
        let png = out.with_extension("png");
        chart(&report, &png)?;
        eprintln!("wrote {} and {}", out.display(), png.display());
    }
    Ok(())
}

/// Throughput, latency and peak memory against the batch size, MoE and dense.
fn chart(r: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    let series = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<Series> {
        ["moe", "dense"]
            .iter()
            .map(|&k| Series {
                label: if k == "moe" {
                    "Traffic-MoE"
                } else {
                    "dense twin"
                }
                .into(),
                points: r
                    .rows
                    .iter()
                    .filter(|x| x.ffn == k)
                    .filter_map(|x| Some((x.batch as f64, f(x)?)))
                    .collect(),
            })
            .collect()
    };
    let mut panels = vec![
        Panel {
            // Which run: a training step's chart and an inference one's
            // looked alike.
            title: format!(
                "Throughput ({}, {}, {}, {})",
                r.config, r.device, r.mode, r.precision
            ),
            x_label: "batch".into(),
            y_label: "flows/s".into(),
            series: series(&|x| Some(x.flows_per_s)),
            y_axis: YAxis::FromZero,
        },
        Panel {
            title: if r.mode == "train" || r.mode == "pretrain" {
                "Mean time per training step"
            } else {
                "Mean latency per batch"
            }
            .into(),
            x_label: "batch".into(),
            y_label: "ms".into(),
            series: series(&|x| Some(x.mean_latency_ms)),
            y_axis: YAxis::FromZero,
        },
    ];
    if r.rows.iter().any(|x| x.peak_bytes.is_some()) {
        panels.push(Panel {
            title: if r.device == "cpu" {
                "Peak heap memory"
            } else {
                "Peak device memory"
            }
            .into(),
            x_label: "batch".into(),
            y_label: "MiB".into(),
            series: series(&|x| x.peak_bytes.map(|p| p as f64 / (1 << 20) as f64)),
            y_axis: YAxis::FromZero,
        });
    }
    save_curves(path, &panels)
}

/// UTC date and time (no date crate: from the system clock).
pub(crate) fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
