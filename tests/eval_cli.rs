//! `tmoe eval` and `tmoe classify` end to end on generated captures: a small
//! labelled dataset, a briefly fine-tuned classifier, then the report files,
//! agreement between eval (shards) and classify (re-read captures), and the
//! refusals (foreign vocabulary, broken captures).

use std::collections::HashMap;
use std::path::Path;

mod tiny_train;
use tiny_train::classifier::{Fixture, SEC, classify_args, classify_args_for, fixture};
use traffic_moe::cli::{classify, dump_logits, eval};
use traffic_moe::eval::predict::{Weights, predict_probs, softmax_into};
use traffic_moe::model::batch::open_part;
use traffic_moe::model::checkpoint::load_classifier;
use traffic_moe::train::finetune::evaluate;

fn eval_args(f: &Fixture, out: &Path) -> eval::Args {
    eval::Args {
        checkpoint: f.ckpt.clone(),
        data: f.data.clone(),
        split: "test".into(),
        out: out.to_path_buf(),
        batch: 7,
        seq_len: None,
        quiet: true,
        device: traffic_moe::engine::Device::Cpu,
        routing: true,
        precision: traffic_moe::engine::Precision::F32,
        force: false,
    }
}

fn eval_args_forced(f: &Fixture, out: &Path) -> eval::Args {
    eval::Args {
        force: true,
        ..eval_args(f, out)
    }
}

