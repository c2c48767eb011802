//! `tmoe classify`: the flows of packet captures -> predicted class and its
//! probability per flow, as CSV or JSON lines. Captures are read in parallel
//! and their flows batched across files (`infer::pipeline`); rows come out by
//! capture, then first timestamp, whatever the thread timing. Captures that
//! cannot be read are reported on stderr and skipped; the others are still
//! classified.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::noun;
use crate::cli::args;
use crate::engine::{Device, Precision};
use crate::eval::confusion::csv_field;
use crate::infer::classifier::{Classifier, VocabSource};
use crate::infer::pipeline::{FileResult, PipelineConfig, classify_files};
use crate::os_text::os_text;
use crate::traffic::capture::reader::find_captures;
use crate::traffic::capture::stats::RunStats;
use crate::traffic::dataset::build::path_list;
use crate::traffic::types::{Endpoint, Flow, PROTO_TCP, PROTO_UDP};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fine-tuned classifier (e.g. RUN/classifier.safetensors; a run folder
    /// RUN stands for it).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Capture files or folders (searched recursively).
    #[arg(required_unless_present = "stream", conflicts_with = "stream")]
    pub captures: Vec<PathBuf>,
    /// Read one pcap or pcapng stream from standard input instead (e.g.
    /// `tcpdump -U -w - | tmoe classify --stream ...`) and write verdicts as
    /// flows are classified, not at the end.
    #[arg(long)]
    pub stream: bool,
    /// With --stream: classify a flow as soon as it holds the K packets the
    /// model reads (same verdict, without waiting for its end).
    #[arg(long, requires = "stream")]
    pub early: bool,
    /// Dataset directory the model was trained on: its vocab.txt and
    /// tokenizer settings turn flows into the same tokens.
    #[arg(long, required_unless_present = "vocab", conflicts_with = "vocab")]
    pub data: Option<PathBuf>,
    /// A vocab.txt instead of --data (default tokenizer settings).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Output rows as CSV (with a header) or JSON lines.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Output file (default: standard output). An existing file is kept
    /// unless --force.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
    /// Skip flows with fewer packets (default: the dataset's setting, else 3).
    #[arg(long)]
    pub min_packets: Option<usize>,
    /// Flows per model call, batched across captures (default: 64 on the
    /// CPU; on a GPU, where small batches leave it idle, 1024 flows of up
    /// to 64 tokens, fewer of longer ones: 65,536 tokens a call).
    #[arg(long, value_parser = args::batch)]
    pub batch: Option<usize>,
    /// Engine that runs the model: cpu, cuda (a GPU; needs --features cuda)
    /// or sim (the GPU engine in the simulator: slow, for checks).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// CPU engine precision: f32 (as trained) or bf16 (bf16 weights, f32
    /// accumulation: faster where `vdpbf16ps` runs at full rate, e.g. 1.6x on
    /// AMD Zen 4, slower where it does not, e.g. Intel Xeon; `tmoe bench
    /// cpu-gemm` tells; probabilities differ in the third digit).
    /// The GPU engine (cuda, sim) always computes in bf16 (bf16
    /// weights, f32 sums): either value is accepted there and runs it.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Flows open at once per capture (and in the stream); beyond it the least
    /// recently active flow ends early and is counted (default 1,000,000).
    #[arg(long, value_parser = args::count)]
    pub max_flows: Option<usize>,
    /// Threads reading captures (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub readers: usize,
    /// Cut flows to this many tokens (default: the fine-tuning length recorded
    /// in the checkpoint, else the tokenizer's length).
    #[arg(long, value_parser = args::seq_len)]
    pub seq_len: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// What a failed write says: the `--out` file by name ("writing the
    /// results: No space left on device" named none), or standard output.
    pub(crate) fn writing(&self) -> String {
        match &self.out {
            Some(p) => format!("writing {}", p.display()),
            None => "writing the results to standard output".into(),
        }
    }

    /// `--batch`, or the engine's default for flows of `seq_len` tokens.
    pub fn batch(&self, seq_len: usize) -> usize {
        self.batch.unwrap_or(match self.device {
            Device::Cuda => crate::infer::gpu_default_batch(seq_len),
            Device::Cpu | Device::Sim => 64,
        })
    }
}

/// What a run did, for the summary line and tests.
#[derive(Debug, Clone, Default)]
pub struct ClassifySummary {
    pub files_read: usize,
    pub files_skipped: usize,
    pub flows_classified: usize,
    pub flows_too_short: usize,
    /// Flows ended early by the flow-table cap (classified like timed-out ones).
    pub flows_evicted: u64,
    /// Flows per predicted class, in class-id order.
    pub per_class: Vec<(String, usize)>,
    pub seconds: f64,
    /// The reading totals of the captures read (skipped frames by reason,
    /// packets kept with care, ...).
    pub read: RunStats,
}

