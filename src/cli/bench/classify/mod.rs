//! `tmoe bench classify`: classification end to end, under load, for
//! Traffic-MoE and its dense twin.
//!
//! - **pipeline**: capture files -> verdicts through `tmoe classify`'s
//!   pipeline (parallel readers, batches across files): flows/s end to end,
//!   and the model-only flows/s of the same run (flows / seconds in the model).
//! - **stream-memory**: every frame of a set, merged in time order and held
//!   in memory, handed to the stream's flow side on its reader thread with
//!   the model beside it (`infer::overlap`, as `classify --stream` runs),
//!   early verdicts on: first as fast as it goes, then paced at fractions of
//!   that packet rate. It isolates the flow table and the model: no capture
//!   reader, no parsing, no pipe.
//! - **stream-pipe**: the same frames written as one capture (a classic pcap
//!   with nanosecond timestamps; pcapng when the set mixes link types) into
//!   an OS pipe by a writer thread (unpaced in 64 KiB writes; paced, what
//!   is due is written before the writer sleeps, so frames due within
//!   200 us share a write, and the rates are fractions of the unpaced
//!   stream-pipe row's packet rate) and read by exactly what
//!   `classify --stream` runs on standard input: the pump thread
//!   (`cli::stdin_pump`), the capture reader and `overlap::run_live`
//!   (`cli::classify_stream::{open_stream, run_stream}`). Against
//!   stream-memory it shows what the pipe, the buffering and the pcap
//!   parsing cost.
//!
//! Both stream modes give flows/s, packets/s, verdict latency p50/p99 (ready
//! -> verdict, wall time, as `classify --stream` measures it: from the
//! moment the flow table has the frame that makes a flow ready, so time the
//! bytes spend in the pipe and the pump before they are parsed is in the
//! pipe row's flows/s but not in its latency), peak memory (of the process:
//! it counts the set held in memory, as frames or as capture bytes) and the
//! stream's counters; the clock starts before the first frame is handed
//! over (or written).
//!
//! Inputs: real captures (`--captures`, default IoT Sentinel from
//! ../shared/data when present) and sets it synthesises (`tmoe synth`): a
//! capture per flow (`--one-flow-files`), and optionally many flows in 40-flow
//! files (`--synth-flows`, for a GPU). The vocabulary is learnt on the
//! one-flow set; weights are random (throughput does not depend on them, and
//! random routing is near-uniform, so the MoE figure is its balanced case).

mod stream;
mod work;

use stream::{Feed, bench_stream_runs, capture_bytes, load_frames};
use work::{build_vocab, claim_work, prepare_inputs, random_classifier, work_entries};

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::cli::args;
use crate::engine::{Device, Precision};
use crate::infer::classifier::{Classifier, VocabSource};
use crate::infer::pipeline::{PipelineConfig, PipelineStats, classify_files};
use crate::model::FfnKind;
use crate::traffic::capture::stats::peak_rss_kib;

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// Engine: cpu, cuda or sim.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Model config: tiny, small or base.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// CPU engine precision (bf16: bf16 weights, f32 accumulation).
    /// The GPU engine (cuda, sim) always computes in bf16 (bf16
    /// weights, f32 sums): either value is accepted there and runs it.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Tokens per flow (default 64; 32 on sim).
    #[arg(long, value_parser = args::seq_len)]
    pub seq: Option<usize>,
    /// Flows per model call (default 64 on cpu, 1024 on cuda, 8 on sim).
    #[arg(long, value_parser = args::batch)]
    pub batch: Option<usize>,
    /// Real capture folders to replay (default: ../shared/data/iot-sentinel
    /// when it exists, except on sim).
    #[arg(long)]
    pub captures: Vec<PathBuf>,
    /// Synthesised captures of one flow each (default 3000; 100000 on cuda;
    /// 24 on sim), rounded up to a whole number for each of the 6 classes.
    #[arg(long, value_parser = args::synth_flows)]
    pub one_flow_files: Option<usize>,
    /// Synthesised flows in 40-flow captures (default 0; 1000000 on cuda),
    /// rounded up as --one-flow-files.
    #[arg(long, value_parser = args::synth_flows_or_none)]
    pub synth_flows: Option<usize>,
    /// Paced stream runs at these fractions of the unpaced packet rate (of
    /// each stream mode's own: memory, pipe).
    #[arg(long, value_parser = args::positive, value_delimiter = ',', default_value = "0.5,0.9")]
    pub rates: Vec<f64>,
    /// Skip the stream runs (pipeline only).
    #[arg(long)]
    pub no_stream: bool,
    /// Which stream runs: frames from memory, capture bytes through a
    /// pipe (as `classify --stream` reads them), or both.
    #[arg(long, value_enum, default_value_t = StreamVia::Both)]
    pub stream_via: StreamVia,
    /// Only the MoE model, or only the dense twin.
    #[arg(long, value_enum)]
    pub only: Option<crate::cli::pretrain::Ffn>,
    /// Keep the synthesised captures (one-flow/, synth-flows/), dataset
    /// (data/) and checkpoints (CONFIG-moe/dense.safetensors) here; a later
    /// run replaces them (default: a fresh temporary folder, removed).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file, and use a --work folder that holds
    /// other files (never one where the files this run writes would
    /// replace some of them).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Serialize, Default)]
