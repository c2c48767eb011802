//! `tmoe vocab` run as a binary: unreadable captures are named with their
//! reasons, a bad `--out` is refused before any reading, and `--size`
//! counts as its help says.

mod common;

use common::tmoe_outcome as run;

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

#[test]
fn an_unwritable_out_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // A text file: were it read, its problem line would show.
    std::fs::write(dir.path().join("x.pcap"), b"not a capture\n").unwrap();
    for (out_path, why) in [
        (
            "/sys/v.txt",
            "cannot write /sys/v.txt: folder /sys is not writable",
        ),
        (
            "missing/v.txt",
            "cannot write missing/v.txt: folder missing does not exist",
        ),
        (".", ". is a folder; --out takes a file name"),
    ] {
        let (ok, out) = run(
            dir.path(),
            &["vocab", "x.pcap", "--out", out_path, "--quiet"],
        );
        assert!(!ok, "{out}");
        assert!(out.contains(why), "{out_path}: {out}");
        assert!(
            !out.contains("problem:"),
            "{out_path} read the captures: {out}"
        );
    }
    std::fs::write(dir.path().join("v.txt"), b"keep me").unwrap();
    let (ok, out) = run(
        dir.path(),
        &["vocab", "x.pcap", "--out", "v.txt", "--quiet"],
    );
    assert!(
        !ok && out.contains("v.txt exists; pass --force to replace it"),
        "{out}"
    );
    assert!(!out.contains("problem:"), "{out}");
    assert_eq!(std::fs::read(dir.path().join("v.txt")).unwrap(), b"keep me");
}

#[test]
fn a_size_below_the_alphabet_keeps_the_alphabet_as_the_help_says() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &[
            "synth",
            "--out",
            "caps",
            "--flows-per-class",
            "3",
            "--seed",
            "1",
        ],
    );
    let out = common::tmoe(
        dir.path(),
        &["vocab", "caps", "--out", "v.txt", "--size", "3", "--quiet"],
    );
    let lines = std::fs::read_to_string(dir.path().join("v.txt")).unwrap();
    let entries = lines.lines().count();
    // The 5 specials, then each hex digit alone and as a ## piece.
    assert_eq!(entries, 5 + 32, "{lines}");
    assert!(
        out.contains("note: --size 3 is below the corpus's alphabet: its 32 characters"),
        "{out}"
    );
    let help = common::tmoe(dir.path(), &["vocab", "--help"]);
    assert!(
        help.contains("alphabet") && help.contains("always kept"),
        "{help}"
    );
}
