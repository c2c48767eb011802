//! Flow table behaviour: direction, FIN / RST eviction, idle timeout, the K
//! cap, and bounded memory.

use std::net::{IpAddr, Ipv4Addr};

use traffic_moe::traffic::capture::decode::DecodedPacket;
use traffic_moe::traffic::capture::reader::ReadConfig;
use traffic_moe::traffic::flows::table::{CLOSE_LINGER_NS, FlowTable};
use traffic_moe::traffic::types::{Flow, PROTO_TCP, PROTO_UDP, tcp_flags::*};

const SEC: u64 = 1_000_000_000;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200));

/// A TCP packet from the client (`up`) or the server.
fn tcp_pkt(up: bool, cport: u16, flags: u8, payload: &[u8]) -> DecodedPacket<'_> {
    let (src, dst, sp, dp) = if up {
        (CLIENT, SERVER, cport, 443)
    } else {
        (SERVER, CLIENT, 443, cport)
    };
    DecodedPacket {
        src,
        dst,
        src_port: sp,
        dst_port: dp,
        proto: PROTO_TCP,
        ip_len: 40 + payload.len() as u32,
        tcp_flags: flags,
        payload_len: payload.len() as u32,
        payload,
        truncated: false,
        first_fragment: false,
        macs: None,
    }
}

fn udp_pkt(up: bool, payload: &[u8]) -> DecodedPacket<'_> {
    DecodedPacket {
        proto: PROTO_UDP,
        tcp_flags: 0,
        ip_len: 28 + payload.len() as u32,
        ..tcp_pkt(up, 5000, 0, payload)
    }
}

struct Run {
    table: FlowTable,
    out: Vec<Flow>,
}

impl Run {
    fn new(cfg: ReadConfig) -> Run {
        Run {
            table: FlowTable::new(&cfg, 3),
            out: Vec::new(),
        }
    }
    fn push(&mut self, ts: u64, p: &DecodedPacket<'_>) {
        let out = &mut self.out;
        self.table.push(ts, p, &mut |f| out.push(f));
    }
    fn finish(mut self) -> Vec<Flow> {
        let out = &mut self.out;
        self.table.flush(&mut |f| out.push(f));
        self.out
    }
}

#[test]
fn direction_is_relative_to_the_first_sender() {
    let mut r = Run::new(ReadConfig::default());
    // The server speaks first (capture started mid-flow): it is the initiator.
    r.push(SEC, &tcp_pkt(false, 1111, ACK, b"x"));
    r.push(SEC + 1, &tcp_pkt(true, 1111, ACK, b""));
    r.push(SEC + 2, &tcp_pkt(false, 1111, PSH | ACK, b"y"));
    let flows = r.finish();
    assert_eq!(flows.len(), 1);
    let f = &flows[0];
    assert_eq!(f.initiator.ip, SERVER);
    assert_eq!(f.responder.ip, CLIENT);
    let dirs: Vec<bool> = f.packets.iter().map(|p| p.from_initiator).collect();
    assert_eq!(dirs, [true, false, true]);
    assert_eq!(
        (f.first_ts_ns, f.last_ts_ns, f.file_index),
        (SEC, SEC + 2, 3)
    );
}

/// A whole TCP session: handshake, data, FIN both ways, last ACK.
fn session(r: &mut Run, t0: u64, cport: u16) {
    let steps: [(bool, u8, &[u8]); 7] = [
        (true, SYN, b""),
        (false, SYN | ACK, b""),
        (true, ACK, b""),
        (true, PSH | ACK, b"GET /"),
        (true, FIN | ACK, b""),
        (false, FIN | ACK, b""),
        (true, ACK, b""),
    ];
    for (i, (up, flags, data)) in steps.into_iter().enumerate() {
        r.push(t0 + i as u64 * 1000, &tcp_pkt(up, cport, flags, data));
    }
}

