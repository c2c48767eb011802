//! End-to-end capture reading (container -> decode -> flow table) with
//! read_captures over the real iot-sentinel captures (or, when absent, a
//! synthetic set). Reports MB/s (criterion Throughput::Bytes) and, from one
//! extra run, flows/s and peak memory.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use traffic_moe::traffic::capture::reader::{ReadConfig, find_captures, read_captures};
use traffic_moe::traffic::capture::synth::{SynthConfig, synthesize};

fn inputs() -> (Vec<PathBuf>, String, Option<tempfile::TempDir>) {
    let root = std::env::var_os("TMOE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let which = std::env::var("TMOE_BENCH_SET").unwrap_or_else(|_| "iot-sentinel".into());
    let dir = root.join(&which);
    if dir.is_dir() {
        return (find_captures(&dir).expect("listing captures"), which, None);
    }
    eprintln!(
        "{} not found: benchmarking synthetic captures",
        dir.display()
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    synthesize(&SynthConfig {
        flows_per_file: traffic_moe::traffic::capture::synth::FLOWS_PER_FILE,
        out: tmp.path().to_path_buf(),
        flows_per_class: 500,
        seed: 1,
        force: false,
    })
    .expect("synthesising captures");
    let files = find_captures(tmp.path()).expect("listing captures");
    (files, "synth".into(), Some(tmp))
}

fn bench_read_captures(c: &mut Criterion) {
    let (files, name, _keep) = inputs();
    let cfg = ReadConfig::default();
    let flows = AtomicU64::new(0);
    let count = |_f| {
        flows.fetch_add(1, Ordering::Relaxed);
    };
    let stats = read_captures(&files, &cfg, false, &count);
    println!("\n{name}: one run\n{stats}");
    let mut group = c.benchmark_group("capture");
    group.throughput(Throughput::Bytes(stats.bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function(format!("read_captures/{name}"), |b| {
        b.iter(|| black_box(read_captures(black_box(&files), &cfg, false, &count).flows))
    });
    group.finish();
}

// No plots: criterion's plotters backend needs system fonts this machine lacks.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench_read_captures
}
criterion_main!(benches);
