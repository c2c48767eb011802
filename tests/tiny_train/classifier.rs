//! A small labelled dataset of generated captures (two classes, `dns` and
//! `web`) and a briefly fine-tuned tiny classifier on it: the fixture of the
//! evaluation, classification and C API tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::{tiny_finetune, tiny_model};
use traffic_moe::cli::classify;
use traffic_moe::model::FfnKind;
use traffic_moe::model::batch::open_part;
use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, eth_ipv4, tcp, udp};
use traffic_moe::traffic::dataset::build::{
    DatasetConfig, DatasetInfo, build_dataset, load_dataset_info,
};
use traffic_moe::traffic::dataset::labels::LabelSource;
use traffic_moe::traffic::tokens::tokenize::TokenizerConfig;
use traffic_moe::traffic::types::{PROTO_TCP, PROTO_UDP};
use traffic_moe::train::finetune::{FinetuneOpts, finetune};

pub const SEC: u64 = 1_000_000_000;

/// Class `dns`: UDP query/answer pairs. Class `web`: a TCP handshake, a
/// request and a response. Payloads differ per flow so no two flows dedupe.
pub fn write_captures(root: &Path, flows_per_file: u32) {
    for (class, files) in [("dns", 3u32), ("web", 3u32)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            let file = std::fs::File::create(dir.join(format!("{class}{f}.pcap"))).unwrap();
            let mut w = PcapWriter::new(std::io::BufWriter::new(file), 1).unwrap();
            for i in 0..flows_per_file {
                // Distinct endpoints and times across every file of both classes.
                let n = if class == "dns" { 0 } else { 5000 } + f * 1000 + i;
                let cli = Ipv4Addr::new(10, 0, (n / 250) as u8, (n % 250) as u8 + 1);
                let srv = Ipv4Addr::new(192, 168, 1, 53);
                let t = 1_700_000_000 * SEC + n as u64 * SEC;
                let port = 20_000 + n as u16;
                let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
                if class == "dns" {
                    let q = format!("\x12\x34\x01\0\0\x01q{n}.example.com");
                    let r = format!("\x12\x34\x71\x70\0\x01\0\x01a{n}.example.com {}", n * 7);
                    frames.push((
                        t,
                        eth_ipv4(cli, srv, PROTO_UDP, &udp(port, 53, q.as_bytes())),
                    ));
                    frames.push((
                        t + 20_000_000,
                        eth_ipv4(srv, cli, PROTO_UDP, &udp(53, port, r.as_bytes())),
                    ));
                    frames.push((
                        t + 50_000_000,
                        eth_ipv4(cli, srv, PROTO_UDP, &udp(port, 53, q.as_bytes())),
                    ));
                    frames.push((
                        t + 70_000_000,
                        eth_ipv4(srv, cli, PROTO_UDP, &udp(53, port, r.as_bytes())),
                    ));
                } else {
                    let req = format!("GET /page{n} HTTP/1.1\r\nHost: h{}", n % 17);
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}", 100 + n);
                    let seg = |sp, dp, seq, flags, p: &[u8]| tcp(sp, dp, seq, 1, flags, 64240, p);
                    frames.push((
                        t,
                        eth_ipv4(cli, srv, PROTO_TCP, &seg(port, 80, 1, 0x02, b"")),
                    ));
                    frames.push((
                        t + 1_000_000,
                        eth_ipv4(srv, cli, PROTO_TCP, &seg(80, port, 9, 0x12, b"")),
                    ));
                    frames.push((
                        t + 2_000_000,
                        eth_ipv4(cli, srv, PROTO_TCP, &seg(port, 80, 2, 0x10, b"")),
                    ));
                    frames.push((
                        t + 3_000_000,
                        eth_ipv4(cli, srv, PROTO_TCP, &seg(port, 80, 2, 0x18, req.as_bytes())),
                    ));
                    frames.push((
                        t + 9_000_000,
                        eth_ipv4(
                            srv,
                            cli,
                            PROTO_TCP,
                            &seg(80, port, 10, 0x18, resp.as_bytes()),
                        ),
                    ));
                }
                for (ts, fr) in frames {
                    w.write_frame(ts, &fr).unwrap();
                }
            }
        }
    }
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub caps: PathBuf,
    pub data: PathBuf,
    pub ckpt: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let caps = root.join("caps");
    write_captures(&caps, 20);
    let data = root.join("data");
    let info = build_small_dataset(&caps, &data, 200, 64);
    assert_eq!(info.classes, vec!["dns".to_string(), "web".to_string()]);
    let ckpt = fine_tuned(&data, &root.join("run"), 64, |o| FinetuneOpts {
        max_epochs: 3,
        batch: 16,
        lr: 3e-3,
        ..o
    });
    Fixture {
        _dir: dir,
        root,
        caps,
        data,
        ckpt,
    }
}

