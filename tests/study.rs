//! `tmoe study` on synthetic captures: every row runs once per seed (and the
//! few-shot runs), the report holds each row, the few-shot table, the
//! shortcut checks and the expert heatmaps (whose counts sum to the routed
//! tokens), and a second call resumes (runs nothing, finds every result).

mod tiny_train;

use traffic_moe::engine::Device;
use traffic_moe::model::FfnKind;
use traffic_moe::model::batch::{Sequences, open_part};
use traffic_moe::study::{Row, StudyOpts, routing_dir, run};
use traffic_moe::traffic::capture::synth::{FLOWS_PER_FILE, SynthConfig, synthesize};
use traffic_moe::traffic::dataset::labels::LabelSource;
use traffic_moe::traffic::dataset::split::SplitBy;

/// Synthetic captures of every class into `out`.
fn captures(out: &std::path::Path, flows_per_class: usize, seed: u64) {
    synthesize(&SynthConfig {
        out: out.to_path_buf(),
        flows_per_class,
        flows_per_file: FLOWS_PER_FILE,
        seed,
        force: false,
    })
    .unwrap();
}

/// A report.md but for the call's own line (the runs it made, its wall time).
fn report_body(md: &str) -> String {
    md.lines()
        .filter(|l| !l.starts_with("This call ran"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A study of `caps` into `out` as these tests run one (the tiny model on
/// sequences of 32, one seed, the k-NN row); each test sets what it is about.
fn study_opts(caps: &std::path::Path, out: std::path::PathBuf) -> StudyOpts {
    StudyOpts {
        captures: vec![caps.to_path_buf()],
        labels: LabelSource::Folder,
        out,
        rows: vec![Row::Knn],
        seeds: vec![1],
        cfg: tiny_train::tiny_model(FfnKind::Moe, 0, 32),
        seq_len: 32,
        vocab_file: None,
        vocab_size: 200,
        split_by: SplitBy::Flow,
        mask_identifiers: true,
        pretrain_steps: 3,
        epochs: 1,
        max_per_class: Some(10),
        fractions: Vec::new(),
        lr: 2e-3,
        batch: 16,
        device: Device::Cpu,
        progress: false,
        budgets: Vec::new(),
        pretrain_extra: Vec::new(),
        budget_fractions: Vec::new(),
    }
}

#[test]
fn study_runs_every_row_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 30, 3);
    let opts = StudyOpts {
        rows: Row::ALL.to_vec(),
        fractions: vec![0.5],
        ..study_opts(&caps, dir.path().join("study"))
    };
    // Every row, plus the pretrained and scratch models on half the flows.
    let runs = Row::ALL.len() + 2;
    let first = run(&opts).unwrap();
    assert_eq!((first.ran, first.skipped), (runs, 0));
    let halves: Vec<_> = first.results.iter().filter(|r| r.fraction == 0.5).collect();
    assert_eq!(halves.len(), 2, "{halves:?}");
    for r in &first.results {
        assert!(r.test_flows >= 12, "{r:?}");
        assert!((0.0..=1.0).contains(&r.macro_f1), "{r:?}");
        let cap = r.per_capture.expect("every run votes per capture");
        assert!((0.0..=1.0).contains(&cap), "{r:?}");
    }
    // The heatmaps count every real token of the test flows, k times per
    // MoE layer, once after pretraining and once after fine-tuning.
    let test = open_part(&opts.out.join("data-full"), "test").unwrap();
    let real_tokens: u64 = (0..test.count())
        .map(|i| test.n_tokens(i).min(opts.seq_len) as u64)
        .sum();
    let want = real_tokens * (opts.cfg.layers * opts.cfg.top_k) as u64;
    for stage in ["pretrained", "finetuned"] {
        let dir = routing_dir(&opts.out, 1, stage);
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("routing.json")).unwrap())
                .unwrap();
        let routed: u64 = j["per_class"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["routed"].as_u64().unwrap())
            .sum();
        assert_eq!(routed, want, "{stage}: routed (token, slot) pairs");
        assert!(dir.join("routing.png").metadata().unwrap().len() > 0);
    }
    let apps = first
        .results
        .iter()
        .find(|r| r.row == Row::Appscanner)
        .unwrap();
    assert!(
        apps.macro_f1 > 0.8,
        "AppScanner separates the synthetic classes: {apps:?}"
    );
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    for row in Row::ALL {
        assert!(md.contains(&format!("| {} | 1 |", row.name())), "{md}");
    }
    // One seed has no spread to show: the means alone, not "± 0.000".
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        assert!(!line.contains('±'), "one seed: {line}");
    }
    assert!(
        md.contains("nearest training flow")
            && md.contains("- Macro-F1 from scratch, header only ")
            && md.contains(" vs payload only ")
            && md.contains("(full, moe-scratch: "),
        "{md}"
    );
    assert!(
        md.contains("## Few-shot") && md.contains("| 50 % |"),
        "{md}"
    );
    assert!(
        md.contains("## Expert routing") && md.contains("### after fine-tuning"),
        "{md}"
    );
    for png in ["macro-f1.png", "few-shot.png"] {
        assert!(opts.out.join(png).metadata().unwrap().len() > 0, "{png}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(opts.out.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(j["runs"].as_array().unwrap().len(), runs);

    let again = run(&opts).unwrap();
    assert_eq!((again.ran, again.skipped), (0, runs));
    let f1 = |s: &traffic_moe::study::StudySummary| -> Vec<f64> {
        s.results.iter().map(|r| r.macro_f1).collect()
    };
    // (JSON keeps them to the last digit or so.)
    for (a, b) in f1(&again).iter().zip(f1(&first)) {
        assert!(
            (a - b).abs() < 1e-12,
            "the stored results come back: {a} vs {b}"
        );
    }
    // Other settings must not reuse these runs: the call refuses, naming
    // what changed, and runs nothing.
    let other = StudyOpts {
        lr: 1e-3,
        epochs: 2,
        ..opts.clone()
    };
    let err = format!("{:#}", run(&other).unwrap_err());
    assert!(
        err.contains("study.json") && err.contains("lr: 0.002 then, 0.001 now"),
        "{err}"
    );
    assert!(err.contains("epochs: 1 then, 2 now"), "{err}");
    // More seeds only add runs; the same folder spelt otherwise is the
    // same setting.
    let more = StudyOpts {
        captures: opts.captures.iter().map(|c| c.join(".")).collect(),
        seeds: vec![1, 2],
        rows: vec![Row::Knn],
        fractions: Vec::new(),
        ..opts.clone()
    };
    let r = run(&more).unwrap();
    assert_eq!((r.ran, r.skipped), (1, 1));
    // Two seeds of k-NN: mean ± std.
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    let row = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("{name}: {md}"))
            .to_string()
    };
    assert!(
        row("knn").starts_with("| knn | 2 |") && row("knn").contains('±'),
        "{md}"
    );
    // Without the header and payload rows, the check says so, not "header
    // only not run vs payload only not run (full: ...)".
    assert!(
        md.contains(
            "- Header only vs payload only: not run (add moe-header,moe-payload to --rows)."
        ),
        "{md}"
    );
}

