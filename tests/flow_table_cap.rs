//! The flow table's cap (`ReadConfig::max_flows`): a new flow beyond it ends
//! the least recently active flow, which is emitted, counted, and chosen by
//! packet order (never hash order), so output is the same on every run and
//! with either hasher.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};

use traffic_moe::traffic::capture::decode::DecodedPacket;
use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, eth_ipv4, udp};
use traffic_moe::traffic::capture::reader::{ReadConfig, read_capture};
use traffic_moe::traffic::capture::stats::RunStats;
use traffic_moe::traffic::flows::table::{FastState, FlowTable, KeyedState};
use traffic_moe::traffic::types::{Flow, PROTO_UDP};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200));

/// A UDP packet of the flow named by the client's port.
fn pkt(port: u16) -> DecodedPacket<'static> {
    DecodedPacket {
        src: CLIENT,
        dst: SERVER,
        src_port: port,
        dst_port: 53,
        proto: PROTO_UDP,
        ip_len: 29,
        tcp_flags: 0,
        payload_len: 1,
        payload: b"q",
        truncated: false,
        first_fragment: false,
        macs: None,
    }
}

fn capped(max_flows: usize) -> ReadConfig {
    ReadConfig {
        max_flows,
        ..ReadConfig::default()
    }
}

/// Pushes (timestamp, port) packets; returns the flows emitted while pushing
/// and those flushed at the end, and the table's eviction count.
fn run<S: BuildHasher>(
    mut table: FlowTable<S>,
    packets: &[(u64, u16)],
) -> (Vec<Flow>, Vec<Flow>, u64) {
    let mut during = Vec::new();
    for &(ts, port) in packets {
        table.push(ts, &pkt(port), &mut |f| during.push(f));
    }
    let evicted = table.evicted();
    let mut flushed = Vec::new();
    table.flush(&mut |f| flushed.push(f));
    (during, flushed, evicted)
}

fn ports(flows: &[Flow]) -> Vec<(u16, u64, u64)> {
    flows
        .iter()
        .map(|f| (f.initiator.port, f.first_ts_ns, f.total_packets))
        .collect()
}

#[test]
fn the_cap_evicts_the_least_recently_active_flow() {
    let packets = [
        (10, 1), // flow 1
        (20, 2), // flow 2
        (30, 3), // flow 3: the table is full
        (40, 1), // flow 1 is active again: flow 2 is now the least recent
        (50, 4), // evicts flow 2
        (60, 5), // evicts flow 3
        (70, 2), // port 2 again: a new flow; evicts flow 1 (last seen at 40)
        (80, 6), // evicts flow 4 (50)
        (80, 7), // evicts flow 5 (60)
        (80, 8), // evicts the second flow 2 (70)
        (90, 9), // 6, 7, 8 tie at 80: the first pushed, 6, goes
    ];
    let (during, flushed, evicted) = run(FlowTable::new(&capped(3), 0), &packets);
    assert_eq!(
        ports(&during),
        [
            (2, 20, 1),
            (3, 30, 1),
            (1, 10, 2),
            (4, 50, 1),
            (5, 60, 1),
            (2, 70, 1),
            (6, 80, 1),
        ]
    );
    assert_eq!(evicted, 7);
    // The end of input flushes by first timestamp, as before.
    assert_eq!(ports(&flushed), [(7, 80, 1), (8, 80, 1), (9, 90, 1)]);

    // The same packets give the same flows in the same order on every run
    // (each table has another random hash key, so another hash order), and
    // with the unkeyed hasher.
    for _ in 0..3 {
        let again = run(FlowTable::new(&capped(3), 0), &packets);
        assert_eq!(again, (during.clone(), flushed.clone(), evicted));
        let unkeyed = FlowTable::with_hasher(&capped(3), 0, FastState::default());
        assert_eq!(
            run(unkeyed, &packets),
            (during.clone(), flushed.clone(), evicted)
        );
    }
}

#[test]
fn a_flood_of_one_packet_flows_never_exceeds_the_cap() {
    const N: u16 = 20_000;
    const CAP: usize = 500;
    let mut table = FlowTable::with_hasher(&capped(CAP), 0, FastState::default());
    let mut out = Vec::new();
    for i in 0..N {
        // 1 ms apart: 20 s in all, well inside the 120 s idle timeout.
        table.push(u64::from(i) * 1_000_000, &pkt(i), &mut |f| out.push(f));
        assert!(table.active() <= CAP, "{} flows after {i}", table.active());
    }
    assert_eq!(table.active(), CAP);
    assert_eq!(table.evicted(), u64::from(N) - CAP as u64);
    // Evicted oldest first: exactly the first N - CAP flows, in order.
    let evicted_ports: Vec<u16> = out.iter().map(|f| f.initiator.port).collect();
    assert_eq!(evicted_ports, (0..N - CAP as u16).collect::<Vec<_>>());
    table.flush(&mut |f| out.push(f));
    assert_eq!(out.len(), usize::from(N));
    assert_eq!(table.emitted(), u64::from(N));
    assert_eq!(table.active(), 0);
}

