//! A classifier tokenizes new flows as its training flows were tokenized:
//! `classify --vocab` alone takes the view, identifier masking, packets and
//! payload bytes the checkpoint records (it used the defaults: a model
//! trained on headers alone was fed full tokens), and a `--data` dataset
//! that tokenizes otherwise is refused.

mod common;
use common::{synth_captures, tmoe, tmoe_outcome};

#[test]
fn classify_tokenizes_new_flows_as_the_model_was_trained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_captures(d, "4", "3");
    let tokenize = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "tokenize",
            "caps",
            "--out",
            out,
            "--labels",
            "folder",
            "--seq-len",
            "32",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        tmoe(d, &args);
    };
    // Trained on headers alone, identifiers masked; the same vocabulary
    // tokenized with the defaults (full view, no masking) beside it.
    tokenize(
        "data",
        &[
            "--view",
            "header",
            "--mask-identifiers",
            "--vocab-size",
            "600",
        ],
    );
    tokenize("full", &["--vocab", "data/vocab.txt"]);
    tmoe(
        d,
        &[
            "finetune",
            "--data",
            "data",
            "--from-scratch",
            "--out",
            "ft",
            "--epochs",
            "1",
            "--seq-len",
            "32",
            "--quiet",
        ],
    );
    let classify = |vocab: &[&str]| {
        let mut args = vec!["classify", "--checkpoint", "ft/classifier.safetensors"];
        args.extend_from_slice(vocab);
        args.extend_from_slice(&["--format", "jsonl", "--quiet", "caps"]);
        tmoe_outcome(d, &args)
    };
    // The verdicts (JSON lines), not the summary with its timing.
    let verdicts = |vocab: &[&str]| {
        let (ok, text) = classify(vocab);
        assert!(ok, "{text}");
        let rows: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(String::from)
            .collect();
        assert!(rows.len() >= 12, "{text}");
        rows
    };
    assert_eq!(
        verdicts(&["--vocab", "data/vocab.txt"]),
        verdicts(&["--data", "data"]),
        "--vocab tokenized otherwise than training"
    );
    let (ok, other) = classify(&["--data", "full"]);
    assert!(!ok, "a dataset tokenized otherwise was used: {other}");
    let says = |text: &str| {
        text.contains("tokenizes flows with view Full, mask_identifiers false")
            && text.contains("was trained on view Header, mask_identifiers true")
    };
    assert!(says(&other), "{other}");
    // eval too: its test part is the same flows tokenized otherwise.
    let (ok, eval) = tmoe_outcome(
        d,
        &[
            "eval",
            "--checkpoint",
            "ft/classifier.safetensors",
            "--data",
            "full",
            "--out",
            "ev",
        ],
    );
    assert!(!ok && says(&eval), "{eval}");
    assert!(!d.join("ev").exists(), "nothing written");
}
