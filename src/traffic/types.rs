//! Data types shared by every Traffic2Token stage: what the capture reader
//! produces (finished flows) and what the tokenizer consumes.
//!
//! Addresses and ports live here only for labelling and reporting; the token
//! stream never sees them.

use std::net::IpAddr;

/// IP protocol numbers we build flows for.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits as they appear in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// One endpoint of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// Bidirectional 5-tuple in canonical order (`lo <= hi`), so both directions
/// of a session hash to the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: u8,
    pub lo: Endpoint,
    pub hi: Endpoint,
}

impl FlowKey {
    pub fn new(proto: u8, a: Endpoint, b: Endpoint) -> Self {
        if a <= b {
            FlowKey {
                proto,
                lo: a,
                hi: b,
            }
        } else {
            FlowKey {
                proto,
                lo: b,
                hi: a,
            }
        }
    }
}

/// What Traffic2Token keeps of one packet of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the IP packet as on the wire (IP total length; from the
    /// capture's original length when the IP header is truncated).
    pub ip_len: u32,
    /// True when sent by the flow's initiator (the first packet's sender).
    pub from_initiator: bool,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// IP protocol number (6 TCP, 17 UDP).
    pub ip_proto: u8,
    /// L4 payload length as the headers declare it (may exceed what was captured).
    pub payload_len: u32,
    /// The first captured bytes of the L4 payload (at most the configured cap).
    pub payload: Vec<u8>,
}

/// A finished bidirectional flow: the first K packets plus totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    /// Sender of the first packet seen.
    pub initiator: Endpoint,
    pub responder: Endpoint,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// Every packet seen in the flow, not only the kept ones.
    pub total_packets: u64,
    /// The first K packets, in capture order.
    pub packets: Vec<PacketRecord>,
    /// Index of the source capture in the run's file list.
    pub file_index: u32,
    /// Ethernet addresses of the initiator and the responder, from the
    /// flow's first packet when it had them (for `--mask-identifiers`).
    pub macs: Option<([u8; 6], [u8; 6])>,
}
