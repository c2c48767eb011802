//! `tmoe eval` on a pretrained checkpoint (no classifier head): the
//! next-token loss on a split beside count models fitted on the training
//! split, `lm.json`, on the packed f32 and bf16 engines; and its refusals.

mod common;
use common::{synth_dataset, tmoe, tmoe_outcome};
use traffic_moe::eval::lm::lm_loss;
use traffic_moe::model::batch::{Sequences, open_part};
use traffic_moe::model::checkpoint::load_classifier;

fn lm_json(dir: &std::path::Path, out: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(out).join("lm.json")).unwrap()).unwrap()
}

#[test]
fn a_pretrained_checkpoint_is_evaluated_by_its_next_token_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "12", "5");
    tmoe(
        d,
        &[
            "pretrain",
            "--data",
            "data",
            "--out",
            "pt",
            "--steps",
            "6",
            "--batch",
            "4",
            "--seq-len",
            "24",
            "--quiet",
        ],
    );
    let eval = |out: &str, more: &[&str]| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            "pt/model.safetensors",
            "--data",
            "data",
            "--out",
            out,
            "--quiet",
        ];
        args.extend_from_slice(more);
        tmoe_outcome(d, &args)
    };
    let (ok, text) = eval("ev", &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("test split:") && text.contains("next-token loss"),
        "{text}"
    );
    let r = lm_json(d, "ev");

    // The same targets and loss as the library's held-out loss on the
    // reference engine (the packed f32 engine sums in another order).
    let test = open_part(&d.join("data"), "test").unwrap();
    let idx: Vec<usize> = (0..test.count()).collect();
    let pairs: usize = idx
        .iter()
        .map(|&i| test.n_tokens(i).min(24).saturating_sub(1))
        .sum();
    assert_eq!(r["targets"].as_u64().unwrap() as usize, pairs, "{r}");
    assert_eq!(r["flows"].as_u64().unwrap() as usize, idx.len());
    let (model, params, _) = load_classifier(&d.join("pt/model.safetensors")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (want, n) = lm_loss(&model, &params, &test, &idx, (8, 24), &stop).unwrap();
    assert_eq!(n as usize, pairs);
    let loss = r["loss"].as_f64().unwrap();
    assert!((loss - want).abs() <= 1e-4 * want, "{loss} vs {want}");
    assert!((r["perplexity"].as_f64().unwrap() - loss.exp()).abs() <= 1e-9 * loss.exp());
    for k in ["unigram", "bigram"] {
        let v = r[k].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{k}: {r}");
    }
    assert_eq!(r["baselines_fitted_on"], "train");
    // Pretraining's length, from the checkpoint (the shards hold 32).
    assert_eq!(r["seq_len"], 24);

    // bf16 weights: the same targets, and a loss near f32's (the bounds
    // derived from bf16's rounding are tested in tests/engine_lm_loss.rs;
    // this checks that the CLI runs the bf16 engine on the same flows).
    let (ok, text) = eval("ev16", &["--precision", "bf16"]);
    assert!(ok, "{text}");
    let r16 = lm_json(d, "ev16");
    assert_eq!(r16["targets"], r["targets"]);
    assert_eq!(r16["precision"], "bf16");
    let l16 = r16["loss"].as_f64().unwrap();
    assert!((l16 - loss).abs() <= 0.02 * loss, "{l16} vs {loss}");

    // Nothing is replaced without --force; a classifier's --routing is refused.
    let (ok, text) = eval("ev", &[]);
    assert!(
        !ok && text.contains("lm.json exists; pass --force"),
        "{text}"
    );
    let (ok, text) = eval("ev4", &["--routing"]);
    assert!(
        !ok && text.contains("a pretrained model without classes"),
        "{text}"
    );
}

#[test]
fn an_unlabelled_corpus_has_only_its_train_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::synth_captures(d, "6", "3");
    tmoe(
        d,
        &[
            "tokenize",
            "caps",
            "--out",
            "corpus",
            "--seq-len",
            "32",
            "--vocab-size",
            "600",
            "--quiet",
        ],
    );
    tmoe(
        d,
        &[
            "pretrain", "--data", "corpus", "--out", "pt", "--steps", "2", "--batch", "4",
            "--quiet",
        ],
    );
    let base = [
        "eval",
        "--checkpoint",
        "pt/model.safetensors",
        "--data",
        "corpus",
        "--out",
        "ev",
        "--quiet",
    ];
    let (ok, text) = tmoe_outcome(d, &base);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the dataset has no test split") && text.contains("pass --split train"),
        "{text}"
    );
    let mut train = base.to_vec();
    train.extend(["--split", "train"]);
    let (ok, text) = tmoe_outcome(d, &train);
    assert!(ok, "{text}");
    assert!(text.contains("(the same flows: in-sample)"), "{text}");

    // A dataset of another vocabulary is refused, as for a classifier.
    tmoe(
        d,
        &[
            "tokenize",
            "caps",
            "--out",
            "other",
            "--seq-len",
            "32",
            "--vocab-size",
            "500",
            "--quiet",
        ],
    );
    let mut other = train.clone();
    (other[4], other[6]) = ("other", "ev2");
    let (ok, text) = tmoe_outcome(d, &other);
    assert!(
        !ok && text.contains("checkpoint does not fit dataset other"),
        "{text}"
    );
}
