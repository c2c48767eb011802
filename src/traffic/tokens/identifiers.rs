//! `tokenize --mask-identifiers`: payload bytes that spell the flow's own
//! addresses or ports are zeroed before bigrams are formed, so a model cannot
//! learn *who* a device is (DHCP carries the client's address, SIP and FTP
//! `PORT` write addresses as text) instead of how it behaves. Zeroing adds no
//! token and leaves the vocabulary as it is.
//!
//! What is matched, for the initiator and the responder: each IP address as
//! bytes (4 or 16) and as text (`10.0.0.1`; FTP's `10,0,0,1`; IPv6 in its
//! canonical text), each port as two big-endian bytes, and, when the capture
//! has Ethernet headers, each MAC address as bytes and as text (`aa:bb:..`,
//! `AA-BB-..`). Ports as decimal text are not matched: short digit runs occur
//! everywhere. Each IP address is also matched as the labels of its
//! reverse-DNS name in DNS wire format (`\x0220\x011\x03168\x03192` of
//! `20.1.168.192.in-addr.arpa`, the 32 nibble labels of `ip6.arpa`): mDNS
//! responders announce their own address so, and PTR queries ask for it.
//! IPv6 text is matched in lower and upper case. An address as text matches only where it is not part of a
//! longer number (`10.0.0.1` in `10.0.0.12` is another host: no digit may
//! border decimal text, no hex digit or `:` IPv6 text).
//!
//! Matching runs over more of each payload than the tokens keep: the reader
//! keeps [`LONGEST_PATTERN`]` - 1` bytes past `payload_bytes`
//! ([`crate::traffic::tokens::tokenize::TokenizerConfig::payload_bytes_read`]),
//! so an identifier that straddles the end of the window (an mDNS answer's
//! address at bytes 38..42) is recognised and its first bytes zeroed too.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::traffic::types::{Endpoint, Flow};

/// The longest pattern [`Identifiers`] matches: an IPv6 address as the 32
/// one-nibble labels of its `ip6.arpa` name (64 bytes).
pub const LONGEST_PATTERN: usize = 64;

/// What may border a match of a pattern written as text: an address as
/// text is only the flow's own when it is not part of a longer number
/// (`10.0.0.1` inside `10.0.0.12` or `110.0.0.1` names another host, and
/// zeroing its first bytes would tell the model which address the flow has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    /// Bytes: anything.
    Any,
    /// Decimal text (IPv4 dotted or FTP's commas): no ASCII digit on either side.
    Decimal,
    /// IPv6 text: no hex digit or `:` on either side.
    Hex,
}

impl Edge {
    fn allows(self, b: u8) -> bool {
        match self {
            Edge::Any => true,
            Edge::Decimal => !b.is_ascii_digit(),
            Edge::Hex => !(b.is_ascii_hexdigit() || b == b':'),
        }
    }
}

/// The byte patterns of one flow's identifiers, longest first. Every match
/// of every pattern is zeroed, each found in the bytes as read (zeroing one
/// creates or breaks no other match): where two overlap, both are zeroed,
/// the bytes of either (neither one wins).
pub struct Identifiers {
    patterns: Vec<(Vec<u8>, Edge)>,
}

impl Identifiers {
    pub fn of(flow: &Flow) -> Identifiers {
        let mut patterns = Vec::new();
        for ep in [flow.initiator, flow.responder] {
            add_endpoint(&mut patterns, ep);
        }
        if let Some((a, b)) = flow.macs {
            for mac in [a, b] {
                add_mac(&mut patterns, mac);
            }
        }
        patterns.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        debug_assert!(patterns.iter().all(|p| p.0.len() <= LONGEST_PATTERN));
        Identifiers { patterns }
    }

    /// `payload` with every match zeroed (borrowed when nothing matched).
    pub fn mask<'a>(&self, payload: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        for (p, edge) in &self.patterns {
            if p.len() > payload.len() {
                continue;
            }
            let mut i = 0;
            while i + p.len() <= payload.len() {
                // Match against the original bytes: zeroing one pattern must
                // not create or break a match of another. A payload's end is
                // no neighbour (the reader may have cut it there).
                let bordered = i.checked_sub(1).is_none_or(|j| edge.allows(payload[j]))
                    && payload.get(i + p.len()).is_none_or(|&b| edge.allows(b));
                if payload[i..i + p.len()] == p[..] && bordered {
                    out.get_or_insert_with(|| payload.to_vec())[i..i + p.len()].fill(0);
                    i += p.len();
                } else {
                    i += 1;
                }
            }
        }
        match out {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(payload),
        }
    }
}

