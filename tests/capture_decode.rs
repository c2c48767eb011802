//! Every decoder path on hand-built frames: link types, VLAN / QinQ, IPv4
//! options and fragments, IPv6 extension headers, truncation, skip reasons.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use traffic_moe::traffic::capture::decode::{DecodedPacket, SkipReason, decode_frame, link};
use traffic_moe::traffic::capture::pcap_writer::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, Ipv4Opts, ethernet, ipv4, ipv6,
    tcp, udp,
};
use traffic_moe::traffic::types::{PROTO_TCP, PROTO_UDP, tcp_flags};

const A4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn a6() -> Ipv6Addr {
    "2001:db8::1".parse().unwrap()
}
fn b6() -> Ipv6Addr {
    "2001:db8::2".parse().unwrap()
}

fn tcp_v4(payload: &[u8]) -> Vec<u8> {
    let seg = tcp(
        40000,
        443,
        1,
        0,
        tcp_flags::PSH | tcp_flags::ACK,
        1024,
        payload,
    );
    ipv4(A4, B4, PROTO_TCP, &seg, &Ipv4Opts::default())
}

fn udp_v6(payload: &[u8]) -> Vec<u8> {
    ipv6(a6(), b6(), PROTO_UDP, &[], &udp(5353, 53, payload))
}

fn decode(link_type: u32, frame: &[u8]) -> Result<DecodedPacket<'_>, SkipReason> {
    decode_frame(link_type, frame, frame.len() as u32)
}

fn assert_tcp_v4(p: &DecodedPacket<'_>, payload: &[u8]) {
    assert_eq!(p.src, IpAddr::V4(A4));
    assert_eq!(p.dst, IpAddr::V4(B4));
    assert_eq!((p.src_port, p.dst_port, p.proto), (40000, 443, PROTO_TCP));
    assert_eq!(p.tcp_flags, tcp_flags::PSH | tcp_flags::ACK);
    assert_eq!(p.ip_len as usize, 40 + payload.len());
    assert_eq!(p.payload_len as usize, payload.len());
    assert_eq!(p.payload, payload);
    assert!(!p.truncated);
}

fn assert_udp_v6(p: &DecodedPacket<'_>, payload: &[u8]) {
    assert_eq!(p.src, IpAddr::V6(a6()));
    assert_eq!(p.dst, IpAddr::V6(b6()));
    assert_eq!((p.src_port, p.dst_port, p.proto), (5353, 53, PROTO_UDP));
    assert_eq!(p.tcp_flags, 0);
    assert_eq!(p.ip_len as usize, 48 + payload.len());
    assert_eq!(p.payload, payload);
}

#[test]
fn ethernet_ipv4_tcp() {
    let f = ethernet(MAC_A, MAC_B, &[], ETHERTYPE_IPV4, &tcp_v4(b"hello"));
    assert_tcp_v4(&decode(link::ETHERNET, &f).unwrap(), b"hello");
}

#[test]
fn ethernet_padding_is_not_payload() {
    // A 0-payload TCP segment in a minimum-size frame: 6 bytes of padding.
    let mut f = ethernet(MAC_A, MAC_B, &[], ETHERTYPE_IPV4, &tcp_v4(b""));
    f.extend_from_slice(&[0xee; 6]);
    let p = decode(link::ETHERNET, &f).unwrap();
    assert_eq!(p.payload, b"");
    assert_eq!(p.payload_len, 0);
    assert_eq!(p.ip_len, 40);
}

#[test]
fn ethernet_vlan_and_qinq() {
    let one = ethernet(
        MAC_A,
        MAC_B,
        &[(ETHERTYPE_VLAN, 10)],
        ETHERTYPE_IPV4,
        &tcp_v4(b"v"),
    );
    assert_tcp_v4(&decode(link::ETHERNET, &one).unwrap(), b"v");
    let two = ethernet(
        MAC_A,
        MAC_B,
        &[(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 20)],
        ETHERTYPE_IPV6,
        &udp_v6(b"qq"),
    );
    assert_udp_v6(&decode(link::ETHERNET, &two).unwrap(), b"qq");
}

