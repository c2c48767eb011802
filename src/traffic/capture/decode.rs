//! Link / IP / TCP / UDP decoding of one raw frame into the pieces a flow
//! record needs, or the reason it was skipped.
//!
//! Hand-written rather than etherparse because we need behaviour its slicers
//! do not give: the transport header of a *first* IP fragment, Linux SLL2 and
//! BSD null/loopback framing, and exact control over truncated captures. Every
//! read is bounds-checked (`get`), so no input can panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::link_wireless;
use crate::traffic::types::{PROTO_TCP, PROTO_UDP};

/// LINKTYPE_* values we decode.
pub mod link {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const PPP: u32 = 9;
    pub const RAW_OPENBSD: u32 = 12;
    pub const RAW_BSDOS: u32 = 14;
    pub const PPP_HDLC: u32 = 50;
    pub const RAW: u32 = 101;
    pub const C_HDLC: u32 = 104;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
    pub const IEEE802_11: u32 = 105;
    pub const IEEE802_11_RADIOTAP: u32 = 127;
    pub const PPI: u32 = 192;
    pub const NFLOG: u32 = 239;
    pub const FDDI: u32 = 10;
}

mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const QINQ_OLD: u16 = 0x9100;
    pub const IPV6: u16 = 0x86dd;
    pub const MPLS: u16 = 0x8847;
    pub const MPLS_MC: u16 = 0x8848;
    pub const PPPOE_SESSION: u16 = 0x8864;
}

/// Why a frame produced no TCP/UDP packet. Each one is counted per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The capture's link type is not one we decode.
    UnsupportedLinkType,
    /// ARP / RARP.
    Arp,
    /// Another EtherType (LLDP, 802.3 LLC, EAPOL, ...).
    NonIpEtherType,
    /// ICMP or ICMPv6.
    Icmp,
    /// Another IP protocol (IGMP, GRE, ESP, SCTP, tunnels, ...).
    OtherIpProtocol,
    /// A non-first IP fragment (no transport header).
    LaterFragment,
    /// The capture stops inside a header: link, IP, or the TCP (20 bytes) or
    /// UDP (8 bytes) header, cut by the snaplen or a tiny first fragment.
    /// A cut TCP or UDP header is skipped even when its ports are there.
    TruncatedHeader,
    /// Headers that make no sense (bad IP version, header length, ...).
    Malformed,
    /// An 802.11 frame that holds no IP: management, control, null data.
    Wifi80211NotData,
    /// A protected (encrypted) 802.11 data frame.
    Wifi80211Encrypted,
    /// An 802.11 A-MSDU: several packets in one frame, not decoded.
    Wifi80211Aggregate,
}

impl SkipReason {
    pub const ALL: [SkipReason; 11] = [
        SkipReason::UnsupportedLinkType,
        SkipReason::Arp,
        SkipReason::NonIpEtherType,
        SkipReason::Icmp,
        SkipReason::OtherIpProtocol,
        SkipReason::LaterFragment,
        SkipReason::TruncatedHeader,
        SkipReason::Malformed,
        SkipReason::Wifi80211NotData,
        SkipReason::Wifi80211Encrypted,
        SkipReason::Wifi80211Aggregate,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnsupportedLinkType => "unsupported link type",
            SkipReason::Arp => "ARP",
            SkipReason::NonIpEtherType => "non-IP EtherType",
            SkipReason::Icmp => "ICMP/ICMPv6",
            SkipReason::OtherIpProtocol => "other IP protocol",
            SkipReason::LaterFragment => "non-first IP fragment",
            SkipReason::TruncatedHeader => "truncated header",
            SkipReason::Malformed => "malformed header",
            SkipReason::Wifi80211NotData => "802.11 management, control or null data",
            SkipReason::Wifi80211Encrypted => "encrypted 802.11",
            SkipReason::Wifi80211Aggregate => "802.11 A-MSDU (not decoded)",
        }
    }
}

