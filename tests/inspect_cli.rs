//! `tmoe inspect` run as a binary: a file it cannot read is an error naming
//! the file and why, and `--dataset` refuses the flags whose settings it
//! brings.

mod common;

use std::process::{Command, Output};

fn inspect(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .current_dir(dir)
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_file_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.pcap"), b"hello not a capture\n").unwrap();
    std::fs::write(dir.path().join("empty.pcap"), b"").unwrap();
    for name in ["x.pcap", "empty.pcap"] {
        let out = inspect(dir.path(), &[name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("error: cannot inspect {name}: ")),
            "{name}: {stderr}"
        );
        assert!(stderr.contains("at byte offset 0"), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: no table on a failure");
    }
    let out = inspect(dir.path(), &["x.pcap"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a pcap/pcapng capture"),
        "{out:?}"
    );
}

#[test]
fn dataset_refuses_the_flags_it_sets() {
    let dir = tempfile::tempdir().unwrap();
    for flag in [
        &["--view", "header"][..],
        &["--packets", "10"],
        &["--payload-bytes", "8"],
        &["--mask-identifiers"],
    ] {
        let mut args = vec!["x.pcap", "--dataset", "d"];
        args.extend_from_slice(flag);
        let out = inspect(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag:?}");
        assert!(
            stderr.contains("cannot be used with") && stderr.contains(flag[0]),
            "{flag:?}: {stderr}"
        );
    }
}

/// A capture given as a pipe (`tmoe inspect <(zcat x.pcap.gz)`, here a
/// FIFO fed by a thread) is read, as classify, tokenize and vocab read one
/// (it was refused as "not a file").
#[test]
fn a_capture_from_a_pipe_is_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let writer = common::fifo_with(&dir.path().join("fifo"), common::udp_capture(1));
    let out = inspect(dir.path(), &["fifo", "--list"]);
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("10.0.0.1:4000 -> 10.0.0.2:53"), "{stdout}");
    // A folder is still refused, by name.
    let out = inspect(dir.path(), &["."]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(".: a folder; inspect takes one capture file"),
        "{out:?}"
    );
}

/// One-flow captures in `caps/`, tokenized into `d/` with `extra` options.
fn one_flow_dataset(extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::synth_one_flow_files(dir.path());
    let mut args = vec![
        "tokenize",
        "caps",
        "--out",
        "d",
        "--vocab-size",
        "100",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    common::tmoe(dir.path(), &args);
    dir
}

/// A dataset.json whose tokenizer keeps no packets (`--packets 0` is
/// refused, a file can still say it) is refused, naming the file and the
/// field: it turned every flow into `[END]` alone, and `classify` gave
/// every flow the same class without a word.
#[test]
fn a_dataset_whose_tokenizer_keeps_no_packets_is_refused() {
    let dir = one_flow_dataset(&[]);
    let info = dir.path().join("d/dataset.json");
    let text = std::fs::read_to_string(&info).unwrap();
    assert!(text.contains("\"packets\": 10,"), "{text}");
    std::fs::write(&info, text.replace("\"packets\": 10,", "\"packets\": 0,")).unwrap();
    let capture = common::names_in(&dir.path().join("caps/dns"))[0].clone();
    let out = inspect(
        dir.path(),
        &[
            &format!("caps/dns/{capture}"),
            "--dataset",
            "d",
            "--flow",
            "0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: d/dataset.json: config.tokenizer is invalid: packets must be at least 1, got 0"
        ),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// With `--dataset`, flows end at the dataset's idle timeout, as `tokenize`
/// cut them and `classify` reads them: a flow paused for 10 s under a 1 s
/// timeout is two flows (it was listed as one of 6 packets, whose tokens
/// the model never reads).
#[test]
fn dataset_flows_end_at_its_idle_timeout() {
    use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, eth_ipv4, udp};
    let dir = one_flow_dataset(&["--idle-timeout", "1"]);
    // 3 packets, a 10 s pause, 3 more, on one 5-tuple.
    let mut w = PcapWriter::new(Vec::new(), 1).unwrap();
    for (k, t) in [0u64, 1, 2, 10_000, 10_001, 10_002].into_iter().enumerate() {
        let (src, dst, sp, dp) = if k % 2 == 0 {
            ([10, 0, 0, 1], [10, 0, 0, 2], 4000, 53)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 53, 4000)
        };
        let frame = eth_ipv4(
            src.into(),
            dst.into(),
            traffic_moe::traffic::types::PROTO_UDP,
            &udp(sp, dp, format!("packet {k}").as_bytes()),
        );
        w.write_frame(1_700_000_000_000_000_000 + t * 1_000_000, &frame)
            .unwrap();
    }
    std::fs::write(dir.path().join("gap.pcap"), w.into_inner()).unwrap();
    let out = inspect(dir.path(), &["gap.pcap", "--dataset", "d", "--list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("10.0.0.1:4000 -> 10.0.0.2:53        3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("10.0.0.2:53 -> 10.0.0.1:4000        3"),
        "{stdout}"
    );
    // Without a dataset, the default timeout (120 s) keeps it one flow.
    let out = inspect(dir.path(), &["gap.pcap", "--list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("10.0.0.1:4000 -> 10.0.0.2:53        6"),
        "{stdout}"
    );
}

/// An IPv6 endpoint is written `[address]:port`, in the list and in a
/// flow's report: written bare (`2001:db8::1:443`), its port read as one
/// more group of the address.
#[test]
fn ipv6_endpoints_are_bracketed() {
    use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, ethernet, ipv6, udp};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
    let mut w = PcapWriter::new(Vec::new(), 1).unwrap();
    for k in 0..3u64 {
        let (src, dst, sp, dp) = if k % 2 == 0 {
            (a, b, 4000, 443)
        } else {
            (b, a, 443, 4000)
        };
        let ip = ipv6(
            src,
            dst,
            traffic_moe::traffic::types::PROTO_UDP,
            &[],
            &udp(sp, dp, b"hello"),
        );
        let frame = ethernet([2; 6], [4; 6], &[], 0x86dd, &ip);
        w.write_frame(1_700_000_000_000_000_000 + k * 1_000_000, &frame)
            .unwrap();
    }
    std::fs::write(dir.path().join("v6.pcap"), w.into_inner()).unwrap();
    let want = "[2001:db8::1]:4000 -> [2001:db8::2]:443";
    for args in [&["v6.pcap", "--list"][..], &["v6.pcap", "--flow", "0"]] {
        let out = inspect(dir.path(), args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains(want), "{args:?}:\n{stdout}");
    }
    // A flow number past the end names the range there is.
    let out = inspect(dir.path(), &["v6.pcap", "--flow", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("v6.pcap has 1 flow; --flow 3 is out of range (the only one is --flow 0)"),
        "{stderr}"
    );
}
