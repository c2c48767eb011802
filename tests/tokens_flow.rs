//! Features, bigrams and tokens of hand-built flows, checked against the spec
//! (features.rs / tokenize.rs module docs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use traffic_moe::traffic::tokens::features::View;
use traffic_moe::traffic::tokens::tokenize::{FlowTokenizer, TokenizerConfig};
use traffic_moe::traffic::tokens::vocab::{END, PAD, PD, PY, SPECIALS, UNK, Vocab};
use traffic_moe::traffic::types::{Endpoint, Flow, FlowKey, PacketRecord};

fn pkt(ts_ns: u64, ip_len: u32, from_initiator: bool, flags: u8, payload: &[u8]) -> PacketRecord {
    PacketRecord {
        ts_ns,
        ip_len,
        from_initiator,
        tcp_flags: flags,
        ip_proto: 6,
        payload_len: payload.len() as u32,
        payload: payload.to_vec(),
    }
}

fn flow_between(a: Endpoint, b: Endpoint) -> Flow {
    Flow {
        key: FlowKey::new(6, a, b),
        initiator: a,
        responder: b,
        first_ts_ns: 1_000_000_000,
        last_ts_ns: 1_000_003_000,
        total_packets: 2,
        packets: vec![
            pkt(1_000_000_000, 0x3c, true, 0x02, &[]),
            pkt(1_000_003_000, 0x37, false, 0x18, &[0xde, 0xad, 0xbe]),
        ],
        file_index: 0,
        macs: None,
    }
}

fn sample_flow() -> Flow {
    let a = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        port: 40000,
    };
    let b = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        port: 443,
    };
    flow_between(a, b)
}

/// Specials + every bigram word: the id of bigram b is 5 + b.
fn full_vocab() -> Vocab {
    let mut t: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    t.extend((0..=u16::MAX).map(|b| format!("{b:04x}")));
    Vocab::from_tokens(t).unwrap()
}

fn w(b: u16) -> u32 {
    5 + u32::from(b)
}

fn tokenizer(view: View, seq_len: usize) -> FlowTokenizer {
    FlowTokenizer::new(
        full_vocab(),
        TokenizerConfig {
            seq_len,
            view,
            ..TokenizerConfig::default()
        },
    )
    .unwrap()
}

// p0 attributes: len 003c, dir 00, flags 02, iat 0000, proto 06, payload len 0000
const P0: [u16; 8] = [
    0x003c, 0x3c00, 0x0002, 0x0200, 0x0000, 0x0006, 0x0600, 0x0000,
];
// p1: len 0037, dir 01, flags 18, iat 3 us -> round(log2(4)*256)=512=0200, proto 06, len 0003
const P1: [u16; 8] = [
    0x0037, 0x3701, 0x0118, 0x1802, 0x0200, 0x0006, 0x0600, 0x0003,
];

#[test]
fn full_view_tokens_match_spec() {
    let tok = tokenizer(View::Full, 512);
    let mut want = vec![PD];
    want.extend(P0.map(w));
    want.push(PY);
    want.push(PD);
    want.extend(P1.map(w));
    want.extend([PY, w(0xdead), w(0xadbe), END]);
    assert_eq!(tok.encode(&sample_flow()), want);

    let mut row = vec![9u32; 512];
    let n = tok.encode_padded(&sample_flow(), &mut row);
    assert_eq!(n, want.len());
    assert_eq!(&row[..n], &want[..]);
    assert!(row[n..].iter().all(|&t| t == PAD));
}

#[test]
fn header_and_payload_views() {
    let mut want = vec![PD];
    want.extend(P0.map(w));
    want.push(PD);
    want.extend(P1.map(w));
    want.push(END);
    assert_eq!(tokenizer(View::Header, 512).encode(&sample_flow()), want);
    assert_eq!(
        tokenizer(View::Payload, 512).encode(&sample_flow()),
        vec![PD, PY, PD, PY, w(0xdead), w(0xadbe), END]
    );
}