/// A decoded TCP or UDP packet, borrowing its payload from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// PROTO_TCP or PROTO_UDP.
    pub proto: u8,
    /// IP packet length on the wire (header + payload).
    pub ip_len: u32,
    /// TCP flags byte (0 for UDP; a TCP header cut short is never decoded).
    pub tcp_flags: u8,
    /// L4 payload length the headers declare.
    pub payload_len: u32,
    /// The captured part of the L4 payload (Ethernet padding excluded).
    pub payload: &'a [u8],
    /// The capture holds less than the headers declare (snaplen).
    pub truncated: bool,
    /// First fragment of a fragmented IP packet.
    pub first_fragment: bool,
    /// Ethernet (source, destination) addresses, when the frame has them
    /// (for `--mask-identifiers`; they never enter the tokens).
    pub macs: Option<([u8; 6], [u8; 6])>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Decodes one frame of the given link type. `orig_len` is the frame's length
/// on the wire, used when the IP header itself is cut off.
pub fn decode_frame(
    link_type: u32,
    data: &[u8],
    orig_len: u32,
) -> Result<DecodedPacket<'_>, SkipReason> {
    let (net, wire_len) = match link_type {
        link::ETHERNET => return decode_ethernet(data, orig_len),
        link::RAW | link::RAW_OPENBSD | link::RAW_BSDOS => (NetProto::ByVersion, 0),
        link::IPV4 => (NetProto::V4, 0),
        link::IPV6 => (NetProto::V6, 0),
        link::LINUX_SLL => {
            let et = be16(data, 14).ok_or(SkipReason::TruncatedHeader)?;
            return decode_ether_type(
                et,
                data.get(16..).unwrap_or_default(),
                orig_len.saturating_sub(16),
            );
        }
        link::LINUX_SLL2 => {
            let et = be16(data, 0).ok_or(SkipReason::TruncatedHeader)?;
            if data.len() < 20 {
                return Err(SkipReason::TruncatedHeader);
            }
            return decode_ether_type(et, &data[20..], orig_len.saturating_sub(20));
        }
        link::NULL | link::LOOP => (null_family(data)?, 4),
        link::PPP | link::PPP_HDLC => {
            let (proto, hdr) = ppp_protocol(data)?;
            (proto, hdr)
        }
        link::C_HDLC => {
            let et = be16(data, 2).ok_or(SkipReason::TruncatedHeader)?;
            return decode_ether_type(
                et,
                data.get(4..).unwrap_or_default(),
                orig_len.saturating_sub(4),
            );
        }
        link::IEEE802_11 => return decode_dot11(data, orig_len, false),
        link::FDDI => return decode_fddi(data, orig_len),
        link::IEEE802_11_RADIOTAP => {
            let (len, fcs) = link_wireless::radiotap(data)?;
            let orig_len = orig_len.saturating_sub(len as u32);
            return decode_dot11(&data[len..], orig_len, fcs);
        }
        link::PPI => {
            let (len, inner) = link_wireless::ppi(data)?;
            let frame = data.get(len..).ok_or(SkipReason::TruncatedHeader)?;
            // One level: a PPI frame inside a PPI frame is not a capture.
            if inner == link::PPI {
                return Err(SkipReason::Malformed);
            }
            return decode_frame(inner, frame, orig_len.saturating_sub(len as u32));
        }
        link::NFLOG => {
            let cut = (orig_len as usize) > data.len();
            let (family, packet) = link_wireless::nflog(data, cut)?;
            let net = match family {
                2 => NetProto::V4,
                10 => NetProto::V6,
                _ => return Err(SkipReason::NonIpEtherType),
            };
            // The TLV declares the whole logged packet's length; the
            // capture may hold less of it.
            let orig = packet.len() as u32;
            let held = packet.start.min(data.len())..packet.end.min(data.len());
            return decode_ip(net, &data[held], orig);
        }
        _ => return Err(SkipReason::UnsupportedLinkType),
    };
    let ip = data.get(wire_len..).unwrap_or_default();
    decode_ip(net, ip, orig_len.saturating_sub(wire_len as u32))
}

