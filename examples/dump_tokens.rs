//! Dumps every flow's token ids, for comparison with an independent
//! tokenizer (tools/tokens-reference.py, which also compares):
//! `T file proto initiator responder first_ts_ns total_packets ids`
//! (ids comma separated, unpadded: the last one is `[END]`).
//!
//! Two sources:
//! - captures, read as `tmoe tokenize` reads them (K packets, the payload
//!   bytes the tokenizer needs) and every flow encoded, however few packets:
//!   `cargo run --example dump_tokens -- --vocab vocab.txt [--seq-len 512]
//!   [--packets 10] [--payload-bytes 40] [--view full|header|payload]
//!   [--mask-identifiers] FILES..`
//! - a dataset that `tmoe tokenize` wrote: each row of its shards, read
//!   through the crate, with its `[PAD]` tail checked and cut off:
//!   `cargo run --example dump_tokens -- --dataset DIR`
use std::path::{Path, PathBuf};

use traffic_moe::traffic::capture::reader::{ReadConfig, read_capture};
use traffic_moe::traffic::dataset::build::load_dataset_info;
use traffic_moe::traffic::dataset::shard::Shard;
use traffic_moe::traffic::tokens::features::View;
use traffic_moe::traffic::tokens::tokenize::{FlowTokenizer, TokenizerConfig};
use traffic_moe::traffic::tokens::vocab::{PAD, Vocab};

fn ep(ip: std::net::IpAddr, port: u16) -> String {
    format!("{ip}|{port}")
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn dump_dataset(dir: &Path) {
    let info = load_dataset_info(dir).expect("dataset.json");
    for name in info.shards.values() {
        let shard = Shard::open(&dir.join(name)).expect("shard");
        for i in 0..shard.len() {
            let m = shard.meta(i);
            let n = shard.n_tokens(i);
            let row = shard.tokens(i);
            assert_eq!(row.len(), shard.seq_len());
            assert!(
                row[n..].iter().all(|&t| t == PAD),
                "{name} row {i}: not [PAD] after {n} tokens"
            );
            println!(
                "T\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                info.files[m.file_id as usize],
                m.proto,
                ep(m.src_addr(), m.src_port),
                ep(m.dst_addr(), m.dst_port),
                m.first_ts_ns,
                m.packet_count,
                join(&row[..n])
            );
        }
    }
}

fn main() {
    let mut cfg = TokenizerConfig::default();
    let mut vocab = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    let num = |args: &mut dyn Iterator<Item = String>, what: &str| -> usize {
        args.next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what} N"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dataset" => {
                return dump_dataset(&PathBuf::from(args.next().expect("--dataset DIR")));
            }
            "--vocab" => vocab = Some(PathBuf::from(args.next().expect("--vocab FILE"))),
            "--seq-len" => cfg.seq_len = num(&mut args, "--seq-len"),
            "--packets" => cfg.packets = num(&mut args, "--packets"),
            "--payload-bytes" => cfg.payload_bytes = num(&mut args, "--payload-bytes"),
            "--mask-identifiers" => cfg.mask_identifiers = true,
            "--view" => {
                cfg.view = match args.next().as_deref() {
                    Some("full") => View::Full,
                    Some("header") => View::Header,
                    Some("payload") => View::Payload,
                    v => panic!("--view full|header|payload, got {v:?}"),
                }
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    let vocab = Vocab::load(&vocab.expect("--vocab FILE")).expect("vocabulary");
    let rc = ReadConfig {
        max_packets: cfg.packets,
        payload_bytes: cfg.payload_bytes_read(),
        ..ReadConfig::default()
    };
    let tok = FlowTokenizer::new(vocab, cfg).expect("tokenizer");
    for (i, path) in files.iter().enumerate() {
        read_capture(path, i as u32, &rc, &mut |f| {
            println!(
                "T\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                path.display(),
                f.key.proto,
                ep(f.initiator.ip, f.initiator.port),
                ep(f.responder.ip, f.responder.port),
                f.first_ts_ns,
                f.total_packets,
                join(&tok.encode(&f))
            );
        });
    }
}