#[test]
fn the_budget_curve_keeps_weights_per_budget_scores_them_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let extra = dir.path().join("extra");
    captures(&caps, 20, 3);
    captures(&extra, 20, 4);
    let opts = StudyOpts {
        rows: vec![Row::MoeScratch],
        mask_identifiers: false,
        budgets: vec![4, 2],
        pretrain_extra: vec![extra],
        budget_fractions: vec![0.5, 0.25],
        ..study_opts(&caps, dir.path().join("study"))
    };
    let first = run(&opts).unwrap();
    let b = first.budget.as_ref().expect("a budget curve");
    assert_eq!(
        b.points.iter().map(|p| p.steps).collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert!(b.points[1].tokens > b.points[0].tokens, "{:?}", b.points);
    for p in &b.points {
        assert!(p.heldout_loss.is_finite() && p.heldout_loss > 0.0, "{p:?}");
    }
    // The extra captures are in the corpus: more flows than the training
    // split alone.
    let train = open_part(&opts.out.join("data-full"), "train").unwrap();
    assert!(b.baseline.corpus_flows > train.count(), "{:?}", b.baseline);
    // Synthetic flows have structure: the bigram table beats the unigram.
    assert!(b.baseline.bigram < b.baseline.unigram, "{:?}", b.baseline);
    // 2 budgets x 3 fractions (all, a half, a quarter), and scratch at
    // each fraction.
    assert_eq!(b.fractions, vec![1.0, 0.5, 0.25]);
    assert_eq!(b.pretrained.len(), 6);
    assert_eq!(b.scratch.len(), 3);
    for step in [2, 4] {
        let kept = opts
            .out
            .join("pretrain-budget-s1")
            .join(format!("model-step{step}.safetensors"));
        assert!(kept.exists(), "{}", kept.display());
    }
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    assert!(
        md.contains("## Pretraining budget") && md.contains("bigram table"),
        "{md}"
    );
    assert!(opts.out.join("budget.png").metadata().unwrap().len() > 0);
    assert!(
        md.contains("pretrained, 50 %") && md.contains("pretrained, 25 %"),
        "{md}"
    );
    // One seed: no standard error to compare against, and none claimed.
    assert!(
        md.contains("no standard error with one seed")
            && !md.contains("more than one standard error at"),
        "{md}"
    );
    let again = run(&opts).unwrap();
    assert_eq!(again.ran, 0, "everything resumes");
    // With every result stored, the kept weights are not needed: removed
    // (to save disk), they are not pretrained again, and the report is the
    // same but for the call's own line.
    std::fs::remove_dir_all(opts.out.join("pretrain-budget-s1")).unwrap();
    let third = run(&opts).unwrap();
    assert_eq!(third.ran, 0);
    assert!(!opts.out.join("pretrain-budget-s1").exists());
    assert_eq!(
        report_body(&std::fs::read_to_string(opts.out.join("report.md")).unwrap()),
        report_body(&md)
    );
    // A larger budget changes the schedule of the kept weights: refused.
    let longer = StudyOpts {
        budgets: vec![2, 8],
        ..opts.clone()
    };
    let err = format!("{:#}", run(&longer).unwrap_err());
    assert!(err.contains("budget_max: 4 then, 8 now"), "{err}");
    // A call without budgets leaves the budget run's settings alone.
    let plain = StudyOpts {
        budgets: Vec::new(),
        pretrain_extra: Vec::new(),
        ..opts.clone()
    };
    assert_eq!(run(&plain).unwrap().ran, 0);
}

