//! Model throughput on the CPU (DESIGN.md "Benchmark shapes"): tokens/s of
//! inference (forward) and of a full training step (forward, backward,
//! AdamW) for `tiny` (batch 8, seq 256) and `small` (batch 4, seq 256),
//! Traffic-MoE and its dense twin. Random token ids, no padding.
//! Run: `cargo bench --bench model` (filter e.g. `-- tiny`).
//! `TMOE_BENCH_STEPS=N cargo bench --bench model [-- tiny]` skips criterion
//! and times N calls of each case, wall and process CPU time (for `perf`
//! profiles, and on a shared machine where wall time alone misleads).

use criterion::{Criterion, Throughput, criterion_group};
use std::time::Duration;
use traffic_moe::autograd::{ParamStore, Tape};
use traffic_moe::model::{FfnKind, Inputs, Model, ModelConfig};
use traffic_moe::train::batch::Batch;
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::step::{Task, train_step};

fn batch(vocab: usize, b: usize, s: usize) -> Batch {
    let ids: Vec<u32> = (0..b * s)
        .map(|i| 5 + ((i * 2654435761) % (vocab - 5)) as u32)
        .collect();
    Batch {
        ids,
        mask: vec![1; b * s],
        labels: vec![0; b],
        b,
        s,
        n_tokens: b * s,
    }
}

fn bench(c: &mut Criterion) {
    for (name, b, s) in [("tiny", 8, 256), ("small", 4, 256)] {
        for ffn in [FfnKind::Moe, FfnKind::Dense] {
            let cfg = ModelConfig::named(name).unwrap().with_ffn(ffn);
            let (model, mut params) = Model::new(cfg.clone(), 0).unwrap();
            let x = batch(cfg.vocab, b, s);
            let mut g = c.benchmark_group(format!("{name}/{ffn:?}"));
            g.throughput(Throughput::Elements((b * s) as u64));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
            g.bench_function("forward", |bn| {
                bn.iter(|| {
                    let p = params.values();
                    let mut tape = Tape::<f32>::new();
                    let inp = Inputs {
                        ids: &x.ids,
                        mask: &x.mask,
                        b,
                        s,
                    };
                    model
                        .lm_forward(&mut tape, &p, &inp, 0.02)
                        .unwrap()
                        .task_loss
                })
            });
            let mut opt = AdamW::new(AdamWConfig::default(), &params);
            g.bench_function("train_step", |bn| {
                bn.iter(|| {
                    train_step(&model, &mut params, &mut opt, &x, Task::Lm, 0.02, 1e-4, 1.0)
                        .unwrap()
                        .loss
                })
            });
            g.finish();
        }
    }
}

/// User + system CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 13 {
        return 0.0;
    }
    (f[11] + f[12]) / 100.0 // clock ticks (USER_HZ = 100)
}

fn timed_steps(steps: usize, filter: &str) {
    let threads = rayon::current_num_threads();
    println!("case                   wall ms/call  cpu ms/call  tokens/s  ({threads} threads)");
    for (name, b, s) in [("tiny", 8, 256), ("small", 4, 256)] {
        for ffn in [FfnKind::Moe, FfnKind::Dense] {
            if !format!("{name}/{ffn:?}").contains(filter) {
                continue;
            }
            let cfg = ModelConfig::named(name).unwrap().with_ffn(ffn);
            let (model, mut params) = Model::new(cfg.clone(), 0).unwrap();
            let x = batch(cfg.vocab, b, s);
            let mut opt = AdamW::new(AdamWConfig::default(), &params);
            for what in ["forward", "train_step"] {
                let mut run = || {
                    if what == "forward" {
                        let p = params.values();
                        let mut tape = Tape::<f32>::new();
                        let inp = Inputs {
                            ids: &x.ids,
                            mask: &x.mask,
                            b,
                            s,
                        };
                        model
                            .lm_forward(&mut tape, &p, &inp, 0.02)
                            .unwrap()
                            .task_loss
                    } else {
                        train_step(&model, &mut params, &mut opt, &x, Task::Lm, 0.02, 1e-4, 1.0)
                            .unwrap()
                            .loss
                    }
                };
                run(); // warm-up
                let (t0, c0) = (std::time::Instant::now(), cpu_seconds());
                for _ in 0..steps {
                    std::hint::black_box(run());
                }
                let wall = t0.elapsed().as_secs_f64() / steps as f64;
                let cpu = (cpu_seconds() - c0) / steps as f64;
                println!(
                    "{:<22} {:>12.1} {:>12.1} {:>9.0}",
                    format!("{name}/{ffn:?}/{what}"),
                    wall * 1e3,
                    cpu * 1e3,
                    (b * s) as f64 / wall
                );
            }
        }
    }
}

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts this machine lacks.
    config = Criterion::default().without_plots();
    targets = bench
}
fn main() {
    if let Some(n) = std::env::var("TMOE_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let filter = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .unwrap_or_default();
        timed_steps(n, &filter);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
