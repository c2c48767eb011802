//! `tmoe bench classify` run as a binary on a few flows.
//!
//! It removes or replaces only what it wrote (`--no-stream`, six one-flow
//! captures): a --work folder of the user's kept a dataset in data/ that a
//! forced run removed whole; a run's own data/ went with whatever else it
//! held.
//!
//! Each stream run is made twice,
//! once with the frames handed over from memory (`stream-memory`) and once
//! with the same frames written as capture bytes into an OS pipe and read
//! as `classify --stream` reads standard input (`stream-pipe`); both must
//! count the same frames, packets and verdicts, unpaced and paced. The
//! captures mix two link types (Ethernet and raw IP), so the pipe carries
//! a pcapng with an interface for each; the one-flow set a classic pcap.

mod common;

use traffic_moe::traffic::capture::pcap_writer::{Ipv4Opts, PcapWriter, ipv4, udp};
use traffic_moe::traffic::types::PROTO_UDP;

/// The bench at its smallest, on `caps/dns` (no default captures), its
/// report in `report.json`; `extra` after.
fn bench_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "bench",
        "classify",
        "--captures",
        "caps/dns",
        "--one-flow-files",
        "6",
        "--no-stream",
        "--only",
        "moe",
        "--seq",
        "16",
        "--batch",
        "8",
        "--out",
        "report.json",
        "--force",
    ];
    a.extend_from_slice(extra);
    a
}

/// The run's `report.json` in `dir`.
fn report(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// The report's pipeline rows: one per input (caps/dns, the one-flow set).
fn report_rows(dir: &std::path::Path) -> usize {
    report(dir)["rows"].as_array().unwrap().len()
}

/// The bench with its stream runs, at its smallest (the MoE, unpaced and
/// at 0.9x), on `dir/caps` and six one-flow captures; `extra` after.
/// Gives its output and its report.
fn stream_bench(dir: &std::path::Path, extra: &[&str]) -> (String, serde_json::Value) {
    let caps = dir.join("caps");
    let mut argv = vec![
        "bench",
        "classify",
        "--seq",
        "16",
        "--batch",
        "8",
        "--captures",
        caps.to_str().unwrap(),
        "--one-flow-files",
        "6",
        "--rates",
        "0.9",
        "--only",
        "moe",
        "--out",
        "report.json",
    ];
    argv.extend_from_slice(extra);
    let text = common::tmoe(dir, &argv);
    (text, report(dir))
}

#[test]
fn a_forced_run_in_the_users_folder_leaves_their_dataset() {
    let dir = tempfile::tempdir().unwrap();
    // The user's project: captures, a dataset in data/ with a note of
    // theirs beside it.
    common::synth_dataset(dir.path(), "2", "1");
    let data = dir.path().join("data");
    std::fs::write(data.join("notes.txt"), "mine\n").unwrap();
    let before: Vec<(String, Vec<u8>)> = common::names_in(&data)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(data.join(&n)).unwrap()))
        .collect();

    // --force (for the report, and a folder with other files) does not
    // make the user's data/ the run's to replace.
    let (ok, text) = common::tmoe_outcome(dir.path(), &bench_args(&["--work", "."]));
    assert!(!ok, "{text}");
    assert!(text.contains("holds data,"), "{text}");
    assert!(text.contains("choose another --work"), "{text}");
    let after: Vec<(String, Vec<u8>)> = common::names_in(&data)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(data.join(&n)).unwrap()))
        .collect();
    assert_eq!(before, after);
    // Nothing written before the refusal.
    assert_eq!(common::names_in(dir.path()), ["caps", "data"]);
}

#[test]
fn a_run_replaces_only_what_an_earlier_run_wrote() {
    let dir = tempfile::tempdir().unwrap();
    common::synth_one_flow_files(dir.path());
    // A --work that is not there yet: made, and kept.
    common::tmoe(dir.path(), &bench_args(&["--work", "w"]));
    assert_eq!(report_rows(dir.path()), 2);
    let w = dir.path().join("w");
    assert!(w.join("data/dataset.json").is_file());
    assert!(w.join("tiny-moe.safetensors").is_file());
    // A file the run did not write, in its data/: the next run rebuilds the
    // dataset beside it (it removed data/ whole).
    std::fs::write(w.join("data/notes.txt"), "mine\n").unwrap();
    std::fs::remove_file(dir.path().join("report.json")).unwrap();
    common::tmoe(dir.path(), &bench_args(&["--work", "w"]));
    assert_eq!(report_rows(dir.path()), 2);
    assert_eq!(
        std::fs::read_to_string(w.join("data/notes.txt")).unwrap(),
        "mine\n"
    );
    assert!(w.join("data/dataset.json").is_file());
}

#[test]
fn the_default_work_folder_is_a_fresh_one_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    common::synth_one_flow_files(dir.path());
    // The temporary folder, holding what others left there.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(tmp.join("tmoe-bench-classify-other")).unwrap();
    std::fs::write(tmp.join("tmoe-bench-classify-other/keep.txt"), "x").unwrap();
    common::tmoe_with(dir.path(), &bench_args(&[]), |c| {
        c.env("TMPDIR", &tmp);
    });
    assert_eq!(report_rows(dir.path()), 2);
    assert_eq!(common::names_in(&tmp), ["tmoe-bench-classify-other"]);
    assert_eq!(
        common::names_in(&tmp.join("tmoe-bench-classify-other")),
        ["keep.txt"]
    );
}