/// A call that fails before making anything (here a vocabulary file that
/// is not there) binds no settings: the corrected call runs instead of
/// being refused as "other settings".
#[test]
fn a_call_that_made_nothing_binds_no_settings() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 4);
    let opts = StudyOpts {
        vocab_file: Some(dir.path().join("no-such-vocab.txt")),
        ..study_opts(&caps, dir.path().join("study"))
    };
    let err = format!("{:#}", run(&opts).unwrap_err());
    assert!(err.contains("no-such-vocab.txt"), "{err}");
    assert!(
        opts.out.join("study.json").exists(),
        "the settings are recorded first"
    );
    let fixed = StudyOpts {
        vocab_file: None,
        ..opts.clone()
    };
    let r = run(&fixed).unwrap_or_else(|e| panic!("the corrected call: {e:#}"));
    assert_eq!((r.ran, r.skipped), (1, 0));
    // Now a run exists: other settings are refused again.
    let other = StudyOpts {
        lr: 1e-3,
        ..fixed.clone()
    };
    let err = format!("{:#}", run(&other).unwrap_err());
    assert!(err.contains("lr: 0.002 then, 0.001 now"), "{err}");
}

/// A folder that is not a study's holding a file of the report's names (a
/// figure of the user's called macro-f1.png) is refused, and the file kept:
/// the study replaced it with its chart. A study folder's own report is
/// replaced at the next call as before.
#[test]
fn a_report_file_in_a_folder_that_is_not_a_study_s_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 6);
    let out = dir.path().join("mine");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("macro-f1.png"), b"mine").unwrap();
    let opts = study_opts(&caps, out.clone());
    let err = format!("{:#}", run(&opts).unwrap_err());
    assert!(
        err.contains("not a study folder") && err.contains("macro-f1.png"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("macro-f1.png")).unwrap(), b"mine");
    std::fs::remove_file(out.join("macro-f1.png")).unwrap();
    run(&opts).unwrap();
    let r = run(&opts).unwrap_or_else(|e| panic!("the study folder's own report: {e:#}"));
    assert_eq!((r.ran, r.skipped), (0, 1));
}

