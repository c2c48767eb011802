//! The main path's commands one after another as a new user runs them
//! (synth -> tokenize -> pretrain -> finetune, demo, model-info, bench
//! model), and what each says when it meets a file the step before did not
//! make: every message names the file and what to do, and no output
//! contradicts itself.

mod common;

use common::{synth_dataset, tmoe, tmoe_outcome as run};

/// A tiny pretraining run of `steps` on `dir/data` into `dir/out`.
fn pretrain(dir: &std::path::Path, out: &str, steps: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "pretrain", "--data", "data", "--out", out, "--steps", steps, "--batch", "4", "--quiet",
    ];
    args.extend_from_slice(extra);
    run(dir, &args)
}

/// `tmoe eval` of `ckpt` on `dir/data` into `out`.
fn eval(dir: &std::path::Path, ckpt: &str, out: &str) -> (bool, String) {
    run(
        dir,
        &[
            "eval",
            "--checkpoint",
            ckpt,
            "--data",
            "data",
            "--out",
            out,
            "--quiet",
        ],
    )
}

/// `tmoe finetune --from-scratch` on `data` into `out`, one epoch, then `extra`.
fn finetune(dir: &std::path::Path, out: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "finetune",
        "--data",
        "data",
        "--from-scratch",
        "--out",
        out,
        "--epochs",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    run(dir, &args)
}

#[test]
fn a_demo_out_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine\n").unwrap();
    for (out, says) in [
        ("notes.txt", "error: notes.txt exists and is not a folder"),
        ("notes.txt/sub", "error: creating notes.txt/sub: "),
    ] {
        let (ok, text) = run(dir.path(), &["demo", "--out", out, "--quiet"]);
        assert!(!ok, "{text}");
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine\n"
    );
}

/// A `--data` that is not there is named before `--out` is made.
#[test]
fn a_demo_data_that_is_missing_makes_no_out_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = run(
        dir.path(),
        &["demo", "--data", "nothere", "--out", "d", "--quiet"],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("--data nothere: not a folder"), "{text}");
    assert!(!dir.path().join("d").exists(), "{text}");
}

/// Captures of one class are refused before they are read and tokenized.
#[test]
fn a_demo_data_of_one_class_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tmoe(d, &["synth", "--out", "caps", "--flows-per-class", "2"]);
    std::fs::create_dir_all(d.join("one")).unwrap();
    std::fs::rename(d.join("caps/dns"), d.join("one/dns")).unwrap();
    let (ok, text) = run(d, &["demo", "--data", "one", "--out", "o", "--quiet"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "--data one: need at least 2 classes, one folder of captures each (found 1: dns)"
        ),
        "{text}"
    );
    // Not read: no read summary, and no output folder.
    assert!(!text.contains("flows read"), "{text}");
    assert!(!d.join("o").exists(), "{text}");
}

#[test]
fn resuming_a_complete_pretraining_run_says_so_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    let (ok, text) = pretrain(dir.path(), "pt", "2", &[]);
    assert!(ok, "{text}");
    // The loss is the mean of the steps run, named as such (it said "last
    // 20 steps" after 2).
    assert!(text.contains("pretrained 2 steps in "), "{text}");
    assert!(text.contains("LM loss (last 2 steps) "), "{text}");
    // 2 steps under the default 50 of warmup: said, with what to do.
    assert!(
        text.contains("warning: --warmup 50 is not below --steps 2: the whole run is warmup")
            && text.contains("a --warmup of about a tenth of --steps (1)")
            // A share of --lr, not a raw float (it said "climbs to
            // 0.000012000000000000001 of --lr 0.0003").
            && text.contains("(the rate climbs to 4.0 % of --lr 0.0003 and never decays)"),
        "{text}"
    );
    // A warmup below --steps is no warning.
    let (ok, text2) = pretrain(dir.path(), "pt2", "6", &["--warmup", "2"]);
    assert!(ok && !text2.contains("warning: --warmup"), "{text2}");
    let ckpt = dir.path().join("pt/model.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let (ok, text) = pretrain(dir.path(), "pt", "2", &["--resume"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "nothing to pretrain: pt/model.safetensors is already at step 2, the last of --steps 2"
        ),
        "{text}"
    );
    assert!(
        !text.contains("pretrained 0 steps") && !text.contains("-0.0000"),
        "{text}"
    );
    // Nothing trains, so the schedule's warning would be noise (it was
    // printed before "nothing to pretrain", and before a refusal).
    assert!(!text.contains("warning: --warmup"), "{text}");
    let (ok, text) = pretrain(dir.path(), "pt", "2", &[]);
    assert!(
        !ok && text.contains("already exists: pass --resume"),
        "{text}"
    );
    assert!(!text.contains("warning: --warmup"), "{text}");
    let (ok, text) = pretrain(dir.path(), "pt", "4", &["--resume", "--stop-after", "2"]);
    assert!(ok, "{text}");
    assert!(text.contains("--stop-after 2 is not past it"), "{text}");
    assert!(
        std::fs::read(&ckpt).unwrap() == before,
        "the checkpoint was rewritten"
    );
}

