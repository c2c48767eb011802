//! `tmoe classify`'s pipeline (captures read in parallel, flows batched across
//! files by length) against the serial path it replaced (each capture read,
//! then its own flows classified in their own batches), flow by flow on the
//! real IoT Sentinel captures: same rows in the same order, same class,
//! probability within 1e-5. Also: `--out` keeps an existing file unless
//! `--force`.

mod common;
mod tiny_train;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use traffic_moe::cli::classify;
use traffic_moe::engine::{Device, Precision};
use traffic_moe::infer::classifier::{Classifier, VocabSource};
use traffic_moe::infer::pipeline::{PipelineConfig, classify_files};
use traffic_moe::traffic::capture::reader::{find_captures, read_capture};
use traffic_moe::traffic::dataset::build::{DatasetConfig, build_dataset};
use traffic_moe::traffic::dataset::labels::LabelSource;
use traffic_moe::traffic::dataset::split::SplitBy;
use traffic_moe::traffic::tokens::tokenize::TokenizerConfig;
use traffic_moe::train::finetune::FinetuneOpts;

fn iot_sentinel() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/iot-sentinel");
    p.is_dir().then_some(p)
}

/// A dataset of `captures` and a classifier fine-tuned on it for one short
/// epoch (the test compares two paths, not accuracy).
fn classifier_for(captures: &[PathBuf], root: &Path) -> (PathBuf, PathBuf) {
    let data = root.join("data");
    let cfg = DatasetConfig {
        inputs: captures.to_vec(),
        labels: LabelSource::Folder,
        vocab_size: 300,
        tokenizer: TokenizerConfig {
            seq_len: 64,
            ..TokenizerConfig::default()
        },
        min_packets: 1,
        split_by: SplitBy::File,
        ..DatasetConfig::default()
    };
    build_dataset(&cfg, &data, false).unwrap();
    let ckpt = tiny_train::classifier::fine_tuned(&data, &root.join("run"), 64, |o| FinetuneOpts {
        max_epochs: 1,
        batch: 32,
        max_per_class: Some(20),
        ..o
    });
    (data, ckpt)
}

/// (file, first timestamp, packets, class, probability) per flow, the way
/// `tmoe classify` did it before the pipeline: file after file, each file's
/// flows in their own batches.
fn serial(clf: &Classifier, files: &[PathBuf], batch: usize) -> Vec<(usize, u64, u64, u32, f32)> {
    let mut rows = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let mut flows = Vec::new();
        let stats = read_capture(path, i as u32, &clf.read_config(), &mut |f| flows.push(f));
        assert!(
            stats.error.is_none(),
            "{}: {:?}",
            path.display(),
            stats.error
        );
        flows.sort_by_key(|f| (f.first_ts_ns, f.key));
        for (f, (c, p)) in flows.iter().zip(clf.classify(&flows, batch).unwrap()) {
            rows.push((i, f.first_ts_ns, f.total_packets, c, p));
        }
    }
    rows
}

