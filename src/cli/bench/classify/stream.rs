//! The stream runs: frames replayed from memory, or written as one capture
//! into an OS pipe and read as `classify --stream` reads standard input.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Input, Row, peak_rss_mib, print_row, reset_peak_rss};

use crate::cli::classify_stream::{open_stream, run_stream};
use crate::infer::classifier::Classifier;
use crate::infer::flow_feed::{FlowFeed, StreamLimits};
use crate::infer::latency::quantile;
use crate::infer::overlap::{self, FrameSink};
use crate::infer::runner::MAX_WAIT;
use crate::infer::stream::flow_feed_for;
use crate::traffic::capture::container::CaptureReader;
use crate::traffic::capture::pcap_writer::{PcapNgBuilder, PcapWriter};

/// A frame held in memory for replay.
pub(super) struct Frame {
    ts_ns: u64,
    link_type: u32,
    orig_len: u32,
    data: Vec<u8>,
}

/// Every frame of `files`, merged in time order (one link carrying them all).
pub(super) fn load_frames(files: &[PathBuf]) -> anyhow::Result<Vec<Frame>> {
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
pub(super) enum Feed<'a> {
    /// Frames held in memory, handed to the flow side one by one.
    Memory(&'a [Frame]),
    /// The same frames as capture bytes, written into an OS pipe by a thread
    /// of their own and read as `classify --stream` reads standard input.
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
pub(super) fn bench_stream_runs(
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
pub(super) struct Pacer {
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
pub(super) fn bench_stream(
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
pub(super) struct CaptureBytes {
    bytes: Vec<u8>,
    /// Where the file header ends, and each frame's record.
    header_end: usize,
    record_ends: Vec<usize>,
}

pub(super) fn capture_bytes(frames: &[Frame]) -> anyhow::Result<CaptureBytes> {
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
/// read side is `classify --stream`'s (`cli::classify_stream`: the pump
/// thread, the capture reader, `overlap::run_live`). Returns the run and
/// the pcapng frames on an undescribed interface.
pub(super) fn stream_through_pipe(
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
