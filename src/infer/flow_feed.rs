//! The model-free half of the stream: frames in, ended flows queued for the
//! classifier, with every flow accounted for and every structure bounded, since
//! a live feed's senders choose how many flows there are. [`super::stream`]
//! adds the model; this half is tested and benchmarked on its own.

use std::collections::{HashSet, VecDeque};

use crate::traffic::capture::decode::{SkipReason, decode_frame};
use crate::traffic::capture::reader::{DEFAULT_MAX_FLOWS, ReadConfig};
use crate::traffic::capture::stats::SkipCounts;
use crate::traffic::flows::table::{FlowTable, KeyedState};
use crate::traffic::types::{Flow, FlowKey};

/// Ended flows waiting for the classifier, unless set otherwise (0.75 to
/// 1.2 KB each at K = 10: at most some 80 MB).
pub const DEFAULT_MAX_PENDING: usize = 65_536;

/// How much a stream may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Flows open at once; a new flow beyond it ends the least recently
    /// active one (`flows_evicted`).
    pub max_flows: usize,
    /// Ended flows waiting to be classified; beyond it the newest ended flow
    /// is dropped (`flows_dropped`), so a reader that polls too slowly loses
    /// recent verdicts instead of the process running out of memory.
    pub max_pending: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_flows: DEFAULT_MAX_FLOWS,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// Counters since the stream was opened. `repr(C)`: the C API hands it out
/// as `tmoe_stats` (include/traffic_moe.h), field for field; new fields go
/// at the end.
///
/// Every flow is counted once, when it ends or, with early verdicts, at its
/// K-th packet: in `flows_finished` (it has the packet minimum) or in
/// `flows_too_short`. Hence, at any time:
///
/// - `flows_finished = flows_classified + flows_dropped + pending`;
/// - `flows_evicted <= flows_finished + flows_too_short` (an end reason,
///   not a separate fate: an evicted flow is classified like a timed-out one);
/// - after a flush, `flows_open = 0` and `flows_finished + flows_too_short`
///   is every flow the stream has seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub frames: u64,
    /// Frames decoded as TCP or UDP packets (the rest are skipped).
    pub packets: u64,
    pub skipped_frames: u64,
    /// Flows that reached the packet minimum.
    pub flows_finished: u64,
    pub flows_too_short: u64,
    pub flows_classified: u64,
    /// Flows ended early because `max_flows` flows were open.
    pub flows_evicted: u64,
    /// Of `flows_finished`: not classified, because the queue held
    /// `max_pending` (or the model call that took them failed).
    pub flows_dropped: u64,
    /// Flows open now (a level, not a counter); with early verdicts some of
    /// them are already counted in `flows_finished`.
    pub flows_open: u64,
}

pub struct FlowFeed {
    read: ReadConfig,
    table: FlowTable<KeyedState>,
    finished: VecDeque<Flow>,
    max_pending: usize,
    min_packets: usize,
    stats: StreamStats,
    /// `stats.skipped_frames` by reason (outside the C API's struct, whose
    /// layout the header fixes).
    skips: SkipCounts,
    /// Of `stats.packets`: (truncated by the snaplen, first IP fragments),
    /// used with care (outside the C API's struct too).
    care: (u64, u64),
    /// Early verdicts: flows queued at their K-th packet and still open (key,
    /// first timestamp), so that their end is not queued again. An entry
    /// leaves when its flow ends (eviction included), so this set is never
    /// larger than the table.
    early: Option<HashSet<(FlowKey, u64), KeyedState>>,
}

impl FlowFeed {
    /// `read`: how frames become flows (its `max_flows` is replaced by
    /// `limits.max_flows`). Flows under `min_packets` are counted, not queued.
    pub fn new(
        read: &ReadConfig,
        min_packets: usize,
        early_verdicts: bool,
        limits: StreamLimits,
    ) -> FlowFeed {
        let read = ReadConfig {
            max_flows: limits.max_flows,
            ..read.clone()
        };
        FlowFeed {
            // Keys come from the network: a keyed hash (traffic::flows::hash).
            table: FlowTable::new(&read, 0),
            read,
            finished: VecDeque::new(),
            max_pending: limits.max_pending.max(1),
            min_packets: min_packets.max(1),
            stats: StreamStats::default(),
            skips: SkipCounts::default(),
            care: (0, 0),
            early: early_verdicts.then(|| HashSet::with_hasher(KeyedState::new())),
        }
    }