#[test]
fn pipeline_classifies_real_captures_like_the_serial_path() {
    let Some(iot) = iot_sentinel() else {
        return traffic_moe::testing::skip_or_fail("../shared/data/iot-sentinel is missing");
    };
    // Every 4th capture: all 31 device types, a quarter of the time.
    let files: Vec<PathBuf> = find_captures(&iot)
        .unwrap()
        .into_iter()
        .step_by(4)
        .collect();
    assert!(files.len() > 100, "{} captures", files.len());
    let dir = tempfile::tempdir().unwrap();
    let (data, ckpt) = classifier_for(&files, dir.path());
    let clf = Classifier::open(&ckpt, VocabSource::Dataset(&data), None, Device::Cpu).unwrap();

    let want = serial(&clf, &files, 16);
    // Batches of 16 across files from 3 readers: flows from several captures
    // share batches, and captures finish out of order.
    let mut cfg = PipelineConfig::new(16, 1);
    cfg.readers = 3;
    let mut got = Vec::new();
    let mut order = Vec::new();
    // Progress: bytes as their flows are classified, so each file's bytes
    // are all counted by the time it is handed out, and every byte once.
    let (bytes_done, flows_done, reports) = (Cell::new(0u64), Cell::new(0usize), Cell::new(0));
    let mut files_bytes = 0u64;
    let mut on_progress = |bytes: u64, flows: usize| {
        bytes_done.set(bytes_done.get() + bytes);
        flows_done.set(flows_done.get() + flows);
        reports.set(reports.get() + 1);
    };
    classify_files(&clf, &files, &cfg, &mut on_progress, &mut |r| {
        files_bytes += r.stats.bytes;
        assert!(
            bytes_done.get() >= files_bytes,
            "file {}: {} bytes reported done, the files handed out hold {files_bytes}",
            r.index,
            bytes_done.get()
        );
        order.push(r.index);
        assert!(r.stats.error.is_none());
        for c in r.flows {
            got.push((
                r.index,
                c.flow.first_ts_ns,
                c.flow.total_packets,
                c.class_id,
                c.probability,
            ));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        order,
        (0..files.len()).collect::<Vec<_>>(),
        "files in input order"
    );
    assert_eq!(got.len(), want.len(), "flows");
    assert_eq!(bytes_done.get(), files_bytes, "bytes reported done");
    assert_eq!(flows_done.get(), got.len(), "flows reported done");
    assert!(reports.get() > 10, "{} progress reports", reports.get());
    assert!(want.len() > 2000, "{} flows", want.len());
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.0, g.1, g.2, g.3),
            (w.0, w.1, w.2, w.3),
            "file, timestamp, packets, class"
        );
        worst = worst.max((g.4 - w.4).abs());
    }
    assert!(worst < 1e-5, "probabilities differ by up to {worst}");
    // The classes are not all the same (a degenerate model would hide errors).
    let mut classes: Vec<u32> = got.iter().map(|g| g.3).collect();
    classes.sort();
    classes.dedup();
    assert!(classes.len() >= 2, "predicted classes {classes:?}");

    // One capture of many flows: its bytes are reported as its flows are
    // classified, a window at a time, not all at once when it is read (a
    // large capture's bar was full for the minutes the model took).
    let big = (0..files.len())
        .max_by_key(|&i| got.iter().filter(|g| g.0 == i).count())
        .unwrap();
    let n = got.iter().filter(|g| g.0 == big).count() as u64;
    let mut one = PipelineConfig::new(4, 1);
    one.window = 8;
    let mut seen = Vec::new();
    let mut total = 0;
    classify_files(
        &clf,
        &files[big..=big],
        &one,
        &mut |bytes, flows| seen.push((bytes, flows)),
        &mut |r| {
            total = r.stats.bytes;
            Ok(())
        },
    )
    .unwrap();
    assert!(n > 16, "{n} flows in the largest capture");
    let (mut bytes, mut flows) = (0u64, 0u64);
    for &(b, f) in &seen {
        bytes += b;
        flows += f as u64;
        assert_eq!(
            bytes,
            total * flows / n,
            "after {flows} of {n} flows: {seen:?}"
        );
    }
    assert_eq!((bytes, flows), (total, n));
    assert!(seen.len() as u64 >= n / 8, "{} reports", seen.len());

    // bf16 weights on this CPU's fastest packed kernel (AMX tiles, AVX-512
    // BF16 or portable: named in the message) predict what f32 does: the
    // issue lets CPU inference use bf16 only where its predictions agree.
    // This one-epoch model's top classes are often nearly tied, so bf16
    // rounding may pick the other of two: then the probability it gives
    // its class must be f32's top probability to within the same small
    // tolerance (a flip between near-equals, not a different answer).
    let kernel = traffic_moe::backend::cpu_bf16::Kernel::detect().name();
    let clf16 = Classifier::open_with_precision(
        &ckpt,
        VocabSource::Dataset(&data),
        None,
        Device::Cpu,
        Precision::Bf16,
    )
    .unwrap();
    let bf16 = serial(&clf16, &files, 16);
    assert_eq!(bf16.len(), want.len(), "flows in bf16 ({kernel})");
    let (mut same, mut worst) = (0usize, 0f32);
    for (b, w) in bf16.iter().zip(&want) {
        assert_eq!(
            (b.0, b.1, b.2),
            (w.0, w.1, w.2),
            "bf16 ({kernel}): the same flows"
        );
        same += usize::from(b.3 == w.3);
        worst = worst.max((b.4 - w.4).abs());
    }
    let agree = same as f64 / want.len() as f64;
    eprintln!(
        "bf16 on {kernel}: {same} of {} flows in f32's class ({:.2} %), top probabilities within {worst:.2e}",
        want.len(),
        100.0 * agree
    );
    assert!(
        worst < 2e-3,
        "bf16 on {kernel}: top probabilities differ from f32's by up to {worst}"
    );
    assert!(
        agree >= 0.95,
        "bf16 on {kernel} agrees with f32 on {:.2} % of flows",
        100.0 * agree
    );
}

