//! What `tmoe` prints reads as plain words: paths, vocabulary lines,
//! settings and report fields as a user writes them, not Rust's Debug forms
//! (`["emptyd"]`, `Some("..")`, `"Folder"`, `File`); and every option of
//! every command has a line of help.

mod common;

use common::tmoe_outcome as run;

/// Debug's marks: a quoted list, an Option, a quoted enum variant.
fn assert_plain(text: &str) {
    for mark in ["[\"", "Some(", "\"Folder\""] {
        assert!(!text.contains(mark), "`{mark}` in:\n{text}");
    }
}

#[test]
fn paths_and_vocabulary_lines_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("emptyd")).unwrap();
    for cmd in ["vocab", "tokenize"] {
        let (ok, out) = run(dir.path(), &[cmd, "emptyd", "--out", "o", "--quiet"]);
        assert!(!ok, "{out}");
        assert!(
            out.contains("no capture files found under emptyd\n"),
            "{out}"
        );
        assert_plain(&out);
    }
    std::fs::write(dir.path().join("x.pcap"), "hello not a capture\n").unwrap();
    let (ok, out) = run(dir.path(), &["inspect", "x.pcap"]);
    assert!(!ok, "{out}");
    assert!(out.contains("unknown magic number 68 65 6c 6c"), "{out}");
    std::fs::write(dir.path().join("v.txt"), "hello not a capture\n").unwrap();
    std::fs::write(dir.path().join("x.pcap"), "").unwrap();
    let (ok, out) = run(dir.path(), &["inspect", "x.pcap", "--vocab", "v.txt"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "vocabulary must start with the specials [PAD] [UNK] [PD] [PY] [END], one per line; \
             line 1 is `hello not a capture`"
        ),
        "{out}"
    );
    assert_plain(&out);
}

#[test]
fn changed_study_settings_are_named_as_the_command_line_spells_them() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("s");
    std::fs::create_dir_all(study.join("runs")).unwrap();
    // A folder with a run made with `--labels folder --split-by file`.
    std::fs::write(study.join("runs/r.json"), "{}").unwrap();
    std::fs::write(
        study.join("study.json"),
        r#"{"labels": "Folder", "split_by": "file", "vocab_file": null}"#,
    )
    .unwrap();
    let (ok, out) = run(
        dir.path(),
        &[
            "study",
            "caps",
            "--out",
            "s",
            "--labels",
            "prefix",
            "--split-by",
            "time",
            "--vocab",
            "v.txt",
            "--quiet",
        ],
    );
    assert!(!ok, "{out}");
    for change in [
        "labels: folder then, prefix:-_ now",
        "split_by: file then, time now",
        "vocab_file: not set then, v.txt now",
    ] {
        assert!(out.contains(change), "`{change}` missing from:\n{out}");
    }
    assert_plain(&out);
}

/// Whether an option line of `-h` has help: after the gap on its line
/// (`--flag <V>  text [default: x]`) or, where clap puts every help below
/// its option, on the next, deeper line; a `[default: ..]` alone is none.
fn help_text(line: &str, next: Option<&str>) -> bool {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let text = match line.trim().split_once("  ") {
        Some((_, t)) => t.trim(),
        None => next
            .filter(|n| indent(n) > indent(line) && !n.trim_start().starts_with('-'))
            .map_or("", str::trim),
    };
    !text.is_empty() && !text.starts_with('[')
}

#[test]
fn every_option_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let (_, top) = run(dir.path(), &["--help"]);
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(
        commands.contains(&"vocab") && commands.contains(&"study"),
        "{top}"
    );
    let mut bare = Vec::new();
    for cmd in &commands {
        let (ok, help) = run(dir.path(), &[cmd, "-h"]);
        assert!(ok, "{help}");
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with('-') {
                continue;
            }
            if !help_text(line, lines.get(i + 1).copied()) {
                bare.push(format!("{cmd}: {}", line.trim()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "options without help:\n{}",
        bare.join("\n")
    );
}

/// `model-info` names the two models as the README does, not by the enum's
/// variant names.
#[test]
fn model_info_names_the_models_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(dir.path(), &["model-info"]);
    assert!(ok, "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" M ")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with("MoE ") && rows[1].starts_with("dense twin "),
        "{out}"
    );
}

/// `vocab` writes a vocab.txt and no dataset.json: its help does not say
/// that --mask-identifiers is recorded there (the shared text did).
#[test]
fn vocab_help_claims_no_dataset_json() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, help) = run(dir.path(), &["vocab", "--help"]);
    assert!(ok, "{help}");
    let mask = help
        .split("--mask-identifiers")
        .nth(1)
        .and_then(|t| t.split("\n      --").next())
        .unwrap_or("");
    assert!(
        !mask.contains("recorded in dataset.json") && mask.contains("`tokenize` records it"),
        "{help}"
    );
}

