//! Time-slice augmentation of training flows (the paper's fine-tuning trick):
//! a long flow is cut into fixed-duration sub-flows that keep its label.
//!
//! The flow table keeps only the first K packets of a flow, which all sit at
//! its start, so slicing those would yield nothing new. When augmentation is on,
//! the dataset builder therefore asks the reader for more packets per flow
//! (`slice_packets`, default 100 = 10 K) and tokenises the flow itself from its
//! first K packets as usual. Each training flow's longer packet list is then cut
//! into windows `[first_ts + w*slice, first_ts + (w+1)*slice)`; every window with at
//! least `min_packets` packets becomes a sub-flow made of its first K packets
//! (inter-arrival times restart at the window's first packet; directions stay
//! relative to the original initiator). Sub-flows identical to an already kept
//! flow (window 0 usually is the flow itself) are removed by the deduplication
//! that follows, and sub-flows identical to a validation or test flow are dropped.
//! Flows that fit in one window yield nothing. Validation and test flows are
//! never augmented.

use crate::traffic::types::{Flow, PacketRecord};

/// Sub-flows of `packets` (the flow's longer packet list) in `slice_ns` windows.
/// Returns `(window index, sub-flow)` pairs.
pub fn time_slices(
    flow: &Flow,
    packets: &[PacketRecord],
    slice_ns: u64,
    k: usize,
    min_packets: usize,
) -> Vec<(u32, Flow)> {
    let Some(first) = packets.first() else {
        return Vec::new();
    };
    let last = packets.last().map_or(first.ts_ns, |p| p.ts_ns);
    if slice_ns == 0 || last.saturating_sub(first.ts_ns) < slice_ns {
        return Vec::new();
    }
    let window = |p: &PacketRecord| p.ts_ns.saturating_sub(first.ts_ns) / slice_ns;
    let mut out = Vec::new();
    let mut start = 0;
    while start < packets.len() {
        let w = window(&packets[start]);
        let mut end = start + 1;
        while end < packets.len() && window(&packets[end]) == w {
            end += 1;
        }
        let members = &packets[start..end];
        if members.len() >= min_packets.max(1) {
            let kept: Vec<PacketRecord> = members.iter().take(k).cloned().collect();
            out.push((
                u32::try_from(w).unwrap_or(u32::MAX),
                Flow {
                    key: flow.key,
                    initiator: flow.initiator,
                    responder: flow.responder,
                    first_ts_ns: members[0].ts_ns,
                    last_ts_ns: members[members.len() - 1].ts_ns,
                    total_packets: members.len() as u64,
                    packets: kept,
                    file_index: flow.file_index,
                    macs: flow.macs,
                },
            ));
        }
        start = end;
    }
    out
}