pub fn run(a: Args) -> Result<()> {
    let checkpoint =
        super::checkpoint_in_run("--checkpoint", a.checkpoint, &["classifier.safetensors"]);
    let a = Args { checkpoint, ..a };
    // clap's `requires` counts --stream's default (false) as given.
    anyhow::ensure!(
        a.stream || !a.early,
        "--early needs --stream: it classifies a flow of the live stream at its K-th packet; \
         capture files are classified once each flow is read"
    );
    if a.stream {
        return super::classify_stream::run(&a);
    }
    let mut skipped = 0;
    let found = capture_files(&a.captures, &mut skipped);
    // `--out` is created (emptied) before any capture is read: were it one
    // of them, it would be read empty and, the run failing, removed.
    if let Some(out) = &a.out {
        super::refuse_out_among_captures(
            out,
            found.iter().map(|(f, real)| (f.as_path(), real.as_deref())),
        )?;
    }
    let files: Vec<PathBuf> = found.into_iter().map(|(f, _)| f).collect();
    let s = with_output(&a, |w| {
        let s = classify_files_listed(&a, &files, skipped, w)?;
        anyhow::ensure!(s.files_read > 0, "none of the given captures could be read");
        Ok(s)
    })?;
    let counts: Vec<String> = s
        .per_class
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    eprintln!(
        "classified {} from {} in {:.1} s ({:.0} flows/s); {} skipped, {} under the packet minimum, {} ended early by the flow-table cap; predicted: {}",
        noun(s.flows_classified as u64, "flow"),
        noun(s.files_read as u64, "capture"),
        s.seconds,
        s.flows_classified as f64 / s.seconds.max(1e-9),
        noun(s.files_skipped as u64, "capture"),
        noun(s.flows_too_short as u64, "flow"),
        noun(s.flows_evicted as u64, "flow"),
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    );
    // Worded as `vocab` and `tokenize` word them.
    for line in s.read.kept_and_skipped() {
        eprintln!("{line}");
    }
    Ok(())
}

/// Refuses an `--out` that is a file the run reads (under any spelling):
/// the checkpoint, the `--vocab` file, or `--data`'s `vocab.txt` or
/// `dataset.json`. With --force it was emptied before it was read, and the
/// failed run then removed it: the checkpoint was lost.
fn refuse_out_among_inputs(a: &Args, out: &std::path::Path) -> Result<()> {
    let mut inputs = vec![("--checkpoint", a.checkpoint.clone())];
    inputs.extend(a.vocab.iter().map(|v| ("--vocab", v.clone())));
    if let Some(d) = &a.data {
        inputs.extend(["vocab.txt", "dataset.json"].map(|n| ("--data", d.join(n))));
    }
    for (flag, input) in inputs {
        anyhow::ensure!(
            !super::is_same_file(out, &input),
            "--out {} is a file this run reads ({flag}: {}); choose another --out",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// Whether `--out p` takes the verdicts as they come (`--stream`, or an
/// output a rename would replace) rather than renamed into place at the end.
fn writes_through(a: &Args, p: &std::path::Path) -> bool {
    a.stream || crate::atomic_file::written_through(p)
}

/// Runs `f` on `--out` (refused if it exists, unless --force) or standard
/// output, buffered, and flushes. The captures' verdicts go to
/// `--out.tmp<pid>` and are renamed into place once all are written: a
/// killed run (or a full disk) leaves no list cut short under the real name
/// for a reader to take as the whole, and `--force` keeps the earlier file
/// until the new one is complete. `--stream`'s verdicts (and an `--out`
/// that is not a plain file: `/dev/null`, a link, a pipe) are written
/// through as they come.
pub(crate) fn with_output<T>(a: &Args, f: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    match &a.out {
        Some(p) => {
            refuse_out_among_inputs(a, p)?;
            super::refuse_existing_out(p, a.force)?;
            let through = writes_through(a, p);
            let target = if through {
                p.clone()
            } else {
                crate::atomic_file::tmp_beside(p)
            };
            let file = std::fs::File::create(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            // A failed run leaves no file behind for the next run to refuse
            // to replace; but only a plain file is removed: `--out /dev/null
            // --force` (or a link, a pipe) must outlive a failed run.
            let plain = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_file());
            let _remove_at_memory_limit = plain.then(|| crate::heap::OutputGuard::new(&target));
            let mut w = BufWriter::new(file);
            let done = f(&mut w).and_then(|v| {
                w.flush()
                    .with_context(|| format!("writing {}", p.display()))?;
                if !through {
                    std::fs::rename(&target, p).with_context(|| {
                        format!("renaming {} to {}", target.display(), p.display())
                    })?;
                }
                Ok(v)
            });
            if done.is_err() && plain {
                drop(w);
                let _ = std::fs::remove_file(&target);
            }
            done
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            let v = f(&mut w)?;
            w.flush()?;
            Ok(v)
        }
    }
}

/// The classifier `--checkpoint` with `--data` or `--vocab`, on `--device`.
pub(crate) fn open_classifier(a: &Args) -> Result<Classifier> {
    let vocab = match (&a.data, &a.vocab) {
        (Some(dir), _) => VocabSource::Dataset(dir),
        (None, Some(v)) => VocabSource::VocabFile(v),
        (None, None) => anyhow::bail!("give --data DIR (the training dataset) or --vocab FILE"),
    };
    super::advise_cpu_precision(a.device, a.precision);
    let clf =
        Classifier::open_with_precision(&a.checkpoint, vocab, a.seq_len, a.device, a.precision)?;
    if let Some(at) = &clf.unfinished {
        eprintln!("{}", super::unfinished_warning(&a.checkpoint, at));
    }
    Ok(clf)
}

fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        other => other.to_string(),
    }
}

/// Seconds since the Unix epoch with nanosecond digits.
fn timestamp(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

const CSV_HEADER: &str =
    "file,proto,src_ip,src_port,dst_ip,dst_port,first_ts,packets,class,probability";

/// One output row: a flow and its verdict.
pub(crate) struct Row<'a> {
    pub file: &'a str,
    pub proto: u8,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub first_ts_ns: u64,
    pub packets: u64,
    pub class: &'a str,
    pub probability: f32,
}

impl<'a> Row<'a> {
    fn of_flow(file: &'a str, flow: &Flow, class: &'a str, probability: f32) -> Row<'a> {
        Row {
            file,
            proto: flow.key.proto,
            src: flow.initiator,
            dst: flow.responder,
            first_ts_ns: flow.first_ts_ns,
            packets: flow.total_packets,
            class,
            probability,
        }
    }
}