#[test]
fn linux_cooked_v1() {
    let mut f = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&tcp_v4(b"sll"));
    assert_tcp_v4(&decode(link::LINUX_SLL, &f).unwrap(), b"sll");
}

#[test]
fn linux_cooked_v2() {
    let mut f = ETHERTYPE_IPV6.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0]);
    assert_eq!(f.len(), 20);
    f.extend_from_slice(&udp_v6(b"sll2"));
    assert_udp_v6(&decode(link::LINUX_SLL2, &f).unwrap(), b"sll2");
    assert_eq!(
        decode(link::LINUX_SLL2, &f[..12]),
        Err(SkipReason::TruncatedHeader)
    );
}

#[test]
fn null_and_loopback_both_byte_orders() {
    for (lt, family) in [
        (link::NULL, 2u32.to_le_bytes()),
        (link::NULL, 2u32.to_be_bytes()),
        (link::LOOP, 2u32.to_be_bytes()),
        (link::LOOP, 2u32.to_le_bytes()),
    ] {
        let mut f = family.to_vec();
        f.extend_from_slice(&tcp_v4(b"lo"));
        assert_tcp_v4(&decode(lt, &f).unwrap(), b"lo");
    }
    // IPv6 families differ per OS (Linux 10, BSDs 24/28/30).
    for fam in [10u32, 24, 28, 30] {
        for bytes in [fam.to_le_bytes(), fam.to_be_bytes()] {
            let mut f = bytes.to_vec();
            f.extend_from_slice(&udp_v6(b"lo6"));
            assert_udp_v6(&decode(link::NULL, &f).unwrap(), b"lo6");
        }
    }
    let mut other = 7u32.to_le_bytes().to_vec();
    other.extend_from_slice(&tcp_v4(b""));
    assert_eq!(decode(link::NULL, &other), Err(SkipReason::NonIpEtherType));
}

#[test]
fn raw_ip_link_types() {
    for lt in [link::RAW, link::RAW_OPENBSD, link::RAW_BSDOS, link::IPV4] {
        assert_tcp_v4(&decode(lt, &tcp_v4(b"raw")).unwrap(), b"raw");
    }
    for lt in [link::RAW, link::RAW_OPENBSD, link::RAW_BSDOS, link::IPV6] {
        assert_udp_v6(&decode(lt, &udp_v6(b"raw6")).unwrap(), b"raw6");
    }
    // The link type promises IPv4 but the packet is IPv6.
    assert_eq!(decode(link::IPV4, &udp_v6(b"")), Err(SkipReason::Malformed));
}

#[test]
fn ipv4_options() {
    let opts = Ipv4Opts {
        options: vec![0x94, 0x04, 0, 0, 1, 1, 1, 0], // router alert + NOPs + EOL
        ..Ipv4Opts::default()
    };
    let seg = tcp(
        40000,
        443,
        1,
        0,
        tcp_flags::PSH | tcp_flags::ACK,
        1024,
        b"opt",
    );
    let ip = ipv4(A4, B4, PROTO_TCP, &seg, &opts);
    assert_eq!(ip[0] & 0x0f, 7);
    let p = decode(link::RAW, &ip).unwrap();
    assert_eq!(p.payload, b"opt");
    assert_eq!(p.ip_len, 28 + 20 + 3);
    assert_eq!((p.src_port, p.dst_port), (40000, 443));
}

#[test]
fn ipv4_fragments_first_used_later_skipped() {
    let seg = udp(1000, 2000, &[7u8; 64]);
    let first = ipv4(
        A4,
        B4,
        PROTO_UDP,
        &seg[..32],
        &Ipv4Opts {
            more_fragments: true,
            ..Ipv4Opts::default()
        },
    );
    let p = decode(link::RAW, &first).unwrap();
    assert!(p.first_fragment);
    assert_eq!((p.src_port, p.dst_port), (1000, 2000));
    assert_eq!(p.payload.len(), 24);
    let later = ipv4(
        A4,
        B4,
        PROTO_UDP,
        &seg[32..],
        &Ipv4Opts {
            fragment_offset: 4,
            ..Ipv4Opts::default()
        },
    );
    assert_eq!(decode(link::RAW, &later), Err(SkipReason::LaterFragment));
}

