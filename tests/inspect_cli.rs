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

/// A dataset.json whose tokenizer keeps no packets (`--packets 0` is
/// refused, a file can still say it) is refused, naming the file and the
/// field: it turned every flow into `[END]` alone, and `classify` gave
/// every flow the same class without a word.
#[test]
fn a_dataset_whose_tokenizer_keeps_no_packets_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::synth_one_flow_files(dir.path());
    common::tmoe(
        dir.path(),
        &[
            "tokenize",
            "caps",
            "--out",
            "d",
            "--vocab-size",
            "100",
            "--quiet",
        ],
    );
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