/// A MAC address as 6 bytes (DHCP's client hardware address) and as text
/// with colons or dashes, lower and upper case.
fn add_mac(patterns: &mut Vec<(Vec<u8>, Edge)>, mac: [u8; 6]) {
    // All-zero and broadcast addresses identify no one.
    if mac == [0; 6] || mac == [0xff; 6] {
        return;
    }
    patterns.push((mac.to_vec(), Edge::Any));
    for sep in [":", "-"] {
        let text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        let lower = text.join(sep);
        patterns.push((lower.to_uppercase().into_bytes(), Edge::Any));
        patterns.push((lower.into_bytes(), Edge::Any));
    }
}

fn add_endpoint(patterns: &mut Vec<(Vec<u8>, Edge)>, ep: Endpoint) {
    match ep.ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            patterns.push((o.to_vec(), Edge::Any));
            patterns.push((a.to_string().into_bytes(), Edge::Decimal));
            let ftp = format!("{},{},{},{}", o[0], o[1], o[2], o[3]);
            patterns.push((ftp.into_bytes(), Edge::Decimal));
        }
        IpAddr::V6(a) => {
            patterns.push((a.octets().to_vec(), Edge::Any));
            let text = a.to_string();
            patterns.push((text.to_uppercase().into_bytes(), Edge::Hex));
            patterns.push((text.into_bytes(), Edge::Hex));
        }
    }
    patterns.extend(
        reverse_dns_labels(ep.ip)
            .into_iter()
            .map(|p| (p, Edge::Any)),
    );
    // Port 0 (no port) would match any two zero bytes: nothing to hide.
    if ep.port != 0 {
        patterns.push((ep.port.to_be_bytes().to_vec(), Edge::Any));
    }
}