struct Row {
    ffn: &'static str,
    input: String,
    /// `pipeline`, `stream-memory` (frames handed over from memory) or
    /// `stream-pipe` (capture bytes through an OS pipe, read as
    /// `classify --stream` reads them).
    mode: &'static str,
    /// Stream pacing: fraction of the unpaced packet rate (None: unpaced).
    rate_fraction: Option<f64>,
    files: usize,
    flows: u64,
    packets: u64,
    seconds: f64,
    flows_per_s: f64,
    packets_per_s: f64,
    /// Pipeline: flows / seconds spent in the model.
    model_flows_per_s: Option<f64>,
    pipeline: Option<PipelineStats>,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    /// Process peak resident memory during the run (reset before it where
    /// the kernel allows), MiB.
    peak_rss_mib: Option<f64>,
    stream: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct Ratio {
    input: String,
    /// MoE / dense flows/s, end to end.
    end_to_end: f64,
    /// MoE / dense flows/s in the model alone (same runs).
    model_only: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    device: &'static str,
    precision: &'static str,
    device_name: String,
    cpu: String,
    cores: usize,
    config: String,
    seq: usize,
    batch: usize,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
    command: String,
}

/// How the stream runs are fed (`--stream-via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamVia {
    Memory,
    Pipe,
    Both,
}

/// A set of captures to replay.
struct Input {
    name: String,
    files: Vec<PathBuf>,
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    super::refuse_existing(a.out.as_deref(), a.force)?;
    crate::cli::advise_cpu_precision(a.device, a.precision);
    let (seq, batch) = (
        a.seq
            .unwrap_or(if a.device == Device::Sim { 32 } else { 64 }),
        a.batch.unwrap_or(match a.device {
            Device::Cpu => 64,
            Device::Cuda => 1024,
            Device::Sim => 8,
        }),
    );
    let one_flow = a.one_flow_files.unwrap_or(match a.device {
        Device::Cpu => 3000,
        Device::Cuda => 100_000,
        Device::Sim => 24,
    });
    let many = a.synth_flows.unwrap_or(if a.device == Device::Cuda {
        1_000_000
    } else {
        0
    });
    // The device first: a missing GPU fails in a second, not after
    // synthesising a million flows.
    let device_name = match a.device.gpu()? {
        Some(g) => g.executor().device_info().name,
        None => "CPU".into(),
    };
    // The default: a folder this run makes under the system's temporary
    // one (so nothing in it is anyone else's), removed however the run ends.
    let _temp;
    let work = match &a.work {
        Some(w) => {
            claim_work(w, a.force, &work_entries(&a.config))?;
            w.clone()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("tmoe-bench-classify-")
                .tempdir()
                .with_context(|| {
                    format!(
                        "making a work folder under {} (or pass --work)",
                        std::env::temp_dir().display()
                    )
                })?;
            let w = t.path().to_path_buf();
            _temp = t;
            w
        }
    };
    let inputs = prepare_inputs(&a, &work, one_flow, many)?;
    let data = work.join("data");
    build_vocab(&work.join("one-flow"), &data, seq)?;

