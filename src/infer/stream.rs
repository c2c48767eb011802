//! Frames in, classified flows out: the streaming front end for a network
//! monitor. Frames go through the same decoder and flow table as capture
//! files (`traffic::decode`, `traffic::flows`), so a flow gets the same class
//! whether it is read from a pcap or fed frame by frame. A flow is classified
//! once it ends (FIN from both sides or RST, idle timeout, or `flush`), or,
//! with early verdicts on, as soon as it holds the K packets the model reads
//! (same class and probability, known minutes earlier for long flows); flows
//! under the packet minimum are counted and dropped.

use std::collections::HashSet;

use anyhow::Result;

use super::classifier::Classifier;
use crate::traffic::decode::{SkipReason, decode_frame};
use crate::traffic::flows::FlowTable;
use crate::traffic::types::{Endpoint, Flow, FlowKey};

/// Flows classified per model call.
const BATCH: usize = 64;

/// Counters since the stream was opened. `repr(C)`: the C API hands it out
/// as `tmoe_stats` (include/traffic_moe.h), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub frames: u64,
    /// Frames decoded as TCP or UDP packets (the rest are skipped).
    pub packets: u64,
    pub skipped_frames: u64,
    /// Flows that ended with at least the packet minimum.
    pub flows_finished: u64,
    pub flows_too_short: u64,
    pub flows_classified: u64,
}

/// One classified flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Sender of the flow's first packet.
    pub initiator: Endpoint,
    pub responder: Endpoint,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub packets: u64,
    pub class_id: u32,
    /// The model's probability for `class_id`.
    pub probability: f32,
}

pub struct FlowStream {
    pub classifier: Classifier,
    table: FlowTable,
    finished: Vec<Flow>,
    min_packets: usize,
    stats: StreamStats,
    /// Early verdicts: flows classified at their K-th packet and still open
    /// (key, first timestamp), so that their end is not classified again.
    early: Option<HashSet<(FlowKey, u64)>>,
}

impl FlowStream {
    /// `min_packets`: flows with fewer packets are not classified (default:
    /// the dataset's minimum, else 3). `early_verdicts`: classify a flow at its
    /// K-th packet instead of at its end (its verdict then reports the packets
    /// and last timestamp seen so far).
    pub fn new(
        classifier: Classifier,
        min_packets: Option<usize>,
        early_verdicts: bool,
    ) -> FlowStream {
        let min_packets = min_packets
            .or(classifier.dataset_min_packets)
            .unwrap_or(3)
            .max(1);
        FlowStream {
            table: FlowTable::new(&classifier.read_config(), 0),
            classifier,
            finished: Vec::new(),
            min_packets,
            stats: StreamStats::default(),
            early: early_verdicts.then(HashSet::new),
        }
    }

    /// Adds one frame of link type `link_type` (pcap LINKTYPE_*) captured at
    /// `ts_ns`; `orig_len` is its length on the wire. Frames that are not TCP
    /// or UDP over IP are counted and skipped with the reason.
    pub fn feed(
        &mut self,
        ts_ns: u64,
        link_type: u32,
        frame: &[u8],
        orig_len: u32,
    ) -> Result<(), SkipReason> {
        self.stats.frames += 1;
        let pkt = decode_frame(link_type, frame, orig_len).inspect_err(|_| {
            self.stats.skipped_frames += 1;
        })?;
        self.stats.packets += 1;
        let (min, finished, stats) = (self.min_packets, &mut self.finished, &mut self.stats);
        let early = &mut self.early;
        let full = self.table.push(ts_ns, &pkt, &mut |f| {
            ended(f, min, finished, stats, early.as_mut())
        });
        // K packets are in: everything the model reads.
        if let (Some(done), Some(full)) = (self.early.as_mut(), full) {
            if full.total_packets >= min as u64 {
                done.insert((full.key, full.first_ts_ns));
                keep(full.clone(), min, &mut self.finished, &mut self.stats);
            }
        }
        Ok(())
    }

    /// Ends every open flow (end of input, or before shutting down).
    pub fn flush(&mut self) {
        let (min, finished, stats) = (self.min_packets, &mut self.finished, &mut self.stats);
        let early = &mut self.early;
        self.table
            .flush(&mut |f| ended(f, min, finished, stats, early.as_mut()));
    }

    /// Finished flows waiting to be classified.
    pub fn pending(&self) -> usize {
        self.finished.len()
    }

    /// Classifies up to `max` finished flows, oldest first.
    pub fn classify_pending(&mut self, max: usize) -> Result<Vec<Verdict>> {
        let n = max.min(self.finished.len());
        let flows: Vec<Flow> = self.finished.drain(..n).collect();
        let classes = self.classifier.classify(&flows, BATCH)?;
        self.stats.flows_classified += n as u64;
        Ok(flows
            .iter()
            .zip(classes)
            .map(|(f, (class_id, probability))| Verdict {
                proto: f.key.proto,
                initiator: f.initiator,
                responder: f.responder,
                first_ts_ns: f.first_ts_ns,
                last_ts_ns: f.last_ts_ns,
                packets: f.total_packets,
                class_id,
                probability,
            })
            .collect())
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }
}

/// A flow ended: queue it, unless it already got its early verdict.
fn ended(
    f: Flow,
    min_packets: usize,
    finished: &mut Vec<Flow>,
    stats: &mut StreamStats,
    early: Option<&mut HashSet<(FlowKey, u64)>>,
) {
    if early.is_some_and(|done| done.remove(&(f.key, f.first_ts_ns))) {
        return;
    }
    keep(f, min_packets, finished, stats);
}

/// Queues a flow for classification if it has the packet minimum.
fn keep(f: Flow, min_packets: usize, finished: &mut Vec<Flow>, stats: &mut StreamStats) {
    if f.total_packets >= min_packets as u64 {
        stats.flows_finished += 1;
        finished.push(f);
    } else {
        stats.flows_too_short += 1;
    }
}