#[test]
fn out_keeps_an_existing_file_unless_forced() {
    let f = tiny_train::classifier::fixture();
    let out = f.root.join("verdicts.csv");
    std::fs::write(&out, "mine").unwrap();
    let mut a =
        tiny_train::classifier::classify_args(&f, vec![f.caps.join("dns")], classify::Format::Csv);
    a.out = Some(out.clone());
    let err = classify::run(a.clone()).unwrap_err().to_string();
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
    a.force = true;
    classify::run(a).unwrap();
    let csv = std::fs::read_to_string(&out).unwrap();
    assert!(csv.starts_with("file,proto,"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 3 * 20, "header + 60 dns flows");
    // A run that fails (no capture could be read) leaves no file behind.
    let bad = f.root.join("not-captures");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.pcap"), "not a capture").unwrap();
    let out2 = f.root.join("verdicts2.csv");
    let mut b = tiny_train::classifier::classify_args(&f, vec![bad], classify::Format::Csv);
    b.out = Some(out2.clone());
    let err = classify::run(b.clone()).unwrap_err();
    assert!(!out2.exists(), "{err}: left {}", out2.display());
    // But what is not a plain file (`--out /dev/null --force`, here a
    // link to one) outlives a failed run: it was removed, /dev/null too.
    let link = f.root.join("verdicts-link.csv");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    b.out = Some(link.clone());
    b.force = true;
    let err = classify::run(b).unwrap_err();
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "{err}: removed {}",
        link.display()
    );
}

/// A run that ends at its memory limit (here 1 MiB: the file is created
/// before the classifier loads) leaves no output file behind either.
#[test]
fn a_run_ended_by_the_memory_limit_leaves_no_output() {
    let f = tiny_train::classifier::fixture();
    let out = f.root.join("verdicts.csv");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .arg("classify")
        .arg(f.caps.join("dns"))
        .arg("--checkpoint")
        .arg(&f.ckpt)
        .arg("--data")
        .arg(&f.data)
        .arg("--out")
        .arg(&out)
        .env("TMOE_MEMORY_LIMIT", "1M")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("tmoe: out of memory"), "{err}");
    assert!(!out.exists(), "{err}: left {}", out.display());
}

/// The rows of a CSV without the `file` column, sorted.
fn rows_without_file(csv: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(csv)
        .lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap().1.to_string())
        .collect();
    v.sort();
    v
}

/// A flow's probability is the same bits alone and in a batch of any size
/// (early verdicts classify a flow alone, the end of a capture in
/// batches), f32 and bf16: the packed engine's products, attention and
/// pooling are row by row, and so are the router's logits.
#[test]
fn a_flows_verdict_does_not_depend_on_its_batch() {
    let f = tiny_train::classifier::fixture();
    for precision in [Precision::F32, Precision::Bf16] {
        if precision == Precision::F32
            && traffic_moe::backend::cpu_bf16::Kernel::detect_f32().is_none()
        {
            println!(
                "SKIP f32: no AVX-512F here, so f32 inference runs the reference engine, whose gemm-crate products are blocked by the batch's rows"
            );
            continue;
        }
        let clf = Classifier::open_with_precision(
            &f.ckpt,
            VocabSource::Dataset(&f.data),
            None,
            Device::Cpu,
            precision,
        )
        .unwrap();
        let mut flows = vec![];
        for class in ["dns", "web"] {
            for cap in find_captures(&f.caps.join(class)).unwrap() {
                read_capture(&cap, 0, &clf.read_config(), &mut |fl| flows.push(fl));
            }
        }
        assert!(flows.len() >= 100, "{} flows", flows.len());
        let alone: Vec<_> = flows
            .iter()
            .map(|fl| clf.classify(std::slice::from_ref(fl), 1).unwrap()[0])
            .collect();
        for batch in [3, 64] {
            let together = clf.classify(&flows, batch).unwrap();
            for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
                assert_eq!(
                    (a.0, a.1.to_bits()),
                    (b.0, b.1.to_bits()),
                    "{precision:?} batch {batch}: flow {i}: {a:?} alone, {b:?} in the batch"
                );
            }
        }
    }
}