    eprintln!(
        "tmoe bench classify: {} on {} ({device_name}, {}), sequence {seq}, batch {batch}",
        a.config,
        a.device.name(),
        a.precision.on(a.device).name()
    );
    let mut rows = Vec::new();
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        let skip = match a.only {
            Some(crate::cli::pretrain::Ffn::Moe) => ffn != FfnKind::Moe,
            Some(crate::cli::pretrain::Ffn::Dense) => ffn != FfnKind::Dense,
            None => false,
        };
        if skip {
            continue;
        }
        let ckpt = random_classifier(&a.config, ffn, &data, seq, &work)?;
        let open = || {
            Classifier::open_with_precision(
                &ckpt,
                VocabSource::Dataset(&data),
                Some(seq),
                a.device,
                a.precision,
            )
        };
        let name = if ffn == FfnKind::Moe { "moe" } else { "dense" };
        let mut clf = open()?;
        for input in &inputs {
            rows.push(bench_pipeline(&clf, name, input, batch)?);
            if a.no_stream || input.name.starts_with("synth-flows") {
                continue;
            }
            let frames = load_frames(&input.files)?;
            if a.stream_via != StreamVia::Pipe {
                let feed = Feed::Memory(&frames);
                clf = bench_stream_runs(clf, name, input, &feed, batch, &a.rates, &mut rows)?;
            }
            if a.stream_via != StreamVia::Memory {
                // The same frames as the capture bytes a pipe would carry.
                let capture = capture_bytes(&frames)?;
                drop(frames);
                let feed = Feed::Pipe(&capture);
                clf = bench_stream_runs(clf, name, input, &feed, batch, &a.rates, &mut rows)?;
            }
        }
    }
    let ratios = ratios(&rows);
    for r in &ratios {
        eprintln!(
            "MoE/dense flows/s on {}: end to end x{:.3}, model only {}",
            r.input,
            r.end_to_end,
            r.model_only.map_or("n/a".into(), |m| format!("x{m:.3}"))
        );
    }
    let report = Report {
        date: super::model::chrono_like_now(),
        device: a.device.name(),
        precision: a.precision.on(a.device).name(),
        device_name,
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        config: a.config.clone(),
        seq,
        batch,
        rows,
        ratios,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    super::emit_json(&report, a.out.as_deref())?;
    if let Some(out) = &a.out {
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn bench_pipeline(
    clf: &Classifier,
    ffn: &'static str,
    input: &Input,
    batch: usize,
) -> anyhow::Result<Row> {
    let cfg = PipelineConfig::new(batch, 1);
    // Warm-up on a few files (page cache, allocator, a GPU's pool).
    let warm = &input.files[..input.files.len().min(32)];
    classify_files(clf, warm, &cfg, &mut |_, _| {}, &mut |_| Ok(()))?;
    let peak_reset = reset_peak_rss();
    let (mut flows, mut packets) = (0u64, 0u64);
    let mut problem = None;
    let t = Instant::now();
    let st = classify_files(clf, &input.files, &cfg, &mut |_, _| {}, &mut |r| {
        flows += r.flows.len() as u64;
        packets += r.stats.packets;
        if problem.is_none() {
            problem = r
                .stats
                .error
                .iter()
                .chain(&r.stats.warnings)
                .next()
                .map(|e| e.to_string());
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    // Captures that give no flow (a text file, broken pcaps) were timed as
    // "0 flows, 0 flows/s", row after row, stream runs and all.
    anyhow::ensure!(
        flows > 0,
        "{}: no flow classified from its {} capture file{}{}: nothing to time",
        input.name,
        input.files.len(),
        if input.files.len() == 1 { "" } else { "s" },
        problem.map_or(String::new(), |p| format!(" (first problem: {p})"))
    );
    let row = Row {
        ffn,
        input: input.name.clone(),
        mode: "pipeline",
        files: input.files.len(),
        flows,
        packets,
        seconds: secs,
        flows_per_s: flows as f64 / secs,
        packets_per_s: packets as f64 / secs,
        model_flows_per_s: Some(st.flows as f64 / st.model_seconds.max(1e-9)),
        pipeline: Some(st),
        peak_rss_mib: peak_reset.then(peak_rss_mib).flatten(),
        ..Row::default()
    };
    print_row(&row);
    Ok(row)
}

fn print_row(r: &Row) {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} ms"));
    eprintln!(
        "{:>5} {:<13} {:<30} {:>6} {:>9} flows {:>10.0} flows/s {:>11.0} packets/s  model-only {}  latency p50 {} p99 {}  peak {}",
        r.ffn,
        r.mode,
        r.input,
        r.rate_fraction.map_or("max".into(), |f| format!("x{f}")),
        r.flows,
        r.flows_per_s,
        r.packets_per_s,
        r.model_flows_per_s
            .map_or("-".into(), |v| format!("{v:.0} flows/s")),
        ms(r.latency_p50_ms),
        ms(r.latency_p99_ms),
        r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
    );
}

fn ratios(rows: &[Row]) -> Vec<Ratio> {
    rows.iter()
        .filter(|r| r.ffn == "moe" && r.mode == "pipeline")
        .filter_map(|m| {
            let d = rows
                .iter()
                .find(|d| d.ffn == "dense" && d.mode == "pipeline" && d.input == m.input)?;
            Some(Ratio {
                input: m.input.clone(),
                end_to_end: m.flows_per_s / d.flows_per_s,
                model_only: m
                    .model_flows_per_s
                    .zip(d.model_flows_per_s)
                    .map(|(a, b)| a / b),
            })
        })
        .collect()
}

/// Resets the process's peak RSS (Linux: `5` to /proc/self/clear_refs), so
/// that the next reading is this run's peak.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mib() -> Option<f64> {
    peak_rss_kib().map(|k| k as f64 / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