/// Captures of one class give nothing to compare: refused, naming the class;
/// and the one-class dataset is not kept, so that the same call, once the
/// other classes' captures are there, builds it anew (it was reused, and
/// refused as one class for ever).
#[test]
fn one_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 5);
    let mut classes: Vec<_> = std::fs::read_dir(&caps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let kept = classes.remove(0);
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    for other in &classes {
        std::fs::rename(other, aside.join(other.file_name().unwrap())).unwrap();
    }
    let opts = study_opts(&caps, dir.path().join("study"));
    let err = format!("{:#}", run(&opts).unwrap_err());
    let name = kept.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains("1 class (") && err.contains(&name), "{err}");
    // The other classes' captures back: the same call runs.
    for other in &classes {
        std::fs::rename(aside.join(other.file_name().unwrap()), other).unwrap();
    }
    let r = run(&opts).unwrap_or_else(|e| panic!("the call with every class: {e:#}"));
    assert_eq!((r.ran, r.skipped), (1, 0));
}

/// report.json gives `[mean, std]` per row; one seed has no spread, so its
/// std is null (report.md shows the mean alone), not 0 as if the seeds
/// agreed; two seeds give the sample (n - 1) std of the runs.
#[test]
fn report_json_has_no_spread_for_one_seed() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 6);
    let opts = study_opts(&caps, dir.path().join("study"));
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(opts.out.join("report.json")).unwrap())
            .unwrap()
    };
    let one = run(&opts).unwrap();
    let j = read();
    let row = &j["rows"][0];
    assert_eq!(row["seeds"], 1, "{j}");
    for key in [
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "per_capture",
    ] {
        assert!(row[key][1].is_null(), "{key}: {row}");
    }
    assert!((row["macro_f1"][0].as_f64().unwrap() - one.results[0].macro_f1).abs() < 1e-12);
    let two = run(&StudyOpts {
        seeds: vec![1, 2],
        ..opts.clone()
    })
    .unwrap();
    let v: Vec<f64> = two.results.iter().map(|r| r.accuracy).collect();
    let mean = (v[0] + v[1]) / 2.0;
    let sd = (((v[0] - mean).powi(2) + (v[1] - mean).powi(2)) / 1.0).sqrt();
    let row = &read()["rows"][0];
    assert!(
        (row["accuracy"][0].as_f64().unwrap() - mean).abs() < 1e-12,
        "{row}"
    );
    assert!(
        (row["accuracy"][1].as_f64().unwrap() - sd).abs() < 1e-12,
        "{row}"
    );
    // The report says which standard deviation its ± is, and that the
    // seeds share one split: the deterministic 1-NN scores the same on
    // both seeds, which a split drawn per seed would not promise.
    assert_eq!(v[0], v[1], "{row}");
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    assert!(
        md.contains("Mean ± sample standard deviation (n - 1) over the seeds")
            && md.contains("every seed scores the same train/val/test split"),
        "{md}"
    );
}