#[test]
fn eval_and_classify_end_to_end() {
    let f = fixture();

    // --- eval: outputs, and agreement with the training code's own evaluation
    let out = f.root.join("eval");
    let report = eval::evaluate(&eval_args(&f, &out)).unwrap();
    let test = open_part(&f.data, "test").unwrap();
    let (model, params, _) = load_classifier(&f.ckpt).unwrap();
    let (acc, macro_f1, pred, truth) =
        evaluate(&model, Weights::Cpu(&params), &test, 64, 64).unwrap();
    assert_eq!(report.metrics.samples as usize, truth.len());
    assert!(
        (report.metrics.accuracy - acc).abs() < 1e-12,
        "{} vs {acc}",
        report.metrics.accuracy
    );
    assert!((report.metrics.macro_f1 - macro_f1).abs() < 1e-12);
    let cm = &report.confusion;
    for (t, p) in truth.iter().zip(&pred) {
        assert!(cm.get(*t as usize, *p as usize) > 0);
    }
    for name in [
        "metrics.json",
        "report.txt",
        "confusion.txt",
        "confusion.csv",
        "confusion.png",
        "confusion.svg",
        "curves.png",
        "curves.svg",
        "routing.json",
        "routing.png",
        "routing-per-class.png",
    ] {
        let p = out.join(name);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{} missing",
            p.display()
        );
    }
    // A second call keeps the report unless --force.
    let before = std::fs::read(out.join("metrics.json")).unwrap();
    let mut again = eval_args(&f, &out);
    again.split = "val".into();
    let e = eval::evaluate(&again).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(out.join("metrics.json")).unwrap(), before);
    again.force = true;
    eval::evaluate(&again).unwrap();
    assert_ne!(std::fs::read(out.join("metrics.json")).unwrap(), before);
    eval::evaluate(&eval_args_forced(&f, &out)).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(j["info"]["split"], "test");
    assert_eq!(j["samples"].as_u64().unwrap() as usize, truth.len());
    // Routing: every real token of the split, k experts in each MoE layer.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("routing.json")).unwrap()).unwrap();
    let tokens: usize = (0..test.len()).map(|i| test.n_tokens(i).min(64)).sum();
    let routed: u64 = r["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["routed"].as_u64().unwrap())
        .sum();
    assert_eq!(routed as usize, tokens * model.cfg.top_k * model.cfg.layers);
    for layer in r["overall"].as_array().unwrap() {
        let sum: f64 = layer["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{layer}");
    }
    // report.txt has what the terminal showed, the per-capture vote too.
    let txt = std::fs::read_to_string(out.join("report.txt")).unwrap();
    // Its first line says what was scored: checkpoint, data and split.
    let first = txt.lines().next().unwrap_or("");
    assert!(
        first.starts_with("checkpoint ")
            && first.contains("; data ")
            && first.ends_with("; split test"),
        "{txt}"
    );
    assert!(
        txt.contains("per capture (majority vote of its flows)"),
        "{txt}"
    );
    // Replacing a report without --routing leaves no routing files of the
    // old one beside it; a file of the user's in the folder stays.
    std::fs::write(out.join("notes.md"), "mine").unwrap();
    eval::evaluate(&eval::Args {
        routing: false,
        ..eval_args_forced(&f, &out)
    })
    .unwrap();
    for old in ["routing.json", "routing.png", "routing-per-class.png"] {
        assert!(
            !out.join(old).exists(),
            "{old} of the earlier report is left"
        );
    }
    assert!(out.join("metrics.json").exists() && out.join("curves.png").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("notes.md")).unwrap(),
        "mine"
    );

    // --- classify the test captures' flows again from the pcaps: each flow of
    // the test split gets the same prediction as in eval (same tokens).
    let mut buf = Vec::new();
    let s = classify::classify(
        &classify_args(&f, vec![f.caps.clone()], classify::Format::Csv),
        &mut buf,
    )
    .unwrap();
    assert_eq!((s.files_read, s.files_skipped), (6, 0));
    assert_eq!(s.flows_classified, 120);
    let csv = String::from_utf8(buf).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "file,proto,src_ip,src_port,dst_ip,dst_port,first_ts,packets,class,probability"
    );
    let mut by_flow: HashMap<(String, u16, String), (String, f64)> = HashMap::new();
    for l in lines {
        let c: Vec<&str> = l.split(',').collect();
        assert_eq!(c.len(), 10, "{l}");
        let p: f64 = c[9].parse().unwrap();
        assert!(
            (0.5..=1.0).contains(&p),
            "argmax of 2 classes has p >= 0.5: {l}"
        );
        by_flow.insert(
            (c[2].to_string(), c[3].parse().unwrap(), c[6].to_string()),
            (c[8].to_string(), p),
        );
    }
    assert_eq!(by_flow.len(), 120);
    let classes = ["dns", "web"];
    let mut rows: Vec<usize> = (0..test.len())
        .filter(|&i| test.label(i).is_some())
        .collect();
    rows.sort();
    for (k, &i) in rows.iter().enumerate() {
        let m = test.meta(i);
        let ts = format!("{}.{:09}", m.first_ts_ns / SEC, m.first_ts_ns % SEC);
        let key = (m.src_addr().to_string(), m.src_port, ts);
        let (class, _) = by_flow
            .get(&key)
            .unwrap_or_else(|| panic!("flow {key:?} not classified"));
        assert_eq!(class, classes[pred[k] as usize], "flow {key:?}");
    }

    // --- JSON lines, and a broken capture among good ones is skipped
    let bad = f.root.join("broken.pcap");
    std::fs::write(&bad, b"this is not a capture at all").unwrap();
    let missing = f.root.join("absent.pcap");
    let mut buf = Vec::new();
    let one = f.caps.join("web/web0.pcap");
    let s = classify::classify(
        &classify_args(&f, vec![bad, one, missing], classify::Format::Jsonl),
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        (s.files_read, s.files_skipped, s.flows_classified),
        (1, 2, 20)
    );
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.lines().count(), 20);
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["proto"], "tcp");
    assert_eq!(v["dst_port"], 80);
    assert_eq!(v["packets"], 5);
    assert!(classes.contains(&v["class"].as_str().unwrap()));
    // Each probability as its f32's shortest decimal, not the f32 widened
    // to f64 (0.17145989835262299 for 0.1714599).
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let printed = v["probability"].to_string();
        // An f32 needs at most 9 significant digits; widened, 16 or 17.
        let digits = printed.trim_start_matches(['0', '.']).replace('.', "");
        assert!(digits.len() <= 9, "{printed} in {line}");
    }

    // --- refusals: another vocabulary, a dataset with other classes
    let other_vocab = f.root.join("vocab.txt");
    std::fs::write(&other_vocab, "[PAD]\n[UNK]\n[PD]\n[PY]\n[END]\naabb\n").unwrap();
    let mut a = classify_args(&f, vec![f.caps.clone()], classify::Format::Csv);
    a.data = None;
    a.vocab = Some(other_vocab);
    let e = classify::classify(&a, &mut Vec::new()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("vocabulary hash") && msg.contains("vocab.txt"),
        "{msg}"
    );

    let mut a = eval_args(&f, &f.root.join("eval2"));
    a.split = "bogus".into();
    assert!(
        eval::evaluate(&a)
            .unwrap_err()
            .to_string()
            .contains("--split")
    );
}