#[test]
fn fin_both_ways_ends_the_flow_and_a_new_syn_starts_another() {
    let mut r = Run::new(ReadConfig::default());
    session(&mut r, SEC, 2222);
    assert!(r.out.is_empty(), "trailing ACK linger: not emitted yet");
    // Same 5-tuple reused right away: the SYN opens a second flow.
    session(&mut r, SEC + 100_000, 2222);
    assert_eq!(
        r.out.len(),
        1,
        "the first session was emitted when the new SYN came"
    );
    assert_eq!(
        r.out[0].total_packets, 7,
        "the last ACK joined the closed flow"
    );
    let flows = r.finish();
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[1].total_packets, 7);
}

#[test]
fn closed_flows_are_evicted_after_the_linger_time() {
    let mut r = Run::new(ReadConfig::default());
    session(&mut r, SEC, 2222);
    // Unrelated traffic later on drives the sweep.
    r.push(SEC + CLOSE_LINGER_NS * 3, &udp_pkt(true, b"tick"));
    assert_eq!(r.out.len(), 1);
    assert_eq!(r.out[0].key.proto, PROTO_TCP);
    assert_eq!(r.table.active(), 1);
}

#[test]
fn rst_ends_the_flow() {
    let mut r = Run::new(ReadConfig::default());
    r.push(SEC, &tcp_pkt(true, 3333, SYN, b""));
    r.push(SEC + 1, &tcp_pkt(false, 3333, RST | ACK, b""));
    r.push(SEC + 2, &tcp_pkt(true, 3333, SYN, b""));
    r.push(SEC + 3, &tcp_pkt(false, 3333, SYN | ACK, b""));
    let flows = r.finish();
    assert_eq!(
        flows.iter().map(|f| f.total_packets).collect::<Vec<_>>(),
        [2, 2]
    );
}

#[test]
fn a_fin_from_one_side_only_does_not_end_the_flow() {
    let mut r = Run::new(ReadConfig::default());
    r.push(SEC, &tcp_pkt(true, 4444, FIN | ACK, b""));
    r.push(SEC + 1, &tcp_pkt(true, 4444, SYN, b""));
    r.push(SEC + 2, &tcp_pkt(false, 4444, ACK, b""));
    assert_eq!(r.finish().len(), 1);
}

#[test]
fn split_on_fin_rst_off_keeps_one_flow_per_tuple() {
    let mut r = Run::new(ReadConfig {
        split_on_fin_rst: false,
        idle_timeout_ns: u64::MAX,
        ..ReadConfig::default()
    });
    session(&mut r, SEC, 2222);
    session(&mut r, SEC + 1000 * SEC, 2222);
    let flows = r.finish();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].total_packets, 14);
}

#[test]
fn idle_timeout_splits_flows() {
    let cfg = ReadConfig {
        idle_timeout_ns: 10 * SEC,
        ..ReadConfig::default()
    };
    let mut r = Run::new(cfg);
    r.push(SEC, &udp_pkt(true, b"a"));
    r.push(5 * SEC, &udp_pkt(false, b"b"));
    r.push(14 * SEC, &udp_pkt(true, b"c")); // 9 s gap: same flow
    r.push(30 * SEC, &udp_pkt(false, b"d")); // 16 s gap: new flow
    assert_eq!(
        r.out.len(),
        1,
        "the idle flow was emitted before the new one started"
    );
    let flows = r.finish();
    assert_eq!(
        flows.iter().map(|f| f.total_packets).collect::<Vec<_>>(),
        [3, 1]
    );
    // The new flow's initiator is its own first sender (the server here).
    assert_eq!(flows[1].initiator.ip, SERVER);
}