/// A seed named twice (`--seeds 1,1`) runs once and counts once: its
/// stored result was read back for the repeat and counted as a second
/// seed, the report giving "2 seeds" and a ± of 0 from one run.
#[test]
fn a_repeated_seed_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 7);
    let opts = StudyOpts {
        seeds: vec![1, 1],
        rows: vec![Row::Knn, Row::Knn],
        ..study_opts(&caps, dir.path().join("study"))
    };
    let s = run(&opts).unwrap();
    assert_eq!((s.ran, s.skipped, s.results.len()), (1, 0, 1));
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| knn |")).collect();
    assert_eq!(rows.len(), 1, "{md}");
    assert!(
        rows[0].starts_with("| knn | 1 |") && !rows[0].contains('±'),
        "{md}"
    );
    assert!(md.contains("; seeds 1; "), "{md}");
}

/// A study made once, its k-NN result then replaced by `edit` of it: the
/// call's error, or `None` where the study took the edited result.
fn with_stored_result(seed: u64, edit: impl Fn(&mut serde_json::Value)) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, seed);
    let opts = study_opts(&caps, dir.path().join("study"));
    run(&opts).unwrap();
    let path = opts.out.join("runs").join("knn-s1.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut j);
    std::fs::write(&path, j.to_string()).unwrap();
    run(&opts).err().map(|e| format!("{e:#}"))
}

/// A stored result is the run its file names: another seed's or row's
/// result (a file copied or renamed) was reported as this one's.
#[test]
fn a_stored_result_of_another_run_is_refused() {
    let err = with_stored_result(6, |j| j["seed"] = 7.into()).expect("seed 7 taken as seed 1");
    assert!(
        err.contains("knn-s1.json") && err.contains("knn seed 7 fraction 1, not of knn seed 1"),
        "{err}"
    );
    let err = with_stored_result(6, |j| j["row"] = "moe-scratch".into())
        .expect("moe-scratch taken as knn");
    assert!(
        err.contains("knn-s1.json") && err.contains("moe-scratch seed 1"),
        "{err}"
    );
}

/// A stored score outside 0..=1 (a file edited or damaged) is refused,
/// naming the file and the field: a macro-F1 of -1e308 went into the
/// report's bar chart and overflowed plotters' pixel arithmetic, a panic.
#[test]
fn a_stored_result_with_a_score_past_one_is_refused() {
    let err = with_stored_result(8, |j| j["macro_f1"] = (-1e308).into())
        .expect("a macro-F1 of -1e308 taken");
    assert!(
        err.contains("knn-s1.json") && err.contains("macro_f1 -1e308 is not a score"),
        "{err}"
    );
}

/// A routing.json whose `layers` is far past what it holds is refused,
/// naming the file: the report's heatmap table looped over that many layers
/// (10^12: for ever).
#[test]
fn routing_counts_claiming_more_layers_than_they_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 9);
    let opts = study_opts(&caps, dir.path().join("study"));
    run(&opts).unwrap();
    let routing = routing_dir(&opts.out, 1, "pretrained");
    std::fs::create_dir_all(&routing).unwrap();
    let json = r#"{"layers": 1000000000000, "experts": 2, "overall": [{"max_over_uniform": 1.0}]}"#;
    std::fs::write(routing.join("routing.json"), json).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(run(&opts).err().map(|e| format!("{e:#}"))));
    let err = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the report hung (or panicked)")
        .expect("10^12 layers taken");
    assert!(
        err.contains("pretrained/routing.json") && err.contains("`layers` is 1000000000000"),
        "{err}"
    );
}

