//! Real captures (../shared/data): flow counts against the independent dpkt
//! count in expected_flow_counts.json, and robustness over every file.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use traffic_moe::traffic::capture::container::CaptureErrorKind;
use traffic_moe::traffic::capture::decode::SkipReason;
use traffic_moe::traffic::capture::reader::{
    ReadConfig, find_captures, read_capture, read_captures,
};
use traffic_moe::traffic::capture::stats::FileStats;
use traffic_moe::traffic::types::{PROTO_TCP, PROTO_UDP};

/// One row of expected_flow_counts.json (fields we compare).
#[derive(Debug, Clone, serde::Deserialize)]
struct Expected {
    file: String,
    packets: u64,
    flows: u64,
    flows_ge3: u64,
    tcp_flows_ge3: u64,
    udp_flows_ge3: u64,
    linktype: Vec<u32>,
}

fn load_expected(data: &Path) -> HashMap<String, Expected> {
    let text = std::fs::read_to_string(data.join("expected_flow_counts.json"))
        .expect("expected_flow_counts.json is readable");
    let rows: Vec<Expected> =
        serde_json::from_str(&text).expect("expected_flow_counts.json parses");
    rows.into_iter().map(|r| (r.file.clone(), r)).collect()
}

/// The dpkt count's rules: one flow per bidirectional 5-tuple per file.
fn counting_config() -> ReadConfig {
    ReadConfig {
        max_packets: 1,
        payload_bytes: 0,
        idle_timeout_ns: u64::MAX,
        split_on_fin_rst: false,
        // dpkt holds every flow: no early ends.
        max_flows: usize::MAX,
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    frames: u64,
    flows: u64,
    tcp_ge3: u64,
    udp_ge3: u64,
}

fn count_file(path: &Path) -> Counts {
    count_file_stats(path).0
}

fn count_file_stats(path: &Path) -> (Counts, FileStats) {
    let mut c = Counts::default();
    let st = read_capture(path, 0, &counting_config(), &mut |f| {
        c.flows += 1;
        if f.total_packets >= 3 {
            match f.key.proto {
                PROTO_TCP => c.tcp_ge3 += 1,
                PROTO_UDP => c.udp_ge3 += 1,
                _ => {}
            }
        }
    });
    c.frames = st.frames;
    (c, st)
}

#[test]
fn iot_sentinel_flow_counts_match_dpkt() {
    let Some(dir) = common::shared_data("iot-sentinel") else {
        return;
    };
    let data = dir.parent().unwrap().to_path_buf();
    let expected = load_expected(&data);
    let files = find_captures(&dir).unwrap();
    assert_eq!(files.len(), 550, "iot-sentinel holds 550 captures");
    let (mut total_ge3, mut total_packets, mut total_flows, mut dpkt_ge3) = (0, 0, 0, 0);
    let mut diffs = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&data)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let exp = expected
            .get(&rel)
            .unwrap_or_else(|| panic!("{rel} not in expected_flow_counts.json"));
        let got = count_file(path);
        dpkt_ge3 += exp.flows_ge3;
        total_ge3 += got.tcp_ge3 + got.udp_ge3;
        total_packets += got.frames;
        total_flows += got.flows;
        let want = Counts {
            frames: exp.packets,
            flows: exp.flows,
            tcp_ge3: exp.tcp_flows_ge3,
            udp_ge3: exp.udp_flows_ge3,
        };
        if got != want {
            diffs.push(format!("{rel}: got {got:?}, dpkt {want:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "per-file differences:\n{}",
        diffs.join("\n")
    );
    assert_eq!(total_packets, 193_421);
    assert_eq!(total_flows, 15_065);
    assert_eq!(total_ge3, dpkt_ge3);
    assert_eq!(total_ge3, 9_280);
}

/// Why a file of corpus/ or ndpi/pcap counts differently from dpkt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// PPPoE session frames (also inside QinQ): we decode the IP inside,
    /// dpkt does not.
    Pppoe,
    /// Cisco HDLC (link type 104): we decode it, dpkt does not.
    CiscoHdlc,
    /// FDDI (10), 802.11 (105), behind radiotap (127) or PPI (192), and
    /// NFLOG (239): we decode the IP they carry, dpkt does not.
    LinkTypeDpktSkips,
    /// LINKTYPE_PPP (9) without the 0xff03 address/control bytes: we decode
    /// it, dpkt's PPP header expects them.
    Ppp,
    /// MPLS label stacks: we decode the IP below them, dpkt does not.
    Mpls,
    /// IPv6 hop-by-hop, routing (type 0, segment routing), destination
    /// options with a home address, mobility headers: we walk them to the
    /// transport header, dpkt gives up.
    Ipv6ExtHeaders,
    /// pcapng files whose later interfaces have another link type: we decode
    /// every interface's own, dpkt uses the first one for all.
    LaterPcapngInterface,
    /// tcpdump fuzz files with FCS bits in the upper bits of the link-type
    /// field: we mask them, dpkt sees an unknown link type.
    FcsBits,
    /// We decode the transport header of first IP fragments, dpkt does not.
    FirstFragment,
    /// IP version nibbles that do not match the EtherType / link type
    /// (fuzzed files, an IPv6 packet under LINKTYPE_IPV4): malformed to us,
    /// accepted by dpkt.
    WrongIpVersion,
    /// A last record whose captured length is past any frame's (and the
    /// file's end): a corrupt-length warning with its offset to us, the rest
    /// of the file as one more packet to dpkt.
    CorruptLastLength,
}

use Reason::*;

/// Every file of corpus/ and ndpi/pcap whose counts differ from dpkt's:
/// (file, our counts, dpkt's counts, reason), counts being
/// [frames, flows, TCP flows >= 3 packets, UDP flows >= 3 packets] under the
/// dpkt rules (`counting_config`). Derived by running our reader; each row's
/// reason was checked against the file's bytes and is checked again below
/// against what the reader reports.
#[rustfmt::skip]
const KNOWN_DIFFERENCES: &[(&str, [u64; 4], [u64; 4], Reason)] = &[
    ("corpus/pcapplusplus/Tests/ExamplesTest/pcap_examples/ipv6-frag.pcap", [6, 1, 0, 1], [6, 1, 0, 0], FirstFragment),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/CiscoHDLC.pcap", [3, 1, 0, 0], [3, 0, 0, 0], CiscoHdlc),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/PPPoESession.pcap", [2, 1, 0, 0], [2, 0, 0, 0], Pppoe),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/ipv6_opt_fragments.pcap", [4, 1, 0, 0], [4, 0, 0, 0], FirstFragment),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/ipv6_options.pcap", [6, 2, 0, 0], [6, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/ldap.pcapng", [25, 6, 1, 0], [25, 5, 1, 0], LaterPcapngInterface),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/sip_reqs.pcap", [4, 4, 0, 0], [4, 2, 0, 0], Pppoe),
    ("corpus/pcapplusplus/Tests/Pcap++Test/PcapExamples/ip6_fragments.pcap", [36, 2, 0, 0], [36, 0, 0, 0], FirstFragment),
    ("corpus/pcapplusplus/Tests/Pcap++Test/PcapExamples/one_http_stream_rst.pcap", [10, 1, 1, 0], [10, 0, 0, 0], Pppoe),
    ("corpus/pcapplusplus/Tests/Pcap++Test/PcapExamples/pcapng-example.pcapng", [159, 15, 12, 0], [159, 1, 1, 0], LaterPcapngInterface),
    ("corpus/suricata-verify/tests/bug-1450-04/tls_DER-incomplete-header.pcap", [6, 1, 1, 0], [7, 1, 1, 0], CorruptLastLength),
    ("corpus/suricata-verify/tests/bug-1450-05/tls_DER-incomplete-content.pcap", [6, 1, 1, 0], [7, 1, 1, 0], CorruptLastLength),
    ("corpus/suricata-verify/tests/bug-4810/pppoe-session-http.pcap", [30, 1, 1, 0], [30, 0, 0, 0], Pppoe),
    ("corpus/suricata-verify/tests/bug-6875-01/fuzz.pcap", [1, 0, 0, 0], [2, 0, 0, 0], CorruptLastLength),
    ("corpus/suricata-verify/tests/decode-chdlc-01/hdlc-http_1tx.pcap", [17, 1, 1, 0], [17, 0, 0, 0], CiscoHdlc),
    ("corpus/suricata-verify/tests/defrag/bug-6887-defrag-eth-vlan-ipv6-tcp/frag-eth-vlan-ipv6-tcp.pcap", [3, 1, 0, 0], [3, 0, 0, 0], FirstFragment),
    ("corpus/suricata-verify/tests/defrag/bug-6887-defrag-ipv6-tcp/frag-ip-tcp.pcap", [3, 1, 0, 0], [3, 0, 0, 0], FirstFragment),
    ("corpus/suricata-verify/tests/defrag/bug-6887-defrag-ppp-ipv6-tcp/frag-ppp-ipv6-tcp.pcap", [3, 1, 0, 0], [3, 0, 0, 0], Ppp),
    ("corpus/suricata-verify/tests/ipv6-hdr-keyword-02/input.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/suricata-verify/tests/smtp-to-comma/10.7.29.101_49898-178.63.41.150_25.pcap", [18, 1, 1, 0], [19, 1, 1, 0], CorruptLastLength),
    ("corpus/tcpdump/tests/LINKTYPE_IPV4_invalid.pcap", [1, 0, 0, 0], [1, 1, 0, 0], WrongIpVersion),
    ("corpus/tcpdump/tests/LINKTYPE_IPV6_invalid.pcap", [1, 0, 0, 0], [1, 1, 0, 0], WrongIpVersion),
    ("corpus/tcpdump/tests/beep-oobr.pcap", [2, 1, 0, 0], [2, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/bigtcp-ipv6-hbh.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/tcpdump/tests/bootp_asan.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/esp_truncated.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/heapoverflow-tcp_print.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/hoobr_aodv_extension.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/hoobr_bfd_print.pcap", [3, 1, 0, 0], [3, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/hoobr_nfs_printfh.pcap", [9, 1, 0, 0], [9, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/hoobr_nfs_xid_map_enter.pcap", [9, 1, 0, 0], [9, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/hoobr_ripng_print.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/hoobr_zephyr_parse_field.pcap", [2, 1, 0, 0], [2, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/ipv6-routing-header.pcap", [4, 2, 0, 0], [4, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/tcpdump/tests/ipv6-srh-insert-cksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/tcpdump/tests/isakmp-3948-oobr-2.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/isakmp-rfc3948-oobr.pcap", [23, 1, 0, 0], [23, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/kh-timed-001-oobr.pcap", [5, 1, 0, 0], [5, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/kh-timed-002-oobr.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/kh-timed-004-oobr.pcap", [2, 1, 0, 0], [2, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/l2tp-avp-overflow.pcap", [20, 4, 0, 1], [20, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/nfs-attr-oobr.pcap", [48, 1, 0, 0], [48, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/quic_32_bit_pointer_overflow.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/tcpdump/tests/rsvp_uni-oobr-3.pcap", [3, 1, 0, 0], [3, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/snmp-heapoverflow-1.pcap", [5, 1, 0, 0], [5, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/snmp-heapoverflow-2.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/tcp-auth-heapoverflow.pcap", [1, 1, 0, 0], [1, 0, 0, 0], FcsBits),
    ("corpus/tcpdump/tests/tok2str-oobr-2.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Mpls),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-hoa-tcp-bad-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-hoa-tcp-good-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-hoa-udp-bad-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-hoa-udp-good-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-route0-tcp-bad-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-route0-tcp-good-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-route0-udp-bad-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/chksums/ip6-route0-udp-good-chksum.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/ipv6-fragmented-dns.pcap", [8, 2, 0, 1], [8, 2, 0, 0], FirstFragment),
    ("corpus/zeek/testing/btest/Traces/ipv6-hbh-routing0.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/ipv6-mobility-dst-opts.pcap", [3, 1, 0, 0], [3, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/ipv6-reassembly-state-leak.pcap", [92, 2, 0, 0], [92, 0, 0, 0], FirstFragment),
    ("corpus/zeek/testing/btest/Traces/mobile-ipv6/ipv6-mobile-hoa.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/mobile-ipv6/ipv6-mobile-routing.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ipv6ExtHeaders),
    ("corpus/zeek/testing/btest/Traces/ppp/quic-interop-retry.pcap", [26, 1, 0, 1], [26, 0, 0, 0], Ppp),
    ("corpus/zeek/testing/btest/Traces/pppoe-over-qinq.pcap", [86, 1, 1, 0], [86, 0, 0, 0], Pppoe),
    ("corpus/zeek/testing/btest/Traces/pppoe.pcap", [65, 2, 0, 0], [65, 0, 0, 0], Pppoe),
    ("corpus/zeek/testing/btest/Traces/quic/interop/quic-go_quic-go/handshake.pcap", [13, 1, 0, 1], [13, 0, 0, 0], Ppp),
    ("corpus/zeek/testing/btest/Traces/quic/interop/quic-go_quic-go/retry.pcap", [26, 1, 0, 1], [26, 0, 0, 0], Ppp),
    ("corpus/zeek/testing/btest/Traces/quic/interop/quic-go_quic-go/zerortt.pcap", [104, 2, 0, 2], [104, 0, 0, 0], Ppp),
    ("ndpi/pcap/BGP_redist.pcap", [2, 2, 0, 0], [2, 0, 0, 0], CiscoHdlc),
    ("corpus/pcapplusplus/Tests/Packet++Test/PacketExamples/nflogPacket.pcap", [1, 1, 0, 0], [1, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/tcpdump/tests/ieee802.11_htc.pcap", [1, 1, 0, 0], [1, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/tcpdump/tests/nflog.pcap", [4, 4, 0, 0], [4, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/zeek/testing/btest/Traces/nflog-http.pcap", [13, 1, 1, 0], [13, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/zeek/testing/btest/Traces/radiotap.pcap", [3, 2, 0, 0], [3, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/zeek/testing/btest/Traces/wlanmon.pcap", [3, 2, 0, 0], [3, 0, 0, 0], LinkTypeDpktSkips),
    ("ndpi/pcap/someip_sd_sample.pcap", [6, 2, 0, 1], [6, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/zeek/testing/btest/Traces/dns-inverse-query.pcap", [11, 1, 1, 0], [11, 0, 0, 0], LinkTypeDpktSkips),
    ("corpus/zeek/testing/btest/Traces/llc.pcap", [1333, 1, 1, 0], [1333, 0, 0, 0], LinkTypeDpktSkips),
    ("ndpi/pcap/discord_mid_flow.pcap", [40, 1, 0, 1], [40, 0, 0, 0], Pppoe),
    ("ndpi/pcap/dlt_ppp.pcap", [1, 1, 0, 0], [1, 0, 0, 0], Ppp),
    ("ndpi/pcap/dns.pcap", [5, 2, 0, 1], [5, 1, 0, 1], Pppoe),
    ("ndpi/pcap/dns_fragmented.pcap", [66, 21, 2, 1], [66, 21, 2, 0], FirstFragment),
    ("ndpi/pcap/fuzz-2006-06-26-2594.pcap", [691, 244, 2, 48], [691, 245, 2, 48], WrongIpVersion),
    ("ndpi/pcap/fuzz-2006-09-29-28586.pcap", [131, 37, 11, 0], [131, 38, 11, 0], WrongIpVersion),
    ("ndpi/pcap/fuzz-2020-02-16-11740.pcap", [366, 68, 0, 3], [366, 74, 0, 3], WrongIpVersion),
    ("ndpi/pcap/fuzz-2021-10-13.pcap", [0, 0, 0, 0], [1, 0, 0, 0], CorruptLastLength),
    ("ndpi/pcap/syslog.pcap", [94, 20, 1, 8], [94, 17, 1, 7], Pppoe),
];

/// Last records of a corrupt length among corpus/ and ndpi/pcap (each a
/// warning; a truncation warning before the reader checked the length).
const CORRUPT_LENGTH_FILES: u64 = 5;

/// Every corpus/ndpi file counts as dpkt counts, except the files of
/// `KNOWN_DIFFERENCES`, which count exactly as written there (a known
/// difference whose counts change fails too), each for a reason the
/// reader's own statistics support. No file fails; exactly
/// `CORRUPT_LENGTH_FILES` end in a record of a corrupt length.
#[test]
fn corpus_and_ndpi_flow_counts_match_dpkt_or_a_known_difference() {
    let (Some(corpus), Some(ndpi)) = (
        common::shared_data("corpus"),
        common::shared_data("ndpi/pcap"),
    ) else {
        return;
    };
    let data = corpus.parent().unwrap();
    let expected = load_expected(data);
    let mut files = find_captures(&corpus).unwrap();
    files.extend(find_captures(&ndpi).unwrap());
    assert_eq!(files.len(), 3_821);
    let known: HashMap<&str, _> = KNOWN_DIFFERENCES
        .iter()
        .map(|&(f, ours, dpkt, why)| (f, (ours, dpkt, why)))
        .collect();
    assert_eq!(known.len(), KNOWN_DIFFERENCES.len(), "a file listed twice");

    let (mut failed, mut corrupt_length, mut differing) = (0, 0, 0);
    let mut problems = Vec::new();
    for path in &files {
        let rel = rel(path, data);
        let exp = &expected[&rel];
        let (got, st) = count_file_stats(path);
        failed += u64::from(st.error.is_some());
        let file_corrupt_length = st.warnings.iter().any(|w| {
            w.kind == CaptureErrorKind::Corrupt && w.to_string().contains("record claims")
        });
        corrupt_length += u64::from(file_corrupt_length);
        let ours = [got.frames, got.flows, got.tcp_ge3, got.udp_ge3];
        let dpkt = [exp.packets, exp.flows, exp.tcp_flows_ge3, exp.udp_flows_ge3];
        differing += u64::from(ours != dpkt);
        let Some(&(k_ours, k_dpkt, why)) = known.get(rel.as_str()) else {
            if ours != dpkt {
                problems.push(format!(
                    "unexplained: (\"{rel}\", {ours:?}, {dpkt:?}, ?) links {:?} dpkt {:?}",
                    st.link_types, exp.linktype
                ));
            }
            continue;
        };
        if (ours, dpkt) != (k_ours, k_dpkt) {
            problems.push(format!(
                "changed: {rel}: now ours {ours:?} dpkt {dpkt:?}, table ours {k_ours:?} dpkt {k_dpkt:?}"
            ));
            continue;
        }
        if ours == dpkt {
            problems.push(format!("{rel}: listed but now equal to dpkt"));
        }
        if let Err(e) = reason_fits(why, ours, dpkt, &st, &exp.linktype, file_corrupt_length) {
            problems.push(format!("{rel}: {why:?} does not fit: {e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(differing, KNOWN_DIFFERENCES.len() as u64);
    assert_eq!(
        differing, 87,
        "docs/figures.md: 87 of 3,821 files differ from dpkt"
    );
    assert_eq!(failed, 0, "no file fails");
    assert_eq!(corrupt_length, CORRUPT_LENGTH_FILES);
    let corrupt_rows = KNOWN_DIFFERENCES
        .iter()
        .filter(|r| r.3 == CorruptLastLength)
        .count() as u64;
    assert_eq!(corrupt_rows, CORRUPT_LENGTH_FILES);
}

/// What the reader's statistics must show for a difference to be `why`.
fn reason_fits(
    why: Reason,
    ours: [u64; 4],
    dpkt: [u64; 4],
    st: &FileStats,
    dpkt_links: &[u32],
    corrupt_length: bool,
) -> Result<(), String> {
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    let decodes_more = ours[0] == dpkt[0] && ours[1] >= dpkt[1];
    let ours_links: Vec<u32> = st.link_types.keys().copied().collect();
    match why {
        CorruptLastLength => {
            check(corrupt_length, "no corrupt-length warning")?;
            check(ours[0] + 1 == dpkt[0], "dpkt should count one more frame")?;
            check(ours[1..] == dpkt[1..], "flows should agree")
        }
        FcsBits => {
            let lt = dpkt_links.first().copied().unwrap_or(0);
            check(lt >> 16 != 0, "dpkt's link type has no upper bits")?;
            check(
                ours_links == [lt & 0xffff],
                "we should decode the masked link type",
            )?;
            check(decodes_more, "we should decode more")
        }
        LaterPcapngInterface => {
            check(ours_links.len() > 1, "one link type only")?;
            check(
                ours_links.iter().any(|l| !dpkt_links.contains(l)),
                "dpkt knows every link type",
            )?;
            check(decodes_more, "we should decode more")
        }
        CiscoHdlc => {
            check(ours_links == [104], "not Cisco HDLC")?;
            check(decodes_more, "we should decode more")
        }
        LinkTypeDpktSkips => {
            check(
                ours_links.len() == 1 && [10, 105, 127, 192, 239].contains(&ours_links[0]),
                "not FDDI, 802.11, radiotap, PPI or NFLOG",
            )?;
            check(decodes_more, "we should decode more")
        }
        Ppp => {
            check(ours_links == [9], "not LINKTYPE_PPP")?;
            check(decodes_more, "we should decode more")
        }
        FirstFragment => {
            check(st.first_fragments > 0, "no first fragment")?;
            check(decodes_more, "we should decode more")
        }
        WrongIpVersion => {
            check(st.skips.get(SkipReason::Malformed) > 0, "nothing malformed")?;
            check(
                ours[0] == dpkt[0] && ours[1] < dpkt[1],
                "we should count fewer flows",
            )
        }
        Pppoe | Mpls | Ipv6ExtHeaders => check(decodes_more, "we should decode more"),
    }
}

/// Every file of corpus/ and ndpi/pcap is read without a panic and accounted
/// for (ok + warned + failed == files) by the parallel reader, with the
/// default flow rules.
#[test]
fn corpus_and_ndpi_are_read_and_accounted() {
    let (Some(corpus), Some(ndpi)) = (
        common::shared_data("corpus"),
        common::shared_data("ndpi/pcap"),
    ) else {
        return;
    };
    let mut files = find_captures(&corpus).unwrap();
    files.extend(find_captures(&ndpi).unwrap());
    // find_captures agrees with the independent listing.
    let data = corpus.parent().unwrap();
    let expected = load_expected(data);
    let listed = expected
        .keys()
        .filter(|k| k.starts_with("corpus/") || k.starts_with("ndpi/pcap/"))
        .count();
    assert_eq!(files.len(), listed);

    let flows = Mutex::new(0u64);
    let stats = read_captures(&files, &ReadConfig::default(), false, &|_f| {
        *flows.lock().unwrap() += 1;
    });
    println!("{stats}");
    assert_eq!(stats.files, files.len() as u64);
    assert_eq!(
        stats.files_ok + stats.files_warned + stats.files_failed,
        stats.files
    );
    assert_eq!(stats.flows, *flows.lock().unwrap());
    assert_eq!(
        stats.problems.len() as u64,
        stats.files_failed + stats.files_warned,
        "one problem per failed or warned file"
    );
    // Every frame is either a flow packet or counted as skipped.
    assert_eq!(
        stats.frames,
        stats.packets + stats.skips.total() + stats.unknown_interface_frames
    );
    let expected_frames: u64 = files.iter().map(|p| expected[&rel(p, data)].packets).sum();
    // dpkt also counts the rest of a file after a corrupt last length as a packet.
    assert_eq!(stats.frames + CORRUPT_LENGTH_FILES, expected_frames);
    assert_eq!(stats.files_failed, 0);
    assert_eq!(stats.files_warned, CORRUPT_LENGTH_FILES);
    assert!(stats.flows > 10_000, "{} flows", stats.flows);
}

fn rel(p: &Path, data: &Path) -> String {
    p.strip_prefix(data).unwrap().to_string_lossy().to_string()
}