#[test]
fn stream_from_a_reader_gives_the_verdicts_of_classify() {
    use traffic_moe::cli::classify_stream::classify_stream;
    let f = tiny_train::classifier::fixture();
    let cap = f.caps.join("web").join("web1.pcap");
    let mut a = tiny_train::classifier::classify_args(&f, vec![cap.clone()], classify::Format::Csv);
    let mut want = Vec::new();
    classify::classify(&a, &mut want).unwrap();
    for early in [false, true] {
        a.captures.clear();
        a.stream = true;
        a.early = early;
        a.batch = Some(3);
        let mut got = Vec::new();
        let input = std::fs::File::open(&cap).unwrap();
        let s = classify_stream(&a, input, &mut got).unwrap();
        assert_eq!(
            rows_without_file(&got),
            rows_without_file(&want),
            "early {early}"
        );
        assert_eq!(s.stats.flows_classified, 20);
        assert!(s.input_error.is_none());
        assert!(s.latency_p99.is_some_and(|p| p >= s.latency_p50.unwrap()));
    }
    // Cut mid-record (tcpdump stopped): the flows before the cut, no error.
    let bytes = std::fs::read(&cap).unwrap();
    let cut = bytes.len() - 7;
    let s = classify_stream(
        &a,
        std::io::Cursor::new(bytes[..cut].to_vec()),
        &mut Vec::new(),
    )
    .unwrap();
    assert!(s.input_error.is_none());
    assert!(s.stats.flows_classified > 0);
    // Not a capture: a clear error, no panic.
    a.early = false;
    let err = classify_stream(
        &a,
        std::io::Cursor::new(b"hello, world".to_vec()),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("standard input"), "{err}");
}

#[test]
fn a_flow_table_cap_ends_flows_early_and_counts_them() {
    let f = tiny_train::classifier::fixture();
    let caps = vec![f.caps.join("dns")];
    let a = tiny_train::classifier::classify_args(&f, caps, classify::Format::Csv);
    let mut want = Vec::new();
    let free = classify::classify(&a, &mut want).unwrap();
    assert_eq!(free.flows_evicted, 0);
    // The fixture's flows follow one another: with room for one open flow,
    // each new flow ends the previous one, which had all its packets.
    let capped_args = classify::Args {
        max_flows: Some(1),
        ..a
    };
    let mut got = Vec::new();
    let capped = classify::classify(&capped_args, &mut got).unwrap();
    assert_eq!(capped.flows_evicted, 3 * (20 - 1), "3 captures of 20 flows");
    assert_eq!(rows_without_file(&got), rows_without_file(&want));
}

/// Every frame of a capture, in order.
fn frames_of(cap: &Path) -> Vec<(u64, u32, Vec<u8>, u32)> {
    let mut r = traffic_moe::traffic::capture::container::CaptureReader::open(cap).unwrap();
    let mut v = Vec::new();
    r.for_each_frame(|f| v.push((f.ts_ns, f.link_type, f.data.to_vec(), f.orig_len)))
        .unwrap();
    v
}

