//! The stream with the model on a thread of its own, for callers that feed
//! frames from their capture loop and cannot wait for the model (the C API's
//! `TMOE_BACKGROUND`). The caller's thread decodes frames and keeps the flow
//! table; ready flows go to a worker thread in batches (`batch` of them, or
//! fewer once the oldest has waited `max_wait` and the worker is idle), and
//! its verdicts wait in a
//! bounded queue for [`BackgroundStream::poll`], which never blocks. Feeding
//! never blocks either: while the worker is busy, ready flows stay in the
//! flow side's bounded queue (beyond it they are dropped and counted).
//! [`BackgroundStream::flush`] ends every flow and waits for its verdicts.
//! Closing ([`BackgroundStream::close`], or dropping it) lets the worker
//! finish the batch it is classifying and drops the ones queued behind it:
//! nobody is left to poll their verdicts.
//!
//! The worker opens the classifier itself, so an engine whose handle must
//! stay on one thread (a GPU context) never crosses threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::classifier::Classifier;
use super::flow_feed::{FlowFeed, StreamLimits, StreamStats};
use super::stream::{Verdict, flow_feed_for};
use crate::traffic::capture::decode::SkipReason;
use crate::traffic::types::Flow;

/// Batches queued for the worker beyond the one it is classifying.
const QUEUED_BATCHES: usize = 1;

/// What the worker shares with the caller.
#[derive(Default)]
struct Out {
    verdicts: VecDeque<Verdict>,
    /// Flows sent to the worker and not yet classified.
    in_flight: usize,
    classified: u64,
    /// Verdicts dropped because `verdicts` was full, and flows whose model
    /// call failed.
    dropped: u64,
    /// The first model failure, reported by the next `poll`/`flush`.
    error: Option<String>,
    /// Set by close, under this lock, so that the worker's look before each
    /// batch and close's count of what it handed over agree.
    closing: bool,
    /// Flows the worker dropped unclassified because the stream was
    /// closing. Not in `dropped` (the stats' `flows_dropped`: flows lost
    /// while the stream runs, which a caller can act on).
    cancelled: u64,
}

