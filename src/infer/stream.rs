//! Frames in, classified flows out: the streaming front end for a network
//! monitor. Frames go through the same decoder and flow table as capture
//! files (`traffic::capture::decode`, `traffic::flows::table`), so a flow gets the same class
//! whether it is read from a pcap or fed frame by frame. A flow is classified
//! once it ends (FIN from both sides or RST, idle timeout, or `flush`), or,
//! with early verdicts on, as soon as it holds the K packets the model reads
//! (same class and probability, known minutes earlier for long flows); flows
//! under the packet minimum are counted and dropped. The flow side (table,
//! queue, counters, limits) is [`FlowFeed`]; this adds the model.

use anyhow::Result;

use super::classifier::Classifier;
pub use super::flow_feed::{DEFAULT_MAX_PENDING, FlowFeed, StreamLimits, StreamStats};
use crate::traffic::capture::decode::SkipReason;
use crate::traffic::types::{Endpoint, Flow};

/// Flows classified per model call.
const BATCH: usize = 64;

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

impl Verdict {
    /// Flow `f` classified as `class_id` with `probability`.
    pub fn of(f: &Flow, class_id: u32, probability: f32) -> Verdict {
        Verdict {
            proto: f.key.proto,
            initiator: f.initiator,
            responder: f.responder,
            first_ts_ns: f.first_ts_ns,
            last_ts_ns: f.last_ts_ns,
            packets: f.total_packets,
            class_id,
            probability,
        }
    }
}

pub struct FlowStream {
    pub classifier: Classifier,
    flows: FlowFeed,
}

/// The flow side of a stream for `classifier` (its reader settings and
/// packet minimum: `min_packets`, else the dataset's, else 3).
pub fn flow_feed_for(
    classifier: &Classifier,
    min_packets: Option<usize>,
    early_verdicts: bool,
    limits: StreamLimits,
) -> FlowFeed {
    let min_packets = min_packets.or(classifier.dataset_min_packets).unwrap_or(3);
    FlowFeed::new(
        &classifier.read_config(),
        min_packets,
        early_verdicts,
        limits,
    )
}

impl FlowStream {
    /// `min_packets`: flows with fewer packets are not classified (default:
    /// the dataset's minimum, else 3). `early_verdicts`: classify a flow at its
    /// K-th packet instead of at its end (its verdict then reports the packets
    /// and last timestamp seen so far). Default [`StreamLimits`].
    pub fn new(
        classifier: Classifier,
        min_packets: Option<usize>,
        early_verdicts: bool,
    ) -> FlowStream {
        FlowStream::with_limits(
            classifier,
            min_packets,
            early_verdicts,
            StreamLimits::default(),
        )
    }

    /// [`FlowStream::new`] holding at most `limits` open and ended flows.
    pub fn with_limits(
        classifier: Classifier,
        min_packets: Option<usize>,
        early_verdicts: bool,
        limits: StreamLimits,
    ) -> FlowStream {
        FlowStream {
            flows: flow_feed_for(&classifier, min_packets, early_verdicts, limits),
            classifier,
        }
    }

    /// See [`FlowFeed::set_limits`]: before the first frame only.
    pub fn set_limits(&mut self, limits: StreamLimits) -> Result<()> {
        self.flows.set_limits(limits)
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
        self.flows.feed(ts_ns, link_type, frame, orig_len)
    }

    /// See [`FlowFeed::advance`]: ends the flows idle at `now_ns`.
    pub fn advance(&mut self, now_ns: u64) {
        self.flows.advance(now_ns);
    }

    /// Ends every open flow (end of input, or before shutting down).
    pub fn flush(&mut self) {
        self.flows.flush();
    }

    /// Finished flows waiting to be classified.
    pub fn pending(&self) -> usize {
        self.flows.pending()
    }

    /// Classifies up to `max` finished flows, oldest first.
    pub fn classify_pending(&mut self, max: usize) -> Result<Vec<Verdict>> {
        let flows = self.flows.take(max);
        // A panic is an error here too, so that the flows taken are counted
        // as dropped (the stats' identity holds) as in the background mode.
        let classes = self
            .classifier
            .classify_caught(&flows, BATCH)
            .inspect_err(|_| self.flows.count_dropped(flows.len()))?;
        self.flows.count_classified(flows.len());
        Ok(flows
            .iter()
            .zip(classes)
            .map(|(f, (class_id, probability))| Verdict::of(f, class_id, probability))
            .collect())
    }

    pub fn stats(&self) -> StreamStats {
        self.flows.stats()
    }
}
