//! The whole model on the GPU engine (CUDA kernels; here on the simulator in
//! both thread orders, and on a GPU when there is one) against the CPU
//! engine in f32: a micro Traffic-MoE and its dense twin, LM loss and
//! classifier loss, forward values and every parameter's gradient.
//!
//! Tolerances, from bf16: activations are rounded to bf16 (8 significant
//! bits, relative step 2^-8) after every op, so each op adds about 2^-9
//! relative error, and a 2-layer model stacks some 20 of them: we allow 3 %
//! relative on the loss and the logits (about 6 bf16 steps), and for each
//! gradient tensor a relative L2 error ||g - g_cpu|| / ||g_cpu|| of at most
//! 8 % (cosine >= 0.995), which a wrong op, index or missing term exceeds by
//! far. Routing must not flip between engines (a flipped expert makes the
//! comparison meaningless): the inputs are checked to have clear top-k
//! margins on the CPU, and the chosen experts must be equal.

mod common;
use traffic_moe::autograd::{ParamStore, Tape};
use traffic_moe::backend::gpu::engine::{Gpu, GpuParams};
use traffic_moe::backend::gpu::testing::executors;
use traffic_moe::engine::Param;
use traffic_moe::model::{FfnKind, Inputs, Model, ModelConfig};

const B: usize = 4;
const S: usize = 32;

fn batch() -> (Vec<u32>, Vec<u8>, Vec<u32>) {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let ids: Vec<u32> = (0..B * S).map(|_| (next() % 512) as u32).collect();
    // Sequences of 32, 27, 20 and 9 real tokens: padding is exercised.
    let lens = [32, 27, 20, 9];
    let mask: Vec<u8> = (0..B * S).map(|i| u8::from(i % S < lens[i / S])).collect();
    (ids, mask, vec![2, 0, 1, 2])
}

/// The shared margin weights (tests/common), noise amplitude 0.03.
fn params(cfg: &ModelConfig) -> (Model, Vec<Param>) {
    common::margin_params(cfg, 0.03)
}

struct Outcome {
    loss: f32,
    aux: f32,
    out: Vec<f32>,
    routing: Vec<u32>,
    grads: Vec<Param>,
}

fn run_cpu(model: &Model, p: &[Param], cls: bool) -> Outcome {
    let (ids, mask, labels) = batch();
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: B,
        s: S,
    };
    let mut params = p.to_vec();
    let mut tape = Tape::<f32>::new();
    let f = {
        let v = params.values();
        if cls {
            model.cls_forward(&mut tape, &v, &x, &labels, 0.5).unwrap()
        } else {
            model.lm_forward(&mut tape, &v, &x, 0.5).unwrap()
        }
    };
    let out = tape.to_host(f.logits).unwrap();
    let routing = tape.routing().unwrap();
    params.iter_mut().for_each(|q| q.grad.fill(0.0));
    tape.backward(f.loss, &mut params).unwrap();
    Outcome {
        loss: f.task_loss,
        aux: f.aux,
        out,
        routing,
        grads: params,
    }
}

fn run_gpu(gpu: &Gpu, model: &Model, p: &[Param], cls: bool) -> anyhow::Result<Outcome> {
    let (ids, mask, labels) = batch();
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: B,
        s: S,
    };
    let mut store = GpuParams::upload(gpu.executor(), p)?;
    let mut tape = Tape::with_backend(gpu.clone());
    let f = {
        let v = store.values();
        if cls {
            model.cls_forward(&mut tape, &v, &x, &labels, 0.5)?
        } else {
            model.lm_forward(&mut tape, &v, &x, 0.5)?
        }
    };
    let out = tape.to_host(f.logits)?;
    let routing = tape.routing()?;
    store.zero_grads()?;
    tape.backward(f.loss, &mut store)?;
    Ok(Outcome {
        loss: f.task_loss,
        aux: f.aux,
        out,
        routing,
        grads: store.download_grads()?,
    })
}

fn rel_l2(got: &[f32], want: &[f32]) -> (f64, f64) {
    let (mut e, mut w, mut g, mut dot) = (0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in got.iter().zip(want) {
        let (a, b) = (a as f64, b as f64);
        e += (a - b) * (a - b);
        w += b * b;
        g += a * a;
        dot += a * b;
    }
    (
        (e / w.max(1e-30)).sqrt(),
        dot / (g.sqrt() * w.sqrt()).max(1e-30),
    )
}

fn check(ffn: FfnKind, cls: bool) {
    let cfg = common::micro_config(ffn, if cls { 3 } else { 0 });
    let (model, p) = params(&cfg);
    let want = run_cpu(&model, &p, cls);
    for ex in executors("engine_gpu_model") {
        let gpu = Gpu::new(&ex);
        let got = run_gpu(&gpu, &model, &p, cls)
            .unwrap_or_else(|e| panic!("{ffn:?} cls={cls} on {}: {e:#}", ex.name()));
        let ctx = format!("{ffn:?} cls={cls} on {}", ex.name());
        assert_eq!(got.routing, want.routing, "{ctx}: routing flipped");
        let rel = ((got.loss - want.loss) / want.loss).abs();
        assert!(
            rel < 0.03,
            "{ctx}: loss {} vs cpu {} ({rel})",
            got.loss,
            want.loss
        );
        assert!(
            (got.aux - want.aux).abs() <= 0.03 * want.aux.abs() + 1e-4,
            "{ctx}: aux {} vs cpu {}",
            got.aux,
            want.aux
        );
        let (e, cos) = rel_l2(&got.out, &want.out);
        assert!(
            e < 0.03 && cos > 0.999,
            "{ctx}: outputs rel L2 {e}, cos {cos}"
        );
        let mut bad = Vec::new();
        for (g, w) in got.grads.iter().zip(&want.grads) {
            let (e, cos) = rel_l2(&g.grad, &w.grad);
            if !(e < 0.08 && cos > 0.995) {
                bad.push(format!("{} rel L2 {e:.4} cos {cos:.5}", w.name));
            }
        }
        assert!(bad.is_empty(), "{ctx}: gradients off:\n{}", bad.join("\n"));
    }
}

#[test]
fn moe_lm_matches_cpu() {
    check(FfnKind::Moe, false);
}

#[test]
fn moe_classifier_matches_cpu() {
    check(FfnKind::Moe, true);
}

#[test]
fn dense_lm_matches_cpu() {
    check(FfnKind::Dense, false);
}

#[test]
fn dense_classifier_matches_cpu() {
    check(FfnKind::Dense, true);
}
