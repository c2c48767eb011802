//! The stream with reading and the model overlapped: a reader thread decodes
//! frames, keeps the flow table ([`FlowFeed`]) and tokenizes each flow as it
//! becomes ready; ready flows cross a bounded channel to the calling thread,
//! which gathers them into batches (`batch` flows, or fewer once the oldest
//! has waited `max_wait`), runs the model and hands out verdicts in the order
//! the flows became ready. The model side keeps the clock, so a partial
//! batch goes out on time even when no frame arrives (a quiet link, a paused
//! pipe). While the model works on one batch the reader fills the channel;
//! when the model falls behind, the channel is full and the reader waits
//! (the input backs up, as a capture socket does), so memory stays bounded,
//! and the next batch is whatever waits there: under load, batches grow
//! instead of queueing small ones. Nothing is dropped: the feed's cap on
//! ended flows is lifted, as they leave for the channel after every frame.
//! `tmoe classify --stream` and `tmoe bench classify` run the stream this way.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::classifier::Classifier;
use super::flow_feed::{FlowFeed, StreamStats};
use super::stream::Verdict;
use crate::model::batch::MemSequences;
use crate::traffic::capture::stats::SkipCounts;
use crate::traffic::tokens::tokenize::FlowTokenizer;
use crate::traffic::types::Flow;

/// Ready flows the channel holds, in batches: one batch beside the one the
/// model runs, which the reader fills meanwhile. More would only add
/// queueing delay to every verdict once the model is the bottleneck.
const QUEUED_BATCHES: usize = 1;

/// A flow ready for the model, tokenized, with the moment it became ready.
struct Ready {
    tokens: Vec<u32>,
    flow: Flow,
    at: Instant,
}

/// What an overlapped run did.
#[derive(Debug, Clone, Default)]
pub struct Overlapped {
    pub stats: StreamStats,
    /// The skipped frames by reason.
    pub skips: SkipCounts,
    /// Packets used with care: (truncated by the snaplen, first IP fragments).
    pub care: (u64, u64),
    /// Seconds from a flow being ready to its verdict, one per verdict.
    pub latencies: Vec<f64>,
    /// The input stopped with this error (frames before it were used).
    pub input_error: Option<String>,
}

/// A frame as the source gives it: timestamp (ns), link type, bytes, length
/// on the wire. It returns false once the model side has failed: the source
/// should stop reading.
pub type FrameSink<'a> = dyn FnMut(u64, u32, &[u8], u32) -> bool + 'a;

/// Called by a source whose input has been quiet for a while (no frame):
/// the flow table's clock moves on by the wall time since the last frame,
/// so that idle flows end and get their verdicts without waiting for the
/// next frame. Returns false once the model side has failed.
pub type QuietSink<'a> = dyn FnMut() -> bool + 'a;

/// The reader side: the flow table, and the channel to the model.
struct Reader<'a> {
    feed: FlowFeed,
    tokenizer: &'a FlowTokenizer,
    tx: SyncSender<Ready>,
    /// The model side has gone (it failed): stop sending.
    closed: bool,
    /// The latest frame timestamp, and when that frame came.
    last: Option<(u64, Instant)>,
}

impl Reader<'_> {
    fn frame(&mut self, ts_ns: u64, link_type: u32, data: &[u8], orig_len: u32) -> bool {
        // Frames that are not TCP/UDP are counted in the stats.
        let _ = self.feed.feed(ts_ns, link_type, data, orig_len);
        let latest = self.last.map_or(ts_ns, |(t, _)| t.max(ts_ns));
        self.last = Some((latest, Instant::now()));
        self.send_ready();
        !self.closed
    }

    /// See [`QuietSink`].
    fn quiet(&mut self) -> bool {
        if let Some((ts, at)) = self.last {
            let waited = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.feed.advance(ts.saturating_add(waited));
            self.send_ready();
        }
        !self.closed
    }

    /// Tokenizes the flows that became ready and sends them, waiting while
    /// the channel is full; once the model side has gone they are counted
    /// as dropped.
    fn send_ready(&mut self) {
        let n = self.feed.pending();
        if n == 0 {
            return;
        }
        let at = Instant::now();
        for flow in self.feed.take(n) {
            if !self.closed {
                let tokens = self.tokenizer.encode(&flow);
                self.closed = self.tx.send(Ready { tokens, flow, at }).is_err();
            }
            if self.closed {
                self.feed.count_dropped(1);
            }
        }
    }
}

