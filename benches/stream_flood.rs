//! Memory under a SYN flood: 1,000,000 one-packet TCP flows within 10 s fed
//! as Ethernet frames to the stream's flow side (`infer::flow_feed`, the part
//! of `FlowStream` and the C API that holds flows; the model's memory does
//! not depend on the traffic). Prints the growth of the process's peak RSS
//! (VmHWM) against a stated bound. A benchmark, not a test: its own process,
//! so the peak is this flood's.
//!
//! `cargo bench --bench stream_flood [-- MAX_FLOWS [MIN_PACKETS]]`
//! (default 100000 and 1; MAX_FLOWS 0 = no cap, as before the cap existed).

use std::net::Ipv4Addr;
use std::time::Instant;

use traffic_moe::infer::flow_feed::{DEFAULT_MAX_PENDING, FlowFeed, StreamLimits};
use traffic_moe::traffic::capture::pcap_writer::{eth_ipv4, tcp};
use traffic_moe::traffic::capture::reader::ReadConfig;
use traffic_moe::traffic::capture::stats::peak_rss_kib;
use traffic_moe::traffic::types::{PROTO_TCP, tcp_flags};

const FLOWS: u32 = 1_000_000;
/// 10 s of capture time for the whole flood.
const SPACING_NS: u64 = 10_000_000_000 / FLOWS as u64;
/// The bound: 2 KB per held flow (open or queued; a one-packet flow at K = 10
/// holds room for 10 packet records, about 0.5-0.8 KB in all) plus 16 MiB.
const BYTES_PER_FLOW_BOUND: u64 = 2048;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let max_flows = args.first().copied().unwrap_or(100_000) as usize;
    let min_packets = args.get(1).copied().unwrap_or(1) as usize;
    let limits = StreamLimits {
        max_flows: if max_flows == 0 {
            usize::MAX
        } else {
            max_flows
        },
        max_pending: DEFAULT_MAX_PENDING,
    };
    let before = peak_rss_kib().unwrap_or(0);
    // K = 10 packets, 40 payload bytes: the default model's flow parts.
    let mut feed = FlowFeed::new(&ReadConfig::default(), min_packets, false, limits);
    let server = Ipv4Addr::new(192, 168, 0, 1);
    let start = Instant::now();
    let (mut peak_open, mut peak_pending) = (0, 0);
    for i in 0..FLOWS {
        // Spoofed sources: 10.0.0.0/8, one SYN each, to port 80.
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i);
        let syn = tcp(40_000, 80, i, 0, tcp_flags::SYN, 65_535, &[]);
        let frame = eth_ipv4(src, server, PROTO_TCP, &syn);
        let _ = feed.feed(u64::from(i) * SPACING_NS, 1, &frame, frame.len() as u32);
        peak_open = peak_open.max(feed.stats().flows_open);
        peak_pending = peak_pending.max(feed.pending() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = peak_rss_kib().unwrap_or(0);
    let st = feed.stats();
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    // Flows held at the peak: open in the table plus ended in the queue.
    let held = (peak_open + peak_pending).max(1);
    let bound_mib = (held * BYTES_PER_FLOW_BOUND) as f64 / 1048576.0 + 16.0;
    println!(
        "flood: {FLOWS} one-packet SYN flows in 10 s, max_flows {}, max_pending {DEFAULT_MAX_PENDING}, min_packets {min_packets}",
        if max_flows == 0 {
            "none".to_string()
        } else {
            max_flows.to_string()
        }
    );
    println!(
        "fed in {secs:.2} s ({:.0} frames/s); open {} (peak {peak_open}), evicted {}, finished {}, too short {}, pending {}, dropped {}",
        f64::from(FLOWS) / secs,
        st.flows_open,
        st.flows_evicted,
        st.flows_finished,
        st.flows_too_short,
        feed.pending(),
        st.flows_dropped
    );
    println!(
        "peak RSS: {:.1} MiB before, {:.1} MiB after: growth {growth_mib:.1} MiB ({:.0} bytes per held flow); bound {bound_mib:.0} MiB: {}",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        growth_mib * 1048576.0 / held as f64,
        if growth_mib <= bound_mib {
            "within"
        } else {
            "EXCEEDED"
        }
    );
}
