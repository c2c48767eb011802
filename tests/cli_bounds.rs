//! Arguments out of their range are refused by the parser, naming the
//! argument, before any work: no panic (`bench model --seq 0`, `finetune
//! --batch 0` panicked), no NaN rates (`bench model --iters 0`), no model
//! trained on nothing (`pretrain --steps 0` wrote one).

use std::process::Command;

/// `tmoe ARGS` must exit with clap's usage error (2); its stderr.
fn usage_error(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .args(args)
        .output()
        .expect("running tmoe");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "tmoe {}: {err}", args.join(" "));
    err
}

/// `tmoe ARGS` must exit with clap's usage error (2) about `flag`'s value.
fn refused(args: &[&str], flag: &str) {
    let err = usage_error(args);
    assert!(
        err.contains("invalid value") && err.contains(flag) && !err.contains("panicked"),
        "tmoe {}: {err}",
        args.join(" ")
    );
}

#[test]
fn counts_below_one_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "model", "--seq", "0"], "--seq"),
        (&["bench", "model", "--iters", "0"], "--iters"),
        (&["bench", "model", "--batch", "8,0"], "--batch"),
        (&["bench", "classify", "--batch", "0"], "--batch"),
        (&["bench", "cpu-attention", "--batch", "0"], "--batch"),
        (&["bench", "cpu-gemm", "--iters", "0"], "--iters"),
        (&["bench", "kernels", "--iters", "0"], "--iters"),
        (
            &["pretrain", "--data", "d", "--out", "o", "--steps", "0"],
            "--steps",
        ),
        (
            &["pretrain", "--data", "d", "--out", "o", "--batch", "0"],
            "--batch",
        ),
        (
            &["finetune", "--data", "d", "--out", "o", "--batch", "0"],
            "--batch",
        ),
        (
            &["finetune", "--data", "d", "--out", "o", "--epochs", "0"],
            "--epochs",
        ),
        // 0 stopped as 1 does: after the first epoch without a better score.
        (
            &["finetune", "--data", "d", "--out", "o", "--patience", "0"],
            "--patience",
        ),
        (
            &[
                "eval",
                "--checkpoint",
                "c",
                "--data",
                "d",
                "--out",
                "o",
                "--batch",
                "0",
            ],
            "--batch",
        ),
        (
            &["classify", "--checkpoint", "c", "--batch", "0", "x"],
            "--batch",
        ),
        (
            &["classify", "--checkpoint", "c", "--max-flows", "0", "x"],
            "--max-flows",
        ),
        (
            &["tokenize", "x", "--out", "o", "--max-flows", "0"],
            "--max-flows",
        ),
        (
            &["tokenize", "x", "--out", "o", "--packets", "0"],
            "--packets",
        ),
        (&["vocab", "x", "--out", "o", "--size", "0"], "--size"),
        (
            &["synth", "--out", "o", "--flows-per-file", "0"],
            "--flows-per-file",
        ),
        // Refused by synth itself (exit 1), not the parser.
        (
            &["synth", "--out", "o", "--flows-per-class", "0"],
            "--flows-per-class",
        ),
        // Quietly raised to 6 files (one per class).
        (
            &["bench", "classify", "--one-flow-files", "0"],
            "--one-flow-files",
        ),
        (&["demo", "--epochs", "0"], "--epochs"),
        (&["demo", "--pretrain-steps", "0"], "--pretrain-steps"),
        (&["study", "--batch", "0"], "--batch"),
        (&["study", "--budgets", "300,0"], "--budgets"),
        (&["baseline", "--trees", "0"], "--trees"),
        (&["model-info", "--seq", "0"], "--seq"),
        (
            &["tokenize", "x", "--out", "o", "--seq-len", "1"],
            "--seq-len",
        ),
        (&["dump-logits", "--flows", "0"], "--flows"),
    ];
    for (args, flag) in cases {
        refused(args, flag);
    }
}

#[test]
fn rates_and_fractions_out_of_range_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["pretrain", "--data", "d", "--out", "o", "--lr=0"], "--lr"),
        (
            &["pretrain", "--data", "d", "--out", "o", "--clip=-1"],
            "--clip",
        ),
        (
            &["finetune", "--data", "d", "--out", "o", "--lr=nan"],
            "--lr",
        ),
        (
            &["finetune", "--data", "d", "--out", "o", "--llrd=1.5"],
            "--llrd",
        ),
        (
            &[
                "finetune",
                "--data",
                "d",
                "--out",
                "o",
                "--train-fraction=0",
            ],
            "--train-fraction",
        ),
        (&["study", "--fractions=0.1,2"], "--fractions"),
        (
            &["tokenize", "x", "--out", "o", "--idle-timeout=0"],
            "--idle-timeout",
        ),
        (&["bench", "classify", "--rates=0.5,-1"], "--rates"),
    ];
    for (args, flag) in cases {
        refused(args, flag);
    }
}

