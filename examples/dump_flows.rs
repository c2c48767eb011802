//! Dumps every flow of captures as tab-separated lines, for comparison with
//! an independent parser (tools/flow-reference.py, tools/flow-compare.py):
//! `F file proto initiator responder first_ts_ns last_ts_ns total_packets
//! kept` (kept: each kept packet as `>ip_len:payload_len` from the initiator,
//! `<` towards it), then one `S` line of statistics per file.
//! Usage: `cargo run --example dump_flows -- [--idle-s S] [--no-split] [--max-flows N] FILES..`
use std::path::PathBuf;

use traffic_moe::traffic::capture::reader::{ReadConfig, read_capture};
use traffic_moe::traffic::types::Endpoint;

fn ep(e: &Endpoint) -> String {
    format!("{}|{}", e.ip, e.port)
}

fn main() {
    let mut cfg = ReadConfig::default();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--idle-s" => {
                let s: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--idle-s S");
                cfg.idle_timeout_ns = (s * 1e9) as u64;
            }
            "--no-split" => cfg.split_on_fin_rst = false,
            "--max-flows" => {
                cfg.max_flows = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--max-flows N");
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    for (i, path) in files.iter().enumerate() {
        let mut out = Vec::new();
        let st = read_capture(path, i as u32, &cfg, &mut |f| out.push(f));
        for f in out {
            println!(
                "F\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                path.display(),
                f.key.proto,
                ep(&f.initiator),
                ep(&f.responder),
                f.first_ts_ns,
                f.last_ts_ns,
                f.total_packets,
                f.packets
                    .iter()
                    .map(|p| format!(
                        "{}{}:{}",
                        if p.from_initiator { '>' } else { '<' },
                        p.ip_len,
                        p.payload_len
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        println!(
            "S\t{}\tframes={}\tpackets={}\tflows={}\tskips={:?}",
            path.display(),
            st.frames,
            st.packets,
            st.flows,
            st.skips
        );
    }
}