/// A resumed run replays the batches and schedule it was started with:
/// other settings are refused, naming each, and the checkpoint is kept
/// (a resume with another --seed and --lr went on as a different run).
#[test]
fn resuming_with_other_settings_is_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    let (ok, text) = pretrain(dir.path(), "pt", "4", &["--stop-after", "2"]);
    assert!(ok, "{text}");
    let ckpt = dir.path().join("pt/model.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let (ok, text) = pretrain(
        dir.path(),
        "pt",
        "4",
        &["--resume", "--seed", "1", "--lr", "0.001"],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("pt/model.safetensors: the run was started with other settings (--lr 0.0003 then, 0.001 now; --seed 0 then, 1 now)"),
        "{text}"
    );
    assert!(
        std::fs::read(&ckpt).unwrap() == before,
        "the checkpoint was rewritten"
    );
    // The same settings (a larger --steps included) continue it.
    let (ok, text) = pretrain(dir.path(), "pt", "6", &["--resume"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("resumed pt/model.safetensors at step 2"),
        "{text}"
    );
}

#[test]
fn resuming_a_folder_without_a_pretraining_checkpoint_says_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    let (ok, text) = pretrain(dir.path(), "fresh", "2", &["--resume"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("fresh: no model.safetensors to resume")
            && text.contains("leave out --resume to start one"),
        "{text}"
    );
    assert!(
        !dir.path().join("fresh").exists(),
        "a failed resume made its --out"
    );
    // A fine-tuning run's folder given to pretrain --resume.
    std::fs::create_dir_all(dir.path().join("ft")).unwrap();
    std::fs::write(dir.path().join("ft/classifier.safetensors"), "x").unwrap();
    let (ok, text) = pretrain(dir.path(), "ft", "2", &["--resume"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "ft: no model.safetensors to resume (it holds classifier.safetensors: a fine-tuning run"
        ),
        "{text}"
    );
}

#[test]
fn lp_ft_counts_fine_tuning_epochs_apart_from_the_head_fit() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    let (ok, text) = finetune(dir.path(), "ft", &["--head-epochs", "2", "--batch", "8"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("fine-tuned 1 epoch after a 2-epoch head fit in"),
        "{text}"
    );
}

