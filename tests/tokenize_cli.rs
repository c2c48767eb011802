//! `tmoe tokenize` run as a binary on a folder where no input yields a flow:
//! the per-file problems and the read summary come first, as in a run with
//! flows, then the error.

mod common;

/// The full-disk tests' tokenize call: `caps` into `data`.
const TOKENIZE: &[&str] = &[
    "tokenize",
    "caps",
    "--out",
    "data",
    "--labels",
    "folder",
    "--vocab-size",
    "300",
    "--quiet",
];

use std::process::{Command, Stdio};

#[test]
fn broken_inputs_are_reported_before_the_empty_corpus_error() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    std::fs::create_dir_all(&caps).unwrap();
    // Empty, not a capture at all, and a pcap cut inside its file header.
    std::fs::write(caps.join("empty.pcap"), b"").unwrap();
    std::fs::write(caps.join("notes.pcap"), b"these are notes, not packets\n").unwrap();
    std::fs::write(caps.join("cut.pcap"), [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]).unwrap();

    // stdout and stderr into one file, so their order shows.
    let log = dir.path().join("log.txt");
    let f = std::fs::File::create(&log).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .arg("tokenize")
        .arg(&caps)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--quiet")
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f))
        .status()
        .unwrap();
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(!st.success(), "{out}");
    let at = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("`{s}` missing from:\n{out}"))
    };
    let summary = at("files: 3 (0 ok, 0 with warnings, 3 failed)");
    let problems: Vec<usize> = ["empty.pcap", "notes.pcap", "cut.pcap"]
        .iter()
        .map(|name| {
            let p = at(&format!("{}: ", caps.join(name).display()));
            assert!(
                out[..p].ends_with("problem: "),
                "{name}: not a problem line:\n{out}"
            );
            p
        })
        .collect();
    let error = at("cannot train a vocabulary on an empty corpus");
    assert!(
        summary < error && problems.iter().all(|&p| p < error),
        "{out}"
    );
    assert!(
        out.contains("0 flows read from 3 files (3 failed, 0 with warnings)"),
        "{out}"
    );
}

/// A missing `--vocab` or label CSV is named, and the failed call leaves no
/// empty output folder behind (both are read before the folder is made).
#[test]
fn missing_inputs_are_named_and_make_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "3"],
    );
    for (flag, value, named) in [
        ("--vocab", "missing-vocab.txt", "missing-vocab.txt"),
        ("--labels", "csv:missing.csv", "missing.csv"),
    ] {
        let (ok, out) = common::tmoe_outcome(
            dir.path(),
            &["tokenize", "caps", "--out", "data", flag, value, "--quiet"],
        );
        assert!(!ok, "{flag}: {out}");
        assert!(out.contains(named), "{flag}: the file is not named:\n{out}");
        assert!(!dir.path().join("data").exists(), "{flag}: left a folder");
    }
}

#[test]
fn linked_folders_that_lead_back_are_searched_once() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "6"],
    );
    // A link back up (followed some 40 levels deep: every capture read as
    // many times, the other classes' labelled `dns` through it) and a
    // second way into a class folder.
    std::os::unix::fs::symlink("..", dir.path().join("caps/dns/up")).unwrap();
    std::os::unix::fs::symlink("../bulk", dir.path().join("caps/voip/bulk-again")).unwrap();
    // The folder given twice, spelt two ways: read once.
    let out = common::tmoe(
        dir.path(),
        &[
            "tokenize", "caps", "./caps", "--out", "data", "--labels", "folder", "--quiet",
        ],
    );
    assert!(out.contains("files: 12 (12 ok,"), "{out}");
    assert!(
        out.contains("caps: 2 linked folder(s) left out (e.g. caps/dns/up)"),
        "{out}"
    );
    assert!(out.contains("0 duplicates"), "{out}");
}

/// A file cut short by a full disk (a file size limit) is not left behind:
/// the packet file was written in place and stayed truncated under its real
/// name; the shard's partial temporary file stayed, keeping the disk full.
#[test]
fn a_file_cut_short_by_a_full_disk_is_not_left_behind() {
    // (flows per class, the limit in blocks, the file the write fails on):
    // vocab.txt fits under both limits.
    for (flows, blocks, file) in [("30", 10, "train.pkts"), ("6", 40, "train.tmoe")] {
        let dir = tempfile::tempdir().unwrap();
        common::tmoe(
            dir.path(),
            &["synth", "--out", "caps", "--flows-per-class", flows],
        );
        let out = common::tmoe_on_a_full_disk(dir.path(), blocks, TOKENIZE);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("writing data/{file}.tmp: File too large")),
            "{stderr}"
        );
        // (The folder itself is gone now: a failed run takes back its files.)
        let left = common::names_in(&dir.path().join("data"));
        assert!(
            !left.iter().any(|n| n.starts_with(file)),
            "{file}: {left:?}"
        );
    }
}