/// A raw-IP (LINKTYPE_RAW) pcap of `flows` UDP flows of 2 packets each.
fn raw_ip_capture(flows: u16) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), 101).unwrap();
    for k in 0..2 * u64::from(flows) {
        let packet = ipv4(
            [10, 0, 1, 1].into(),
            [10, 0, 1, 2].into(),
            PROTO_UDP,
            &udp(5000 + (k % u64::from(flows)) as u16, 53, b"raw query"),
            &Ipv4Opts::default(),
        );
        w.write_frame(2_000_000_000 + k * 1_000, &packet).unwrap();
    }
    w.into_inner()
}

#[test]
fn the_pipe_rows_count_what_the_memory_rows_count() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    std::fs::create_dir(&caps).unwrap();
    std::fs::write(caps.join("eth.pcap"), common::udp_capture(12)).unwrap();
    std::fs::write(caps.join("raw.pcap"), raw_ip_capture(5)).unwrap();
    let (text, report) = stream_bench(dir.path(), &[]);
    assert!(
        text.contains("stream-memory") && text.contains("stream-pipe"),
        "{text}"
    );
    let rows = report["rows"].as_array().unwrap();
    let mut pairs = 0;
    for input in ["caps", "one-flow (6 flows)"] {
        for rate in [serde_json::Value::Null, 0.9.into()] {
            let row = |mode: &str| {
                rows.iter()
                    .find(|r| {
                        r["input"] == input && r["mode"] == mode && r["rate_fraction"] == rate
                    })
                    .unwrap_or_else(|| panic!("no {mode} row for {input} at {rate}: {rows:?}"))
            };
            let (memory, pipe) = (row("stream-memory"), row("stream-pipe"));
            let want = if input == "caps" { 17 } else { 6 };
            assert_eq!(memory["flows"], want, "{memory}");
            for key in ["flows", "packets"] {
                assert_eq!(pipe[key], memory[key], "{key}: {pipe} against {memory}");
            }
            for key in ["frames", "packets", "flows_finished", "flows_classified"] {
                assert_eq!(
                    pipe["stream"][key], memory["stream"][key],
                    "{key}: {pipe} against {memory}"
                );
            }
            assert_eq!(pipe["stream"]["unknown_interface_frames"], 0, "{pipe}");
            for r in [memory, pipe] {
                assert!(r["flows_per_s"].as_f64().unwrap() > 0.0, "{r}");
                assert!(r["latency_p50_ms"].as_f64().is_some(), "{r}");
                assert!(r["latency_p99_ms"].as_f64().is_some(), "{r}");
            }
            pairs += 1;
        }
    }
    assert_eq!(pairs, 4);
}

/// `--stream-via pipe` runs the pipe rows alone (the GPU check's choice:
/// half the stream time, and the path a capture takes).
#[test]
fn stream_via_pipe_runs_only_the_pipe_rows() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    std::fs::create_dir(&caps).unwrap();
    std::fs::write(caps.join("eth.pcap"), common::udp_capture(4)).unwrap();
    let (_, report) = stream_bench(dir.path(), &["--stream-via", "pipe"]);
    let mut modes: Vec<String> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", r["input"], r["mode"], r["rate_fraction"]))
        .collect();
    modes.sort();
    assert_eq!(
        modes,
        [
            "\"caps\" \"pipeline\" null",
            "\"caps\" \"stream-pipe\" 0.9",
            "\"caps\" \"stream-pipe\" null",
            "\"one-flow (6 flows)\" \"pipeline\" null",
            "\"one-flow (6 flows)\" \"stream-pipe\" 0.9",
            "\"one-flow (6 flows)\" \"stream-pipe\" null",
        ]
    );
}

#[test]
fn captures_that_give_no_flow_are_refused_not_timed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("caps")).unwrap();
    std::fs::create_dir(dir.path().join("caps/dns")).unwrap();
    std::fs::write(dir.path().join("caps/dns/notes.pcap"), "not a capture\n").unwrap();
    // A text file as the real captures: timed as "0 flows, 0 flows/s",
    // and the run went on to its report.
    let (ok, text) = common::tmoe_outcome(dir.path(), &bench_args(&[]));
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "error: dns: no flow classified from its 1 capture file (first problem: \
             caps/dns/notes.pcap: not a pcap/pcapng capture at byte offset 0"
        ),
        "{text}"
    );
    assert!(!dir.path().join("report.json").exists(), "{text}");
}

#[test]
fn a_work_folder_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine\n").unwrap();
    let (ok, text) = common::tmoe_outcome(dir.path(), &bench_args(&["--work", "notes.txt"]));
    assert!(!ok, "{text}");
    // It said "creating notes.txt: File exists (os error 17)".
    assert!(
        text.contains(
            "error: --work notes.txt exists and is not a folder: --work takes a folder \
             (created if missing)"
        ),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine\n"
    );
}
