//! Whole-model gradient checks in f64: every parameter of a very small
//! Traffic-MoE and its dense twin, for the LM loss (+ aux) and the
//! classifier loss (+ aux), against central finite differences.
//! Top-k routing is piecewise constant: each perturbation must keep the
//! same expert selection, which the check asserts.

#![allow(clippy::needless_range_loop)] // index loops read clearer in finite-difference checks

use traffic_moe::autograd::{Params, Tape};
use traffic_moe::model::{FfnKind, Inputs, Model, ModelConfig};

fn config(ffn: FfnKind, n_classes: usize) -> ModelConfig {
    ModelConfig {
        name: "grad".into(),
        ffn,
        d: 8,
        layers: 2,
        heads: 2,
        n_experts: 4,
        top_k: 2,
        shared_ff: 6,
        vocab: 11,
        max_seq: 8,
        rope_theta: 10000.0,
        aux_weight: 0.02,
        n_classes,
    }
}

/// Deterministic values in [-1, 1).
fn vals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

const B: usize = 2;
const S: usize = 5;
const IDS: [u32; B * S] = [3, 7, 1, 9, 4, 2, 10, 5, 0, 0];
const MASK: [u8; B * S] = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
const LABELS: [u32; B] = [2, 0];

/// Loss and routing for the current parameter values; gradients if asked.
fn run(model: &Model, p: &mut Params<f64>, cls: bool, aux: f64, grads: bool) -> (f64, Vec<u32>) {
    let x = Inputs {
        ids: &IDS,
        mask: &MASK,
        b: B,
        s: S,
    };
    let mut tape = Tape::new();
    let values: Vec<&[f64]> = p.values.iter().map(|v| &v[..]).collect();
    let f = if cls {
        model
            .cls_forward(&mut tape, &values, &x, &LABELS, aux)
            .unwrap()
    } else {
        model.lm_forward(&mut tape, &values, &x, aux).unwrap()
    };
    let total = f.task_loss + tape.aux_loss().unwrap();
    let routing = tape.routing().unwrap();
    if grads {
        p.zero_grads();
        tape.backward(f.loss, p).unwrap();
    }
    (total, routing)
}

fn check(ffn: FfnKind, cls: bool) {
    let cfg = config(ffn, if cls { 3 } else { 0 });
    let (model, init) = Model::new(cfg, 7).unwrap();
    let mut p = Params::<f64>::from_f32(&init);
    // Larger weights than the 0.02 init so every path carries signal and router gaps are wide.
    for (i, v) in p.values.iter_mut().enumerate() {
        let r = vals(v.len(), 100 + i as u64);
        v.iter_mut().zip(r).for_each(|(x, r)| *x += 0.4 * r);
    }
    let aux = 0.5; // larger than 0.02 so the aux-loss gradient is checked with weight
    let (_, routing) = run(&model, &mut p, cls, aux, true);
    let analytic = p.grads.clone();
    let eps = 1e-5;
    let mut checked = 0;
    let mut max_rel: f64 = 0.0;
    for i in 0..p.values.len() {
        for j in 0..p.values[i].len() {
            let x0 = p.values[i][j];
            p.values[i][j] = x0 + eps;
            let (lp, rp) = run(&model, &mut p, cls, aux, false);
            p.values[i][j] = x0 - eps;
            let (lm, rm) = run(&model, &mut p, cls, aux, false);
            p.values[i][j] = x0;
            assert!(
                rp == routing && rm == routing,
                "perturbing {} flipped the routing: choose a smaller eps",
                init[i].name
            );
            let fd = (lp - lm) / (2.0 * eps);
            let a = analytic[i][j];
            let err = (fd - a).abs();
            let tol = 1e-7 + 1e-5 * fd.abs().max(a.abs());
            assert!(
                err <= tol,
                "{}[{j}]: finite difference {fd:e} vs analytic {a:e}",
                init[i].name
            );
            max_rel = max_rel.max(err / (fd.abs().max(a.abs()) + 1e-12));
            checked += 1;
        }
    }
    // Every parameter must receive some gradient (no silently detached weights).
    for (i, g) in analytic.iter().enumerate() {
        assert!(
            g.iter().any(|&v| v != 0.0),
            "{} got no gradient",
            init[i].name
        );
    }
    eprintln!("{ffn:?} cls={cls}: {checked} coordinates, max relative error {max_rel:.2e}");
}

#[test]
fn moe_lm_loss_plus_aux() {
    check(FfnKind::Moe, false);
}

#[test]
fn moe_classifier_loss_plus_aux() {
    check(FfnKind::Moe, true);
}

#[test]
fn dense_lm_loss() {
    check(FfnKind::Dense, false);
}

#[test]
fn dense_classifier_loss() {
    check(FfnKind::Dense, true);
}
