//! Runs a few training steps of a small random model and writes everything
//! an independent implementation needs to redo them
//! (`tools/train_reference.py`): the initial weights, each step's batch,
//! losses, every parameter's gradient (before clipping), the learning rate
//! and the weights after the step. The steps are `Trainer::step`, what
//! `tmoe pretrain` and `tmoe finetune` call, on the engine `--device` picks
//! (the CPU engine, f32 or with `--precision bf16` bf16 products; the GPU
//! engine, bf16 products, on `sim` or `cuda`), with the optimizer they
//! build (AdamW; fine-tuning adds layer-wise lr decay) and the warm-up +
//! cosine schedule.
//!
//! Usage: `cargo run --example dump_train_steps -- --task lm|cls
//! --ffn moe|dense --out FILE.safetensors [--device cpu|sim|cuda]
//! [--precision f32|bf16] [--steps 3] [--lr 0.01] [--wd 0.1] [--clip 1.0]
//! [--llrd 0.5] [--warmup 2] [--aux 0.02] [--seed 1]`.
//! Tensors: `init.NAME`, `step{t}.grad.NAME`, `step{t}.after.NAME`,
//! `step{t}.ids` / `.mask` / `.labels` (as f32); metadata `dump` holds the
//! model config, the hyper-parameters and each step's loss, aux loss, grad
//! norm and learning rate (JSON).
use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::json;
use traffic_moe::engine::{Device, Precision};
use traffic_moe::model::batch::{MemSequences, make_batch};
use traffic_moe::model::checkpoint::write_tensors;
use traffic_moe::model::{FfnKind, Model, ModelConfig};
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::schedule::WarmupCosine;
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