pub(crate) fn write_header(out: &mut dyn Write, format: Format) -> std::io::Result<()> {
    match format {
        Format::Csv => writeln!(out, "{CSV_HEADER}"),
        Format::Jsonl => Ok(()),
    }
}

pub(crate) fn write_row(out: &mut dyn Write, format: Format, r: &Row) -> std::io::Result<()> {
    match format {
        Format::Csv => writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{:.6}",
            csv_field(r.file),
            proto_name(r.proto),
            r.src.ip,
            r.src.port,
            r.dst.ip,
            r.dst.port,
            timestamp(r.first_ts_ns),
            r.packets,
            csv_field(r.class),
            r.probability
        ),
        Format::Jsonl => {
            let v = json!({
                "file": r.file,
                "proto": proto_name(r.proto),
                "src_ip": r.src.ip.to_string(), "src_port": r.src.port,
                "dst_ip": r.dst.ip.to_string(), "dst_port": r.dst.port,
                "first_ts": timestamp(r.first_ts_ns),
                "packets": r.packets,
                "class": r.class,
                "probability": shortest_f64(r.probability),
            });
            writeln!(out, "{v}")
        }
    }
}

/// `p` as the f64 of its shortest f32 decimal: JSON numbers are f64, and
/// `p as f64` printed the f32's binary noise (`0.17145989835262299` for
/// `0.1714599`).
fn shortest_f64(p: f32) -> f64 {
    p.to_string().parse().unwrap_or(f64::NAN)
}

/// Expands files and folders into capture files, each once however often
/// it is given (as `tokenize` does); unreadable inputs are reported and
/// counted. Each file comes with its canonical path, which told repeats
/// apart (`None` where it has none: its spelling did).
fn capture_files(inputs: &[PathBuf], skipped: &mut usize) -> Vec<(PathBuf, Option<PathBuf>)> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            match find_captures(p) {
                Ok(found) if found.is_empty() => {
                    eprintln!("warning: {}: no capture files found", p.display())
                }
                Ok(found) => files.extend(found),
                Err(e) => {
                    eprintln!("skipping {}: {e}", p.display());
                    *skipped += 1;
                }
            }
        } else if p.exists() {
            // A file, or a pipe (`<(zcat x.pcap.gz)`, a FIFO): read as one.
            files.push(p.clone());
        } else {
            eprintln!("skipping {}: no such file or folder", p.display());
            *skipped += 1;
        }
    }
    let mut seen = std::collections::HashSet::new();
    // By the file, not the spelling: `caps/dns` and `./caps/dns` are one.
    files
        .into_iter()
        .map(|f| {
            let real = std::fs::canonicalize(&f).ok();
            (f, real)
        })
        .filter(|(f, real)| seen.insert(real.as_ref().unwrap_or(f).clone()))
        .collect()
}