#[test]
fn overlapped_stream_gives_the_serial_runners_verdicts_in_order() {
    use traffic_moe::infer::flow_feed::StreamLimits;
    use traffic_moe::infer::overlap::{self, FrameSink};
    use traffic_moe::infer::runner::StreamRunner;
    use traffic_moe::infer::stream::{FlowStream, Verdict, flow_feed_for};
    let f = tiny_train::classifier::fixture();
    let cap = f.caps.join("web").join("web1.pcap");
    let frames = frames_of(&cap);
    let open = || Classifier::open(&f.ckpt, VocabSource::Dataset(&f.data), None, Device::Cpu);
    for early in [false, true] {
        let mut runner = StreamRunner::new(FlowStream::new(open().unwrap(), None, early), 3);
        let mut want: Vec<Verdict> = Vec::new();
        for (ts, link, data, len) in &frames {
            let _ = runner.feed(*ts, *link, data, *len);
            runner
                .classify_due(false, &mut |_, v| {
                    want.extend_from_slice(v);
                    Ok(())
                })
                .unwrap();
        }
        runner.flush();
        runner
            .classify_due(true, &mut |_, v| {
                want.extend_from_slice(v);
                Ok(())
            })
            .unwrap();

        let clf = open().unwrap();
        let feed = flow_feed_for(&clf, None, early, StreamLimits::default());
        let mut got: Vec<Verdict> = Vec::new();
        let source = |sink: &mut FrameSink| {
            for (ts, link, data, len) in &frames {
                sink(*ts, *link, data, *len);
            }
            Ok(())
        };
        let r = overlap::run(
            &clf,
            feed,
            3,
            std::time::Duration::from_secs(3600),
            source,
            &mut |v| {
                got.extend_from_slice(v);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(want.len(), 20, "early {early}");
        // Same flows in the same order, same classes; probabilities to
        // batching noise (flows batch differently on the two paths).
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.initiator, g.first_ts_ns, g.packets, g.class_id),
                (w.initiator, w.first_ts_ns, w.packets, w.class_id)
            );
            assert!((g.probability - w.probability).abs() < 1e-5);
        }
        assert_eq!(r.stats.flows_classified, 20);
        assert_eq!(r.latencies.len(), 20);
        assert_eq!(r.stats, runner.stream.stats(), "early {early}");
    }
}

