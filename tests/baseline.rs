//! The classic baselines on the demo's six synthetic classes: both separate
//! them (they are built to differ in packet sizes and timing), they read the
//! packet metadata `tokenize` writes beside the shards, and a dataset without
//! it is a clear error.

mod common;

use std::path::Path;

use traffic_moe::baseline::{BaselineOpts, Method, run};
use traffic_moe::traffic::capture::synth::{FLOWS_PER_FILE, SynthConfig, synthesize};
use traffic_moe::traffic::dataset::build::{DatasetConfig, build_dataset};
use traffic_moe::traffic::tokens::tokenize::TokenizerConfig;

fn dataset(root: &Path) -> std::path::PathBuf {
    synthesize(&SynthConfig {
        out: root.join("caps"),
        flows_per_class: 60,
        flows_per_file: FLOWS_PER_FILE,
        seed: 5,
        force: false,
    })
    .unwrap();
    let data = root.join("data");
    let cfg = DatasetConfig {
        inputs: vec![root.join("caps")],
        vocab_size: 300,
        tokenizer: TokenizerConfig {
            seq_len: 64,
            ..TokenizerConfig::default()
        },
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, &data, false).unwrap();
    data
}

#[test]
fn appscanner_and_knn_separate_the_synthetic_classes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    for method in [Method::Appscanner, Method::Knn] {
        let r = run(
            &data,
            &BaselineOpts {
                method,
                trees: 30,
                ..BaselineOpts::default()
            },
        )
        .unwrap();
        let m = &r.report.metrics;
        assert!(m.samples >= 30, "{method:?}: {} test flows", m.samples);
        assert!(
            m.macro_f1 > 0.8,
            "{method:?}: macro-F1 {} (chance is about 0.17)",
            m.macro_f1
        );
        assert_eq!(r.y_pred.len() as u64, m.samples);
        assert!(r.train_flows > 200, "{}", r.train_flows);
        let vote = &r.report.info["per_capture"];
        assert!(vote["captures"].as_u64().unwrap() >= 6, "{vote}");
        assert!(vote["accuracy"].as_f64().unwrap() > 0.8, "{vote}");
    }
    // Fitted on some rows of the train part only (the study's capped
    // flows): those rows and no others, and a row past the part refused.
    let rows = vec![0, 3, 5, 100];
    let some = run(
        &data,
        &BaselineOpts {
            method: Method::Knn,
            train_rows: Some(rows.clone()),
            ..BaselineOpts::default()
        },
    )
    .unwrap();
    assert_eq!(some.train_flows, rows.len());
    let all = run(&data, &BaselineOpts::default()).unwrap();
    let Err(err) = run(
        &data,
        &BaselineOpts {
            method: Method::Knn,
            train_rows: Some(vec![0, all.train_flows]),
            ..BaselineOpts::default()
        },
    ) else {
        panic!("a row past the train part was accepted");
    };
    assert!(
        format!("{err:#}").contains(&format!(
            "training row {} asked for, but the train part has {} flows",
            all.train_flows, all.train_flows
        )),
        "{err:#}"
    );
    // More neighbours than training flows: refused, naming the option.
    let Err(err) = run(
        &data,
        &BaselineOpts {
            method: Method::Knn,
            neighbours: 100_000,
            ..BaselineOpts::default()
        },
    ) else {
        panic!("100,000 neighbours were accepted");
    };
    assert!(
        format!("{err:#}").contains("--neighbours 100000 is more than"),
        "{err:#}"
    );
    // A dataset written before packet metadata existed.
    std::fs::remove_file(data.join("train.pkts")).unwrap();
    let Err(err) = run(&data, &BaselineOpts::default()) else {
        panic!("a dataset without train.pkts was accepted");
    };
    assert!(format!("{err:#}").contains("tokenize"), "{err:#}");
}

/// A baseline whose report cannot be written whole (a full disk: a file
/// size limit that metrics.json fits and the confusion image does not)
/// takes back what it wrote: the partial report passed for a whole one and
/// made the next run refuse without --force.
#[test]
fn a_report_cut_short_by_a_full_disk_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    common::synth_dataset(dir.path(), "20", "3");
    let args = ["baseline", "knn", "--data", "data", "--out", "rep"];
    let out = common::tmoe_on_a_full_disk(dir.path(), 16, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    let rep = dir.path().join("rep");
    assert!(
        !rep.exists(),
        "left {:?}",
        std::fs::read_dir(&rep).map(|d| d.count())
    );
    // With room again, the next run is not refused.
    common::tmoe(dir.path(), &args);
    assert!(rep.join("metrics.json").exists());
}

/// Packet metadata of another build of the same captures (another seed:
/// the same flow counts per part) was read beside this build's shard, so
/// each test flow's label went with another flow's packet sizes and times.
#[test]
fn packet_metadata_of_another_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let other = dir.path().join("other");
    let cfg = DatasetConfig {
        inputs: vec![dir.path().join("caps")],
        vocab_size: 300,
        tokenizer: TokenizerConfig {
            seq_len: 64,
            ..TokenizerConfig::default()
        },
        seed: 43,
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, &other, false).unwrap();
    let pkts = |d: &Path| std::fs::read(d.join("test.pkts")).unwrap();
    let (mine, theirs) = (pkts(&data), pkts(&other));
    assert_eq!(
        mine.len(),
        theirs.len(),
        "the same flow count: not told apart"
    );
    assert_ne!(mine[32..], theirs[32..], "other flows");
    run(&data, &BaselineOpts::default()).unwrap();
    std::fs::write(data.join("test.pkts"), &theirs).unwrap();
    let Err(err) = run(&data, &BaselineOpts::default()) else {
        panic!("another build's test.pkts was accepted");
    };
    let e = format!("{err:#}");
    assert!(
        e.contains(&data.join("test.pkts").display().to_string())
            && e.contains("belongs to another dataset"),
        "{e}"
    );
}

/// The validation part's packet metadata copied over the test part's (one
/// build, so the dataset ids agree) was read as the test part's: the
/// baselines were scored on validation flows, or on the count check alone.
#[test]
fn another_parts_packet_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    std::fs::copy(data.join("val.pkts"), data.join("test.pkts")).unwrap();
    let Err(err) = run(&data, &BaselineOpts::default()) else {
        panic!("val.pkts copied as test.pkts was accepted");
    };
    let e = format!("{err:#}");
    assert!(
        e.contains(&data.join("test.pkts").display().to_string())
            && e.contains("is the \"val\" part"),
        "{e}"
    );
}