/// Which IP version follows a link header.
#[derive(Clone, Copy, Debug)]
enum NetProto {
    V4,
    V6,
    /// Read the version nibble (raw IP, MPLS payload).
    ByVersion,
}

/// BSD null / loopback: a 4-byte address family, in the writer's byte order
/// (LINKTYPE_NULL) or network order (LINKTYPE_LOOP); accept both.
fn null_family(data: &[u8]) -> Result<NetProto, SkipReason> {
    let b: [u8; 4] = data
        .get(..4)
        .ok_or(SkipReason::TruncatedHeader)?
        .try_into()
        .unwrap_or_default();
    let family = |v: u32| match v {
        2 => Some(NetProto::V4),
        10 | 24 | 28 | 30 => Some(NetProto::V6),
        _ => None,
    };
    family(u32::from_le_bytes(b))
        .or_else(|| family(u32::from_be_bytes(b)))
        .ok_or(SkipReason::NonIpEtherType)
}

/// PPP (optionally with HDLC address/control bytes ff 03) -> IP version and header length.
fn ppp_protocol(data: &[u8]) -> Result<(NetProto, usize), SkipReason> {
    let start = if data.starts_with(&[0xff, 0x03]) {
        2
    } else {
        0
    };
    // Protocol field compression: a 1-byte protocol has its low bit set.
    let first = *data.get(start).ok_or(SkipReason::TruncatedHeader)?;
    let (proto, len) = if first & 1 == 1 {
        (u16::from(first), 1)
    } else {
        (be16(data, start).ok_or(SkipReason::TruncatedHeader)?, 2)
    };
    match proto {
        0x0021 => Ok((NetProto::V4, start + len)),
        0x0057 => Ok((NetProto::V6, start + len)),
        _ => Err(SkipReason::NonIpEtherType),
    }
}

fn decode_ethernet(data: &[u8], orig_len: u32) -> Result<DecodedPacket<'_>, SkipReason> {
    let et = be16(data, 12).ok_or(SkipReason::TruncatedHeader)?;
    let mut pkt = decode_ether_type(
        et,
        data.get(14..).unwrap_or_default(),
        orig_len.saturating_sub(14),
    )?;
    let mac = |at: usize| -> [u8; 6] { data[at..at + 6].try_into().expect("6 bytes") };
    // be16 at 12 succeeded, so the 12 address bytes are there.
    pkt.macs = Some((mac(6), mac(0)));
    Ok(pkt)
}

/// FDDI: frame control, destination and source, then (for an LLC frame)
/// LLC/SNAP and an EtherType, as 802.11 carries it.
fn decode_fddi(data: &[u8], orig_len: u32) -> Result<DecodedPacket<'_>, SkipReason> {
    let fc = *data.first().ok_or(SkipReason::TruncatedHeader)?;
    // Frame format bits 01: an LLC frame; the others are MAC, SMT, tokens.
    if fc & 0x30 != 0x10 {
        return Err(SkipReason::NonIpEtherType);
    }
    let (et, ip) = link_wireless::llc_snap(data.get(13..).ok_or(SkipReason::TruncatedHeader)?)?;
    let mut pkt = decode_ether_type(et, ip, orig_len.saturating_sub(21))?;
    let mac = |at: usize| -> [u8; 6] { data[at..at + 6].try_into().expect("6 bytes") };
    pkt.macs = Some((mac(7), mac(1)));
    Ok(pkt)
}

/// An 802.11 frame (`fcs`: radiotap says it ends in a frame check
/// sequence) down to its LLC/SNAP EtherType, then as Ethernet's payload.
fn decode_dot11(data: &[u8], orig_len: u32, fcs: bool) -> Result<DecodedPacket<'_>, SkipReason> {
    // The FCS is the frame's last 4 bytes: captured only when nothing was cut.
    let captured_fcs = fcs && data.len() as u32 == orig_len;
    let orig_len = orig_len.saturating_sub(if fcs { 4 } else { 0 });
    let d = link_wireless::dot11(data, captured_fcs)?;
    let mut pkt = decode_ether_type(
        d.ether_type,
        d.data,
        orig_len.saturating_sub(d.header_len as u32),
    )?;
    pkt.macs = Some(d.macs);
    Ok(pkt)
}