/// `tmoe dump-logits`: the batch it writes is the split's first flows, and its
/// logits are those `tmoe eval` turns into probabilities.
#[test]
fn dump_logits_matches_eval_probabilities() {
    let f = fixture();
    let out = f.root.join("logits.json");
    let a = dump_logits::Args {
        checkpoint: f.ckpt.clone(),
        data: f.data.clone(),
        split: "test".into(),
        flows: 5,
        seq_len: None,
        out: out.clone(),
        force: false,
    };
    dump_logits::run(a.clone()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let (b, s) = (
        doc["b"].as_u64().unwrap() as usize,
        doc["s"].as_u64().unwrap() as usize,
    );
    assert_eq!(b, 5);
    let test = open_part(&f.data, "test").unwrap();
    for (r, row) in doc["ids"].as_array().unwrap().iter().enumerate() {
        let row: Vec<u32> = serde_json::from_value(row.clone()).unwrap();
        let mask: Vec<u32> = serde_json::from_value(doc["mask"][r].clone()).unwrap();
        assert_eq!(row.len(), s);
        let n = mask.iter().filter(|&&m| m == 1).count();
        assert!(mask[..n].iter().all(|&m| m == 1), "right-padded");
        assert_eq!(&row[..n], &test.tokens(r)[..n]);
    }
    let (model, params, _) = load_classifier(&f.ckpt).unwrap();
    let idx: Vec<usize> = (0..b).collect();
    let probs = predict_probs(&model, &params, &test, &idx, 2, s, false).unwrap();
    let c = model.cfg.n_classes;
    for (r, row) in doc["logits"].as_array().unwrap().iter().enumerate() {
        let logits: Vec<f32> = serde_json::from_value(row.clone()).unwrap();
        let mut p = vec![0f32; c];
        softmax_into(&logits, &mut p);
        for (x, y) in p.iter().zip(&probs[r * c..(r + 1) * c]) {
            assert!(
                (x - y).abs() < 1e-5,
                "flow {r}: {p:?} vs eval's {:?}",
                &probs[r * c..]
            );
        }
    }
    let err = dump_logits::run(a).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn an_out_of_the_wrong_kind_is_refused_before_any_work() {
    let f = fixture();
    // A file as eval's report folder: refused after the evaluation, as
    // "creating FILE: File exists".
    let notes = f.root.join("notes.txt");
    std::fs::write(&notes, "mine\n").unwrap();
    let e = eval::evaluate(&eval_args_forced(&f, &notes)).unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!(
            "{} exists and is not a folder: --out takes a folder",
            notes.display()
        )),
        "{e:#}"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine\n");
    // A folder as classify's output file: "exists; pass --force", then
    // with --force "Is a directory".
    let mut a = classify_args(&f, vec![f.caps.clone()], classify::Format::Csv);
    a.out = Some(f.root.clone());
    a.force = true;
    let e = classify::run(a).unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!(
            "{} is a folder; --out takes a file name",
            f.root.display()
        )),
        "{e:#}"
    );
}