/// Sizes past what any tensor can hold: `bench model --batch 10000000000`
/// panicked with "capacity overflow" before these bounds.
#[test]
fn sizes_past_the_address_space_are_refused() {
    let big_batch = "10000000000";
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "model", "--batch", big_batch], "--batch"),
        (&["bench", "model", "--seq", "1000000"], "--seq"),
        (&["bench", "classify", "--batch", "1048577"], "--batch"),
        (
            &[
                "pretrain", "--data", "d", "--out", "o", "--batch", big_batch,
            ],
            "--batch",
        ),
        (
            &[
                "finetune",
                "--data",
                "d",
                "--out",
                "o",
                "--seq-len",
                "70000",
            ],
            "--seq-len",
        ),
        (
            &[
                "classify",
                "x.pcap",
                "--checkpoint",
                "c",
                "--batch",
                big_batch,
            ],
            "--batch",
        ),
        (
            &["tokenize", "caps", "--out", "o", "--seq-len", "70000"],
            "--seq-len",
        ),
        // A list of every file to write ran out of memory.
        (
            &["synth", "--out", "o", "--flows-per-class", "1000000000000"],
            "--flows-per-class",
        ),
        (
            &["bench", "classify", "--synth-flows", "1000000000000"],
            "--synth-flows",
        ),
        (
            &["bench", "classify", "--one-flow-files", "1000000000000"],
            "--one-flow-files",
        ),
    ];
    for (args, flag) in cases {
        refused(args, flag);
    }
}

#[test]
fn vocabulary_sizes_past_any_corpus_are_refused() {
    // The trainer sized its table by the request: 10^12 entries asked for
    // 69 TB and ended as "out of memory ... a smaller --batch (or --seq,
    // --seq-len) needs less", naming options these commands do not have.
    let huge = "1000000000000";
    let cases: &[(&[&str], &str)] = &[
        (
            &["vocab", "caps", "--out", "v.txt", "--size", huge],
            "--size",
        ),
        (
            &["tokenize", "caps", "--out", "o", "--vocab-size", huge],
            "--vocab-size",
        ),
        (
            &["study", "caps", "--out", "s", "--vocab-size", huge],
            "--vocab-size",
        ),
    ];
    for (args, flag) in cases {
        let err = usage_error(args);
        assert!(
            err.contains(&format!("invalid value '{huge}' for '{flag}"))
                && err.contains(
                    "must be at most 1048576 (a corpus of byte bigrams has at most 74272 pieces)"
                ),
            "tmoe {}: {err}",
            args.join(" ")
        );
    }
    // The largest taken passes the parser (the usage error is the missing
    // inputs).
    let err = usage_error(&["vocab", "--size", "1048576"]);
    assert!(!err.contains("invalid value"), "{err}");
}

/// Options that only mean something beside another are refused without
/// it, naming what is missing, rather than ignored.
#[test]
fn options_without_the_option_they_shape_are_refused() {
    for extra in [
        &["--budget-fractions", "0.5"][..],
        &["--pretrain-extra", "x"],
    ] {
        let err = usage_error(&[&["study", "caps", "--out", "s"], extra].concat());
        assert!(err.contains("--budgets"), "{extra:?}: {err}");
    }
}

/// `--split` names a part of the dataset; anything else is refused by the
/// parser with the parts listed.
#[test]
fn a_split_that_is_not_a_part_is_refused() {
    for cmd in [
        &["baseline", "knn", "--data", "d", "--out", "o"][..],
        &["eval", "--checkpoint", "c", "--data", "d", "--out", "o"],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--split", "bogus"]);
        refused(&args, "--split");
        let err = usage_error(&args);
        assert!(err.contains("train, val, test"), "{err}");
    }
}

/// `finetune --init` takes the model's size and FFN from the checkpoint:
/// `--config` and `--ffn` beside it are refused, naming both, rather than
/// ignored (a dense `--ffn` fine-tuned the checkpoint's MoE without a word).
#[test]
fn finetune_model_options_beside_init_are_refused() {
    for extra in [&["--ffn", "dense"][..], &["--config", "small"]] {
        let init = [
            "finetune",
            "--data",
            "d",
            "--out",
            "o",
            "--init",
            "pt.safetensors",
        ];
        let err = usage_error(&[&init[..], extra].concat());
        assert!(
            err.contains("--init") && err.contains(extra[0]) && err.contains("cannot be used"),
            "{extra:?}: {err}"
        );
    }
}

/// `finetune` without a starting point names both ways to give one (it
/// asked for `--init` alone, as if `--from-scratch` did not exist).
#[test]
fn finetune_without_init_or_from_scratch_names_both() {
    let err = usage_error(&["finetune", "--data", "d", "--out", "o"]);
    assert!(
        err.contains("required") && err.contains("--init") && err.contains("--from-scratch"),
        "{err}"
    );
    // Both at once is still refused.
    let err = usage_error(&[
        "finetune",
        "--data",
        "d",
        "--out",
        "o",
        "--init",
        "c",
        "--from-scratch",
    ]);
    assert!(err.contains("cannot be used"), "{err}");
}
