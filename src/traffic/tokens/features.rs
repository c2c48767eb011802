//! Per-packet features: six header attributes serialised into fixed-length
//! bytes, then the first payload bytes. Addresses and ports never appear here.
//!
//! Attribute block, [`ATTR_BYTES`] = 9 bytes, all integers big-endian:
//!
//! | offset | bytes | attribute |
//! |---|---|---|
//! | 0 | 2 | packet length: IP length on the wire, saturated at 65,535 (the IP header's total / 40 + payload length; where that is 0, as TSO and BIG TCP captures write, the frame's length on the wire less the link header) |
//! | 2 | 1 | direction: 0 = sent by the flow's initiator, 1 = by the responder |
//! | 3 | 1 | TCP flags byte (0 for UDP) |
//! | 4 | 2 | inter-arrival time code: `min(65535, round(log2(1 + iat_us) * 256))` |
//! | 6 | 1 | IP protocol number |
//! | 7 | 2 | L4 payload length as the headers declare it: the packet length less the IP header, IPv6 extension headers and the TCP header (with options) or UDP header, 0 where those claim more, saturated at 65,535 (the UDP header's own length field is not read: in a first fragment it counts the whole datagram) |
//!
//! The inter-arrival time is measured from the previous packet of the flow (either
//! direction) in microseconds (`iat_ns / 1000` as a real number); the first packet
//! has 0 (code 0), and a timestamp that goes backwards also counts as 0. With
//! the factor 256 the code's high byte is the octave `floor(log2(1 + iat_us))`
//! and its low byte the position within the octave (resolution about 0.27 %);
//! the largest code, 65,535, is reached only after 2^256 us, so nothing saturates.
//!
//! The payload part is the first `payload_bytes` captured L4 payload bytes
//! (after the TCP header with its options or the UDP header, up to the IP
//! length: Ethernet padding is not payload), as many as exist (never padded:
//! padding would invent bytes that were not sent). `tools/tokens-reference.py`
//! redoes all this, and the tokens, from these docs and checks them on
//! `../shared/data` (docs/what-works.md, "Tokens").

use std::borrow::Cow;

use crate::traffic::tokens::identifiers::Identifiers;
use crate::traffic::tokens::tokenize::TokenizerConfig;
use crate::traffic::types::{Flow, PacketRecord};
use serde::{Deserialize, Serialize};

/// Length of the attribute block of one packet.
pub const ATTR_BYTES: usize = 9;

/// Scale of the log-scale inter-arrival code (see the module doc).
pub const IAT_SCALE: f64 = 256.0;

/// Which parts of a packet enter the token stream (the paper's ablation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Attributes and payload bytes.
    #[default]
    Full,
    /// Attributes only.
    Header,
    /// Payload bytes only.
    Payload,
}

impl View {
    pub fn has_header(self) -> bool {
        matches!(self, View::Full | View::Header)
    }
    pub fn has_payload(self) -> bool {
        matches!(self, View::Full | View::Payload)
    }
}

/// Log-scale code of an inter-arrival time in nanoseconds.
pub fn iat_code(iat_ns: u64) -> u16 {
    let iat_us = iat_ns as f64 / 1000.0;
    let code = ((1.0 + iat_us).log2() * IAT_SCALE).round();
    code.min(65535.0) as u16
}

/// The attribute block of one packet; `prev_ts_ns` is the previous packet's
/// timestamp in the same flow (`None` for the first packet).
pub fn packet_attributes(p: &PacketRecord, prev_ts_ns: Option<u64>) -> [u8; ATTR_BYTES] {
    let iat_ns = prev_ts_ns.map_or(0, |prev| p.ts_ns.saturating_sub(prev));
    let len = p.ip_len.min(65535) as u16;
    let iat = iat_code(iat_ns);
    let payload_len = p.payload_len.min(65535) as u16;
    let mut out = [0u8; ATTR_BYTES];
    out[0..2].copy_from_slice(&len.to_be_bytes());
    out[2] = u8::from(!p.from_initiator);
    out[3] = p.tcp_flags;
    out[4..6].copy_from_slice(&iat.to_be_bytes());
    out[6] = p.ip_proto;
    out[7..9].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// The bytes of one packet, split where the `[PY]` separator goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketBytes<'a> {
    /// Attribute block (absent in the payload-only view).
    pub attrs: Option<[u8; ATTR_BYTES]>,
    /// Payload prefix (absent in the header-only view); with
    /// `mask_identifiers`, the flow's own addresses and ports zeroed.
    pub payload: Option<Cow<'a, [u8]>>,
}

/// Features of the first `cfg.packets` packets of a flow, as the tokenizer
/// configured by `cfg` sees them.
pub fn flow_features<'a>(flow: &'a Flow, cfg: &TokenizerConfig) -> Vec<PacketBytes<'a>> {
    let ids = cfg.mask_identifiers.then(|| Identifiers::of(flow));
    let mut prev = None;
    flow.packets
        .iter()
        .take(cfg.packets)
        .map(|p| {
            let attrs = packet_attributes(p, prev);
            prev = Some(p.ts_ns);
            let n = p.payload.len().min(cfg.payload_bytes);
            PacketBytes {
                attrs: cfg.view.has_header().then_some(attrs),
                // Masked over all the bytes kept, then cut: an identifier
                // that runs past the window is still matched whole.
                payload: cfg.view.has_payload().then(|| match &ids {
                    Some(ids) => match ids.mask(&p.payload) {
                        Cow::Borrowed(b) => Cow::Borrowed(&b[..n]),
                        Cow::Owned(mut v) => {
                            v.truncate(n);
                            Cow::Owned(v)
                        }
                    },
                    None => Cow::Borrowed(&p.payload[..n]),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iat_code_is_log_scaled() {
        assert_eq!(iat_code(0), 0);
        // 1 us: log2(2) = 1 -> 256
        assert_eq!(iat_code(1_000), 256);
        // 3 us: log2(4) = 2 -> 512
        assert_eq!(iat_code(3_000), 512);
        // 120 s idle timeout stays far from saturation.
        let c = iat_code(120_000_000_000);
        assert_eq!(c >> 8, 26, "octave of 1.2e8 us");
        assert_eq!(iat_code(u64::MAX) >> 8, 54, "log2(1.8e16 us)");
    }

    #[test]
    fn attributes_layout() {
        let p = PacketRecord {
            ts_ns: 2_000_000 + 3_000,
            ip_len: 0x1234,
            from_initiator: false,
            tcp_flags: 0x18,
            ip_proto: 6,
            payload_len: 70_000,
            payload: vec![],
        };
        let a = packet_attributes(&p, Some(2_000_000));
        assert_eq!(a, [0x12, 0x34, 1, 0x18, 0x02, 0x00, 6, 0xff, 0xff]);
    }
}