#[test]
fn keeps_first_k_packets_and_caps_payload() {
    let cfg = ReadConfig {
        max_packets: 4,
        payload_bytes: 6,
        ..ReadConfig::default()
    };
    let mut r = Run::new(cfg);
    let long = [0x42u8; 100];
    for i in 0..25u64 {
        r.push(SEC + i, &udp_pkt(i % 2 == 0, &long[..(i as usize % 10)]));
    }
    let flows = r.finish();
    assert_eq!(flows.len(), 1);
    let f = &flows[0];
    assert_eq!(f.total_packets, 25);
    assert_eq!(f.packets.len(), 4);
    assert_eq!(
        f.packets
            .iter()
            .map(|p| p.payload.len())
            .collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(f.last_ts_ns, SEC + 24);
    let mut r = Run::new(ReadConfig {
        payload_bytes: 6,
        ..ReadConfig::default()
    });
    r.push(SEC, &udp_pkt(true, &long));
    let f = &r.finish()[0];
    assert_eq!(f.packets[0].payload, &long[..6]);
    assert_eq!(f.packets[0].payload_len, 100);
}

#[test]
fn memory_stays_bounded_over_many_short_flows() {
    let mut r = Run::new(ReadConfig::default());
    let mut peak = 0;
    // 20,000 sessions, one every 10 ms, each closed by FIN or RST.
    for i in 0..20_000u64 {
        let t = SEC + i * 10_000_000;
        let port = 1024 + (i % 60_000) as u16;
        r.push(t, &tcp_pkt(true, port, SYN, b""));
        r.push(
            t + 1,
            &tcp_pkt(false, port, if i % 2 == 0 { RST } else { FIN | ACK }, b""),
        );
        r.push(t + 2, &tcp_pkt(true, port, FIN | ACK, b""));
        peak = peak.max(r.table.active());
    }
    // At most ~linger (2 s) / 10 ms flows are ever held.
    assert!(peak < 400, "peak {peak} active flows");
    assert_eq!(r.finish().len(), 20_000);
}

/// Frames stamped u64::MAX (a pcapng timestamp past 2554, clamped; or a C
/// API caller's) sweep the table once: each used to sweep it again, every
/// flow visited per frame, so a capture of N such flows took N^2 / 2 steps
/// (20,000 flows: 3.8 s instead of 0.07 s).
#[test]
fn frames_at_the_end_of_time_sweep_the_table_once() {
    let mut table = FlowTable::new(&ReadConfig::default(), 0);
    let mut ended = Vec::new();
    let mut port = 1000;
    let mut packet = |table: &mut FlowTable, ts: u64, ended: &mut Vec<Flow>| {
        port += 1;
        let p = DecodedPacket {
            src_port: port,
            ..udp_pkt(true, b"q")
        };
        table.push(ts, &p, &mut |f| ended.push(f));
    };
    packet(&mut table, 5 * SEC, &mut ended);
    assert_eq!(table.sweeps(), 1);
    for _ in 0..1000 {
        packet(&mut table, u64::MAX, &mut ended);
    }
    // The first frame at u64::MAX swept (ending the flow idle since 5 s).
    assert_eq!(table.sweeps(), 2);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].first_ts_ns, 5 * SEC);
    assert_eq!(table.active(), 1000);
    // advance / flush still end what is left.
    table.sweep(u64::MAX, &mut |f| ended.push(f));
    assert_eq!((table.sweeps(), ended.len()), (3, 1));
    table.flush(&mut |f| ended.push(f));
    assert_eq!(ended.len(), 1001);
}

/// A capture whose clock goes back (two captures joined in the wrong order,
/// like nDPI's ipsec_isakmp_esp.pcap: 19 hours back at frame 287; or one
/// frame stamped years ahead) still ends idle flows on the earlier clock:
/// the next sweep was due a sweep interval after the latest stamp, so none
/// ran until the clock caught up again, and every flow waited for the end of
/// the file (or a live stream's flush) however long it had been idle.
#[test]
fn idle_flows_still_end_after_the_clock_goes_back() {
    let mut r = Run::new(ReadConfig::default());
    let from = |port: u16| DecodedPacket {
        src_port: port,
        ..udp_pkt(true, b"q")
    };
    r.push(1000 * SEC, &from(1));
    // Back by 990 s: a flow starts on the earlier clock ...
    r.push(10 * SEC, &from(2));
    // ... and is idle for 190 s (> 120 s) when this frame comes.
    r.push(200 * SEC, &from(3));
    let ended: Vec<u16> = r.out.iter().map(|f| f.initiator.port).collect();
    assert_eq!(ended, [2], "the flow idle on the earlier clock has ended");
    // Flow 1's last packet is stamped after the clock: it is not idle.
    let rest: Vec<u16> = r.finish()[1..].iter().map(|f| f.initiator.port).collect();
    assert_eq!(rest, [3, 1]);
}
