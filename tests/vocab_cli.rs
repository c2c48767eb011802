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

/// An `--out` that is one of the captures (here under another spelling) is
/// refused, even with `--force`: the vocabulary replaced the capture.
#[test]
fn an_out_that_is_one_of_the_captures_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("caps")).unwrap();
    // A capture vocab can read: two 3-packet UDP flows.
    let mine = common::udp_capture(2);
    std::fs::write(dir.path().join("caps/x.pcap"), &mine).unwrap();
    let (ok, out) = run(
        dir.path(),
        &[
            "vocab",
            "caps",
            "--out",
            "./caps/x.pcap",
            "--force",
            "--quiet",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("--out ./caps/x.pcap is one of the captures given"),
        "{out}"
    );
    assert_eq!(std::fs::read(dir.path().join("caps/x.pcap")).unwrap(), mine);
}

#[test]
fn a_vocabulary_cut_short_by_a_full_disk_is_not_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "6"],
    );
    // A file size limit of 1 block (a full disk); the vocabulary is larger.
    // It was written in place and left truncated as v.txt.
    let out = common::tmoe_on_a_full_disk(
        dir.path(),
        1,
        &[
            "vocab", "caps", "--out", "v.txt", "--size", "300", "--quiet",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("writing vocabulary v.txt.tmp") && stderr.contains("File too large"),
        "{stderr}"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("v.txt"))
        .collect();
    assert!(left.is_empty(), "a partial vocabulary stayed: {left:?}");
}

/// An `--out` that is a link (or a device: `--out /dev/stdout --force`) is
/// written through, not replaced by a rename of the temporary file.
#[test]
fn an_out_that_is_a_link_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    // A capture vocab can read: two 3-packet UDP flows.
    let mine = common::udp_capture(2);
    std::fs::write(dir.path().join("x.pcap"), mine).unwrap();
    std::fs::write(dir.path().join("target.txt"), b"old").unwrap();
    std::os::unix::fs::symlink("target.txt", dir.path().join("link.txt")).unwrap();
    let (ok, out) = run(
        dir.path(),
        &["vocab", "x.pcap", "--out", "link.txt", "--force", "--quiet"],
    );
    assert!(ok, "{out}");
    let link = std::fs::symlink_metadata(dir.path().join("link.txt")).unwrap();
    assert!(link.is_symlink(), "the link was replaced");
    let vocab = std::fs::read_to_string(dir.path().join("target.txt")).unwrap();
    assert!(vocab.starts_with("[PAD]"), "{vocab}");
}
