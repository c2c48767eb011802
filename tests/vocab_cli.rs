//! `tmoe vocab` run as a binary: unreadable captures are named with their
//! reasons.

use std::process::Command;

/// Runs `tmoe args` in `dir`; returns success and stdout + stderr.
fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_capture_failing_names_each_file_and_says_none_could_be_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.pcap"), b"hello not a capture\n").unwrap();
    std::fs::write(dir.path().join("empty.pcap"), b"").unwrap();
    let (ok, out) = run(
        dir.path(),
        &[
            "vocab",
            "x.pcap",
            "empty.pcap",
            "--out",
            "v.txt",
            "--size",
            "100",
            "--quiet",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("problem: x.pcap: not a pcap/pcapng capture at byte offset 0"),
        "{out}"
    );
    assert!(out.contains("problem: empty.pcap: "), "{out}");
    assert!(
        out.contains("files: 2 (0 ok, 0 with warnings, 2 failed)"),
        "{out}"
    );
    assert!(out.contains("no capture could be read (2 files"), "{out}");
    assert!(!dir.path().join("v.txt").exists());
}