struct Shared {
    out: Mutex<Out>,
    /// Signalled whenever `in_flight` falls.
    done: Condvar,
    /// Most verdicts held for `poll`: the limits' `max_pending`.
    max_verdicts: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Out> {
        // A worker that panicked mid-update leaves counters, not broken
        // invariants: keep going with them.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the worker tells the caller once its classifier is open.
struct Opened {
    classes: Vec<String>,
    feed: FlowFeed,
    batch: usize,
}

pub struct BackgroundStream {
    feed: FlowFeed,
    classes: Vec<String>,
    batch: usize,
    max_wait: Duration,
    /// When each flow in `feed`'s queue became ready, oldest first.
    ready: VecDeque<Instant>,
    /// A batch the worker had no room for yet.
    stash: Option<Vec<Flow>>,
    tx: Option<SyncSender<Vec<Flow>>>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl BackgroundStream {
    /// Starts the worker, which opens the classifier with `open`; fails with
    /// its error. `min_packets`, `early_verdicts` and `limits` as in
    /// [`super::stream::FlowStream::with_limits`]; `batch` gives the flows
    /// per model call from the open classifier (its engine and sequence
    /// length), at least 1.
    pub fn start(
        open: impl FnOnce() -> Result<Classifier> + Send + 'static,
        min_packets: Option<usize>,
        early_verdicts: bool,
        limits: StreamLimits,
        batch: impl FnOnce(&Classifier) -> usize + Send + 'static,
        max_wait: Duration,
    ) -> Result<BackgroundStream> {
        let shared = Arc::new(Shared {
            out: Mutex::new(Out::default()),
            done: Condvar::new(),
            max_verdicts: AtomicUsize::new(limits.max_pending.max(1)),
        });
        let (tx, rx) = sync_channel::<Vec<Flow>>(QUEUED_BATCHES);
        let (opened_tx, opened_rx) = sync_channel::<Result<Opened>>(1);
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("tmoe-model".into())
            .spawn(move || {
                let clf = match open() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let feed = flow_feed_for(&clf, min_packets, early_verdicts, limits);
                let batch = batch(&clf).max(1);
                let opened = Opened {
                    classes: clf.classes.clone(),
                    feed,
                    batch,
                };
                if opened_tx.send(Ok(opened)).is_ok() {
                    work(&clf, batch, &rx, &worker_shared);
                }
            })?;
        let opened = opened_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the model thread stopped while opening the classifier"))
            .and_then(|r| r);
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                let _ = worker.join();
                return Err(e);
            }
        };
        Ok(BackgroundStream {
            feed: opened.feed,
            classes: opened.classes,
            batch: opened.batch,
            max_wait,
            ready: VecDeque::new(),
            stash: None,
            tx: Some(tx),
            shared,
            worker: Some(worker),
        })
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// See [`FlowFeed::set_limits`]: before the first frame only.
    /// `max_pending` also caps the verdicts waiting for `poll`.
    pub fn set_limits(&mut self, limits: StreamLimits) -> Result<()> {
        self.feed.set_limits(limits)?;
        self.shared
            .max_verdicts
            .store(limits.max_pending.max(1), Ordering::Relaxed);
        Ok(())
    }

    /// Adds one frame (never blocks on the model).
    pub fn feed(
        &mut self,
        ts_ns: u64,
        link_type: u32,
        frame: &[u8],
        orig_len: u32,
    ) -> Result<(), SkipReason> {
        let before = self.feed.pending();
        let r = self.feed.feed(ts_ns, link_type, frame, orig_len);
        self.queued(before);
        // A stopped worker shows up in the next poll.
        let _ = self.dispatch(false, false);
        r
    }

    fn queued(&mut self, before: usize) {
        let after = self.feed.pending();
        if after > before {
            let now = Instant::now();
            self.ready.extend(std::iter::repeat_n(now, after - before));
        }
    }

    /// Hands due batches to the worker: full ones, and a partial one when
    /// `all` or once the oldest ready flow has waited `max_wait`. `block`:
    /// wait for room (flush) instead of keeping the batch for later.
    fn dispatch(&mut self, all: bool, block: bool) -> Result<()> {
        loop {
            if self.stash.is_none() {
                let pending = self.feed.pending();
                let overdue = self
                    .ready
                    .front()
                    .is_some_and(|t| t.elapsed() >= self.max_wait);
                // A partial batch waits while the worker is busy: under
                // load batches grow rather than queue up small.
                let idle = self.shared.lock().in_flight == 0;
                if pending == 0 || (pending < self.batch && !all && !(overdue && idle)) {
                    return Ok(());
                }
                let flows = self.feed.take(self.batch);
                self.ready.drain(..flows.len().min(self.ready.len()));
                self.stash = Some(flows);
            }
            let flows = self.stash.take().expect("stashed above");
            let n = flows.len();
            let tx = self
                .tx
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the stream is closed"))?;
            // Count the batch in flight before the worker can finish it.
            self.shared.lock().in_flight += n;
            let sent = if block {
                tx.send(flows).map_err(|e| TrySendError::Disconnected(e.0))
            } else {
                tx.try_send(flows)
            };
            match sent {
                Ok(()) => {}
                Err(TrySendError::Full(flows)) => {
                    self.shared.lock().in_flight -= n;
                    self.stash = Some(flows);
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => {
                    let mut out = self.shared.lock();
                    out.in_flight -= n;
                    out.dropped += n as u64;
                    anyhow::bail!(
                        "the model thread has stopped: {}",
                        out.error
                            .clone()
                            .unwrap_or_else(|| "no reason given".into())
                    );
                }
            }
        }
    }

    /// Up to `max` verdicts ready now (oldest first), after handing the
    /// worker whatever is due. Never waits for the model. Fails once with
    /// the worker's first model error.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Verdict>> {
        self.dispatch(false, false)?;
        let mut out = self.shared.lock();
        if let Some(e) = out.error.take() {
            anyhow::bail!("{e}");
        }
        let n = max.min(out.verdicts.len());
        Ok(out.verdicts.drain(..n).collect())
    }

    /// Ends the flows idle at `now_ns` ([`FlowFeed::advance`]) and hands
    /// the worker what is due (never blocks on the model).
    pub fn advance(&mut self, now_ns: u64) -> Result<()> {
        let before = self.feed.pending();
        self.feed.advance(now_ns);
        self.queued(before);
        self.dispatch(false, false)
    }

    /// Ends every open flow and waits until the worker has classified all
    /// of them (their verdicts then wait for `poll`).
    pub fn flush(&mut self) -> Result<()> {
        let before = self.feed.pending();
        self.feed.flush();
        self.queued(before);
        self.dispatch(true, true)?;
        let mut out = self.shared.lock();
        while out.in_flight > 0 {
            out = self
                .shared
                .done
                .wait(out)
                .unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    /// Ended flows not yet classified: waiting here or in the worker.
    pub fn pending(&self) -> usize {
        self.feed.pending() + self.stash.as_ref().map_or(0, Vec::len) + self.shared.lock().in_flight
    }

    /// Of [`Self::pending`], the flows handed to the worker: the batch it
    /// is classifying and those queued behind it.
    pub fn in_model(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Verdicts waiting for `poll`.
    pub fn ready_verdicts(&self) -> usize {
        self.shared.lock().verdicts.len()
    }

    pub fn stats(&self) -> StreamStats {
        let mut s = self.feed.stats();
        let out = self.shared.lock();
        s.flows_classified = out.classified;
        s.flows_dropped += out.dropped;
        s
    }
}

/// What closing a [`BackgroundStream`] did with the flows it had handed to
/// the worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// Flows handed to the worker and not yet classified when close began:
    /// the batch in progress, if any, and those queued behind it.
    pub handed: usize,
    /// Of them, flows the worker dropped unclassified (the queued batches).
    pub cancelled: usize,
}

impl Closed {
    /// Flows the model still classified after close began (the batch in
    /// progress, which cannot be interrupted), their verdicts unread.
    pub fn finished(&self) -> usize {
        self.handed - self.cancelled
    }
}

impl BackgroundStream {
    /// Stops the worker and joins it: the batch it is classifying finishes,
    /// the batches queued behind it are dropped unclassified, as are the
    /// ready flows not yet handed over and the verdicts not yet polled
    /// (dropping the stream does the same).
    pub fn close(mut self) -> Closed {
        self.shut()
    }

    fn shut(&mut self) -> Closed {
        let Some(worker) = self.worker.take() else {
            return Closed::default();
        };
        let (handed, cancelled_before) = {
            let mut out = self.shared.lock();
            out.closing = true;
            (out.in_flight, out.cancelled)
        };
        // Hanging up ends the worker's loop once it has emptied the queue
        // (dropping, not classifying, what waits there).
        self.tx = None;
        let _ = worker.join();
        let cancelled = (self.shared.lock().cancelled - cancelled_before) as usize;
        Closed { handed, cancelled }
    }
}

impl Drop for BackgroundStream {
    fn drop(&mut self) {
        self.shut();
    }
}

/// The worker: classifies each batch until the caller hangs up; once the
/// stream is closing, drops each batch still queued unclassified (a whole
/// model call, 1,024 flows on a GPU, slow on "sim", for verdicts nobody
/// would read).
fn work(clf: &Classifier, batch: usize, rx: &Receiver<Vec<Flow>>, shared: &Shared) {
    for flows in rx.iter() {
        let n = flows.len();
        {
            let mut out = shared.lock();
            if out.closing {
                out.cancelled += n as u64;
                out.in_flight -= n;
                continue;
            }
        }
        // A panic must not leave `in_flight` up (flush would wait forever).
        let r = clf.classify_caught(&flows, batch);
        let max_verdicts = shared.max_verdicts.load(Ordering::Relaxed);
        let mut out = shared.lock();
        match r {
            Ok(classes) => {
                for (f, (class_id, p)) in flows.iter().zip(classes) {
                    if out.verdicts.len() >= max_verdicts {
                        out.dropped += 1;
                    } else {
                        out.verdicts.push_back(Verdict::of(f, class_id, p));
                        out.classified += 1;
                    }
                }
            }
            Err(e) => {
                out.dropped += n as u64;
                if out.error.is_none() {
                    out.error = Some(format!("classifying {n} flows: {e:#}"));
                }
            }
        }
        out.in_flight -= n;
        shared.done.notify_all();
    }
}
