//! Model throughput on the CPU (DESIGN.md "Benchmark shapes"): tokens/s of
//! inference (forward) and of a full training step (forward, backward,
//! AdamW) for `tiny` (batch 8, seq 256) and `small` (batch 4, seq 256),
//! Traffic-MoE and its dense twin. Random token ids, no padding.
//! Run: `cargo bench --bench model` (filter e.g. `-- tiny`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
                    model.lm_forward(&mut tape, &p, &inp, 0.02).task_loss
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

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts this machine lacks.
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
