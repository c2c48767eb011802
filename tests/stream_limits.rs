//! The stream's bounds (`infer::flow_feed`, the model-free half of
//! `FlowStream` and the C API): the queue of ended flows drops and counts the
//! newest when full, the early-verdict set never outgrows the flow table, and
//! the counters account for every flow.

use std::net::Ipv4Addr;

use traffic_moe::infer::flow_feed::{FlowFeed, StreamLimits, StreamStats};
use traffic_moe::traffic::capture::pcap_writer::{eth_ipv4, udp};
use traffic_moe::traffic::capture::reader::ReadConfig;
use traffic_moe::traffic::types::PROTO_UDP;

const ETHERNET: u32 = 1;

/// A UDP query of the flow named by the client's port.
fn frame(port: u16) -> Vec<u8> {
    eth_ipv4(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        PROTO_UDP,
        &udp(port, 53, b"query"),
    )
}

fn feed(s: &mut FlowFeed, ts: u64, port: u16) {
    let f = frame(port);
    s.feed(ts, ETHERNET, &f, f.len() as u32).unwrap();
}

/// K = 2 packets per flow.
fn read() -> ReadConfig {
    ReadConfig {
        max_packets: 2,
        ..ReadConfig::default()
    }
}

fn limits(max_flows: usize, max_pending: usize) -> StreamLimits {
    StreamLimits {
        max_flows,
        max_pending,
    }
}

/// The identities the header promises.
fn assert_accounted(st: &StreamStats, pending: usize) {
    assert_eq!(
        st.flows_finished,
        st.flows_classified + st.flows_dropped + pending as u64,
        "{st:?}"
    );
    assert!(st.flows_evicted <= st.flows_finished + st.flows_too_short);
}

#[test]
fn a_full_queue_drops_the_newest_ended_flow_and_counts_it() {
    let mut s = FlowFeed::new(&read(), 1, false, limits(100, 4));
    for i in 0..10u16 {
        feed(&mut s, 1000 + u64::from(i), 5000 + i);
    }
    assert_eq!(s.pending(), 0, "nothing ended yet");
    s.flush();
    assert_eq!(s.pending(), 4);
    let st = s.stats();
    assert_eq!(
        (st.flows_finished, st.flows_dropped, st.flows_open),
        (10, 6, 0)
    );
    assert_accounted(&st, s.pending());
    // The oldest four were kept; the queue hands them out in order.
    let kept: Vec<u16> = s.take(10).iter().map(|f| f.initiator.port).collect();
    assert_eq!(kept, [5000, 5001, 5002, 5003]);
    s.count_classified(kept.len());
    assert_accounted(&s.stats(), s.pending());
    // Room again: the next ended flow is queued.
    feed(&mut s, 2000, 6000);
    s.flush();
    assert_eq!((s.pending(), s.stats().flows_dropped), (1, 6));
}

#[test]
fn evicted_flows_are_queued_or_counted_short_and_every_flow_is_accounted() {
    // Minimum 2 packets; cap 3 open flows.
    let mut s = FlowFeed::new(&read(), 2, false, limits(3, 100));
    let mut ts = 1000;
    for i in 0..10u16 {
        // Even flows get two packets (classifiable), odd ones one.
        for _ in 0..(2 - i % 2) {
            feed(&mut s, ts, 7000 + i);
            ts += 1;
        }
        assert!(s.stats().flows_open <= 3);
    }
    let st = s.stats();
    assert_eq!(st.flows_evicted, 7);
    assert_eq!(st.flows_open, 3);
    // Flows 0..=6 were evicted: 0, 2, 4, 6 have two packets.
    assert_eq!((st.flows_finished, st.flows_too_short), (4, 3));
    assert_accounted(&st, s.pending());
    s.flush();
    let st = s.stats();
    assert_eq!(st.flows_open, 0);
    assert_eq!(st.flows_finished + st.flows_too_short, 10);
    assert_eq!((st.flows_finished, st.flows_too_short), (5, 5));
    assert_accounted(&st, s.pending());
}

#[test]
fn early_verdicts_stay_bounded_by_the_flow_table() {
    const CAP: usize = 8;
    let mut s = FlowFeed::new(&read(), 2, true, limits(CAP, 1_000_000));
    let mut ts = 1000;
    for i in 0..1000u16 {
        // Two packets: each flow gets its early verdict at the second, then
        // stays open until the cap evicts it.
        for _ in 0..2 {
            feed(&mut s, ts, i);
            ts += 1;
        }
        assert!(s.early_open() <= CAP, "{} early entries", s.early_open());
    }
    let st = s.stats();
    assert_eq!(st.flows_evicted, 1000 - CAP as u64);
    assert_eq!(s.early_open(), CAP);
    // Counted once, at the K-th packet; eviction does not count them again.
    assert_eq!(st.flows_finished, 1000);
    s.flush();
    assert_eq!(s.early_open(), 0);
    let st = s.stats();
    assert_eq!((st.flows_finished, st.flows_too_short), (1000, 0));
    assert_eq!(s.pending(), 1000);
    assert_accounted(&st, s.pending());
}

#[test]
fn limits_are_set_before_the_first_frame_only() {
    let mut s = FlowFeed::new(&read(), 1, false, StreamLimits::default());
    s.set_limits(limits(2, 1)).unwrap();
    for i in 0..5u16 {
        feed(&mut s, 1000 + u64::from(i), i);
    }
    assert_eq!(s.stats().flows_open, 2, "the new cap holds");
    let err = s.set_limits(limits(10, 10)).unwrap_err();
    assert!(err.to_string().contains("before the first frame"), "{err}");
    s.flush();
    assert_eq!((s.pending(), s.stats().flows_dropped), (1, 4));
}

/// Frames that are not TCP or UDP are counted by reason as well as in
/// `skipped_frames` (what `classify --stream`'s summary prints).
#[test]
fn skipped_frames_are_counted_by_reason() {
    use traffic_moe::traffic::capture::decode::SkipReason;
    use traffic_moe::traffic::capture::pcap_writer::ethernet;
    let mut s = FlowFeed::new(&read(), 1, false, limits(100, 100));
    let arp = ethernet([2; 6], [0xff; 6], &[], 0x0806, &[0; 28]);
    let icmp = eth_ipv4(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        1,
        &[8, 0, 0, 0, 0, 1, 0, 1],
    );
    for f in [&arp, &arp, &icmp] {
        assert!(s.feed(1, ETHERNET, f, f.len() as u32).is_err());
    }
    feed(&mut s, 2, 5000);
    let (st, skips) = (s.stats(), s.skips());
    assert_eq!(
        (skips.get(SkipReason::Arp), skips.get(SkipReason::Icmp)),
        (2, 1)
    );
    assert_eq!(st.skipped_frames, skips.total());
    assert_eq!(st.packets, 1);
    let line = skips.summary(0).unwrap();
    assert!(
        line.starts_with("skipped 3 frames:") && line.contains("ARP 2"),
        "{line}"
    );
}