/// A small xorshift so the batches need no RNG crate and stay stable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() -> anyhow::Result<()> {
    let mut task = Task::Lm;
    let mut ffn = FfnKind::Moe;
    let mut out: Option<PathBuf> = None;
    let mut device = Device::Cpu;
    let mut precision = Precision::F32;
    let (mut steps, mut lr, mut wd, mut clip) = (3usize, 1e-2f64, 0.1f32, 1.0f64);
    let (mut llrd, mut warmup, mut aux, mut seed) = (0.5f32, 2u64, 0.02f32, 1u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--task" => {
                task = match v().as_str() {
                    "lm" => Task::Lm,
                    "cls" => Task::Classify,
                    o => anyhow::bail!("--task lm|cls, not {o}"),
                }
            }
            "--ffn" => {
                ffn = match v().as_str() {
                    "moe" => FfnKind::Moe,
                    "dense" => FfnKind::Dense,
                    o => anyhow::bail!("--ffn moe|dense, not {o}"),
                }
            }
            "--out" => out = Some(v().into()),
            "--device" => {
                device = match v().as_str() {
                    "cpu" => Device::Cpu,
                    "sim" => Device::Sim,
                    "cuda" => Device::Cuda,
                    o => anyhow::bail!("--device cpu|sim|cuda, not {o}"),
                }
            }
            "--precision" => {
                precision = match v().as_str() {
                    "f32" => Precision::F32,
                    "bf16" => Precision::Bf16,
                    o => anyhow::bail!("--precision f32|bf16, not {o}"),
                }
            }
            "--steps" => steps = v().parse()?,
            "--lr" => lr = v().parse()?,
            "--wd" => wd = v().parse()?,
            "--clip" => clip = v().parse()?,
            "--llrd" => llrd = v().parse()?,
            "--warmup" => warmup = v().parse()?,
            "--aux" => aux = v().parse()?,
            "--seed" => seed = v().parse()?,
            o => anyhow::bail!("unknown argument {o}"),
        }
    }
    let out = out.ok_or_else(|| anyhow::anyhow!("--out FILE is required"))?;
    let classify = task == Task::Classify;
    // d 64 and 2 heads: the GPU engine's attention wants head_dim 32 or 64.
    let cfg = ModelConfig {
        name: "check".into(),
        ffn,
        d: 64,
        layers: 3,
        heads: 2,
        n_experts: 4,
        top_k: 2,
        shared_ff: 64,
        vocab: 97,
        max_seq: 64,
        rope_theta: 10000.0,
        aux_weight: aux as f64,
        n_classes: if classify { 3 } else { 0 },
    };
    let (model, params) = Model::new(cfg.clone(), seed)?;
    // As `tmoe pretrain` and `tmoe finetune` build theirs.
    let ocfg = AdamWConfig {
        weight_decay: wd,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(ocfg, &params);
    if classify {
        opt = opt.with_layerwise_decay(cfg.layers, llrd);
    }
    let sched = WarmupCosine {
        base_lr: lr,
        warmup_steps: warmup,
        total_steps: steps as u64 + 1,
        min_lr_ratio: 0.1,
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = params
        .iter()
        .map(|p| (format!("init.{}", p.name), p.shape.clone(), p.value.clone()))
        .collect();
    let mut tr = Trainer::new(device, precision, params, opt)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
    let mut log = Vec::new();
    for t in 1..=steps {
        // Four flows of uneven length (right padding), labels for the head.
        let mut seqs = MemSequences::new(12);
        for _ in 0..4 {
            let n = 4 + rng.below(9) as usize;
            let toks: Vec<u32> = (0..n).map(|_| 5 + rng.below(92) as u32).collect();
            seqs.push(&toks, Some(rng.below(3) as u32));
        }
        let batch = make_batch(&seqs, &[0, 1, 2, 3], 12);
        let step_lr = sched.lr_at(t as u64 - 1) as f32;
        let st = tr.step(&model, &batch, task, aux, step_lr, clip)?;
        // Both engines leave the gradients unscaled: clipping's factor goes
        // into AdamW's pass.
        let (params, grads) = match &tr {
            Trainer::Cpu { params, .. } => (params.clone(), params.clone()),
            Trainer::Gpu { store, .. } => (store.download()?, store.download_grads()?),
        };
        log.push(json!({"step": t, "loss": st.loss, "aux": st.aux,
                        "grad_norm": st.grad_norm, "lr": step_lr}));
        let shape = vec![batch.b, batch.s];
        let f = |x: &[u32]| x.iter().map(|&v| v as f32).collect::<Vec<_>>();
        tensors.push((format!("step{t}.ids"), shape.clone(), f(&batch.ids)));
        let mask = batch.mask.iter().map(|&v| v as f32).collect();
        tensors.push((format!("step{t}.mask"), shape, mask));
        tensors.push((format!("step{t}.labels"), vec![batch.b], f(&batch.labels)));
        for (p, g) in params.iter().zip(&grads) {
            let name = format!("step{t}.grad.{}", p.name);
            tensors.push((name, p.shape.clone(), g.grad.clone()));
            let a = format!("step{t}.after.{}", p.name);
            tensors.push((a, p.shape.clone(), p.value.clone()));
        }
    }
    let doc = json!({
        "model_config": cfg,
        "task": if classify { "cls" } else { "lm" },
        "device": device.name(),
        "precision": match precision { Precision::F32 => "f32", Precision::Bf16 => "bf16" },
        "weight_decay": wd, "beta1": ocfg.beta1, "beta2": ocfg.beta2, "eps": ocfg.eps,
        "clip": clip, "llrd": if classify { Some(llrd) } else { None },
        "aux_weight": aux,
        "schedule": {"base_lr": lr, "warmup_steps": warmup,
                     "total_steps": sched.total_steps, "min_lr_ratio": sched.min_lr_ratio},
        "steps": log,
    });
    let meta = HashMap::from([("dump".to_string(), doc.to_string())]);
    let views: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    write_tensors(&out, meta, &views, true)?;
    eprintln!("{} steps written to {}", steps, out.display());
    Ok(())
}
