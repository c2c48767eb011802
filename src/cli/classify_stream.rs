//! `tmoe classify --stream`: one pcap or pcapng stream on standard input
//! (`tcpdump -w - | tmoe classify --stream ...`) through the same
//! [`FlowStream`] the C API wraps, verdicts written as they are made. Flows are
//! classified in batches of `--batch`, or sooner when the oldest waiting flow
//! has waited [`MAX_WAIT`]: a quiet link still gets its verdicts promptly.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::classify::{Args, Row, open_classifier, with_output, write_header, write_row};
use crate::infer::latency::VerdictClock;
use crate::infer::stream::{FlowStream, StreamStats};
use crate::traffic::capture::CaptureReader;

/// Longest a ready flow waits for its batch to fill.
pub const MAX_WAIT: Duration = Duration::from_millis(20);

/// What a stream run did.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub stats: StreamStats,
    pub seconds: f64,
    /// Wall time from a flow being ready to its verdict: p50 and p99, seconds.
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    /// The input stopped with this container error (frames before it counted).
    pub input_error: Option<String>,
}

pub fn run(a: &Args) -> Result<()> {
    let s = with_output(a, |w| classify_stream(a, std::io::stdin(), w))?;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.2} ms", s * 1e3));
    eprintln!(
        "classified {} flows from {} packets in {:.1} s ({:.0} flows/s, {:.0} packets/s); {} frames skipped, {} flows under the packet minimum; verdict latency p50 {}, p99 {}",
        s.stats.flows_classified,
        s.stats.packets,
        s.seconds,
        s.stats.flows_classified as f64 / s.seconds.max(1e-9),
        s.stats.packets as f64 / s.seconds.max(1e-9),
        s.stats.skipped_frames,
        s.stats.flows_too_short,
        ms(s.latency_p50),
        ms(s.latency_p99),
    );
    if let Some(e) = &s.input_error {
        anyhow::bail!("standard input: {e} (the flows before it were classified)");
    }
    Ok(())
}

/// Classifies the capture read from `input`, writing a row per verdict to
/// `out` (the `file` column is `-`), flushed after each batch.
pub fn classify_stream(
    a: &Args,
    input: impl Read + Send + 'static,
    out: &mut dyn Write,
) -> Result<StreamSummary> {
    let t0 = Instant::now();
    let clf = open_classifier(a)?;
    let mut reader =
        CaptureReader::from_read(input).map_err(|e| anyhow::anyhow!("standard input: {e}"))?;
    let mut stream = FlowStream::new(clf, a.min_packets, a.early);
    let mut clock = VerdictClock::default();
    let batch = a.batch.max(1);
    write_header(out, a.format)?;
    let mut failed: Option<anyhow::Error> = None;
    let read = reader.for_each_frame(|f| {
        if failed.is_some() {
            return;
        }
        let before = stream.pending();
        // Frames that are not TCP/UDP are counted in the stream's stats.
        let _ = stream.feed(f.ts_ns, f.link_type, f.data, f.orig_len);
        clock.queued(before, stream.pending());
        if let Err(e) = drain(&mut stream, &mut clock, batch, false, a, out) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let before = stream.pending();
    stream.flush();
    clock.queued(before, stream.pending());
    drain(&mut stream, &mut clock, batch, true, a, out)?;
    Ok(StreamSummary {
        stats: stream.stats(),
        seconds: t0.elapsed().as_secs_f64(),
        latency_p50: clock.quantile(0.5),
        latency_p99: clock.quantile(0.99),
        input_error: read.err().map(|e| e.to_string()),
    })
}

/// Classifies full batches, and everything when `all` or when the oldest
/// ready flow has waited [`MAX_WAIT`].
fn drain(
    stream: &mut FlowStream,
    clock: &mut VerdictClock,
    batch: usize,
    all: bool,
    a: &Args,
    out: &mut dyn Write,
) -> Result<()> {
    let overdue = clock.oldest_wait().is_some_and(|w| w >= MAX_WAIT);
    while stream.pending() >= batch || ((all || overdue) && stream.pending() > 0) {
        let verdicts = stream.classify_pending(batch)?;
        clock.classified(verdicts.len());
        for v in &verdicts {
            let class = &stream.classifier.classes[v.class_id as usize];
            let row = Row {
                file: "-",
                proto: v.proto,
                src: v.initiator,
                dst: v.responder,
                first_ts_ns: v.first_ts_ns,
                packets: v.packets,
                class,
                probability: v.probability,
            };
            write_row(out, a.format, &row).context("writing the results")?;
        }
        out.flush().context("writing the results")?;
    }
    Ok(())
}
