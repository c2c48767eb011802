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
//!   `classify --stream -` runs on standard input: the pump thread
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cli::args;
use crate::cli::classify_stream::{open_stream, run_stream};
use crate::engine::{Device, Precision};
use crate::infer::classifier::{Classifier, VocabSource};
use crate::infer::flow_feed::{FlowFeed, StreamLimits};
use crate::infer::latency::quantile;
use crate::infer::overlap::{self, FrameSink};
use crate::infer::pipeline::{PipelineConfig, PipelineStats, classify_files};
use crate::infer::runner::MAX_WAIT;
use crate::infer::stream::flow_feed_for;
use crate::model::checkpoint::{self, CheckpointMeta};
use crate::model::{FfnKind, Model, ModelConfig};
use crate::traffic::capture::container::CaptureReader;
use crate::traffic::capture::pcap_writer::{PcapNgBuilder, PcapWriter};
use crate::traffic::capture::reader::find_captures;
use crate::traffic::capture::stats::peak_rss_kib;
use crate::traffic::capture::synth::{SynthConfig, synthesize};
use crate::traffic::dataset::build::{DatasetConfig, build_dataset_with, load_dataset_info};
use crate::traffic::tokens::tokenize::TokenizerConfig;

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// Engine: cpu, cuda or sim.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Model config: tiny, small or base.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// CPU engine precision (bf16: bf16 weights, f32 accumulation).
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
    /// 24 on sim).
    #[arg(long)]
    pub one_flow_files: Option<usize>,
    /// Synthesised flows in 40-flow captures (default 0; 1000000 on cuda).
    #[arg(long)]
    pub synth_flows: Option<usize>,
    /// Paced stream runs at these fractions of the unpaced packet rate (of
    /// each stream mode's own: memory, pipe).
    #[arg(long, value_parser = args::positive, value_delimiter = ',', default_value = "0.5,0.9")]
    pub rates: Vec<f64>,
    /// Skip the stream runs (pipeline only).
    #[arg(long)]
    pub no_stream: bool,
    /// Which stream runs: frames from memory, capture bytes through a
    /// pipe (as `classify --stream -` reads them), or both.
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
    /// `classify --stream -` reads them).
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

/// Removes the temporary work folder however the run ends: one this run
/// made ([`fresh_temp_work`]), so that nothing in it is anyone else's.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let _cleanup;
    let work = match &a.work {
        Some(w) => {
            claim_work(w, a.force, &work_entries(&a.config))?;
            w.clone()
        }
        None => {
            let w = fresh_temp_work()?;
            _cleanup = RemoveOnDrop(w.clone());
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
        a.precision.name()
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
        precision: a.precision.name(),
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

/// A folder under the system's temporary one that did not exist before
/// (this run makes it, so it may remove it with all it holds).
fn fresh_temp_work() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let w = base.join(format!("tmoe-bench-classify-{}-{n}", std::process::id()));
        match std::fs::create_dir(&w) {
            Ok(()) => return Ok(w),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", w.display())),
        }
    }
    anyhow::bail!(
        "{}: no free name for a work folder (tmoe-bench-classify-{}-N); pass --work",
        base.display(),
        std::process::id()
    )
}

/// What a run writes in its work folder besides its mark, and replaces
/// when it is there: the synthesised captures, the dataset and the
/// checkpoints of `config`.
fn work_entries(config: &str) -> Vec<String> {
    let mut names: Vec<String> = ["one-flow", "synth-flows", "data"].map(String::from).into();
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        names.push(checkpoint_name(config, ffn));
    }
    names
}

fn checkpoint_name(config: &str, ffn: FfnKind) -> String {
    format!("{config}-{ffn:?}.safetensors").to_lowercase()
}

