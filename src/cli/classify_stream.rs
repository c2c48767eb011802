//! `tmoe classify --stream`: one pcap or pcapng stream on standard input
//! (`tcpdump -U -w - | tmoe classify --stream ...`) through the same flow
//! side the C API wraps, verdicts written as they are made: in batches of
//! `--batch` flows, or sooner when the oldest waiting flow has waited
//! [`MAX_WAIT`]; reading overlaps the model ([`overlap`]). [`open_stream`]
//! and [`run_stream`] are the read side, shared with `tmoe bench classify`'s
//! stream-pipe rows, which feed them an OS pipe.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{Context, Result};

use super::classify::{Args, Row, open_classifier, with_output, write_header, write_row};
use super::noun;
use super::stdin_pump;
use crate::infer::classifier::Classifier;
use crate::infer::flow_feed::{FlowFeed, StreamLimits};
use crate::infer::latency::quantile;
use crate::infer::overlap::{self, FrameSink, Overlapped, QuietSink};
use crate::infer::runner::MAX_WAIT;
use crate::infer::stream::{StreamStats, Verdict, flow_feed_for};
use crate::traffic::capture::container::{CaptureError, CaptureErrorKind, CaptureReader};
use crate::traffic::capture::stats::{SkipCounts, care_line};

/// What a stream run did.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub stats: StreamStats,
    /// `stats.skipped_frames` by reason.
    pub skips: SkipCounts,
    /// Packets used with care: (truncated by the snaplen, first IP fragments).
    pub care: (u64, u64),
    pub seconds: f64,
    /// Wall time from a flow being ready to its verdict: p50 and p99, seconds.
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    /// The input stopped with this container error (frames before it counted).
    pub input_error: Option<String>,
    /// pcapng packets on an interface the stream never described (skipped
    /// before they are frames: not in `stats.frames`).
    pub unknown_interface_frames: u64,
}

pub fn run(a: &Args) -> Result<()> {
    let s = with_output(a, |w| classify_stream(a, std::io::stdin(), w))?;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.2} ms", s * 1e3));
    eprintln!(
        "classified {} from {} in {:.1} s ({:.0} flows/s, {:.0} packets/s); {} skipped, {} under the packet minimum, {} evicted by the flow-table cap; verdict latency p50 {}, p99 {}",
        noun(s.stats.flows_classified, "flow"),
        noun(s.stats.packets, "packet"),
        s.seconds,
        s.stats.flows_classified as f64 / s.seconds.max(1e-9),
        s.stats.packets as f64 / s.seconds.max(1e-9),
        noun(s.stats.skipped_frames + s.unknown_interface_frames, "frame"),
        noun(s.stats.flows_too_short, "flow"),
        s.stats.flows_evicted,
        ms(s.latency_p50),
        ms(s.latency_p99),
    );
    if let Some(line) = s.skips.summary(s.unknown_interface_frames) {
        eprintln!("{line}");
    }
    // As the file path words it (`RunStats::kept_and_skipped`).
    if let Some(line) = care_line(s.care.0, s.care.1) {
        eprintln!("{line}");
    }
    if let Some(e) = &s.input_error {
        anyhow::bail!("standard input: {e} (the flows before it were classified)");
    }
    Ok(())
}

