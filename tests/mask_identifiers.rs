//! `--mask-identifiers` end to end: the same traffic captured twice with other
//! addresses, ports, MAC addresses, TCP sequence numbers, IP IDs, TCP
//! timestamps and checksums must tokenize to the same rows, in every view.
//! Each payload below carries the flow's own identifiers, some of them across
//! the end of the 40-byte payload window.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use traffic_moe::traffic::capture::pcap_writer::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ipv4Opts, PcapWriter, ethernet, ipv4, ipv6, udp,
};
use traffic_moe::traffic::dataset::build::{DatasetConfig, build_dataset};
use traffic_moe::traffic::dataset::labels::LabelSource;
use traffic_moe::traffic::dataset::shard::Shard;
use traffic_moe::traffic::tokens::features::View;
use traffic_moe::traffic::tokens::tokenize::TokenizerConfig;
use traffic_moe::traffic::tokens::vocab::{SPECIALS, Vocab};

/// Everything that names the hosts of one capture (text forms of equal
/// length in both, so that masked payloads keep their length).
struct Hosts {
    c4: Ipv4Addr,
    s4: Ipv4Addr,
    c6: Ipv6Addr,
    s6: Ipv6Addr,
    cport: u16,
    sport: u16,
    cmac: [u8; 6],
    smac: [u8; 6],
    seq: u32,
    ip_id: u16,
    tsval: u32,
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Transport checksum over the IPv4 or IPv6 pseudo-header (it encodes both
/// addresses), written at `at` in `seg`.
fn set_l4_checksum(src: &[u8], dst: &[u8], proto: u8, seg: &mut [u8], at: usize) {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    p.extend_from_slice(seg);
    let sum = checksum(&p);
    seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// TCP with the timestamps option (32-byte header).
fn tcp_ts(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    tsval: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(8 << 4);
    s.push(flags);
    s.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(&[1, 1, 8, 10]);
    s.extend_from_slice(&tsval.to_be_bytes());
    s.extend_from_slice(&tsval.wrapping_add(7).to_be_bytes());
    s.extend_from_slice(payload);
    s
}

fn filler(n: usize, seed: u8) -> Vec<u8> {
    (0..n as u8)
        .map(|i| b'a' + (i.wrapping_mul(7) ^ seed) % 26)
        .collect()
}

/// One capture: a TCP/IPv4 flow, a UDP/IPv6 flow, a DHCP-like and an
/// mDNS-like UDP/IPv4 flow, identifiers in the payloads.
fn write_capture(path: &Path, h: &Hosts) {
    let t0 = 1_700_000_000_000_000_000u64;
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut v4 = |ts: u64, up: bool, proto: u8, mut seg: Vec<u8>, k: u16| {
        let (src, dst, smac, dmac) = if up {
            (h.c4, h.s4, h.cmac, h.smac)
        } else {
            (h.s4, h.c4, h.smac, h.cmac)
        };
        let at = if proto == 6 { 16 } else { 6 };
        set_l4_checksum(&src.octets(), &dst.octets(), proto, &mut seg, at);
        let opts = Ipv4Opts {
            id: h.ip_id.wrapping_add(k),
            ..Ipv4Opts::default()
        };
        let ip = ipv4(src, dst, proto, &seg, &opts);
        frames.push((ts, ethernet(smac, dmac, &[], ETHERTYPE_IPV4, &ip)));
    };

    // TCP: the server's address as text across bytes 34..42, the client's
    // as bytes across 38..42 in the reply, the ports as bytes.
    let (cp, sp, seq) = (h.cport, h.sport, h.seq);
    v4(t0, true, 6, tcp_ts(cp, sp, seq, 0, 0x02, h.tsval, &[]), 0);
    v4(
        t0 + 1_000,
        false,
        6,
        tcp_ts(sp, cp, !seq, seq + 1, 0x12, h.tsval ^ 0x5555, &[]),
        1,
    );
    let mut req = filler(34, 1);
    req.extend_from_slice(h.s4.to_string().as_bytes());
    req.extend_from_slice(b"/x");
    v4(
        t0 + 2_000,
        true,
        6,
        tcp_ts(cp, sp, seq + 1, !seq + 1, 0x18, h.tsval + 1, &req),
        2,
    );
    let mut resp = filler(10, 2);
    resp.extend_from_slice(&cp.to_be_bytes());
    resp.extend_from_slice(&filler(26, 3));
    resp.extend_from_slice(&h.c4.octets());
    resp.extend_from_slice(&filler(6, 4));
    v4(
        t0 + 3_000,
        false,
        6,
        tcp_ts(
            sp,
            cp,
            !seq + 1,
            seq + 1 + req.len() as u32,
            0x18,
            h.tsval ^ 0x5556,
            &resp,
        ),
        3,
    );

    // DHCP-like: the client's MAC as bytes across 36..42, then as text.
    for i in 0..3u64 {
        let mut p = filler(36, 5 + i as u8);
        p.extend_from_slice(&h.cmac);
        let text: Vec<String> = h.cmac.iter().map(|b| format!("{b:02x}")).collect();
        p.extend_from_slice(text.join(":").as_bytes());
        let up = i != 1;
        let (a, b) = if up { (68, 67) } else { (67, 68) };
        v4(
            t0 + 10_000 + i * 1_000,
            up,
            17,
            udp(a, b, &p),
            10 + i as u16,
        );
    }

    // mDNS: the client announces its address's reverse name, across the
    // end of the window (bytes 35..44).
    for i in 0..3u64 {
        let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        p.resize(35, 0);
        for o in h.c4.octets().iter().rev() {
            p.push(o.to_string().len() as u8);
            p.extend_from_slice(o.to_string().as_bytes());
        }
        p.extend_from_slice(b"\x07in-addr\x04arpa\0");
        v4(
            t0 + 30_000 + i * 1_000,
            true,
            17,
            udp(5353, 5353, &p),
            20 + i as u16,
        );
    }

    // UDP/IPv6: the client's address as bytes across 30..46; the server's as
    // text across 25..36 and its port across 39..41.
    for i in 0..4u64 {
        let up = i % 2 == 0;
        let (src, dst, smac, dmac) = if up {
            (h.c6, h.s6, h.cmac, h.smac)
        } else {
            (h.s6, h.c6, h.smac, h.cmac)
        };
        let mut p = if i == 3 {
            // mDNS-like: its IPv6 address's ip6.arpa name from byte 22.
            let mut p = filler(22, 11);
            for o in h.c6.octets().iter().rev() {
                for n in [o & 15, o >> 4] {
                    p.extend_from_slice(&[1, b"0123456789abcdef"[usize::from(n)]]);
                }
            }
            p.extend_from_slice(b"\x03ip6\x04arpa\0");
            p
        } else if up {
            let mut p = filler(30, 9);
            p.extend_from_slice(&h.c6.octets());
            p
        } else {
            let mut p = filler(25, 10);
            p.extend_from_slice(h.s6.to_string().as_bytes());
            p.extend_from_slice(b"xxx");
            p.extend_from_slice(&h.sport.to_be_bytes());
            p
        };
        p.extend_from_slice(b"tail");
        let (a, b) = if up {
            (h.cport, h.sport)
        } else {
            (h.sport, h.cport)
        };
        let mut seg = udp(a, b, &p);
        set_l4_checksum(&src.octets(), &dst.octets(), 17, &mut seg, 6);
        let ip = ipv6(src, dst, 17, &[], &seg);
        frames.push((
            t0 + 20_000 + i * 1_000,
            ethernet(smac, dmac, &[], ETHERTYPE_IPV6, &ip),
        ));
    }

    frames.sort_by_key(|f| f.0);
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap(), 1).unwrap();
    for (ts, fr) in frames {
        w.write_frame(ts, &fr).unwrap();
    }
}

/// Specials + every bigram word: no two byte pairs share a token.
fn full_vocab(path: &Path) {
    let mut t: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    t.extend((0..=u16::MAX).map(|b| format!("{b:04x}")));
    Vocab::from_tokens(t).unwrap().save(path).unwrap();
}

/// The token rows `tokenize` writes for one capture, sorted.
fn rows(dir: &Path, capture: &Path, vocab: &Path, view: View, mask: bool) -> Vec<Vec<u32>> {
    let out = dir.join(format!("ds-{view:?}-{mask}"));
    let cfg = DatasetConfig {
        inputs: vec![capture.to_path_buf()],
        labels: LabelSource::None,
        vocab_file: Some(vocab.to_path_buf()),
        tokenizer: TokenizerConfig {
            seq_len: 512,
            view,
            mask_identifiers: mask,
            ..TokenizerConfig::default()
        },
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, &out, false).unwrap();
    let sh = Shard::open(&out.join("train.tmoe")).unwrap();
    let mut r: Vec<Vec<u32>> = (0..sh.len()).map(|i| sh.tokens(i).to_vec()).collect();
    r.sort();
    r
}

#[test]
fn masked_tokens_do_not_depend_on_the_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let vocab = tmp.path().join("vocab.txt");
    full_vocab(&vocab);
    let hosts = [
        Hosts {
            c4: Ipv4Addr::new(10, 1, 2, 3),
            s4: Ipv4Addr::new(10, 9, 8, 7),
            c6: "2001:db8::a".parse().unwrap(),
            s6: "2001:db8::b".parse().unwrap(),
            cport: 40001,
            sport: 8443,
            cmac: [0x00, 0x1b, 0x21, 0xaa, 0x0b, 0xcd],
            smac: [0x02, 0, 0, 0, 0, 0x09],
            seq: 0x1234_5678,
            ip_id: 100,
            tsval: 1_000,
        },
        Hosts {
            c4: Ipv4Addr::new(10, 4, 5, 6),
            s4: Ipv4Addr::new(10, 7, 7, 2),
            c6: "2001:db8::c".parse().unwrap(),
            s6: "2001:db8::d".parse().unwrap(),
            cport: 51234,
            sport: 9443,
            cmac: [0xf8, 0x5e, 0x20, 0xca, 0x91, 0x52],
            smac: [0x02, 0, 0, 0, 0, 0x0a],
            seq: 0x8765_4321,
            ip_id: 40_000,
            tsval: 99_999_999,
        },
    ];
    let caps: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let d = tmp.path().join(format!("h{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let p = d.join("c.pcap");
            write_capture(&p, h);
            (d, p)
        })
        .collect();
    for view in [View::Full, View::Header, View::Payload] {
        let a = rows(&caps[0].0, &caps[0].1, &vocab, view, true);
        let b = rows(&caps[1].0, &caps[1].1, &vocab, view, true);
        assert_eq!(a.len(), 4, "four flows");
        assert_eq!(a, b, "{view:?}: masked rows differ between hosts");
    }
    // Without masking the payloads tell the hosts apart: the check can fail.
    let a = rows(&caps[0].0, &caps[0].1, &vocab, View::Full, false);
    let b = rows(&caps[1].0, &caps[1].1, &vocab, View::Full, false);
    assert_ne!(a, b, "unmasked rows name the hosts");
}
