//! `tmoe demo` end to end, cut short (a few steps, one epoch): every file
//! the README lists is written, a missing GPU is refused before any work,
//! a used --out is refused without --force, and --force replaces only the
//! demo's own files.

mod common;

use clap::Parser;
use traffic_moe::cli::demo;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    demo: demo::Args,
}

fn args(out: &std::path::Path, extra: &[&str]) -> demo::Args {
    let mut argv = vec!["demo", "--out", out.to_str().unwrap(), "--quiet"];
    argv.extend_from_slice(&["--pretrain-steps", "3", "--epochs", "1"]);
    argv.extend_from_slice(&["--seq-len", "32", "--max-per-class", "8"]);
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).demo
}

#[test]
fn the_demo_writes_every_file_the_readme_lists() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-out");
    demo::run(args(&out, &[])).unwrap();
    for f in [
        "captures",
        "dataset/dataset.json",
        "pretrain/model.safetensors",
        "pretrain/pretrain_log.jsonl",
        "finetune/classifier.safetensors",
        "finetune/finetune_log.jsonl",
        "eval/report.txt",
        "eval/metrics.json",
        "eval/confusion.txt",
        "eval/confusion.csv",
        "eval/confusion.png",
        "eval/confusion.svg",
        "eval/curves.png",
        "eval/curves.svg",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let e = demo::run(args(&out, &[])).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");

    // `--force` replaces the earlier demo's files, not what else the user
    // keeps beside them (dataset/ and pretrain/ were removed whole).
    let before = std::fs::read(out.join("pretrain/model.safetensors")).unwrap();
    for f in ["dataset/notes.txt", "pretrain/notes.txt"] {
        std::fs::write(out.join(f), "mine").unwrap();
    }
    demo::run(args(&out, &["--force", "--seed", "7"])).unwrap();
    for f in ["dataset/notes.txt", "pretrain/notes.txt"] {
        assert_eq!(std::fs::read_to_string(out.join(f)).unwrap(), "mine", "{f}");
    }
    let after = std::fs::read(out.join("pretrain/model.safetensors")).unwrap();
    assert_ne!(before, after, "pretrain/model.safetensors not replaced");
    assert!(out.join("eval/report.txt").exists());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_missing_gpu_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-out");
    let e = demo::run(args(&out, &["--device", "cuda"])).unwrap_err();
    assert!(e.to_string().contains("--device cuda"), "{e}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_capture_the_demo_could_not_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tmoe = |args: &[&str]| common::tmoe_outcome(dir.path(), args);
    let (ok, text) = tmoe(&["synth", "--out", "caps", "--flows-per-class", "6"]);
    assert!(ok, "{text}");
    std::fs::write(dir.path().join("caps/dns/notes.pcap"), "not a capture\n").unwrap();
    let (ok, text) = tmoe(&[
        "demo",
        "--data",
        "caps",
        "--out",
        "d",
        "--quiet",
        "--pretrain-steps",
        "1",
        "--epochs",
        "1",
        "--seq-len",
        "32",
    ]);
    assert!(ok, "{text}");
    // It said "1 failed", not which capture nor why.
    assert!(
        text.contains("problem: caps/dns/notes.pcap: not a pcap/pcapng capture at byte offset 0"),
        "{text}"
    );
}