/// The fixture's dataset of the captures under `caps` in `data`: folder
/// labels, a `vocab_size` vocabulary, `seq_len` tokens of 5 packets of 16
/// payload bytes, flows of 3 packets or more.
pub fn build_small_dataset(
    caps: &Path,
    data: &Path,
    vocab_size: usize,
    seq_len: usize,
) -> DatasetInfo {
    let cfg = DatasetConfig {
        inputs: vec![caps.to_path_buf()],
        labels: LabelSource::Folder,
        vocab_size,
        tokenizer: TokenizerConfig {
            seq_len,
            packets: 5,
            payload_bytes: 16,
            ..TokenizerConfig::default()
        },
        min_packets: 3,
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, data, false).unwrap();
    load_dataset_info(data).unwrap()
}

/// A tiny Traffic-MoE classifier of `seq_len` tokens fine-tuned on the
/// dataset `data` into `run`, with the options `tune` makes of
/// `tiny_finetune`'s; its checkpoint.
pub fn fine_tuned(
    data: &Path,
    run: &Path,
    seq_len: usize,
    tune: impl FnOnce(FinetuneOpts) -> FinetuneOpts,
) -> PathBuf {
    let info = load_dataset_info(data).unwrap();
    let opts = tune(tiny_finetune(
        tiny_model(FfnKind::Moe, info.vocab_size, seq_len),
        &info.classes,
        run,
    ));
    let (train, val) = (
        open_part(data, "train").unwrap(),
        open_part(data, "val").unwrap(),
    );
    finetune(&opts, &train, &val, info.vocab_hash)
        .unwrap()
        .checkpoint
}

/// A tiny classifier for tests that use it without checking what it says:
/// captures of 6 flows a file in `root/caps`, their dataset in `root/data`
/// (200 pieces, sequence 64), fine-tuned for one epoch into `root/run`
/// with the options `tune` makes of those; (dataset, checkpoint).
pub fn one_epoch_classifier(
    root: &Path,
    tune: impl FnOnce(FinetuneOpts) -> FinetuneOpts,
) -> (PathBuf, PathBuf) {
    let caps = root.join("caps");
    write_captures(&caps, 6);
    let data = root.join("data");
    build_small_dataset(&caps, &data, 200, 64);
    let ckpt = fine_tuned(&data, &root.join("run"), 64, |o| {
        tune(FinetuneOpts { max_epochs: 1, ..o })
    });
    (data, ckpt)
}

/// `tmoe classify` arguments for the fixture's classifier and dataset.
pub fn classify_args(
    f: &Fixture,
    captures: Vec<PathBuf>,
    format: classify::Format,
) -> classify::Args {
    classify_args_for(&f.ckpt, &f.data, captures, format)
}

/// `tmoe classify` arguments for a classifier and its dataset (CPU, f32,
/// batch 16, quiet, standard output).
pub fn classify_args_for(
    ckpt: &Path,
    data: &Path,
    captures: Vec<PathBuf>,
    format: classify::Format,
) -> classify::Args {
    classify::Args {
        checkpoint: ckpt.to_path_buf(),
        captures,
        stream: false,
        early: false,
        data: Some(data.to_path_buf()),
        vocab: None,
        format,
        out: None,
        force: false,
        min_packets: None,
        batch: Some(16),
        device: traffic_moe::engine::Device::Cpu,
        precision: traffic_moe::engine::Precision::F32,
        readers: 0,
        max_flows: None,
        seq_len: None,
        quiet: true,
    }
}