#[test]
fn an_existing_out_is_refused_in_the_same_words_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("o"), "keep me").unwrap();
    std::fs::write(dir.path().join("r.json"), "{}").unwrap();
    // Each is refused before it reads anything else (none of the other
    // paths exists).
    let commands: [&[&str]; 6] = [
        &[
            "classify",
            "--checkpoint",
            "c",
            "--vocab",
            "v",
            "x.pcap",
            "--out",
            "o",
        ],
        &[
            "classify",
            "--checkpoint",
            "c",
            "--vocab",
            "v",
            "--stream",
            "--out",
            "o",
        ],
        &[
            "dump-logits",
            "--checkpoint",
            "c",
            "--data",
            "d",
            "--out",
            "o",
        ],
        &["bench", "cpu-gemm", "--out", "o"],
        &["bench", "chart", "r.json", "--out", "o"],
        &["vocab", "x.pcap", "--out", "o", "--quiet"],
    ];
    for args in commands {
        let (ok, out) = run(dir.path(), args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains("o exists; pass --force to replace it\n"),
            "{args:?}: {out}"
        );
        assert_eq!(std::fs::read(dir.path().join("o")).unwrap(), b"keep me");
    }
}

/// `study --rows`' help says what running without it does: every row
/// (`Row::ALL`). It used to say "the Table 2-3 rows; add moe-top1,moe-top4
/// for Table 4" while the default already ran those two.
#[test]
fn study_rows_help_names_the_default_it_runs() {
    use traffic_moe::study::Row;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(dir.path(), &["study", "--help"]);
    assert!(ok, "{out}");
    let rows = out.split("--rows").nth(1).unwrap();
    let rows = &rows[..rows.find("--seeds").unwrap()];
    assert!(rows.contains("default: every row"), "{rows}");
    for r in Row::ALL {
        assert!(!rows.contains(&format!("add {}", r.name())), "{rows}");
        assert!(
            rows.contains(&format!("- {}", r.name())),
            "{} unlisted: {rows}",
            r.name()
        );
    }
}

/// A file where a command's `--out` folder goes is refused first, in one
/// wording, and left as it was (pretrain and finetune said "creating afile:
/// File exists", tokenize "reading afile: Not a directory").
#[test]
fn a_file_given_as_an_out_folder_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("afile"), "mine\n").unwrap();
    std::fs::create_dir(dir.path().join("caps")).unwrap();
    for args in [
        &["pretrain", "--data", "data", "--out", "afile"][..],
        &[
            "finetune",
            "--data",
            "data",
            "--from-scratch",
            "--out",
            "afile",
        ],
        &["tokenize", "caps", "--out", "afile"],
        &["study", "caps", "--out", "afile"],
        &["demo", "--out", "afile"],
    ] {
        let (ok, out) = run(dir.path(), args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(
                "afile exists and is not a folder: --out takes a folder (created if missing)"
            ),
            "{args:?}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("afile")).unwrap(),
            "mine\n"
        );
    }
}

/// A `--data` that is missing or a file is named as such: it said only
/// "reading nope/dataset.json: No such file or directory" or "...: Not a
/// directory".
#[test]
fn a_data_folder_that_is_missing_or_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("afile"), "mine\n").unwrap();
    for (data, said) in [
        ("nope", "nope: no such folder (a dataset is the folder"),
        (
            "afile",
            "afile: a file, not a dataset (a dataset is the folder",
        ),
    ] {
        for args in [
            &["pretrain", "--data", data, "--out", "p"][..],
            &["finetune", "--data", data, "--from-scratch", "--out", "f"],
            &["eval", "--checkpoint", "c", "--data", data, "--out", "e"],
        ] {
            let (ok, out) = run(dir.path(), args);
            assert!(!ok, "{args:?}: {out}");
            assert!(
                out.contains(said) && !out.contains("dataset.json: No such file"),
                "{args:?}: {out}"
            );
        }
    }
}

#[test]
fn a_study_names_the_captures_it_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    common::tmoe(
        dir.path(),
        &["synth", "--out", "caps", "--flows-per-class", "6"],
    );
    std::fs::write(dir.path().join("caps/dns/notes.pcap"), "not a capture\n").unwrap();
    let study = [
        "study",
        "caps",
        "--out",
        "s",
        "--rows",
        "knn",
        "--seeds",
        "1",
        "--split-by",
        "flow",
        "--quiet",
    ];
    // One unreadable capture among many: the study runs, and says which
    // file it skipped and why (it was dropped without a word).
    let (ok, out) = run(dir.path(), &study);
    assert!(ok, "{out}");
    assert!(out.contains("(12 ok, 0 with warnings, 1 failed)"), "{out}");
    assert!(
        out.contains("problem: caps/dns/notes.pcap: not a pcap/pcapng capture"),
        "{out}"
    );
    // Nothing but an unreadable file: the refusal comes after the file and
    // its problem (it said only "0 flows read").
    std::fs::write(dir.path().join("t.txt"), "not a capture\n").unwrap();
    let (ok, out) = run(
        dir.path(),
        &[
            "study", "t.txt", "--out", "s2", "--rows", "knn", "--seeds", "1", "--quiet",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("problem: t.txt: not a pcap/pcapng capture"),
        "{out}"
    );
    assert!(out.contains("no labelled flow kept"), "{out}");
    assert_plain(&out);
}