#[test]
fn an_eval_that_fails_part_way_takes_back_its_report() {
    let f = fixture();
    // A training log beside the checkpoint that is not JSON fails the run
    // at the curves, after metrics.json and the confusion files were
    // written: they stayed, a partial report that looked whole and made the
    // next run refuse without --force.
    let log = f.ckpt.parent().unwrap().join("finetune_log.jsonl");
    std::fs::write(&log, "not json\n").unwrap();
    let out = f.root.join("report");
    let e = eval::evaluate(&eval_args(&f, &out)).unwrap_err();
    assert!(format!("{e:#}").contains("line 1 is not JSON"), "{e:#}");
    assert!(!out.exists(), "a partial report folder stayed");

    // In a folder of the user's: the user's file and the folder stay.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine\n").unwrap();
    eval::evaluate(&eval_args(&f, &out)).unwrap_err();
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"]);

    // The log mended, the next run is not refused.
    std::fs::remove_file(&log).unwrap();
    eval::evaluate(&eval_args(&f, &out)).unwrap();
    assert!(out.join("metrics.json").exists());
}

#[test]
fn files_of_a_report_s_names_are_kept_without_force_even_without_metrics_json() {
    let f = fixture();
    // The user's own picture and routing notes, no metrics.json: the check
    // looked for metrics.json alone, so both were replaced without a word.
    let out = f.root.join("figures");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("confusion.png"), "mine\n").unwrap();
    std::fs::write(out.join("routing.json"), "mine too\n").unwrap();
    let e = eval::evaluate(&eval_args(&f, &out)).unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!(
            "{} already holds a report (confusion.png, routing.json); \
             choose another --out or pass --force to replace it",
            out.display()
        )),
        "{e:#}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("confusion.png")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("routing.json")).unwrap(),
        "mine too\n"
    );
    assert!(!out.join("metrics.json").exists());
    // With --force they are replaced by the report's own.
    eval::evaluate(&eval_args_forced(&f, &out)).unwrap();
    assert!(out.join("metrics.json").exists());
    assert_ne!(
        std::fs::read(out.join("confusion.png")).unwrap(),
        b"mine\n".to_vec()
    );
}

/// A checkpoint whose weights are NaN (a diverged run) is refused with its
/// name: its outputs were scored as class 0 and metrics computed from them.
#[test]
fn a_checkpoint_with_non_finite_outputs_is_refused_not_scored() {
    let f = fixture();
    let (_, mut params, meta) = load_classifier(&f.ckpt).unwrap();
    for p in params.iter_mut().filter(|p| p.name.contains("head")) {
        p.value.fill(f32::NAN);
    }
    let nan = f.root.join("nan.safetensors");
    traffic_moe::model::checkpoint::save(&nan, &meta, &params, true).unwrap();
    let out = f.root.join("eval-nan");
    let e = eval::evaluate(&eval::Args {
        checkpoint: nan.clone(),
        ..eval_args(&f, &out)
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("nan.safetensors: the model's outputs are not finite for")
            && msg.contains("no metrics computed"),
        "{msg}"
    );
    assert!(!out.join("metrics.json").exists());
}

/// A fine-tuning run marks each checkpoint it saves unfinished until it
/// ends (a run killed part-way leaves its best epoch so far, which eval
/// scored as if the run had finished): the finished fixture carries no
/// mark, and one that carries it is scored, with the run's place recorded
/// in metrics.json (and a warning).
#[test]
fn a_checkpoint_of_an_unfinished_run_is_scored_and_said() {
    use traffic_moe::model::checkpoint::{UNFINISHED_KEY, mark_finished, save, unfinished_run};
    let f = fixture();
    let (_, params, mut meta) = load_classifier(&f.ckpt).unwrap();
    assert_eq!(
        unfinished_run(&meta),
        None,
        "the finished run left its mark"
    );
    meta.extra
        .insert(UNFINISHED_KEY.into(), "epoch 2 of 6".into());
    let ckpt = f.root.join("unfinished.safetensors");
    save(&ckpt, &meta, &params, true).unwrap();
    let out = f.root.join("eval-unfinished");
    eval::evaluate(&eval::Args {
        checkpoint: ckpt.clone(),
        ..eval_args(&f, &out)
    })
    .unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["info"]["checkpoint_unfinished"], "epoch 2 of 6");
    // Marking it finished keeps the weights.
    mark_finished(&ckpt).unwrap();
    let (_, kept, meta) = load_classifier(&ckpt).unwrap();
    assert_eq!(unfinished_run(&meta), None);
    assert!(params.iter().zip(&kept).all(|(a, b)| a.value == b.value));
}