/// Marks a --work folder as this command's scratch, which a later run may
/// replace (its `entries`, the names it writes); refuses a folder with
/// other contents (the user's) unless forced, and even forced one where an
/// entry is there already: it is the user's, not an earlier run's.
fn claim_work(work: &Path, force: bool, entries: &[String]) -> anyhow::Result<()> {
    let mark = work.join(".tmoe-bench-classify");
    let used = std::fs::read_dir(work).is_ok_and(|mut d| d.next().is_some());
    let ours = mark.exists();
    anyhow::ensure!(
        force || !used || ours,
        "--work {}: not empty, and not a folder an earlier `bench classify` made (a run \
         replaces the captures, dataset and checkpoints it keeps there): choose another \
         --work, or pass --force",
        work.display()
    );
    if !ours {
        let in_the_way: Vec<&str> = entries
            .iter()
            .filter(|e| std::fs::symlink_metadata(work.join(e)).is_ok())
            .map(String::as_str)
            .collect();
        anyhow::ensure!(
            in_the_way.is_empty(),
            "--work {}: holds {}, which this run would replace (it writes {} there), and it is \
             not from an earlier `bench classify`: choose another --work",
            work.display(),
            in_the_way.join(", "),
            entries.join(", ")
        );
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::write(
        &mark,
        "scratch of tmoe bench classify: a later run replaces its contents\n",
    )
    .with_context(|| format!("writing {}", mark.display()))
}

fn prepare_inputs(
    a: &ClassifyArgs,
    work: &Path,
    one_flow: usize,
    many: usize,
) -> anyhow::Result<Vec<Input>> {
    let mut real = a.captures.clone();
    let iot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/iot-sentinel");
    if real.is_empty() && a.device != Device::Sim && iot.is_dir() {
        real.push(iot);
    }
    let mut inputs = Vec::new();
    for dir in real {
        let files = find_captures(&dir).with_context(|| format!("listing {}", dir.display()))?;
        anyhow::ensure!(!files.is_empty(), "{}: no captures", dir.display());
        let name = dir
            .file_name()
            .map_or("captures".into(), |n| n.to_string_lossy().into_owned());
        inputs.push(Input { name, files });
    }
    let mut synth = |name: &str, flows: usize, per_file: usize| -> anyhow::Result<()> {
        let out = work.join(name);
        let t = Instant::now();
        let s = synthesize(&SynthConfig {
            out: out.clone(),
            flows_per_class: flows
                .div_ceil(crate::traffic::capture::synth::CLASSES.len())
                .max(1),
            flows_per_file: per_file,
            seed: 7,
            force: true,
        })?;
        eprintln!(
            "synthesised {} flows in {} files under {} ({:.1} s)",
            s.flows,
            s.files,
            out.display(),
            t.elapsed().as_secs_f64()
        );
        inputs.push(Input {
            name: format!("{name} ({} flows)", s.flows),
            files: find_captures(&out)?,
        });
        Ok(())
    };
    synth("one-flow", one_flow.max(6), 1)?;
    if many > 0 {
        synth(
            "synth-flows",
            many,
            crate::traffic::capture::synth::FLOWS_PER_FILE,
        )?;
    }
    Ok(inputs)
}

/// A dataset (vocabulary and tokenizer settings) learnt on `captures`, in
/// `data` (the work folder's: an earlier run's dataset files there are
/// replaced, nothing else in it is removed).
fn build_vocab(captures: &Path, data: &Path, seq: usize) -> anyhow::Result<()> {
    let cfg = DatasetConfig {
        inputs: vec![captures.to_path_buf()],
        vocab_size: 2048,
        tokenizer: TokenizerConfig {
            seq_len: seq,
            ..TokenizerConfig::default()
        },
        min_packets: 1,
        ..DatasetConfig::default()
    };
    build_dataset_with(&cfg, data, false, true)?;
    Ok(())
}

/// A randomly initialised classifier of `config` for the dataset's
/// vocabulary and classes, saved where `Classifier::open` can load it.
fn random_classifier(
    config: &str,
    ffn: FfnKind,
    data: &Path,
    seq: usize,
    work: &Path,
) -> anyhow::Result<PathBuf> {
    let info = load_dataset_info(data)?;
    let mut cfg = ModelConfig::named(config)?.with_ffn(ffn);
    cfg.vocab = info.vocab_size;
    cfg.n_classes = info.classes.len();
    cfg.max_seq = cfg.max_seq.max(seq);
    let (_, params) = Model::new(cfg.clone(), 1)?;
    let mut meta = CheckpointMeta::new(
        serde_json::to_value(&cfg)?,
        info.vocab_hash,
        info.classes.clone(),
        0,
    );
    meta.extra.insert("seq_len".into(), seq.to_string());
    let path = work.join(checkpoint_name(config, ffn));
    checkpoint::save(&path, &meta, &params, true)?;
    Ok(path)
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
    classify_files(clf, warm, &cfg, &|_| {}, &mut |_| Ok(()))?;
    let peak_reset = reset_peak_rss();
    let (mut flows, mut packets) = (0u64, 0u64);
    let t = Instant::now();
    let st = classify_files(clf, &input.files, &cfg, &|_| {}, &mut |r| {
        flows += r.flows.len() as u64;
        packets += r.stats.packets;
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
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

/// A frame held in memory for replay.
struct Frame {
    ts_ns: u64,
    link_type: u32,
    orig_len: u32,
    data: Vec<u8>,
}

/// Every frame of `files`, merged in time order (one link carrying them all).
fn load_frames(files: &[PathBuf]) -> anyhow::Result<Vec<Frame>> {
    let mut frames = Vec::new();
    for f in files {
        let Ok(mut r) = CaptureReader::open(f) else {
            continue;
        };
        let _ = r.for_each_frame(|fr| {
            frames.push(Frame {
                ts_ns: fr.ts_ns,
                link_type: fr.link_type,
                orig_len: fr.orig_len,
                data: fr.data.to_vec(),
            })
        });
    }
    frames.sort_by_key(|f| f.ts_ns);
    Ok(frames)
}

/// What a stream run reads.
enum Feed<'a> {
    /// Frames held in memory, handed to the flow side one by one.
    Memory(&'a [Frame]),
    /// The same frames as capture bytes, written into an OS pipe by a thread
    /// of their own and read as `classify --stream -` reads standard input.
    Pipe(&'a CaptureBytes),
}

impl Feed<'_> {
    fn mode(&self) -> &'static str {
        match self {
            Feed::Memory(_) => "stream-memory",
            Feed::Pipe(_) => "stream-pipe",
        }
    }
}

/// The stream runs of one feed: unpaced, then paced at each of `rates` of
/// the unpaced run's packet rate. Gives the classifier back.
fn bench_stream_runs(
    mut clf: Classifier,
    ffn: &'static str,
    input: &Input,
    feed: &Feed,
    batch: usize,
    rates: &[f64],
    rows: &mut Vec<Row>,
) -> anyhow::Result<Classifier> {
    let (row, back) = bench_stream(clf, ffn, input, feed, batch, None)?;
    let unpaced_pps = row.packets_per_s;
    rows.push(row);
    clf = back;
    for &f in rates {
        let (row, back) = bench_stream(clf, ffn, input, feed, batch, Some((f, unpaced_pps)))?;
        rows.push(row);
        clf = back;
    }
    Ok(clf)
}

/// When each frame of a paced run is due: `interval` apart from `t0`.
#[derive(Clone, Copy)]
struct Pacer {
    t0: Instant,
    interval: Option<Duration>,
}

impl Pacer {
    /// How long to wait before frame `i` goes out, if it is not due yet.
    /// Frames due within 200 us go out together, as a capture's buffer
    /// delivers them; the caller sleeps when ahead (a spinning one would
    /// take a core from the model beside it).
    fn ahead(&self, i: usize) -> Option<Duration> {
        let due = self.interval? * i as u32;
        let now = self.t0.elapsed();
        (due > now + Duration::from_micros(200)).then(|| due - now)
    }
}

/// One stream run; `pace`: (fraction, unpaced packets/s). Gives the
/// classifier back for the next run.
fn bench_stream(
    clf: Classifier,
    ffn: &'static str,
    input: &Input,
    feed: &Feed,
    batch: usize,
    pace: Option<(f64, f64)>,
) -> anyhow::Result<(Row, Classifier)> {
    let flows = flow_feed_for(&clf, Some(1), true, StreamLimits::default());
    let peak_reset = reset_peak_rss();
    let t0 = Instant::now();
    let pacer = Pacer {
        t0,
        interval: pace.map(|(f, pps)| Duration::from_secs_f64(1.0 / (f * pps).max(1e-9))),
    };
    let (r, unknown_interface_frames) = match feed {
        Feed::Memory(frames) => {
            // The replay runs on the stream's reader thread, as a capture would.
            let source = |sink: &mut FrameSink| {
                for (i, f) in frames.iter().enumerate() {
                    if let Some(wait) = pacer.ahead(i) {
                        std::thread::sleep(wait);
                    }
                    if !sink(f.ts_ns, f.link_type, &f.data, f.orig_len) {
                        break;
                    }
                }
                Ok(())
            };
            let r = overlap::run(&clf, flows, batch, MAX_WAIT, source, &mut |_| Ok(()))?;
            (r, None)
        }
        Feed::Pipe(capture) => {
            let (r, unknown) = stream_through_pipe(&clf, capture, flows, batch, pacer)?;
            (r, Some(unknown))
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let st = r.stats;
    let mut counters = serde_json::json!({
        "frames": st.frames,
        "packets": st.packets,
        "skipped_frames": st.skipped_frames,
        "flows_finished": st.flows_finished,
        "flows_too_short": st.flows_too_short,
        "flows_classified": st.flows_classified,
        "flows_evicted": st.flows_evicted,
        "flows_dropped": st.flows_dropped,
    });
    if let Some(n) = unknown_interface_frames {
        counters["unknown_interface_frames"] = n.into();
    }
    let row = Row {
        ffn,
        input: input.name.clone(),
        mode: feed.mode(),
        rate_fraction: pace.map(|p| p.0),
        files: input.files.len(),
        flows: st.flows_classified,
        packets: st.packets,
        seconds: secs,
        flows_per_s: st.flows_classified as f64 / secs,
        packets_per_s: st.packets as f64 / secs,
        latency_p50_ms: quantile(&r.latencies, 0.5).map(|s| s * 1e3),
        latency_p99_ms: quantile(&r.latencies, 0.99).map(|s| s * 1e3),
        peak_rss_mib: peak_reset.then(peak_rss_mib).flatten(),
        stream: Some(counters),
        ..Row::default()
    };
    print_row(&row);
    Ok((row, clf))
}

/// Frames as one capture file's bytes, as `tcpdump -w -` writes them: a
/// classic pcap with nanosecond timestamps (pcapng, an interface per link
/// type, when the frames come from links of more than one type).
struct CaptureBytes {
    bytes: Vec<u8>,
    /// Where the file header ends, and each frame's record.
    header_end: usize,
    record_ends: Vec<usize>,
}

fn capture_bytes(frames: &[Frame]) -> anyhow::Result<CaptureBytes> {
    let mut links: Vec<u32> = frames.iter().map(|f| f.link_type).collect();
    links.sort_unstable();
    links.dedup();
    let mut record_ends = Vec::with_capacity(frames.len());
    if links.len() <= 1 {
        let link = links.first().copied().unwrap_or(1);
        let mut w = PcapWriter::with_precision(Vec::new(), link, true)?;
        let header_end = w.get_ref().len();
        for f in frames {
            w.write_frame_truncated(f.ts_ns, &f.data, f.orig_len)?;
            record_ends.push(w.get_ref().len());
        }
        return Ok(CaptureBytes {
            bytes: w.into_inner(),
            header_end,
            record_ends,
        });
    }
    let mut b = PcapNgBuilder::new(false);
    for &l in &links {
        let l = u16::try_from(l).context("a link type past 65535")?;
        b.interface(l, 9);
    }
    let header_end = b.bytes.len();
    for f in frames {
        let id = links.binary_search(&f.link_type).expect("listed") as u32;
        b.enhanced_packet(id, f.ts_ns, &f.data, f.orig_len);
        record_ends.push(b.bytes.len());
    }
    Ok(CaptureBytes {
        bytes: b.bytes,
        header_end,
        record_ends,
    })
}

/// A stream run through an OS pipe: a writer thread writes `capture` into
/// it (64 KiB at a time, or, paced, each frame when it is due), and the
/// read side is `classify --stream -`'s (`cli::classify_stream`: the pump
/// thread, the capture reader, `overlap::run_live`). Returns the run and
/// the pcapng frames on an undescribed interface.
fn stream_through_pipe(
    clf: &Classifier,
    capture: &CaptureBytes,
    flows: FlowFeed,
    batch: usize,
    pacer: Pacer,
) -> anyhow::Result<(overlap::Overlapped, u64)> {
    const CHUNK: usize = 64 << 10;
    let (rx, mut tx) = std::io::pipe().context("making a pipe")?;
    // A read end of the bench's own, open until the writer is done: should
    // the stream stop reading early (a failed model side), the writer's
    // next write would otherwise raise SIGPIPE, which tmoe leaves fatal.
    // It is drained only once the run is over, to let the writer finish.
    let mut spare = rx.try_clone().context("making a pipe")?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let stop = &stop;
        let writer = scope.spawn(move || -> std::io::Result<()> {
            let bytes = &capture.bytes;
            let mut from = 0;
            let mut to = capture.header_end;
            for (i, &end) in capture.record_ends.iter().enumerate() {
                // The stream is over (it failed): stop writing.
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Some(wait) = pacer.ahead(i) {
                    tx.write_all(&bytes[from..to])?;
                    from = to;
                    std::thread::sleep(wait);
                }
                to = end;
                if to - from >= CHUNK {
                    tx.write_all(&bytes[from..to])?;
                    from = to;
                }
            }
            // Dropping the write end ends the stream.
            tx.write_all(&bytes[from..])
        });
        let stream = open_stream(rx).map_err(|e| anyhow::anyhow!("the pipe: {e}"));
        let run = stream.and_then(|s| run_stream(clf, s, flows, batch, &mut |_| Ok(())));
        stop.store(true, Ordering::Relaxed);
        // Nothing left to read once the stream read it all; after a
        // failure, what the writer still had in flight.
        let drained = std::io::copy(&mut spare, &mut std::io::sink());
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the pipe's writer thread panicked"))?;
        let (r, unknown) = run?;
        written.context("writing the capture into the pipe")?;
        anyhow::ensure!(
            matches!(drained, Ok(0)),
            "the stream left bytes in the pipe unread ({drained:?})"
        );
        if let Some(e) = &r.input_error {
            anyhow::bail!("the pipe: {e}");
        }
        Ok((r, unknown))
    })
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

#[cfg(test)]
mod tests {
    use super::{claim_work, work_entries};

    #[test]
    fn a_work_folder_with_the_users_files_is_refused_unless_forced() {
        let entries = work_entries("tiny");
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        claim_work(&fresh, false, &entries).unwrap();
        // Its own scratch, from an earlier run: reused.
        std::fs::write(fresh.join("data.bin"), "x").unwrap();
        std::fs::create_dir(fresh.join("data")).unwrap();
        claim_work(&fresh, false, &entries).unwrap();
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "mine").unwrap();
        let e = claim_work(&mine, false, &entries).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(!mine.join(".tmoe-bench-classify").exists());
        claim_work(&mine, true, &entries).unwrap();
    }

    /// Forced into a folder of the user's, a run that would replace
    /// something there (a dataset in data/, a checkpoint of its name) is
    /// refused, naming it, and marks nothing.
    #[test]
    fn a_forced_work_folder_that_holds_what_a_run_writes_is_refused() {
        let entries = work_entries("tiny");
        assert!(entries.contains(&"tiny-moe.safetensors".to_string()));
        for name in ["data", "tiny-moe.safetensors", "one-flow"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(name), "mine").unwrap();
            let e = claim_work(dir.path(), true, &entries).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(&format!("holds {name},")), "{e}");
            assert!(
                e.contains("choose another --work") && !e.contains("--force"),
                "{e}"
            );
            assert!(!dir.path().join(".tmoe-bench-classify").exists());
        }
    }
}