/// An IPv6 extension header of `len8` 8-byte units (next-header byte filled in by `ipv6`).
fn ext(len8: u8) -> Vec<u8> {
    let mut b = vec![0u8; usize::from(len8) * 8 + 8];
    b[1] = len8;
    b
}

#[test]
fn ipv6_extension_headers() {
    let seg = tcp(40000, 443, 1, 0, tcp_flags::SYN, 1024, b"x6");
    let chain = [(0u8, ext(0)), (43, ext(1)), (60, ext(0))];
    let ip = ipv6(a6(), b6(), PROTO_TCP, &chain, &seg);
    let p = decode(link::RAW, &ip).unwrap();
    assert_eq!((p.src_port, p.dst_port, p.proto), (40000, 443, PROTO_TCP));
    assert_eq!(p.tcp_flags, tcp_flags::SYN);
    assert_eq!(p.payload, b"x6");
    assert_eq!(p.ip_len as usize, ip.len());

    // Fragment header: offset 0 with M flag = first fragment; offset > 0 = later.
    let mut frag = vec![0u8; 8];
    frag[3] = 1;
    let first = ipv6(
        a6(),
        b6(),
        PROTO_UDP,
        &[(44, frag.clone())],
        &udp(1, 2, b"f"),
    );
    let p = decode(link::RAW, &first).unwrap();
    assert!(p.first_fragment);
    assert_eq!((p.src_port, p.dst_port), (1, 2));
    frag[2] = 0x01; // offset 32 units
    let later = ipv6(a6(), b6(), PROTO_UDP, &[(44, frag)], b"rest of it");
    assert_eq!(decode(link::RAW, &later), Err(SkipReason::LaterFragment));

    // ICMPv6 behind a hop-by-hop header.
    let icmp = ipv6(a6(), b6(), 58, &[(0, ext(0))], &[128, 0, 0, 0]);
    assert_eq!(decode(link::RAW, &icmp), Err(SkipReason::Icmp));
}

#[test]
fn truncated_captures() {
    let payload = [0xabu8; 100];
    let full = ethernet(MAC_A, MAC_B, &[], ETHERTYPE_IPV4, &tcp_v4(&payload));
    let orig = full.len() as u32;
    // Cut inside the payload: decoded, marked truncated, declared lengths kept.
    let p = decode_frame(link::ETHERNET, &full[..14 + 40 + 30], orig).unwrap();
    assert!(p.truncated);
    assert_eq!(p.payload.len(), 30);
    assert_eq!(p.payload_len, 100);
    assert_eq!(p.ip_len, 140);
    // Cut inside the TCP header, the IP header, the Ethernet header.
    for cut in [14 + 20 + 10, 14 + 10, 10] {
        assert_eq!(
            decode_frame(link::ETHERNET, &full[..cut], orig),
            Err(SkipReason::TruncatedHeader),
            "cut at {cut}"
        );
    }
    // IPv6 cut inside an extension header.
    let ip = ipv6(
        a6(),
        b6(),
        PROTO_TCP,
        &[(0, ext(2))],
        &tcp(1, 2, 0, 0, 0, 0, b""),
    );
    assert_eq!(
        decode(link::RAW, &ip[..50]),
        Err(SkipReason::TruncatedHeader)
    );
}

#[test]
fn skip_reasons() {
    let arp = ethernet(MAC_A, MAC_B, &[], 0x0806, &[0u8; 28]);
    assert_eq!(decode(link::ETHERNET, &arp), Err(SkipReason::Arp));
    let lldp = ethernet(MAC_A, MAC_B, &[], 0x88cc, &[0u8; 28]);
    assert_eq!(
        decode(link::ETHERNET, &lldp),
        Err(SkipReason::NonIpEtherType)
    );
    let icmp = ipv4(A4, B4, 1, &[8, 0, 0, 0, 0, 0, 0, 0], &Ipv4Opts::default());
    assert_eq!(decode(link::RAW, &icmp), Err(SkipReason::Icmp));
    let gre = ipv4(A4, B4, 47, &[0u8; 8], &Ipv4Opts::default());
    assert_eq!(decode(link::RAW, &gre), Err(SkipReason::OtherIpProtocol));
    // Token Ring (6) is not decoded.
    assert_eq!(
        decode(6, &tcp_v4(b"")),
        Err(SkipReason::UnsupportedLinkType)
    );
    let mut bad_ihl = tcp_v4(b"");
    bad_ihl[0] = 0x43;
    assert_eq!(decode(link::RAW, &bad_ihl), Err(SkipReason::Malformed));
}