#[test]
fn a_tokenize_that_fails_part_way_takes_back_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "30"],
    );
    // A file size limit of 10 blocks (a full disk) fails train.pkts after
    // vocab.txt was written: vocab.txt stayed, so the folder looked like a
    // dataset in the making and the next run refused it without --force.
    let out = common::tmoe_on_a_full_disk(dir.path(), 10, TOKENIZE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let data = dir.path().join("data");
    assert!(!data.exists(), "left {:?}", common::names_in(&data));
    // The next run (room again) is not refused.
    common::tmoe(dir.path(), TOKENIZE);
    assert!(data.join("dataset.json").exists());

    // Into a folder of the user's (--force): the user's file stays, and
    // so does the folder; none of the run's files do.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "mine\n").unwrap();
    let out = common::tmoe_on_a_full_disk(dir.path(), 10, &[TOKENIZE, &["--force"]].concat());
    assert!(!out.status.success());
    assert_eq!(common::names_in(&data), ["notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(data.join("notes.txt")).unwrap(),
        "mine\n"
    );
}

/// A run killed while writing dataset.json (here by SIGXFSZ: a file size
/// limit of 1 block, which the shards and vocab.txt of one flow fit under
/// and the json does not) leaves no dataset.json: it was written in place,
/// and a truncated one stayed to mark the folder as a dataset (demo and
/// study reuse such a folder) that no reader could load. The files it
/// would have named are whole; the next run (--force) replaces what is left.
#[test]
fn a_run_killed_while_writing_dataset_json_leaves_none() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    common::synth_one_flow_files(dir.path());
    let tokenize = [
        "tokenize",
        "caps/dns",
        "--out",
        "data",
        "--seq-len",
        "16",
        "--packets",
        "3",
        "--vocab-size",
        "1",
        "--quiet",
    ];
    // No `trap '' XFSZ`: the write past the limit kills the process.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tmoe"))
        .args(tokenize)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(25), // SIGXFSZ
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let left = common::names_in(&data);
    // Everything before the json was written whole; the json was not.
    assert_eq!(
        left,
        ["dataset.json.tmp", "train.pkts", "train.tmoe", "vocab.txt"],
        "{left:?}"
    );
    traffic_moe::traffic::dataset::shard::Shard::open(&data.join("train.tmoe")).unwrap();
    let err = traffic_moe::traffic::dataset::build::load_dataset_info(&data).unwrap_err();
    assert!(format!("{err:#}").contains("not a dataset"), "{err:#}");

    // Without the limit, --force replaces what the killed run left.
    common::tmoe(dir.path(), &[&tokenize[..], &["--force"]].concat());
    let left = common::names_in(&data);
    assert_eq!(
        left,
        ["dataset.json", "train.pkts", "train.tmoe", "vocab.txt"],
        "{left:?}"
    );
    let info = traffic_moe::traffic::dataset::build::load_dataset_info(&data).unwrap();
    assert_eq!(info.split_counts["train"], 1);
}

/// Out of memory in a command that runs no model, the message says what to
/// change for it: it advised "a smaller --batch (or --seq, --seq-len)",
/// options `tokenize` does not have.
#[test]
fn out_of_memory_in_tokenize_names_what_tokenize_takes() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "20"],
    );
    let (ok, text) = common::tmoe_outcome_with(dir.path(), TOKENIZE, |c| {
        c.env("TMOE_MEMORY_LIMIT", "4M");
    });
    assert!(!ok, "{text}");
    assert!(
        text.contains("tmoe: out of memory")
            && text.contains("a lower --max-flows")
            && !text.contains("--batch"),
        "{text}"
    );
}

/// The same flows under two labels (a class folder copied under another
/// name) are kept under each label, as dedup keys on tokens and label, and
/// now counted and said: the summary said "0 duplicates" and nothing else.
#[test]
fn flows_with_the_same_tokens_under_two_labels_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "12"],
    );
    let ambiguous = |dir: &std::path::Path| -> (u64, String) {
        let text = common::tmoe(dir, TOKENIZE);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("data/dataset.json")).unwrap())
                .unwrap();
        (info["ambiguous_flows"].as_u64().unwrap(), text)
    };
    let (none, text) = ambiguous(dir.path());
    assert_eq!(none, 0, "{text}");
    assert!(
        !text.contains("same tokens as a flow of another label"),
        "{text}"
    );

    let copy = dir.path().join("caps/dns-copy");
    std::fs::create_dir(&copy).unwrap();
    let dns = common::names_in(&dir.path().join("caps/dns"));
    for name in &dns {
        std::fs::copy(dir.path().join("caps/dns").join(name), copy.join(name)).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let (n, text) = ambiguous(dir.path());
    // Every distinct dns flow is kept twice, once under each label.
    assert!(n >= 2 && n % 2 == 0, "{n}: {text}");
    assert!(
        text.contains(&format!(
            "warning: {n} kept flows have the same tokens as a flow of another label"
        )),
        "{text}"
    );
}