    /// Changes the limits; only before the first frame (the table is made
    /// for its cap, and a lower cap could not be met without evicting at once).
    pub fn set_limits(&mut self, limits: StreamLimits) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.stats.frames == 0,
            "limits can only be set before the first frame"
        );
        self.read.max_flows = limits.max_flows;
        self.table = FlowTable::new(&self.read, 0);
        self.max_pending = limits.max_pending.max(1);
        Ok(())
    }

    /// Lifts the cap on ended flows waiting to be taken, for a caller that
    /// takes every ended flow after each frame (the overlapped stream). Its
    /// queue then holds only what one frame or the final flush ended, flows
    /// that left the table (itself capped by `max_flows`) to get there: the
    /// cap would bound no memory, and would drop the flows of a burst (many
    /// idle flows timing out on one frame, or every open flow at the end of
    /// the input) that were never waiting on a slow reader.
    pub fn lift_pending_cap(&mut self) {
        self.max_pending = usize::MAX;
    }

    /// See `FlowStream::feed`.
    pub fn feed(
        &mut self,
        ts_ns: u64,
        link_type: u32,
        frame: &[u8],
        orig_len: u32,
    ) -> Result<(), SkipReason> {
        self.stats.frames += 1;
        let pkt = decode_frame(link_type, frame, orig_len).inspect_err(|&reason| {
            self.stats.skipped_frames += 1;
            self.skips.add(reason);
        })?;
        self.stats.packets += 1;
        self.care.0 += u64::from(pkt.truncated);
        self.care.1 += u64::from(pkt.first_fragment);
        let mut queue = Queue {
            min_packets: self.min_packets,
            max_pending: self.max_pending,
            finished: &mut self.finished,
            stats: &mut self.stats,
        };
        let early = &mut self.early;
        let full = self
            .table
            .push(ts_ns, &pkt, &mut |f| queue.ended(f, early.as_mut()));
        // K packets are in: everything the model reads.
        if let (Some(done), Some(full)) = (self.early.as_mut(), full)
            && full.total_packets >= self.min_packets as u64
        {
            done.insert((full.key, full.first_ts_ns));
            queue.keep(full.clone());
        }
        self.sync_table_stats();
        Ok(())
    }

    /// Ends the flows idle at `now_ns` (the frames' clock), as the sweep a
    /// frame stamped `now_ns` would run, without one: on a link gone quiet
    /// the table's clock stands still, so without this an idle flow waits
    /// for the next frame. Frames fed later must not be stamped earlier.
    pub fn advance(&mut self, now_ns: u64) {
        self.end_flows(|table, sink| table.sweep(now_ns, sink));
    }

    /// Ends every open flow (end of input, or before shutting down).
    pub fn flush(&mut self) {
        self.end_flows(|table, sink| table.flush(sink));
    }

    /// Runs `end` on the table with a sink that queues the flows it ends.
    fn end_flows(&mut self, end: impl FnOnce(&mut FlowTable<KeyedState>, &mut dyn FnMut(Flow))) {
        let mut queue = Queue {
            min_packets: self.min_packets,
            max_pending: self.max_pending,
            finished: &mut self.finished,
            stats: &mut self.stats,
        };
        let early = &mut self.early;
        end(&mut self.table, &mut |f| queue.ended(f, early.as_mut()));
        self.sync_table_stats();
    }

    /// Ended flows waiting to be classified.
    pub fn pending(&self) -> usize {
        self.finished.len()
    }

    /// Takes up to `max` ended flows, oldest first.
    pub fn take(&mut self, max: usize) -> Vec<Flow> {
        let n = max.min(self.finished.len());
        self.finished.drain(..n).collect()
    }

    /// Flows that got an early verdict and are still open.
    pub fn early_open(&self) -> usize {
        self.early.as_ref().map_or(0, HashSet::len)
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The skipped frames by reason.
    pub fn skips(&self) -> SkipCounts {
        self.skips
    }

    /// Packets used with care, as the capture reader counts them: (truncated
    /// by the snaplen, first fragments of fragmented IP packets).
    pub fn care(&self) -> (u64, u64) {
        self.care
    }

    /// `flows_classified` is counted by whoever classifies what `take` gives.
    pub fn count_classified(&mut self, n: usize) {
        self.stats.flows_classified += n as u64;
    }

    /// Flows taken but not classified (the model call failed): dropped.
    pub fn count_dropped(&mut self, n: usize) {
        self.stats.flows_dropped += n as u64;
    }

    fn sync_table_stats(&mut self) {
        self.stats.flows_evicted = self.table.evicted();
        self.stats.flows_open = self.table.active() as u64;
    }
}

/// The queue of ended flows, borrowed while the table emits into it.
struct Queue<'a> {
    min_packets: usize,
    max_pending: usize,
    finished: &'a mut VecDeque<Flow>,
    stats: &'a mut StreamStats,
}

impl Queue<'_> {
    /// A flow ended: queue it, unless it already got its early verdict.
    fn ended(&mut self, f: Flow, early: Option<&mut HashSet<(FlowKey, u64), KeyedState>>) {
        if early.is_some_and(|done| done.remove(&(f.key, f.first_ts_ns))) {
            return;
        }
        self.keep(f);
    }

    /// Queues a flow for classification if it has the packet minimum and
    /// the queue has room.
    fn keep(&mut self, f: Flow) {
        if f.total_packets < self.min_packets as u64 {
            self.stats.flows_too_short += 1;
            return;
        }
        self.stats.flows_finished += 1;
        if self.finished.len() >= self.max_pending {
            self.stats.flows_dropped += 1;
        } else {
            self.finished.push_back(f);
        }
    }
}