/// The labels of an address's reverse-DNS name in DNS wire format, without
/// the `in-addr.arpa` / `ip6.arpa` suffix (nibbles in lower and upper case).
fn reverse_dns_labels(ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(a) => {
            let mut p = Vec::with_capacity(16);
            for o in a.octets().iter().rev() {
                let t = o.to_string();
                p.push(t.len() as u8);
                p.extend_from_slice(t.as_bytes());
            }
            vec![p]
        }
        IpAddr::V6(a) => {
            let mut p = Vec::with_capacity(64);
            for o in a.octets().iter().rev() {
                for n in [o & 15, o >> 4] {
                    p.push(1);
                    p.push(b"0123456789abcdef"[usize::from(n)]);
                }
            }
            let upper = p.to_ascii_uppercase();
            vec![p, upper]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::types::FlowKey;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn flow(a: IpAddr, ap: u16, b: IpAddr, bp: u16) -> Flow {
        let (a, b) = (Endpoint { ip: a, port: ap }, Endpoint { ip: b, port: bp });
        Flow {
            key: FlowKey::new(17, a, b),
            initiator: a,
            responder: b,
            first_ts_ns: 0,
            last_ts_ns: 0,
            total_packets: 0,
            packets: Vec::new(),
            file_index: 0,
            macs: None,
        }
    }

    #[test]
    fn masks_binary_and_text_addresses_and_ports() {
        let cli = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
        let srv = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let ids = Identifiers::of(&flow(cli, 5060, srv, 0x1234));
        // DHCP-style binary address, then SIP text, then FTP PORT text.
        let mut p = vec![0xaa, 192, 168, 1, 20, 0xbb];
        p.extend_from_slice(b"INVITE sip:bob@10.0.0.1;x PORT 192,168,1,20,7,9 ");
        p.extend_from_slice(&[0x12, 0x34, 0xcc]);
        let m = ids.mask(&p);
        assert_eq!(&m[..6], &[0xaa, 0, 0, 0, 0, 0xbb]);
        let text = String::from_utf8_lossy(&m[6..m.len() - 3]).replace('\0', "_");
        assert_eq!(text, "INVITE sip:bob@________;x PORT ____________,7,9 ");
        assert_eq!(&m[m.len() - 3..], &[0, 0, 0xcc], "the responder's port");
        assert_eq!(m.len(), p.len(), "no byte added or removed");
    }

    #[test]
    fn masks_the_flows_mac_addresses() {
        let ip = |x| IpAddr::V4(Ipv4Addr::new(10, 0, 0, x));
        let mut f = flow(ip(1), 68, ip(2), 67);
        let client = [0x00, 0x1b, 0x21, 0xaa, 0x0b, 0xcd];
        f.macs = Some((client, [0x02, 0, 0, 0, 0, 9]));
        let ids = Identifiers::of(&f);
        // DHCP's chaddr, then the same address as text.
        let mut p = vec![1, 1, 6, 0];
        p.extend_from_slice(&client);
        p.extend_from_slice(b" 00:1B:21:AA:0B:CD 00-1b-21-aa-0b-cd 00:1b:21:aa:0b:ce");
        // The responder's address too.
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        let m = ids.mask(&p);
        assert_eq!(&m[..4], &[1, 1, 6, 0]);
        assert!(m[4..10].iter().all(|&b| b == 0));
        assert!(m[m.len() - 6..].iter().all(|&b| b == 0), "{m:?}");
        let text = String::from_utf8_lossy(&m[10..m.len() - 6]).replace('\0', "_");
        assert_eq!(
            text, " _________________ _________________ 00:1b:21:aa:0b:ce",
            "another device's address stays"
        );
    }

    #[test]
    fn text_inside_a_longer_address_is_another_host() {
        let v4 = |d| IpAddr::V4(Ipv4Addr::new(10, 10, 10, d));
        let ids = Identifiers::of(&flow(v4(5), 1, v4(1), 2));
        // Another device (10.10.10.51, 110.10.10.5) stays whole; the flow's
        // own addresses are zeroed before a port, a dot, a quote or the end.
        let p = b"a 10.10.10.51 110.10.10.5 10,10,10,55 10.10.10.5:80 \"10.10.10.1\". 10.10.10.1";
        let m = ids.mask(p);
        let text = String::from_utf8_lossy(&m).replace('\0', "_");
        assert_eq!(
            text,
            "a 10.10.10.51 110.10.10.5 10,10,10,55 __________:80 \"__________\". __________"
        );
        let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let ids = Identifiers::of(&flow(a, 0, v4(1), 0));
        let m = ids.mask(b"[2001:db8::1] 2001:db8::1a 2001:db8::1:2");
        let text = String::from_utf8_lossy(&m).replace('\0', "_");
        assert_eq!(text, "[___________] 2001:db8::1a 2001:db8::1:2");
    }

    #[test]
    fn masks_reverse_dns_names_of_the_flows_addresses() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 10, 10, 58));
        let b: IpAddr = "fe80::21b:21ff:feaa:bcd".parse().unwrap();
        let ids = Identifiers::of(&flow(a, 5353, b, 5353));
        // An mDNS announcement of 58.10.10.10.in-addr.arpa, then of b's
        // ip6.arpa name (d.c.b.0.a.a.e.f...), then b as upper-case text.
        let mut p = vec![0u8; 12];
        p.extend_from_slice(b"\x0258\x0210\x0210\x0210\x07in-addr\x04arpa\0");
        let v6 = b"dcb0aaefff12b12000000000000008ef";
        for &n in v6 {
            p.extend_from_slice(&[1, n]);
        }
        p.extend_from_slice(b"\x03ip6\x04arpa\0 [FE80::21B:21FF:FEAA:BCD]");
        let m = ids.mask(&p);
        let text = String::from_utf8_lossy(&m[12..]).replace('\0', "_");
        let want = format!(
            "{}\x07in-addr\x04arpa_{}\x03ip6\x04arpa_ [{}]",
            "_".repeat(12),
            "_".repeat(64),
            "_".repeat(23)
        );
        assert_eq!(text, want);
    }

    #[test]
    fn leaves_other_bytes_alone_and_borrows_when_clean() {
        let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let b = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        let ids = Identifiers::of(&flow(a, 0, b, 0));
        let clean = b"hello 2001:db8::3 world";
        assert!(matches!(ids.mask(clean), Cow::Borrowed(_)));
        let text = b"to 2001:db8::2!";
        assert_eq!(&ids.mask(text)[..], b"to \0\0\0\0\0\0\0\0\0\0\0!");
        let mut bin = vec![1u8];
        bin.extend_from_slice(&match a {
            IpAddr::V6(x) => x.octets(),
            _ => unreachable!(),
        });
        let m = ids.mask(&bin);
        assert_eq!(m[0], 1);
        assert!(m[1..].iter().all(|&x| x == 0));
    }
}
