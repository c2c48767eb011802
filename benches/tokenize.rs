//! Tokenisation throughput (flows/s) with a trained 65,536-entry vocabulary
//! (the paper's size) on synthetic flows of 10 packets x 40 payload bytes.
//! Run: `cargo bench --bench tokenize`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use traffic_moe::traffic::dataset::build::corpus_counts;
use traffic_moe::traffic::dataset::split::Rng;
use traffic_moe::traffic::tokens::tokenize::{FlowTokenizer, TokenizerConfig};
use traffic_moe::traffic::tokens::vocab::Vocab;
use traffic_moe::traffic::types::{Endpoint, Flow, FlowKey, PacketRecord};

fn flows(n: usize) -> Vec<Flow> {
    let mut rng = Rng::new(1);
    (0..n)
        .map(|i| {
            let a = Endpoint {
                ip: IpAddr::V4(Ipv4Addr::from(i as u32)),
                port: 1000,
            };
            let b = Endpoint {
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                port: 443,
            };
            // Half-structured payloads: a per-flow "protocol" prefix, then noise.
            let proto = (i % 16) as u8;
            let packets = (0..10u64)
                .map(|k| PacketRecord {
                    ts_ns: k * (1 + rng.below(5_000_000) as u64),
                    ip_len: 40 + rng.below(1400) as u32,
                    from_initiator: k % 2 == 0,
                    tcp_flags: 0x18,
                    ip_proto: 6,
                    payload_len: 1400,
                    payload: (0..40)
                        .map(|j| {
                            if j < 12 {
                                proto.wrapping_mul(17) ^ j as u8
                            } else {
                                rng.next_u64() as u8
                            }
                        })
                        .collect(),
                })
                .collect();
            Flow {
                key: FlowKey::new(6, a, b),
                initiator: a,
                responder: b,
                first_ts_ns: 0,
                last_ts_ns: 1,
                total_packets: 10,
                packets,
                file_index: 0,
                macs: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = flows(2000);
    let cfg = TokenizerConfig::default();
    let vocab = Vocab::train(&corpus_counts(&data, &cfg), 65_536).expect("vocab");
    eprintln!("vocabulary: {} entries", vocab.len());
    let tok = FlowTokenizer::new(vocab, cfg).unwrap();
    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Elements(data.len() as u64));
    g.bench_function("encode_2000_flows", |b| {
        b.iter(|| {
            let mut n = 0;
            for f in &data {
                n += tok.encode(black_box(f)).len();
            }
            n
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: criterion's plotters backend needs system fonts, which CI boxes lack.
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