/// Classifies every flow of the captures and writes one row per flow to `out`.
pub fn classify(a: &Args, out: &mut dyn Write) -> Result<ClassifySummary> {
    let mut skipped = 0;
    let files: Vec<PathBuf> = capture_files(&a.captures, &mut skipped)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    classify_files_listed(a, &files, skipped, out)
}

/// [`classify`] of `files` (the captures' expansion, `skipped` inputs
/// already counted as unreadable).
fn classify_files_listed(
    a: &Args,
    files: &[PathBuf],
    skipped: usize,
    out: &mut dyn Write,
) -> Result<ClassifySummary> {
    let t0 = Instant::now();
    let mut summary = ClassifySummary {
        files_skipped: skipped,
        ..ClassifySummary::default()
    };
    anyhow::ensure!(
        !files.is_empty(),
        "no capture to classify in {}",
        path_list(&a.captures)
    );
    let clf = open_classifier(a)?;
    let min_packets = a.min_packets.or(clf.dataset_min_packets).unwrap_or(3);
    let mut cfg = PipelineConfig::new(a.batch(clf.seq_len), min_packets);
    cfg.readers = a.readers;
    cfg.max_flows = a.max_flows;

    let total_bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let pb = progress(total_bytes, !a.quiet);
    let mut per_class = vec![0usize; clf.classes.len()];
    let mut write_file = |r: FileResult| -> Result<()> {
        if let Some(err) = &r.stats.error {
            pb.suspend(|| eprintln!("skipping {err}"));
            summary.files_skipped += 1;
            return Ok(());
        }
        for w in &r.stats.warnings {
            pb.suspend(|| eprintln!("warning: {w} (flows before it are kept)"));
        }
        if summary.files_read == 0 {
            // Written once a capture is read, so a run that reads none
            // leaves standard output empty.
            write_header(out, a.format).with_context(|| a.writing())?;
        }
        summary.files_read += 1;
        summary.read.add_file(&r.stats);
        summary.flows_too_short += r.too_short;
        summary.flows_evicted += r.stats.flows_evicted;
        let file = os_text(r.path.as_os_str());
        for c in &r.flows {
            per_class[c.class_id as usize] += 1;
            let name = &clf.classes[c.class_id as usize];
            write_row(
                out,
                a.format,
                &Row::of_flow(&file, &c.flow, name, c.probability),
            )
            .with_context(|| a.writing())?;
        }
        summary.flows_classified += r.flows.len();
        Ok(())
    };
    let mut flows_done = 0usize;
    let mut on_progress = |bytes: u64, flows: usize| {
        pb.inc(bytes);
        flows_done += flows;
        pb.set_message(format!(
            "{flows_done} flows, {:.0} flows/s",
            flows_done as f64 / t0.elapsed().as_secs_f64().max(1e-9)
        ));
    };
    classify_files(&clf, files, &cfg, &mut on_progress, &mut write_file)?;
    pb.finish_and_clear();
    summary.per_class = clf.classes.iter().cloned().zip(per_class).collect();
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress(bytes: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = crate::progress::new_bar(bytes);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "classify [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    // Drawn from the start, its clock running while the first flows are
    // read and classified (the bar moves as flows are classified).
    pb.enable_steady_tick(std::time::Duration::from_millis(500));
    pb
}

/// What an interrupted `classify` left (its Ctrl-C line, made when it runs):
/// without --stream, `--out` is only renamed into place at the end, so
/// nothing was written there, and this process's temporary file is removed;
/// --stream (or an --out that is not a plain file) took the verdicts as they
/// came.
pub fn interrupted_line(a: &Args) -> impl FnOnce() -> String + Send + 'static {
    let out = a.out.clone();
    let through = out.as_ref().is_some_and(|p| writes_through(a, p));
    move || {
        let Some(out) = out else {
            return "interrupted: the verdicts written to standard output so far are there; \
                    the other flows were not classified"
                .into();
        };
        let tmp = crate::atomic_file::tmp_beside(&out);
        let tmp_out = out.clone();
        let out = out.display();
        if through {
            return format!(
                "interrupted: {out} holds the verdicts written so far; the other flows were not classified"
            );
        }
        let exists = std::fs::symlink_metadata(&tmp_out).is_ok();
        if std::fs::remove_file(&tmp).is_ok() || !exists {
            format!(
                "interrupted: nothing was written to {out} (the verdicts are renamed into place only once all are written)"
            )
        } else {
            format!("interrupted: {out} was not written by this run (or was already written whole)")
        }
    }
}