/// Decodes what follows an EtherType: VLAN tags (any depth), PPPoE, MPLS, IP.
fn decode_ether_type(
    mut et: u16,
    mut data: &[u8],
    mut orig_len: u32,
) -> Result<DecodedPacket<'_>, SkipReason> {
    // Bounded so a frame full of VLAN tags cannot loop long.
    for _ in 0..8 {
        match et {
            ether_type::VLAN | ether_type::QINQ | ether_type::QINQ_OLD => {
                et = be16(data, 2).ok_or(SkipReason::TruncatedHeader)?;
                data = data.get(4..).ok_or(SkipReason::TruncatedHeader)?;
                orig_len = orig_len.saturating_sub(4);
            }
            ether_type::PPPOE_SESSION => {
                let ppp = data.get(6..).ok_or(SkipReason::TruncatedHeader)?;
                let (net, hdr) = ppp_protocol(ppp)?;
                let ip = ppp.get(hdr..).unwrap_or_default();
                return decode_ip(net, ip, orig_len.saturating_sub(6 + hdr as u32));
            }
            ether_type::MPLS | ether_type::MPLS_MC => {
                // Pop labels up to the bottom-of-stack bit, then guess by version.
                let mut at = 0;
                loop {
                    let bos = data.get(at + 2).ok_or(SkipReason::TruncatedHeader)? & 1;
                    at += 4;
                    if bos == 1 || at >= 64 {
                        break;
                    }
                }
                let ip = data.get(at..).ok_or(SkipReason::TruncatedHeader)?;
                return decode_ip(NetProto::ByVersion, ip, orig_len.saturating_sub(at as u32));
            }
            ether_type::IPV4 => return decode_ip(NetProto::V4, data, orig_len),
            ether_type::IPV6 => return decode_ip(NetProto::V6, data, orig_len),
            ether_type::ARP | 0x8035 => return Err(SkipReason::Arp),
            _ => return Err(SkipReason::NonIpEtherType),
        }
    }
    Err(SkipReason::Malformed)
}

fn decode_ip(net: NetProto, data: &[u8], orig_len: u32) -> Result<DecodedPacket<'_>, SkipReason> {
    let version = data.first().ok_or(SkipReason::TruncatedHeader)? >> 4;
    match (net, version) {
        (NetProto::V4 | NetProto::ByVersion, 4) => decode_ipv4(data, orig_len),
        (NetProto::V6 | NetProto::ByVersion, 6) => decode_ipv6(data, orig_len),
        _ => Err(SkipReason::Malformed),
    }
}