/// Classifies the capture read from `input`, writing a row per verdict to
/// `out` (the `file` column is `-`), flushed after each batch. Reading,
/// decoding and tokenizing run on a thread of their own, beside the model
/// ([`crate::infer::overlap`]).
pub fn classify_stream(
    a: &Args,
    input: impl Read + Send + 'static,
    out: &mut dyn Write,
) -> Result<StreamSummary> {
    let t0 = Instant::now();
    let clf = open_classifier(a)?;
    let input = open_stream(input).map_err(|e| match e.kind {
        // Not a file: nothing came down the pipe (the capture never started).
        CaptureErrorKind::Empty => anyhow::anyhow!(
            "standard input: nothing arrived (no capture header): pipe a pcap or pcapng \
             stream into it, e.g. `tcpdump -U -w - | tmoe classify --stream ...`"
        ),
        _ => anyhow::anyhow!("standard input: {e}"),
    })?;
    let limits = StreamLimits {
        max_flows: a
            .max_flows
            .map_or(StreamLimits::default().max_flows, |m| m.max(1)),
        ..StreamLimits::default()
    };
    let feed = flow_feed_for(&clf, a.min_packets, a.early, limits);
    write_header(out, a.format).with_context(|| a.writing())?;
    let classes = &clf.classes;
    let mut write = |verdicts: &[Verdict]| -> Result<()> {
        for v in verdicts {
            let row = Row {
                file: "-",
                proto: v.proto,
                src: v.initiator,
                dst: v.responder,
                first_ts_ns: v.first_ts_ns,
                packets: v.packets,
                class: &classes[v.class_id as usize],
                probability: v.probability,
            };
            write_row(out, a.format, &row).with_context(|| a.writing())?;
        }
        out.flush().with_context(|| a.writing())
    };
    let (r, unknown_interface_frames) =
        run_stream(&clf, input, feed, a.batch(clf.seq_len), &mut write)?;
    Ok(StreamSummary {
        stats: r.stats,
        skips: r.skips,
        care: r.care,
        seconds: t0.elapsed().as_secs_f64(),
        latency_p50: quantile(&r.latencies, 0.5),
        latency_p99: quantile(&r.latencies, 0.99),
        input_error: r.input_error,
        unknown_interface_frames,
    })
}

/// A capture stream opened by [`open_stream`]: its header read, the rest
/// to be read by [`run_stream`].
pub struct OpenStream {
    reader: CaptureReader,
    stopper: stdin_pump::Stopper,
}

/// Starts reading `input` (standard input for `classify --stream`, a pipe
/// for `bench classify`'s pipe rows) on a pump thread, so that a failed
/// model side (a full disk) can end the stream while the link is quiet
/// (`cli::stdin_pump`), and reads the capture's header.
pub fn open_stream(input: impl Read + Send + 'static) -> Result<OpenStream, CaptureError> {
    let (input, stopper) = stdin_pump::pump(input);
    let reader = CaptureReader::from_read(input)?;
    Ok(OpenStream { reader, stopper })
}

/// Reads the frames of `input` into `feed` beside the model of `clf`
/// ([`overlap::run_live`]), `on_verdicts` getting each batch's verdicts;
/// a quiet link moves the flow table's clock on (`stdin_pump::QUIET`).
/// Returns the run and the pcapng packets on an interface the stream never
/// described.
pub fn run_stream(
    clf: &Classifier,
    input: OpenStream,
    feed: FlowFeed,
    batch: usize,
    on_verdicts: &mut dyn FnMut(&[Verdict]) -> Result<()>,
) -> Result<(Overlapped, u64)> {
    let OpenStream {
        mut reader,
        stopper,
    } = input;
    let mut unknown_interface_frames = 0;
    let unknown = &mut unknown_interface_frames;
    let source = move |sink: &mut FrameSink, quiet: &mut QuietSink| {
        let r = reader
            .for_each_frame_or_quiet(|f| sink(f.ts_ns, f.link_type, f.data, f.orig_len), quiet);
        *unknown = reader.unknown_interface_frames;
        match r {
            // A stream cut mid-record (tcpdump stopped) ends it, as a
            // truncated file's last record does: a warning, not a failure.
            Err(e) if e.kind == CaptureErrorKind::Truncated => {
                eprintln!("warning: standard input: {e} (the frames before it were classified)");
                Ok(())
            }
            r => r.map_err(|e| e.to_string()),
        }
    };
    let stop = || stopper.stop();
    let r = overlap::run_live(clf, feed, batch, MAX_WAIT, source, on_verdicts, &stop)?;
    Ok((r, unknown_interface_frames))
}