#[test]
fn an_init_checkpoint_of_another_dataset_is_named_for_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    let (ok, text) = finetune(d, "ft", &["--batch", "8"]);
    assert!(ok, "{text}");
    assert!(text.contains("fine-tuned"), "{text}");
    // eval draws the curves from the log beside the checkpoint; a
    // checkpoint moved away from its log gets none, and is told why.
    let eval = |ckpt: &str, out: &str| {
        let (ok, text) = eval(d, ckpt, out);
        assert!(ok, "{text}");
        text
    };
    let text = eval("ft/classifier.safetensors", "ev");
    assert!(
        d.join("ev/curves.png").exists() && !text.contains("no training curves"),
        "{text}"
    );
    std::fs::create_dir_all(d.join("alone")).unwrap();
    std::fs::copy(
        d.join("ft/classifier.safetensors"),
        d.join("alone/classifier.safetensors"),
    )
    .unwrap();
    let text = eval("alone/classifier.safetensors", "ev2");
    assert!(!d.join("ev2/curves.png").exists(), "{text}");
    assert!(
        text.contains("note: no training curves (curves.png): alone/finetune_log.jsonl is not beside the checkpoint"),
        "{text}"
    );
    // Two of the six classes: with the same vocabulary, then with its own.
    for class in ["dns", "voip"] {
        let to = d.join("two").join(class);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(d.join("caps").join(class)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let tokenize = |out: &str, vocab: &[&str]| {
        let mut args = vec![
            "tokenize",
            "two",
            "--out",
            out,
            "--labels",
            "folder",
            "--seq-len",
            "32",
            "--quiet",
        ];
        args.extend_from_slice(vocab);
        tmoe(d, &args);
    };
    tokenize("same-vocab", &["--vocab", "data/vocab.txt"]);
    tokenize("own-vocab", &["--vocab-size", "300"]);
    let finetune = |data: &str| {
        run(
            d,
            &[
                "finetune",
                "--data",
                data,
                "--init",
                "ft/classifier.safetensors",
                "--out",
                "ft2",
                "--epochs",
                "1",
                "--quiet",
            ],
        )
    };
    let (ok, text) = finetune("same-vocab");
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "ft/classifier.safetensors: a classifier of other classes than the dataset's (it has 6, the dataset 2)"
        ) && text.contains("--init takes a pretrained model"),
        "{text}"
    );
    let (ok, text) = finetune("own-vocab");
    assert!(!ok, "{text}");
    assert!(
        text.contains("vocabulary hash") && !text.contains("has shape"),
        "{text}"
    );
}

/// A dataset whose dataset.json and shards say its vocabulary (the same
/// hash as the --init model's) has more entries than the model's table: the
/// shards' ids past the table panicked in the CPU embedding; now refused
/// before training, naming both files.
#[test]
fn an_init_model_smaller_than_the_same_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    let (ok, text) = pretrain(d, "pt", "1", &[]);
    assert!(ok, "{text}");
    let data = d.join("data");
    let json = data.join("dataset.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let real = v["vocab_size"].as_u64().unwrap() as u32;
    v["vocab_size"] = 10_000.into();
    std::fs::write(&json, v.to_string()).unwrap();
    for part in ["train", "val", "test"] {
        let p = data.join(format!("{part}.tmoe"));
        let mut b = std::fs::read(&p).unwrap();
        // Header: vocab_size at byte 32; the first flow's first token at 64.
        b[32..36].copy_from_slice(&10_000u32.to_le_bytes());
        b[64..68].copy_from_slice(&9_999u32.to_le_bytes());
        std::fs::write(&p, b).unwrap();
    }
    let (ok, text) = run(
        d,
        &[
            "finetune",
            "--data",
            "data",
            "--init",
            "pt/model.safetensors",
            "--out",
            "ft",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--quiet",
        ],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "pt/model.safetensors: a model of {real} vocabulary entries"
        )) && text.contains("dataset.json gives the same vocabulary")
            && text.contains("10000 entries")
            && !text.contains("panicked"),
        "{text}"
    );
}

#[test]
fn model_info_refuses_a_vocabulary_before_printing_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = run(dir.path(), &["model-info", "--vocab", "3"]);
    assert!(!ok, "{text}");
    assert!(
        !text.contains("total params"),
        "half a table before the error:\n{text}"
    );
    assert!(text.contains("vocab 3 too small (at least 5"), "{text}");
}

/// `tmoe bench model` at a small shape on the CPU, writing to `out`.
fn bench_model(dir: &std::path::Path, out: &str) -> (bool, String) {
    run(
        dir,
        &[
            "bench", "model", "--device", "cpu", "--batch", "2", "--seq", "16", "--iters", "1",
            "--out", out,
        ],
    )
}

