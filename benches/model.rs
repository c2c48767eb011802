//! Model throughput on the CPU, at the CPU benchmark shapes of the design
//! notes (`../shared/DESIGN.md`, "Benchmark shapes", outside this
//! repository): `tiny` (d 128, 4 layers, 4 heads, N 8 experts, top-2, d' 256,
//! vocab 8,192) at batch 8 x sequence 256, and `small` (d 384, 6 layers, 6
//! heads, N 8, top-2, d' 1,024, vocab 65,541) at batch 4 x sequence 256;
//! Traffic-MoE and its dense twin. Random token ids, no padding. Tokens/s of
//!
//! - `classify`: inference as `tmoe classify` runs it (`predict_probs`:
//!   backbone, mean pooling, classification head with `CLASSES` classes,
//!   softmax; no LM head);
//! - `lm_forward`: the pretraining forward with the full-vocabulary LM head
//!   and its loss (not inference);
//! - `train_step`: a full pretraining step (forward, backward, AdamW).
//!
//! Run: `cargo bench --bench model` (filter e.g. `-- tiny`).
//! `TMOE_BENCH_STEPS=N cargo bench --bench model [-- tiny]` skips criterion
//! and times N calls of each case, wall and process CPU time (for `perf`
//! profiles, and on a shared machine where wall time alone misleads).

use criterion::{Criterion, Throughput, criterion_group};
use std::time::Duration;
use traffic_moe::autograd::{ParamStore, Tape};
use traffic_moe::backend::cpu::Cpu;
use traffic_moe::backend::cpu::matmul::Products;
use traffic_moe::eval::predict::predict_probs;
use traffic_moe::model::batch::{Batch, MemSequences};
use traffic_moe::model::{FfnKind, Model, ModelConfig};
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

/// Classes of the classifier head in the `classify` cases.
const CLASSES: usize = 16;

/// The classifier twin of `cfg` (same backbone and seed, a `CLASSES`-way
/// head) and the batch's sequences, for `predict_probs`.
fn classifier(
    cfg: &ModelConfig,
    x: &Batch,
) -> (Model, Vec<traffic_moe::train::optim::Param>, MemSequences) {
    let mut cfg = cfg.clone();
    cfg.n_classes = CLASSES;
    let (model, params) = Model::new(cfg, 0).unwrap();
    let mut seqs = MemSequences::new(x.s);
    for row in x.ids.chunks_exact(x.s) {
        seqs.push(row, None);
    }
    (model, params, seqs)
}

/// Class probabilities of every sequence, as inference computes them.
fn classify(
    model: &Model,
    params: &[traffic_moe::train::optim::Param],
    seqs: &MemSequences,
    b: usize,
    s: usize,
) -> f32 {
    let idx: Vec<usize> = (0..b).collect();
    predict_probs(model, params, seqs, &idx, b, s, false).unwrap()[0]
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
            let (cls_model, cls_params, seqs) = classifier(&cfg, &x);
            g.bench_function("classify", |bn| {
                bn.iter(|| classify(&cls_model, &cls_params, &seqs, b, s))
            });
            g.bench_function("lm_forward", |bn| {
                bn.iter(|| {
                    let p = params.values();
                    let mut tape = Tape::<f32>::new();
                    let inp = x.inputs();
                    model
                        .lm_forward(&mut tape, &p, &inp, 0.02)
                        .unwrap()
                        .task_loss
                })
            });
            let mut opt = AdamW::new(AdamWConfig::default(), &params);
            g.bench_function("train_step", |bn| {
                bn.iter(|| lm_step(Cpu::EXACT, &model, &mut params, &mut opt, &x))
            });
            // Mixed precision (bf16 operands, f32 sums) where this CPU has a
            // bf16 kernel.
            if let Some(p) = Products::bf16() {
                g.bench_function("train_step_bf16", |bn| {
                    bn.iter(|| {
                        let cpu = Cpu::with_products(p);
                        lm_step(cpu, &model, &mut params, &mut opt, &x)
                    })
                });
            }
            g.finish();
        }
    }
}

/// One LM training step with `cpu`'s products (exact or mixed precision); its loss.
fn lm_step(
    cpu: Cpu,
    model: &Model,
    params: &mut Vec<traffic_moe::train::optim::Param>,
    opt: &mut AdamW,
    x: &Batch,
) -> f32 {
    train_step(cpu, model, params, opt, x, Task::Lm, 0.02, 1e-4, 1.0)
        .unwrap()
        .loss
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
            let (cls_model, cls_params, seqs) = classifier(&cfg, &x);
            for what in ["classify", "lm_forward", "train_step"] {
                let mut run = || {
                    if what == "classify" {
                        classify(&cls_model, &cls_params, &seqs, b, s)
                    } else if what == "lm_forward" {
                        let p = params.values();
                        let mut tape = Tape::<f32>::new();
                        let inp = x.inputs();
                        model
                            .lm_forward(&mut tape, &p, &inp, 0.02)
                            .unwrap()
                            .task_loss
                    } else {
                        lm_step(Cpu::EXACT, &model, &mut params, &mut opt, &x)
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