fn decode_ipv4(data: &[u8], orig_len: u32) -> Result<DecodedPacket<'_>, SkipReason> {
    let hdr_len = usize::from(data[0] & 0x0f) * 4;
    if hdr_len < 20 {
        return Err(SkipReason::Malformed);
    }
    if data.len() < hdr_len {
        return Err(SkipReason::TruncatedHeader);
    }
    let total = usize::from(be16(data, 2).unwrap_or_default());
    // TSO captures write total length 0; fall back to what was on the wire.
    let total = if total == 0 { orig_len as usize } else { total };
    if total < hdr_len {
        return Err(SkipReason::Malformed);
    }
    let frag = be16(data, 6).unwrap_or_default();
    let frag_offset = frag & 0x1fff;
    let more_fragments = frag & 0x2000 != 0;
    if frag_offset != 0 {
        return Err(SkipReason::LaterFragment);
    }
    let proto = data[9];
    let src = IpAddr::V4(Ipv4Addr::new(data[12], data[13], data[14], data[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(data[16], data[17], data[18], data[19]));
    // Captured IP bytes, without link-layer trailer/padding.
    let captured = &data[..data.len().min(total)];
    let l4 = IpPayload {
        src,
        dst,
        proto,
        ip_len: total as u32,
        declared_l4_len: (total - hdr_len) as u32,
        data: &captured[hdr_len..],
        first_fragment: more_fragments,
    };
    decode_transport(l4)
}

fn ipv6_addr(b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

fn decode_ipv6(data: &[u8], orig_len: u32) -> Result<DecodedPacket<'_>, SkipReason> {
    if data.len() < 40 {
        return Err(SkipReason::TruncatedHeader);
    }
    let payload_len = usize::from(be16(data, 4).unwrap_or_default());
    // Payload length 0 means a jumbogram or TSO: trust the wire length.
    let total = if payload_len == 0 {
        (orig_len as usize).max(40)
    } else {
        40 + payload_len
    };
    let src = ipv6_addr(&data[8..24]);
    let dst = ipv6_addr(&data[24..40]);
    let captured = &data[..data.len().min(total)];
    let mut next = data[6];
    let mut at = 40;
    let mut first_fragment = false;
    // Walk the extension header chain (bounded).
    for _ in 0..16 {
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let len =
                    usize::from(*captured.get(at + 1).ok_or(SkipReason::TruncatedHeader)?) * 8 + 8;
                next = captured[at];
                at += len;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let frag = be16(captured, at + 2).ok_or(SkipReason::TruncatedHeader)?;
                next = captured[at];
                at += 8;
                if frag & 0xfff8 != 0 {
                    return Err(SkipReason::LaterFragment);
                }
                first_fragment = frag & 1 != 0;
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => {
                let len = (usize::from(*captured.get(at + 1).ok_or(SkipReason::TruncatedHeader)?)
                    + 2)
                    * 4;
                next = captured[at];
                at += len;
            }
            _ => break,
        }
        if at > total {
            return Err(SkipReason::Malformed);
        }
    }
    if at > captured.len() {
        return Err(SkipReason::TruncatedHeader);
    }
    let l4 = IpPayload {
        src,
        dst,
        proto: next,
        ip_len: total as u32,
        declared_l4_len: (total - at) as u32,
        data: &captured[at..],
        first_fragment,
    };
    decode_transport(l4)
}

/// What an IP header leaves for the transport decoder.
struct IpPayload<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ip_len: u32,
    declared_l4_len: u32,
    data: &'a [u8],
    first_fragment: bool,
}

fn decode_transport(ip: IpPayload<'_>) -> Result<DecodedPacket<'_>, SkipReason> {
    let d = ip.data;
    let (hdr_len, tcp_flags) = match ip.proto {
        PROTO_TCP => {
            if d.len() < 20 {
                return Err(SkipReason::TruncatedHeader);
            }
            let hdr_len = usize::from(d[12] >> 4) * 4;
            if hdr_len < 20 {
                return Err(SkipReason::Malformed);
            }
            (hdr_len, d[13])
        }
        PROTO_UDP => {
            if d.len() < 8 {
                return Err(SkipReason::TruncatedHeader);
            }
            (8, 0)
        }
        1 | 58 => return Err(SkipReason::Icmp),
        _ => return Err(SkipReason::OtherIpProtocol),
    };
    let payload_len = ip.declared_l4_len.saturating_sub(hdr_len as u32);
    let payload = d.get(hdr_len..).unwrap_or_default();
    Ok(DecodedPacket {
        src: ip.src,
        dst: ip.dst,
        src_port: be16(d, 0).unwrap_or_default(),
        dst_port: be16(d, 2).unwrap_or_default(),
        proto: ip.proto,
        ip_len: ip.ip_len,
        tcp_flags,
        payload_len,
        payload,
        truncated: (payload.len() as u32) < payload_len || d.len() < hdr_len,
        first_fragment: ip.first_fragment,
        macs: None,
    })
}