/// Deterministic xorshift bytes for the no-panic sweep.
fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[test]
fn never_panics_on_prefixes_or_noise() {
    let frames = [
        ethernet(
            MAC_A,
            MAC_B,
            &[(ETHERTYPE_VLAN, 1)],
            ETHERTYPE_IPV4,
            &tcp_v4(b"abc"),
        ),
        ethernet(
            MAC_A,
            MAC_B,
            &[],
            ETHERTYPE_IPV6,
            &ipv6(a6(), b6(), PROTO_TCP, &[(0, ext(1))], b""),
        ),
        tcp_v4(b"raw"),
        radiotap(0x10, &dot11(0x83, true, ETHERTYPE_IPV4, &tcp_v4(b"w"))),
        nflog(10, false, &udp_v6(b"n")),
    ];
    let link_types = [
        0, 1, 9, 10, 12, 14, 50, 101, 104, 105, 108, 113, 127, 192, 228, 229, 239, 276,
    ];
    for f in &frames {
        for cut in 0..=f.len() {
            for &lt in &link_types {
                let _ = decode_frame(lt, &f[..cut], f.len() as u32);
                let _ = decode_frame(lt, &f[..cut], 0);
            }
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..20_000 {
        let mut bytes = noise(&mut seed, 1 + i % 120);
        // Steer some noise into the interesting paths.
        if i % 3 == 0 && bytes.len() > 14 {
            bytes[12] = 0x08;
            bytes[13] = 0x00;
            bytes[14] = 0x45;
        }
        if i % 3 == 1 {
            bytes[0] = 0x60;
        }
        for &lt in &link_types {
            let _ = decode_frame(lt, &bytes, bytes.len() as u32);
        }
    }
}

#[test]
fn ethernet_addresses_are_kept_for_masking_and_absent_without_ethernet() {
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let seg = traffic_moe::traffic::capture::pcap_writer::udp(1000, 53, b"q");
    let frame = traffic_moe::traffic::capture::pcap_writer::eth_ipv4(a, b, PROTO_UDP, &seg);
    let p = decode(link::ETHERNET, &frame).unwrap();
    use traffic_moe::traffic::capture::pcap_writer::mac_for;
    assert_eq!(
        p.macs,
        Some((mac_for(a), mac_for(b))),
        "(source, destination)"
    );
    // Raw IP: no link header, no addresses.
    let p = decode(link::RAW, &frame[14..]).unwrap();
    assert_eq!(p.macs, None);
}

/// An 802.11 data frame around `ip` (EtherType `et`): frame control flags
/// `flags` (to/from DS, protected, order), QoS when `qos`, then LLC/SNAP.
fn dot11(flags: u8, qos: bool, et: u16, ip: &[u8]) -> Vec<u8> {
    let subtype: u8 = if qos { 0x8 } else { 0 };
    let mut f = vec![(2 << 2) | (subtype << 4), flags, 0, 0];
    // Addresses 1 to 3: receiver, transmitter, and the third.
    for a in [[1u8; 6], [2; 6], [3; 6]] {
        f.extend_from_slice(&a);
    }
    f.extend_from_slice(&[0, 0]); // sequence control
    if flags & 3 == 3 {
        f.extend_from_slice(&[4; 6]);
    }
    if qos {
        f.extend_from_slice(&[0, 0]);
        if flags & 0x80 != 0 {
            f.extend_from_slice(&[0; 4]); // HT control
        }
    }
    f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0]);
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// A radiotap header with TSFT and Flags (`rt_flags`), then `frame`.
fn radiotap(rt_flags: u8, frame: &[u8]) -> Vec<u8> {
    // 8 bytes of header, TSFT at 8 (aligned), Flags at 16, a pad byte.
    let mut h = vec![0, 0, 18, 0];
    h.extend_from_slice(&0b11u32.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.push(rt_flags);
    h.push(0);
    h.extend_from_slice(frame);
    h
}

#[test]
fn wifi_data_frames_are_decoded_through_llc_snap() {
    let payload = b"GET / HTTP/1.1";
    let ip = tcp_v4(payload);
    // To the access point, from it (QoS, with HT control) and between two
    // (four addresses): the IP is found under each header length.
    for (flags, qos) in [(0x01, false), (0x02, true), (0x82, true), (0x03, true)] {
        let f = dot11(flags, qos, ETHERTYPE_IPV4, &ip);
        let p = decode(link::IEEE802_11, &f).unwrap_or_else(|e| panic!("{flags:#x}: {e:?}"));
        assert_tcp_v4(&p, payload);
        // The frame's own source and destination, by direction.
        let (src, dst) = p.macs.unwrap();
        let want = match flags & 3 {
            1 => ([2; 6], [3; 6]),
            2 => ([3; 6], [1; 6]),
            _ => ([4; 6], [3; 6]),
        };
        assert_eq!((src, dst), want, "flags {flags:#x}");
    }
    let v6 = udp_v6(b"mdns");
    let f = dot11(0x02, false, ETHERTYPE_IPV6, &v6);
    assert_udp_v6(&decode(link::IEEE802_11, &f).unwrap(), b"mdns");
    // ARP over Wi-Fi is counted as ARP.
    assert_eq!(
        decode(link::IEEE802_11, &dot11(0x01, false, 0x0806, &[0; 28])),
        Err(SkipReason::Arp)
    );
}

#[test]
fn radiotap_and_ppi_headers_are_skipped_and_the_fcs_dropped() {
    let payload = b"hello";
    let ip = tcp_v4(payload);
    let frame = dot11(0x02, true, ETHERTYPE_IPV4, &ip);
    let rt = radiotap(0, &frame);
    assert_tcp_v4(&decode(link::IEEE802_11_RADIOTAP, &rt).unwrap(), payload);
    // With the FCS flag the last 4 bytes are the checksum, not payload: the
    // packet is the same and not taken for truncated.
    let mut with_fcs = frame.clone();
    with_fcs.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let rt_fcs = radiotap(0x10, &with_fcs);
    assert_tcp_v4(
        &decode(link::IEEE802_11_RADIOTAP, &rt_fcs).unwrap(),
        payload,
    );
    // PPI around a bare 802.11 frame (its link type 105 in the header).
    let mut ppi = vec![0, 0, 8, 0];
    ppi.extend_from_slice(&link::IEEE802_11.to_le_bytes());
    ppi.extend_from_slice(&frame);
    assert_tcp_v4(&decode(link::PPI, &ppi).unwrap(), payload);
    // A radiotap header longer than the frame, and one of another version.
    assert_eq!(
        decode(link::IEEE802_11_RADIOTAP, &rt[..12]),
        Err(SkipReason::TruncatedHeader)
    );
    let mut v1 = rt.clone();
    v1[0] = 1;
    assert_eq!(
        decode(link::IEEE802_11_RADIOTAP, &v1),
        Err(SkipReason::Malformed)
    );
}

#[test]
fn wifi_frames_without_ip_are_counted_by_kind() {
    let ip = tcp_v4(b"x");
    // Protected (encrypted) data.
    assert_eq!(
        decode(link::IEEE802_11, &dot11(0x41, false, ETHERTYPE_IPV4, &ip)),
        Err(SkipReason::Wifi80211Encrypted)
    );
    // A beacon (management, subtype 8) and a null data frame (subtype 4).
    let mut beacon = dot11(0, false, ETHERTYPE_IPV4, &ip);
    beacon[0] = 8 << 4;
    assert_eq!(
        decode(link::IEEE802_11, &beacon),
        Err(SkipReason::Wifi80211NotData)
    );
    let mut null = dot11(0x01, false, ETHERTYPE_IPV4, &ip);
    null[0] = (2 << 2) | (4 << 4);
    assert_eq!(
        decode(link::IEEE802_11, &null),
        Err(SkipReason::Wifi80211NotData)
    );
    // A data frame cut inside its header, and one without LLC/SNAP.
    let f = dot11(0x01, false, ETHERTYPE_IPV4, &ip);
    assert_eq!(
        decode(link::IEEE802_11, &f[..20]),
        Err(SkipReason::TruncatedHeader)
    );
    let mut no_snap = f.clone();
    no_snap[24] = 0x42;
    assert_eq!(
        decode(link::IEEE802_11, &no_snap),
        Err(SkipReason::NonIpEtherType)
    );
    // An A-MSDU (QoS control bit 7), with HT control after it and after a
    // fourth address.
    for (flags, qos_at) in [(0x02, 24), (0x82, 24), (0x03, 30)] {
        let mut amsdu = dot11(flags, true, ETHERTYPE_IPV4, &ip);
        amsdu[qos_at] |= 0x80;
        assert_eq!(
            decode(link::IEEE802_11, &amsdu),
            Err(SkipReason::Wifi80211Aggregate)
        );
    }
    let words: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
    assert!(words.contains(&"encrypted 802.11"), "{words:?}");
}

/// NFLOG: family, version, resource id, then TLVs in the writer's byte
/// order; the packet is TLV type 9 (NFULA_PAYLOAD).
fn nflog(family: u8, little: bool, ip: &[u8]) -> Vec<u8> {
    let tlv = |kind: u16, body: &[u8]| {
        let len = (4 + body.len()) as u16;
        let mut t = if little {
            [len.to_le_bytes(), kind.to_le_bytes()].concat()
        } else {
            [len.to_be_bytes(), kind.to_be_bytes()].concat()
        };
        t.extend_from_slice(body);
        t.resize(t.len().next_multiple_of(4), 0);
        t
    };
    let mut f = vec![family, 0, 0, 1];
    f.extend(tlv(1, &[0x08, 0x00, 3, 0])); // packet header
    f.extend(tlv(10, b"prefix\0")); // log prefix (padded)
    f.extend(tlv(9, ip));
    f
}

#[test]
fn nflog_packets_are_found_in_their_tlv_in_either_byte_order() {
    let payload = b"abc";
    for little in [true, false] {
        let v4 = nflog(2, little, &tcp_v4(payload));
        assert_tcp_v4(&decode(link::NFLOG, &v4).unwrap(), payload);
        let v6 = nflog(10, little, &udp_v6(payload));
        assert_udp_v6(&decode(link::NFLOG, &v6).unwrap(), payload);
    }
    // Another family, and a TLV whose length runs past the frame.
    assert_eq!(
        decode(link::NFLOG, &nflog(7, true, &tcp_v4(payload))),
        Err(SkipReason::NonIpEtherType)
    );
    let mut bad = nflog(2, true, &tcp_v4(payload));
    bad[4] = 0xff;
    bad[5] = 0x7f;
    assert_eq!(decode(link::NFLOG, &bad), Err(SkipReason::Malformed));
    // Cut by the snaplen inside the packet: decoded and marked truncated
    // (a packet TLV past the frame's end is damage only when nothing was cut).
    let whole = nflog(2, true, &tcp_v4(b"a longer payload"));
    let cut = &whole[..whole.len() - 10];
    assert_eq!(decode(link::NFLOG, cut), Err(SkipReason::Malformed));
    let p = decode_frame(link::NFLOG, cut, whole.len() as u32).unwrap();
    assert!(p.truncated, "{p:?}");
    assert_eq!(p.payload_len as usize, b"a longer payload".len());
}

#[test]
fn fddi_llc_frames_are_decoded_through_llc_snap() {
    let payload = b"fddi";
    let mut f = vec![0x50];
    f.extend_from_slice(&MAC_B); // destination
    f.extend_from_slice(&MAC_A); // source
    f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
    f.extend_from_slice(&tcp_v4(payload));
    let p = decode(link::FDDI, &f).unwrap();
    assert_tcp_v4(&p, payload);
    assert_eq!(p.macs, Some((MAC_A, MAC_B)));
    // A station management frame (format bits 00), and a cut header.
    let mut smt = f.clone();
    smt[0] = 0x41;
    assert_eq!(decode(link::FDDI, &smt), Err(SkipReason::NonIpEtherType));
    assert_eq!(
        decode(link::FDDI, &f[..16]),
        Err(SkipReason::TruncatedHeader)
    );
}