/// A fine-tuning log that is there but unreadable (not UTF-8) is an error
/// naming it: it was taken for no log, and eval said the log was "not
/// beside the checkpoint".
#[test]
fn an_unreadable_training_log_is_named_not_taken_for_absent() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("classifier.safetensors");
    assert!(eval::training_history(&ckpt).unwrap().is_none(), "no log");
    let log = dir.path().join("finetune_log.jsonl");
    std::fs::write(&log, b"{\"epoch\":1,\"train_loss\":0.5}\n\xff\xfe\n").unwrap();
    let e = format!("{:#}", eval::training_history(&ckpt).unwrap_err());
    assert!(
        e.contains(&log.display().to_string()) && e.contains("UTF-8"),
        "{e}"
    );
}

/// A fine-tuning log whose last line was cut short (its run killed while
/// a log written in place took it) is read up to that line: eval scores
/// the checkpoint and draws the curves of the whole epochs before it. Eval
/// failed: "line 4 is not JSON". A broken line before the last one is
/// still an error naming the log.
#[test]
fn a_training_log_whose_last_line_is_cut_short_still_gives_curves() {
    let f = fixture();
    let run = f.root.join("torn");
    std::fs::create_dir_all(&run).unwrap();
    let ckpt = run.join("classifier.safetensors");
    std::fs::copy(&f.ckpt, &ckpt).unwrap();
    let whole = std::fs::read_to_string(f.ckpt.with_file_name("finetune_log.jsonl")).unwrap();
    let epochs = whole.lines().count();
    assert!(epochs >= 2, "{whole}");
    let log = run.join("finetune_log.jsonl");
    std::fs::write(&log, format!("{whole}{{\"epoch\":9,\"train_lo")).unwrap();
    let h = eval::training_history(&ckpt).unwrap().expect("curves");
    assert_eq!(h.train_loss.len(), epochs);
    let out = f.root.join("eval-torn");
    eval::evaluate(&eval::Args {
        checkpoint: ckpt.clone(),
        ..eval_args(&f, &out)
    })
    .unwrap();
    assert!(out.join("curves.png").is_file());
    // Not the last line: not a cut, a broken log.
    std::fs::write(&log, format!("{{\"epoch\":9,\"train_lo\n{whole}")).unwrap();
    let e = format!("{:#}", eval::training_history(&ckpt).unwrap_err());
    assert!(
        e.contains(&log.display().to_string()) && e.contains("line 1 is not JSON"),
        "{e}"
    );
}

/// A classifier fine-tuned on flows of 64 tokens (its tokenizer settings
/// recorded, as `tmoe finetune` records them) and two datasets of the same
/// captures and vocabulary: the one it was trained on (64 tokens a flow)
/// and one tokenized with `--seq-len 32`. Returns (tempdir, captures,
/// data64, data32, checkpoint).
fn two_lengths() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    use tiny_train::classifier::{build_small_dataset, fine_tuned, write_captures};
    use traffic_moe::traffic::dataset::build::{DatasetConfig, build_dataset};
    use traffic_moe::traffic::dataset::labels::LabelSource;
    use traffic_moe::traffic::tokens::tokenize::TokenizerConfig;
    use traffic_moe::train::finetune::FinetuneOpts;
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_captures(&caps, 20);
    let data64 = dir.path().join("data64");
    let info = build_small_dataset(&caps, &data64, 200, 64);
    let ckpt = fine_tuned(&data64, &dir.path().join("run"), 64, |o| FinetuneOpts {
        max_epochs: 1,
        batch: 16,
        lr: 3e-3,
        tokenizer: Some(info.config.tokenizer.clone()),
        ..o
    });
    let data32 = dir.path().join("data32");
    let cfg = DatasetConfig {
        inputs: vec![caps.clone()],
        labels: LabelSource::Folder,
        vocab_file: Some(data64.join("vocab.txt")),
        tokenizer: TokenizerConfig {
            seq_len: 32,
            ..info.config.tokenizer.clone()
        },
        min_packets: 3,
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, &data32, false).unwrap();
    (dir, caps, data64, data32, ckpt)
}

