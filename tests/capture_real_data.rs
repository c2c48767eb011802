//! Real captures (../shared/data): flow counts against the independent dpkt
//! count in expected_flow_counts.json, and robustness over every file.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use traffic_moe::traffic::reader::{ReadConfig, find_captures, read_capture, read_captures};
use traffic_moe::traffic::types::{PROTO_TCP, PROTO_UDP};

/// One row of expected_flow_counts.json (fields we compare).
#[derive(Debug, Clone, serde::Deserialize)]
struct Expected {
    file: String,
    packets: u64,
    linktype: Vec<i64>,
    flows: u64,
    flows_ge3: u64,
    tcp_flows_ge3: u64,
    udp_flows_ge3: u64,
}

fn load_expected(data: &Path) -> HashMap<String, Expected> {
    let text = std::fs::read_to_string(data.join("expected_flow_counts.json"))
        .expect("expected_flow_counts.json is readable");
    let rows: Vec<Expected> =
        serde_json::from_str(&text).expect("expected_flow_counts.json parses");
    rows.into_iter().map(|r| (r.file.clone(), r)).collect()
}

/// The dpkt count's rules: one flow per bidirectional 5-tuple per file.
fn counting_config() -> ReadConfig {
    ReadConfig {
        max_packets: 1,
        payload_bytes: 0,
        idle_timeout_ns: u64::MAX,
        split_on_fin_rst: false,
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    frames: u64,
    flows: u64,
    tcp_ge3: u64,
    udp_ge3: u64,
}

fn count_file(path: &Path) -> Counts {
    let mut c = Counts::default();
    let st = read_capture(path, 0, &counting_config(), &mut |f| {
        c.flows += 1;
        if f.total_packets >= 3 {
            match f.key.proto {
                PROTO_TCP => c.tcp_ge3 += 1,
                PROTO_UDP => c.udp_ge3 += 1,
                _ => {}
            }
        }
    });
    c.frames = st.frames;
    c
}

#[test]
fn iot_sentinel_flow_counts_match_dpkt() {
    let Some(dir) = common::shared_data("iot-sentinel") else {
        return;
    };
    let data = dir.parent().unwrap().to_path_buf();
    let expected = load_expected(&data);
    let files = find_captures(&dir).unwrap();
    assert_eq!(files.len(), 550, "iot-sentinel holds 550 captures");
    let (mut total_ge3, mut total_packets, mut total_flows) = (0, 0, 0);
    let mut diffs = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&data)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let exp = expected
            .get(&rel)
            .unwrap_or_else(|| panic!("{rel} not in expected_flow_counts.json"));
        let got = count_file(path);
        total_ge3 += got.tcp_ge3 + got.udp_ge3;
        total_packets += got.frames;
        total_flows += got.flows;
        let want = Counts {
            frames: exp.packets,
            flows: exp.flows,
            tcp_ge3: exp.tcp_flows_ge3,
            udp_ge3: exp.udp_flows_ge3,
        };
        if got != want {
            diffs.push(format!("{rel}: got {got:?}, dpkt {want:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "per-file differences:\n{}",
        diffs.join("\n")
    );
    assert_eq!(total_packets, 193_421);
    assert_eq!(total_flows, 15_065);
    assert_eq!(total_ge3, 9_280);
}
