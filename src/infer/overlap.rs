//! The stream with reading and the model overlapped: a reader thread decodes
//! frames, keeps the flow table ([`FlowFeed`]) and tokenizes each ready flow;
//! batches of ready flows (`batch` of them, or fewer once the oldest has
//! waited `max_wait`) cross a bounded channel to the calling thread, which
//! runs the model and hands out verdicts in the order the flows became ready.
//! While the model works on one batch the reader fills the next; when the
//! model falls behind, the channel is full and the reader waits (the input
//! backs up, as a capture socket does), so memory stays bounded. A partial
//! batch goes out on `max_wait` only while the model is idle, so under load
//! batches grow instead of queueing small ones.
//! `tmoe classify --stream` and `tmoe bench classify` run the stream this way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::classifier::Classifier;
use super::flow_feed::{FlowFeed, StreamStats};
use super::stream::Verdict;
use crate::model::batch::MemSequences;
use crate::traffic::tokenize::FlowTokenizer;
use crate::traffic::types::Flow;

/// Batches queued for the model beyond the one it is running: the reader
/// prepares the next batch while the model runs one. More would only add
/// queueing delay to every verdict once the model is the bottleneck.
const QUEUED: usize = 1;

/// Flows ready for the model, tokenized, with the moment each became ready.
struct Ready {
    seqs: MemSequences,
    flows: Vec<Flow>,
    ready: Vec<Instant>,
}

/// What an overlapped run did.
#[derive(Debug, Clone, Default)]
pub struct Overlapped {
    pub stats: StreamStats,
    /// Seconds from a flow being ready to its verdict, one per verdict.
    pub latencies: Vec<f64>,
    /// The input stopped with this error (frames before it were used).
    pub input_error: Option<String>,
}

/// A frame as the source gives it: timestamp (ns), link type, bytes, length
/// on the wire. It returns false once the model side has failed: the source
/// should stop reading.
pub type FrameSink<'a> = dyn FnMut(u64, u32, &[u8], u32) -> bool + 'a;

/// The reader side: the flow table and the batch being gathered.
struct Reader<'a> {
    feed: FlowFeed,
    tokenizer: &'a FlowTokenizer,
    seq_len: usize,
    batch: usize,
    max_wait: Duration,
    /// Ready moments of the flows in `feed`'s queue, oldest first.
    ready: std::collections::VecDeque<Instant>,
    tx: SyncSender<Ready>,
    /// Batches sent and not yet classified (the model side counts down).
    busy: &'a AtomicUsize,
    /// The model side has gone (it failed): stop sending.
    closed: bool,
}

impl Reader<'_> {
    fn frame(&mut self, ts_ns: u64, link_type: u32, data: &[u8], orig_len: u32) -> bool {
        let before = self.feed.pending();
        // Frames that are not TCP/UDP are counted in the stats.
        let _ = self.feed.feed(ts_ns, link_type, data, orig_len);
        self.queued(before);
        self.send_due(false);
        !self.closed
    }

    fn queued(&mut self, before: usize) {
        let after = self.feed.pending();
        if after > before {
            let now = Instant::now();
            self.ready.extend(std::iter::repeat_n(now, after - before));
        }
    }

    fn overdue(&self) -> bool {
        self.ready
            .front()
            .is_some_and(|t| t.elapsed() >= self.max_wait)
    }

    /// Sends full batches, and a partial one when `all`, or when the oldest
    /// ready flow has waited `max_wait` and the model is idle: while it is
    /// busy, ready flows gather into a fuller batch instead (as a reader
    /// that waits for the model would), so a loaded model is not slowed
    /// further by many small batches.
    fn send_due(&mut self, all: bool) {
        while !self.closed
            && (self.feed.pending() >= self.batch
                || (self.feed.pending() > 0
                    && (all || (self.overdue() && self.busy.load(Ordering::Acquire) == 0))))
        {
            let flows = self.feed.take(self.batch);
            let ready: Vec<Instant> = self.ready.drain(..flows.len()).collect();
            let mut seqs = MemSequences::new(self.seq_len);
            for f in &flows {
                seqs.push(&self.tokenizer.encode(f), None);
            }
            let n = flows.len();
            self.busy.fetch_add(1, Ordering::AcqRel);
            if self.tx.send(Ready { seqs, flows, ready }).is_err() {
                self.busy.fetch_sub(1, Ordering::AcqRel);
                self.feed.count_dropped(n);
                self.closed = true;
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
    let batch = batch.max(1);
    let (tx, rx) = sync_channel::<Ready>(QUEUED);
    let busy = AtomicUsize::new(0);
    let busy = &busy;
    // The reader needs only the tokenizer (a GPU engine's handle stays on
    // this thread).
    let (tokenizer, seq_len) = (&clf.tokenizer, clf.seq_len);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut r = Reader {
                feed,
                tokenizer,
                seq_len,
                batch,
                max_wait,
                ready: Default::default(),
                tx,
                busy,
                closed: false,
            };
            let input = source(&mut |ts, link, data, len| r.frame(ts, link, data, len));
            let before = r.feed.pending();
            r.feed.flush();
            r.queued(before);
            r.send_due(true);
            (r.feed.stats(), input.err())
        });
        let model = classify_batches(clf, batch, &rx, busy, on_verdicts);
        // Unblock a reader waiting on a full channel before joining it.
        drop(rx);
        let (mut stats, input_error) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the stream's reader thread panicked"))?;
        let (classified, latencies) = model?;
        stats.flows_classified = classified;
        Ok(Overlapped {
            stats,
            latencies,
            input_error,
        })
    })
}

/// The model side: classifies every batch the reader sends until it hangs
/// up; (flows classified, latencies).
fn classify_batches(
    clf: &Classifier,
    batch: usize,
    rx: &Receiver<Ready>,
    busy: &AtomicUsize,
    on_verdicts: &mut dyn FnMut(&[Verdict]) -> Result<()>,
) -> Result<(u64, Vec<f64>)> {
    let mut classified = 0u64;
    let mut latencies = Vec::new();
    for r in rx.iter() {
        let classes = clf.classify_tokens(&r.seqs, batch)?;
        let now = Instant::now();
        latencies.extend(r.ready.iter().map(|t| (now - *t).as_secs_f64()));
        let verdicts: Vec<Verdict> = r
            .flows
            .iter()
            .zip(classes)
            .map(|(f, (class_id, probability))| Verdict::of(f, class_id, probability))
            .collect();
        classified += verdicts.len() as u64;
        let written = on_verdicts(&verdicts);
        busy.fetch_sub(1, Ordering::AcqRel);
        written?;
    }
    Ok((classified, latencies))
}