/// `classify --data DIR` tokenizes new captures afresh: a DIR tokenized
/// with a shorter `--seq-len` than the checkpoint's training flows gives the
/// same verdicts as the training dataset (and as `--vocab`). Before, the
/// flows were cut at DIR's 32 tokens, silently: other probabilities.
#[test]
fn classify_with_a_dataset_of_shorter_flows_uses_the_checkpoint_s_length() {
    let (_dir, caps, data64, data32, ckpt) = two_lengths();
    let run = |data: &Path| {
        let a = classify_args_for(&ckpt, data, vec![caps.clone()], classify::Format::Csv);
        let mut out = Vec::new();
        classify::classify(&a, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let (long, short) = (run(&data64), run(&data32));
    assert!(long.lines().count() > 100, "{long}");
    assert_eq!(long, short, "classify --data data32 cut the flows short");
}

/// `eval` on a dataset tokenized shorter than the checkpoint's training
/// flows scores the dataset's 32-token flows: metrics.json says 32 (it said
/// the checkpoint's 64, a length no flow had).
#[test]
fn eval_records_the_length_it_scored_not_the_checkpoint_s() {
    let (dir, _caps, data64, data32, ckpt) = two_lengths();
    let seq = |data: &Path, name: &str| {
        let out = dir.path().join(name);
        eval::evaluate(&eval::Args {
            checkpoint: ckpt.clone(),
            data: data.to_path_buf(),
            split: "test".into(),
            out: out.clone(),
            batch: 7,
            seq_len: None,
            quiet: true,
            device: traffic_moe::engine::Device::Cpu,
            routing: false,
            precision: traffic_moe::engine::Precision::F32,
            force: false,
        })
        .unwrap();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
        (
            m["info"]["seq_len"].clone(),
            m["info"]["seq_len_from"].clone(),
        )
    };
    assert_eq!(seq(&data64, "e64"), (64.into(), "checkpoint".into()));
    assert_eq!(seq(&data32, "e32"), (32.into(), "data".into()));
}

/// An eval killed while it wrote its report (here by SIGXFSZ: `ulimit -f`
/// caps the size of any file it writes, as a full disk would, between the
/// text files' size and the confusion image's) left an image cut short
/// under its real name, beside files that looked whole; now each file is
/// renamed into place once complete.
#[test]
fn an_eval_killed_while_writing_leaves_no_file_cut_short() {
    let f = fixture();
    let whole = f.root.join("whole");
    eval::evaluate(&eval_args(&f, &whole)).unwrap();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let png = size(&whole.join("confusion.png"));
    let limit = png / 4;
    for text in [
        "metrics.json",
        "report.txt",
        "confusion.txt",
        "confusion.csv",
    ] {
        assert!(size(&whole.join(text)) < limit, "{text}: {png}");
    }
    let out = f.root.join("killed");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {} && exec \"$@\"", limit / 512))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_tmoe"))
        .arg("eval")
        .arg("--checkpoint")
        .arg(&f.ckpt)
        .arg("--data")
        .arg(&f.data)
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .status()
        .unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(out.join("metrics.json").exists());
    assert!(
        !out.join("confusion.png").exists(),
        "a killed eval left confusion.png of {} bytes ({png} whole)",
        size(&out.join("confusion.png"))
    );
}