#[test]
fn a_key_that_returns_after_eviction_is_a_new_flow() {
    let packets = [(10, 1), (20, 2), (30, 3), (40, 1), (50, 1)];
    let (during, flushed, evicted) = run(FlowTable::new(&capped(2), 0), &packets);
    // Flow 1 was evicted by flow 3; port 1 at 40 starts a flow of its own
    // (first timestamp 40, two packets), which evicts flow 2.
    assert_eq!(ports(&during), [(1, 10, 1), (2, 20, 1)]);
    assert_eq!(ports(&flushed), [(3, 30, 1), (1, 40, 2)]);
    assert_eq!(evicted, 2);
}

#[test]
fn a_zero_cap_holds_one_flow_and_never_panics() {
    let (during, flushed, evicted) = run(FlowTable::new(&capped(0), 0), &[(1, 1), (2, 2)]);
    assert_eq!((during.len(), flushed.len(), evicted), (1, 1, 1));
}

#[test]
fn read_capture_counts_evictions_in_its_stats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap(), 1).unwrap();
    let (cli, srv) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    for i in 0..50u16 {
        let frame = eth_ipv4(cli, srv, PROTO_UDP, &udp(1000 + i, 53, b"x"));
        w.write_frame(1_000_000_000 + u64::from(i), &frame).unwrap();
    }
    drop(w);
    let mut firsts = Vec::new();
    let st = read_capture(&path, 0, &capped(10), &mut |f| {
        firsts.push(f.initiator.port)
    });
    assert_eq!((st.flows, st.flows_evicted), (50, 40));
    assert_eq!(&firsts[..3], [1000, 1001, 1002], "oldest evicted first");
    let mut run = RunStats::default();
    run.add_file(&st);
    assert_eq!(run.flows_evicted, 40);
    assert!(run.to_string().contains("40 flows ended early"), "{run}");
    // Under the default cap nothing is evicted.
    let st = read_capture(&path, 0, &ReadConfig::default(), &mut |_| {});
    assert_eq!((st.flows, st.flows_evicted), (50, 0));
}

#[test]
fn each_keyed_hasher_has_its_own_key() {
    // Not a property of the table's output (the tests above show it does not
    // depend on the hash) but of the hasher every table gets: no fixed key
    // for a sender to compute collisions against.
    let key = (1u32, 2u16);
    assert_ne!(
        KeyedState::new().hash_one(key),
        KeyedState::new().hash_one(key)
    );
}

#[test]
fn tokenize_applies_max_flows_and_records_it() {
    use traffic_moe::traffic::dataset::build::{
        DatasetConfig, build_dataset_with, load_dataset_info,
    };
    use traffic_moe::traffic::dataset::labels::LabelSource;
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps").join("dns");
    std::fs::create_dir_all(&caps).unwrap();
    // 30 UDP flows of 3 packets each, interleaved (every flow open at once).
    let mut w = PcapWriter::new(std::fs::File::create(caps.join("a.pcap")).unwrap(), 1).unwrap();
    let (cli, srv) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut ts = 1_000_000_000u64;
    for _ in 0..3 {
        for i in 0..30u16 {
            ts += 1000;
            let frame = eth_ipv4(cli, srv, PROTO_UDP, &udp(2000 + i, 53, b"query"));
            w.write_frame(ts, &frame).unwrap();
        }
    }
    drop(w);
    let build = |max_flows: usize, out: &str| {
        let cfg = DatasetConfig {
            inputs: vec![dir.path().join("caps")],
            labels: LabelSource::None,
            vocab_size: 50,
            min_packets: 1,
            max_flows,
            ..DatasetConfig::default()
        };
        build_dataset_with(&cfg, &dir.path().join(out), false, false).unwrap()
    };
    let free = build(1_000_000, "free");
    assert_eq!(free.read.flows_evicted, 0);
    assert_eq!(free.read.flows, 30);
    // Room for 10: each new flow ends the least recently active one, so
    // every flow is cut into one-packet pieces.
    let capped = build(10, "capped");
    assert_eq!(capped.read.flows_evicted, 30 * 3 - 10);
    assert_eq!(capped.read.flows, 30 * 3);
    assert_eq!(
        load_dataset_info(&dir.path().join("capped"))
            .unwrap()
            .config
            .max_flows,
        10
    );
}