/// The overlapped stream takes every ended flow after each frame, so the
/// feed's cap on waiting flows must not drop the flows that end together:
/// here the 20 DNS flows still open at the end of the input, flushed at
/// once, with a cap of 2 (the CLI's is 65,536, met by as many open flows).
#[test]
fn overlapped_stream_drops_no_flow_that_ends_in_a_burst() {
    use traffic_moe::infer::flow_feed::StreamLimits;
    use traffic_moe::infer::overlap::{self, FrameSink};
    use traffic_moe::infer::stream::flow_feed_for;
    let f = tiny_train::classifier::fixture();
    let frames = frames_of(&f.caps.join("dns").join("dns0.pcap"));
    let clf = Classifier::open(&f.ckpt, VocabSource::Dataset(&f.data), None, Device::Cpu).unwrap();
    let limits = StreamLimits {
        max_pending: 2,
        ..StreamLimits::default()
    };
    let feed = flow_feed_for(&clf, None, false, limits);
    let source = |sink: &mut FrameSink| {
        for (ts, link, data, len) in &frames {
            sink(*ts, *link, data, *len);
        }
        Ok(())
    };
    let mut verdicts = 0;
    let r = overlap::run(
        &clf,
        feed,
        4,
        std::time::Duration::from_secs(3600),
        source,
        &mut |v| {
            verdicts += v.len();
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(r.stats.flows_dropped, 0, "{:?}", r.stats);
    assert_eq!(r.stats.flows_classified, 20, "{:?}", r.stats);
    assert_eq!(verdicts, 20);
}

/// A stream whose output fails (a full disk: /dev/full behind a link) ends
/// with that error while its input is still open and quiet, as a live link
/// is; it used to wait for the next packet. The wait below bounds a hang,
/// it times nothing.
#[test]
fn stream_ends_on_a_failed_output_while_its_input_is_quiet() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let f = tiny_train::classifier::fixture();
    let out = f.root.join("full.csv");
    std::os::unix::fs::symlink("/dev/full", &out).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .arg("classify")
        .arg("--checkpoint")
        .arg(&f.ckpt)
        .arg("--data")
        .arg(&f.data)
        // Early verdicts: each flow's verdict at its 5th packet, as the
        // fixture's flows are still open when the input goes quiet.
        .args(["--stream", "--early", "--quiet", "--force", "--out"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let capture = std::fs::read(f.caps.join("web").join("web1.pcap")).unwrap();
    stdin.write_all(&capture).unwrap();
    stdin.flush().unwrap();
    let t0 = std::time::Instant::now();
    let ended = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if ended.is_none() {
        child.kill().unwrap();
    }
    drop(stdin);
    let err = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    let status =
        ended.unwrap_or_else(|| panic!("still running 120 s after its output failed: {err}"));
    assert!(
        !status.success() && err.contains(&format!("writing {}", out.display())),
        "{err}"
    );
    // The link (and /dev/full) outlive the failed run.
    assert!(std::fs::symlink_metadata(&out).is_ok());
}

/// On a link gone quiet, a flow that ends by its idle timeout gets its
/// verdict without a later frame: the source reports the quiet spell and
/// the table's clock moves on by the wall time since the last frame. Here
/// the idle timeout is 50 ms; the verdict must come before the input ends
/// (the source waits for it: the bound below is for a hang, it times
/// nothing).
#[test]
fn overlapped_stream_ends_idle_flows_while_the_input_is_quiet() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use traffic_moe::infer::flow_feed::StreamLimits;
    use traffic_moe::infer::overlap::{self, FrameSink, QuietSink};
    use traffic_moe::infer::stream::flow_feed_for;
    let f = tiny_train::classifier::fixture();
    // The first DNS flow: 4 packets within 70 ms.
    let frames = frames_of(&f.caps.join("dns").join("dns0.pcap"));
    let mut clf =
        Classifier::open(&f.ckpt, VocabSource::Dataset(&f.data), None, Device::Cpu).unwrap();
    clf.idle_timeout_s = 0.05;
    let feed = flow_feed_for(&clf, None, false, StreamLimits::default());
    let verdict = AtomicBool::new(false);
    let mut before_the_end = false;
    let source = |sink: &mut FrameSink, quiet: &mut QuietSink| {
        for (ts, link, data, len) in &frames[..4] {
            sink(*ts, *link, data, *len);
        }
        let t0 = std::time::Instant::now();
        while !verdict.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
            quiet();
        }
        before_the_end = verdict.load(Ordering::SeqCst);
        Ok(())
    };
    let r = overlap::run_live(
        &clf,
        feed,
        4,
        Duration::from_millis(1),
        source,
        &mut |v| {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].packets, 4);
            verdict.store(true, Ordering::SeqCst);
            Ok(())
        },
        &|| {},
    )
    .unwrap();
    assert!(before_the_end, "no verdict while the input was quiet");
    assert_eq!(r.stats.flows_classified, 1);
}