#[test]
fn bench_model_makes_a_missing_out_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = bench_model(dir.path(), "new/report.json");
    assert!(ok, "{text}");
    // How many runs the figures are over, and what "p99" of so few is.
    assert!(
        text.contains("; 1 timed run per batch size after a warm-up (p99: the slowest of them;"),
        "{text}"
    );
    for f in ["new/report.json", "new/report.png"] {
        assert!(dir.path().join(f).exists(), "{f} missing:\n{text}");
    }
}

#[test]
fn bench_model_keeps_an_existing_chart_without_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.png"), "my picture").unwrap();
    let (ok, text) = bench_model(dir.path(), "mine.json");
    assert!(!ok, "{text}");
    assert!(
        text.contains("mine.png exists; pass --force to replace it"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine.png")).unwrap(),
        "my picture"
    );
    assert!(!dir.path().join("mine.json").exists());
}

#[test]
fn a_short_demo_compares_the_loss_of_distinct_steps() {
    let dir = tempfile::tempdir().unwrap();
    let text = tmoe(
        dir.path(),
        &[
            "demo",
            "--quiet",
            "--pretrain-steps",
            "4",
            "--epochs",
            "1",
            "--seq-len",
            "32",
            "--max-per-class",
            "8",
        ],
    );
    // "LM loss A -> B": the mean of the first steps, then of the last ones.
    let line = text.lines().find(|l| l.contains("LM loss")).unwrap();
    let losses: Vec<&str> = line
        .split("LM loss ")
        .nth(1)
        .unwrap()
        .split(" (")
        .next()
        .unwrap()
        .split(" -> ")
        .collect();
    assert_eq!(losses.len(), 2, "{line}");
    assert_ne!(losses[0], losses[1], "the same steps on both sides: {line}");
}

#[test]
fn a_training_log_that_cannot_be_written_is_named() {
    // A full disk (here a link in the run folder to /dev/full: only
    // written to) said "No space left on device", naming no file. The link
    // is a file of the log's name, so each run is told --force.
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    for (run_dir, log) in [
        ("pt", "pretrain_log.jsonl"),
        ("ft", "finetune_log.jsonl"),
        ("lp", "head_fit_log.jsonl"),
    ] {
        std::fs::create_dir(dir.path().join(run_dir)).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(run_dir).join(log)).unwrap();
    }
    let (ok, text) = pretrain(dir.path(), "pt", "2", &["--warmup", "1", "--force"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("writing pt/pretrain_log.jsonl: No space left on device"),
        "{text}"
    );
    for (out, log, extra) in [
        ("ft", "finetune_log.jsonl", "0"),
        ("lp", "head_fit_log.jsonl", "1"),
    ] {
        let (ok, text) = finetune(
            dir.path(),
            out,
            &["--head-epochs", extra, "--batch", "8", "--force"],
        );
        assert!(!ok, "{text}");
        assert!(
            text.contains(&format!("writing {out}/{log}: No space left on device")),
            "{text}"
        );
    }
}

#[test]
fn a_run_s_log_without_its_checkpoint_is_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    // Logs of the runs' names beside no checkpoint (a run stopped before
    // its first save, or the user's own): the check looked at the
    // checkpoint alone, so they were replaced without --force.
    std::fs::create_dir(dir.path().join("pre")).unwrap();
    std::fs::write(dir.path().join("pre/pretrain_log.jsonl"), "mine\n").unwrap();
    let (ok, text) = pretrain(dir.path(), "pre", "1", &["--warmup", "1"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "error: pre/pretrain_log.jsonl already exists (without pre/model.safetensors): \
             pass --force to replace it, or choose another --out"
        ),
        "{text}"
    );
    assert!(!dir.path().join("pre/model.safetensors").exists());
    std::fs::create_dir(dir.path().join("ft")).unwrap();
    std::fs::write(dir.path().join("ft/finetune_log.jsonl"), "mine too\n").unwrap();
    let (ok, text) = finetune(dir.path(), "ft", &["--batch", "4"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "error: ft/finetune_log.jsonl already exists: choose another --out or pass --force to replace it"
        ),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pre/pretrain_log.jsonl")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ft/finetune_log.jsonl")).unwrap(),
        "mine too\n"
    );
    // --force replaces them.
    let (ok, text) = pretrain(dir.path(), "pre", "1", &["--warmup", "1", "--force"]);
    assert!(ok, "{text}");
    assert!(dir.path().join("pre/model.safetensors").exists());
}