/// The classic rows fit on the flows the models fine-tune on (capped per
/// class, drawn with the seed), as every other row of the table: they fit
/// on every training flow, against the models' 10 per class. The report
/// says so beside the shortcut check's 1-NN, which fits on all of them.
#[test]
fn the_classic_rows_fit_on_the_models_capped_flows() {
    use traffic_moe::baseline::{BaselineOpts, Method};
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 20, 6);
    let opts = StudyOpts {
        max_per_class: Some(1),
        ..study_opts(&caps, dir.path().join("study"))
    };
    let s = run(&opts).unwrap();
    let data = opts.out.join("data-full");
    let train = open_part(&data, "train").unwrap();
    assert!(train.count() > 6, "more than the cap: {}", train.count());
    let knn = |train_rows| {
        let opts = BaselineOpts {
            method: Method::Knn,
            train_rows,
            ..BaselineOpts::default()
        };
        traffic_moe::baseline::run(&data, &opts).unwrap()
    };
    let capped = knn(Some(traffic_moe::train::finetune::training_flows(
        &train,
        1.0,
        Some(1),
        1,
    )));
    assert_eq!(capped.train_flows, 6);
    let row = &s.results[0];
    assert_eq!(row.row, Row::Knn);
    assert_eq!(row.train_flows, Some(6), "{row:?}");
    let capped_f1 = capped.report.metrics.macro_f1;
    assert!(
        (row.macro_f1 - capped_f1).abs() < 1e-12,
        "study {} vs the capped 1-NN {capped_f1}",
        row.macro_f1
    );
    assert!(knn(None).train_flows > 6);
    // A result stored before the cap held for these rows is refused, not
    // averaged with capped ones.
    let stored = opts.out.join("runs").join("knn-s1.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stored).unwrap()).unwrap();
    j.as_object_mut().unwrap().remove("train_flows");
    std::fs::write(&stored, j.to_string()).unwrap();
    let err = format!("{:#}", run(&opts).unwrap_err());
    assert!(
        err.contains(
            "knn-s1.json: a knn result from before the classic rows fit on the capped flows"
        ),
        "{err}"
    );
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    assert!(
        md.contains(&format!(
            "The appscanner and knn rows fit on the flows fine-tuning and the probe see (at most 1 per class, drawn with each seed); the shortcut check's 1-NN below fits on all {} training flows.",
            train.count()
        )),
        "{md}"
    );
}

/// A call killed while it tokenized the captures leaves the dataset's
/// folder without its `dataset.json` (here: the vocabulary and a shard cut
/// short, as a kill leaves them). The next call stopped at "exists and is
/// not empty; pass --force to overwrite", which `study` does not take, until
/// the folder was removed by hand; now it builds the dataset anew.
#[test]
fn a_dataset_a_killed_call_left_unfinished_is_built_again() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 4);
    let opts = study_opts(&caps, dir.path().join("study"));
    let data = opts.out.join("data-full");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
    std::fs::write(data.join("train.tmoe.tmp"), "TMOESHRD").unwrap();
    let r = run(&opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((r.ran, r.skipped), (1, 0));
    assert!(data.join("dataset.json").exists());
    assert!(!data.join("train.tmoe.tmp").exists());
    let vocab = std::fs::read_to_string(data.join("vocab.txt")).unwrap();
    assert!(vocab.lines().count() > 2, "{vocab}");
}

/// Every run found done and no dataset in the folder (runs copied from a
/// committed study to redraw its report, or the `data-*` folders removed
/// to save disk): the report's shortcut checks build the dataset again.
/// Before, the call failed on the missing `data-full` after finding every
/// run done.
#[test]
fn a_study_whose_runs_are_done_reports_without_its_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    captures(&caps, 12, 5);
    let opts = study_opts(&caps, dir.path().join("study"));
    let first = run(&opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((first.ran, first.skipped), (1, 0));
    let md = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    std::fs::remove_dir_all(opts.out.join("data-full")).unwrap();
    std::fs::remove_file(opts.out.join("report.md")).unwrap();
    let again = run(&opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((again.ran, again.skipped), (0, 1));
    let redrawn = std::fs::read_to_string(opts.out.join("report.md")).unwrap();
    assert_eq!(report_body(&redrawn), report_body(&md));
    assert!(opts.out.join("data-full/dataset.json").exists());
}