#[test]
fn truncation_keeps_end() {
    let full = tokenizer(View::Full, 512).encode(&sample_flow());
    let cut = tokenizer(View::Full, 12).encode(&sample_flow());
    assert_eq!(cut.len(), 12);
    assert_eq!(&cut[..11], &full[..11]);
    assert_eq!(cut[11], END);
}

#[test]
fn packet_limit_and_payload_bytes() {
    let mut f = sample_flow();
    f.packets[1].payload = vec![1, 2, 3, 4, 5, 6];
    let cfg = TokenizerConfig {
        packets: 1,
        ..TokenizerConfig::default()
    };
    let one = FlowTokenizer::new(full_vocab(), cfg).unwrap().encode(&f);
    assert_eq!(one.len(), 1 + 8 + 1 + 1, "[PD] 8 attrs [PY] [END]");
    let cfg = TokenizerConfig {
        payload_bytes: 3,
        ..TokenizerConfig::default()
    };
    let toks = FlowTokenizer::new(full_vocab(), cfg).unwrap().encode(&f);
    assert_eq!(&toks[toks.len() - 3..], &[w(0x0102), w(0x0203), END]);
}

#[test]
fn addresses_and_ports_never_matter() {
    let tok = tokenizer(View::Full, 512);
    let base = tok.encode(&sample_flow());
    let a = Endpoint {
        ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
        port: 1,
    };
    let b = Endpoint {
        ip: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9)),
        port: 65535,
    };
    let mut other = flow_between(a, b);
    other.file_index = 7;
    assert_eq!(tok.encode(&other), base);
    // And the bytes of no address or port appear as a bigram: 10.0.0.1 -> 0a00,
    // port 40000 = 9c40, port 443 = 01bb.
    for bg in [0x0a00u16, 0x9c40, 0x01bb] {
        assert!(!base.contains(&w(bg)), "bigram {bg:04x} leaked");
    }
}

#[test]
fn unknown_pieces_become_unk() {
    // Only the pieces of "00xx" words: everything else is [UNK].
    let mut t: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    t.extend(["00", "##0", "##3", "##c", "##6"].map(String::from));
    let v = Vocab::from_tokens(t).unwrap();
    let ids: Vec<u32> = ["00", "##3", "##c"]
        .iter()
        .map(|s| v.id(s).unwrap())
        .collect();
    let tok = FlowTokenizer::new(v, TokenizerConfig::default()).unwrap();
    let toks = tok.encode(&sample_flow());
    // p0's first bigram 003c -> 00 ##3 ##c; second 3c00 -> [UNK].
    assert_eq!(&toks[..5], &[PD, ids[0], ids[1], ids[2], UNK]);
    assert_eq!(
        tok.decode(&toks[..2]),
        vec!["[PD]".to_string(), "00".to_string()]
    );
}

#[test]
fn mask_identifiers_zeroes_the_flows_own_address_before_bigrams() {
    // A DHCP-like payload carrying the initiator's address (10.0.0.1).
    let mut f = sample_flow();
    f.packets[1].payload = vec![0x77, 10, 0, 0, 1, 0x88];
    let tok = |mask: bool, flow: &Flow| {
        let cfg = TokenizerConfig {
            mask_identifiers: mask,
            ..TokenizerConfig::default()
        };
        FlowTokenizer::new(full_vocab(), cfg).unwrap().encode(flow)
    };
    let masked = tok(true, &f);
    let plain = tok(false, &f);
    assert_ne!(masked, plain, "the address changed the tokens");
    assert_eq!(masked.len(), plain.len(), "no token added or removed");
    let mut zeroed = f.clone();
    zeroed.packets[1].payload = vec![0x77, 0, 0, 0, 0, 0x88];
    assert_eq!(masked, tok(false, &zeroed));
    // Payload bytes that are not an identifier are left alone.
    let mut other = f.clone();
    other.packets[1].payload = vec![0x77, 10, 0, 0, 9, 0x88];
    assert_eq!(tok(true, &other), tok(false, &other));
}