/// Runs `source` (which calls its sink once per frame) on a reader thread
/// feeding `feed`, and the model of `clf` on this thread; `on_verdicts` gets
/// each batch's verdicts, in the order the flows became ready. At the end
/// of the input every open flow is ended and classified.
pub fn run(
    clf: &Classifier,
    feed: FlowFeed,
    batch: usize,
    max_wait: Duration,
    source: impl FnOnce(&mut FrameSink) -> Result<(), String> + Send,
    on_verdicts: &mut dyn FnMut(&[Verdict]) -> Result<()>,
) -> Result<Overlapped> {
    let source = |frames: &mut FrameSink, _: &mut QuietSink| source(frames);
    run_live(clf, feed, batch, max_wait, source, on_verdicts, &|| {})
}

/// [`run`] for a live input: the source also reports quiet spells
/// ([`QuietSink`]), and `interrupt` is called when the model side fails,
/// before waiting for the reader: the source learns of the failure at its
/// next frame or quiet spell, so one blocked on a quiet input needs waking
/// (`cli::stdin_pump`).
pub fn run_live(
    clf: &Classifier,
    feed: FlowFeed,
    batch: usize,
    max_wait: Duration,
    source: impl FnOnce(&mut FrameSink, &mut QuietSink) -> Result<(), String> + Send,
    on_verdicts: &mut dyn FnMut(&[Verdict]) -> Result<()>,
    interrupt: &dyn Fn(),
) -> Result<Overlapped> {
    let batch = batch.max(1);
    // The reader sends every ended flow after each frame, waiting while the
    // channel is full: the input backs up, and nothing is dropped.
    let mut feed = feed;
    feed.lift_pending_cap();
    let (tx, rx) = sync_channel::<Ready>(batch * QUEUED_BATCHES);
    // The reader needs only the tokenizer (a GPU engine's handle stays on
    // this thread).
    let tokenizer = &clf.tokenizer;
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            // Frames and quiet spells never arrive at once: one borrow at a time.
            let r = std::cell::RefCell::new(Reader {
                feed,
                tokenizer,
                tx,
                closed: false,
                last: None,
            });
            let input = source(
                &mut |ts, link, data, len| r.borrow_mut().frame(ts, link, data, len),
                &mut || r.borrow_mut().quiet(),
            );
            let mut r = r.into_inner();
            r.feed.flush();
            r.send_ready();
            (r.feed.stats(), r.feed.skips(), r.feed.care(), input.err())
        });
        let model = classify_batches(clf, batch, max_wait, &rx, on_verdicts);
        // Unblock a reader waiting on a full channel before joining it.
        drop(rx);
        if model.is_err() {
            interrupt();
        }
        let (mut stats, skips, care, input_error) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the stream's reader thread panicked"))?;
        let (classified, latencies) = model?;
        stats.flows_classified = classified;
        Ok(Overlapped {
            stats,
            skips,
            care,
            latencies,
            input_error,
        })
    })
}

/// The model side: gathers the ready flows into batches and classifies
/// them until the reader hangs up; (flows classified, latencies).
fn classify_batches(
    clf: &Classifier,
    batch: usize,
    max_wait: Duration,
    rx: &Receiver<Ready>,
    on_verdicts: &mut dyn FnMut(&[Verdict]) -> Result<()>,
) -> Result<(u64, Vec<f64>)> {
    let mut classified = 0u64;
    let mut latencies = Vec::new();
    let mut flows: Vec<Ready> = Vec::with_capacity(batch);
    while let Ok(first) = rx.recv() {
        let deadline = first.at + max_wait;
        flows.push(first);
        let ended = gather(rx, &mut flows, batch, deadline);
        let mut seqs = MemSequences::new(clf.seq_len);
        for f in &flows {
            seqs.push(&f.tokens, None);
        }
        let classes = clf.classify_tokens(&seqs, batch)?;
        let now = Instant::now();
        latencies.extend(flows.iter().map(|f| (now - f.at).as_secs_f64()));
        let verdicts: Vec<Verdict> = flows
            .drain(..)
            .zip(classes)
            .map(|(f, (class_id, probability))| Verdict::of(&f.flow, class_id, probability))
            .collect();
        classified += verdicts.len() as u64;
        on_verdicts(&verdicts)?;
        if ended {
            break;
        }
    }
    Ok((classified, latencies))
}

/// Adds ready flows to `flows` until it holds `batch`, or the channel is
/// empty at `deadline` (flows already waiting are taken even after it);
/// true once the reader has hung up and every flow it sent is here.
fn gather(rx: &Receiver<Ready>, flows: &mut Vec<Ready>, batch: usize, deadline: Instant) -> bool {
    while flows.len() < batch {
        match rx.try_recv() {
            Ok(f) => {
                flows.push(f);
                continue;
            }
            Err(TryRecvError::Disconnected) => return true,
            Err(TryRecvError::Empty) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(f) => flows.push(f),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
    false
}