#[test]
fn overlapped_stream_stops_reading_when_the_model_side_fails() {
    use traffic_moe::infer::flow_feed::StreamLimits;
    use traffic_moe::infer::overlap::{self, FrameSink};
    use traffic_moe::infer::stream::flow_feed_for;
    let f = tiny_train::classifier::fixture();
    let frames = frames_of(&f.caps.join("web").join("web1.pcap"));
    let clf = Classifier::open(&f.ckpt, VocabSource::Dataset(&f.data), None, Device::Cpu).unwrap();
    let feed = flow_feed_for(&clf, None, false, StreamLimits::default());
    // A long input: the capture replayed 10,000 times, each copy an hour
    // later (new flows).
    let rounds = 10_000u64;
    let fed = std::sync::atomic::AtomicU64::new(0);
    let source = |sink: &mut FrameSink| {
        for round in 0..rounds {
            for (ts, link, data, len) in &frames {
                fed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !sink(ts + round * 3_600_000_000_000, *link, data, *len) {
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    let err = overlap::run(
        &clf,
        feed,
        4,
        std::time::Duration::from_secs(3600),
        source,
        &mut |_| anyhow::bail!("disk full"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    let fed = fed.into_inner();
    assert!(
        fed < rounds * frames.len() as u64 / 10,
        "the reader stopped soon after the failure: {fed} frames fed"
    );
}

#[test]
fn overlapped_stream_sends_a_partial_batch_while_the_input_is_quiet() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use traffic_moe::infer::flow_feed::StreamLimits;
    use traffic_moe::infer::overlap::{self, FrameSink};
    use traffic_moe::infer::stream::flow_feed_for;
    let f = tiny_train::classifier::fixture();
    let frames = frames_of(&f.caps.join("web").join("web1.pcap"));
    let clf = Classifier::open(&f.ckpt, VocabSource::Dataset(&f.data), None, Device::Cpu).unwrap();
    // Early verdicts: flows are ready at their K-th packet, before the end.
    let feed = flow_feed_for(&clf, None, true, StreamLimits::default());
    let verdicts = AtomicUsize::new(0);
    let during_pause = AtomicUsize::new(0);
    // The capture, then a quiet link: no frame for as long as it takes the
    // verdicts of the flows already ready to come out (30 s at most).
    let source = |sink: &mut FrameSink| {
        for (ts, link, data, len) in &frames {
            sink(*ts, *link, data, *len);
        }
        let t0 = std::time::Instant::now();
        while verdicts.load(Ordering::Acquire) == 0 && t0.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        during_pause.store(verdicts.load(Ordering::Acquire), Ordering::Release);
        Ok(())
    };
    // A batch larger than the capture's flows: only the wait sends one.
    let r = overlap::run(
        &clf,
        feed,
        64,
        std::time::Duration::from_millis(20),
        source,
        &mut |v| {
            verdicts.fetch_add(v.len(), Ordering::AcqRel);
            Ok(())
        },
    )
    .unwrap();
    let paused = during_pause.into_inner();
    assert!(
        paused > 0,
        "no verdict came out while the input was quiet (the partial batch waited for a frame)"
    );
    assert_eq!(r.stats.flows_classified, 20);
}

/// The stream's summary: a pcapng packet on an interface the stream never
/// described is skipped and counted like every other skipped frame, not
/// lost; and the counts are worded as the file summary words them ("1 flow
/// from 4 packets", not "1 flows"); an empty input is named as such. One
/// fixture for all (it fine-tunes).
#[test]
fn stream_summary_counts_every_frame_in_words() {
    use traffic_moe::traffic::capture::pcap_writer::{PcapNgBuilder, PcapWriter};
    let f = tiny_train::classifier::fixture();
    let (ckpt, data) = (f.ckpt.to_str().unwrap(), f.data.to_str().unwrap());
    let run = |input: &Path| {
        common::tmoe_outcome_with(
            &f.root,
            &[
                "classify",
                "--checkpoint",
                ckpt,
                "--data",
                data,
                "--stream",
                "--quiet",
            ],
            |c| {
                c.stdin(std::fs::File::open(input).unwrap());
            },
        )
    };
    let summary = |input: &Path| {
        let (ok, out) = run(input);
        assert!(ok, "{out}");
        out
    };
    let frames = frames_of(&f.caps.join("dns").join("dns0.pcap"));
    let mut ng = PcapNgBuilder::new(false);
    ng.interface(1, 9);
    for (ts, _, data, len) in &frames {
        ng.enhanced_packet(0, *ts, data, *len);
    }
    for (ts, _, data, len) in frames.iter().take(3) {
        ng.enhanced_packet(4, *ts, data, *len);
    }
    let input = f.root.join("in.pcapng");
    std::fs::write(&input, &ng.bytes).unwrap();
    let out = summary(&input);
    assert!(out.contains("classified 20 flows"), "{out}");
    assert!(out.contains("; 3 frames skipped,"), "{out}");
    // Nothing is dropped on the stream (the input backs up instead).
    assert!(!out.contains("dropped"), "{out}");
    assert!(
        out.contains("skipped 3 frames: unknown pcapng interface 3;"),
        "{out}"
    );

    let input = f.root.join("one.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap(), frames[0].1).unwrap();
    // The first flow: its 4 packets (query, answer, query, answer).
    for (ts, _, data, _) in &frames[..4] {
        w.write_frame(*ts, data).unwrap();
    }
    drop(w);
    let out = summary(&input);
    assert!(
        out.contains("classified 1 flow from 4 packets in "),
        "{out}"
    );

    // Nothing down the pipe is said as such (it read "empty file").
    let input = f.root.join("empty");
    std::fs::write(&input, b"").unwrap();
    let (ok, out) = run(&input);
    assert!(
        !ok && out.contains("standard input: nothing arrived (no capture header)")
            && !out.contains("file"),
        "{out}"
    );
}