#[test]
fn a_first_run_that_fails_leaves_no_log_for_the_next_to_refuse() {
    let dir = tempfile::tempdir().unwrap();
    synth_dataset(dir.path(), "6", "1");
    // Diverged before any checkpoint: its log goes with it, so the next
    // run (a lower --lr) is not refused for a log without a checkpoint.
    let (ok, text) = pretrain(dir.path(), "pre", "2", &["--warmup", "1", "--lr", "1e30"]);
    assert!(!ok, "{text}");
    assert!(text.contains("training diverged"), "{text}");
    assert_eq!(
        common::names_in(&dir.path().join("pre")),
        Vec::<String>::new()
    );
    let (ok, text) = pretrain(dir.path(), "pre", "2", &["--warmup", "1"]);
    assert!(ok, "{text}");
    let (ok, text) = finetune(dir.path(), "ft", &["--batch", "4", "--lr", "1e30"]);
    assert!(!ok, "{text}");
    assert!(text.contains("training diverged"), "{text}");
    assert_eq!(
        common::names_in(&dir.path().join("ft")),
        Vec::<String>::new()
    );
    let (ok, text) = finetune(dir.path(), "ft", &["--batch", "4", "--lr", "1e-3"]);
    assert!(ok, "{text}");
}

#[test]
fn finetune_refuses_an_empty_validation_or_test_part() {
    let dir = tempfile::tempdir().unwrap();
    // One flow per class: all six go to train, val and test are empty.
    synth_dataset(dir.path(), "1", "1");
    let (ok, text) = finetune(dir.path(), "ft", &[]);
    // It reported "best epoch 1 (val macro-F1 0.0000); test accuracy
    // 0.0000" from no flows at all.
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "error: data: the val part is empty (the best epoch is chosen on val, and test \
             scores it): tokenize more flows per class"
        ),
        "{text}"
    );
    assert!(!dir.path().join("ft").exists(), "{text}");
}

/// A run folder (pretrain's or finetune's `--out`) given where a checkpoint
/// file is expected stands for the checkpoint it holds, and says so; a
/// folder holding none is still refused, naming what a run folder holds.
#[test]
fn a_run_folder_stands_for_the_checkpoint_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth_dataset(d, "6", "1");
    let (ok, text) = pretrain(d, "pt", "1", &[]);
    assert!(ok, "{text}");
    let (ok, text) = run(
        d,
        &[
            "finetune", "--data", "data", "--init", "pt", "--out", "ft", "--epochs", "1",
            "--batch", "8", "--quiet",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("--init pt: a run folder; reading pt/model.safetensors"),
        "{text}"
    );
    let eval = |ckpt: &str, out: &str| eval(d, ckpt, out);
    let (ok, text) = eval("ft", "ev");
    assert!(ok, "{text}");
    assert!(
        text.contains("--checkpoint ft: a run folder; reading ft/classifier.safetensors")
            && d.join("ev/confusion.png").exists(),
        "{text}"
    );
    let (ok, text) = eval("pt", "ev-lm");
    assert!(ok, "{text}");
    assert!(
        text.contains("reading pt/model.safetensors") && d.join("ev-lm/lm.json").exists(),
        "{text}"
    );
    let (ok, text) = run(
        d,
        &[
            "classify",
            "--checkpoint",
            "ft",
            "--data",
            "data",
            "caps",
            "--out",
            "v.csv",
        ],
    );
    assert!(ok && d.join("v.csv").exists(), "{text}");
    // A folder without a checkpoint: the loader's own refusal.
    let (ok, text) = eval("data", "ev-none");
    assert!(!ok, "{text}");
    assert!(
        text.contains("data: is a folder; expected a checkpoint file"),
        "{text}"
    );
}
