//! Pretraining's next-token loss without a tape (`lm_loss_batch`, what
//! `tmoe bench model --objective lm` times) on every inference engine
//! against the f32 reference engine's training forward: the micro
//! Traffic-MoE of `tests/common` and its dense twin, no classifier head.
//!
//! Tolerances, derived: the loss is a mean of `logsumexp(z) - z_target`
//! over rows of logits `z`, so if every logit of a row is off by at most
//! `e`, the row's loss is off by at most `2e`, and so is the mean. The
//! engines' logit errors are bounded as in the classifier tests: f32 packed
//! products 2e-4 of the scale (tests/engine_cpu_f32_packed.rs: 2 blocks of
//! 5 products, plus the LM head's: still under 2e-4 at k <= 128), bf16
//! products 4 % (tests/engine_cpu_bf16_model.rs: 2^-8 per product, 9 here
//! with the head, rounded up). The scale is the largest |logit| of the
//! batch, computed here in f64 from the reference engine's final hidden
//! states. The bound is loose; the test also prints the error it saw.
//! Routing must be identical (`margin_params`' clear top-k margins).

mod common;
use traffic_moe::autograd::{ParamStore, Tape};
use traffic_moe::backend::cpu_bf16::pack::Elem;
use traffic_moe::backend::cpu_bf16::{Bf16Params, CpuBf16, Kernel};
use traffic_moe::engine::{Device, Param, Precision};
use traffic_moe::eval::predict::{Loaded, Weights, lm_loss_batch};
use traffic_moe::model::net::next_token_targets;
use traffic_moe::model::{FfnKind, IGNORE, Inputs, Model};

const B: usize = 6;
const S: usize = 32;

/// Ids and a mask: row r keeps `S - 5·r` tokens (row 5 keeps 7).
fn batch(vocab: usize) -> (Vec<u32>, Vec<u8>) {
    let ids = common::values(B * S, 3)
        .iter()
        .map(|&u| 5 + ((u + 1.0) / 2.0 * (vocab - 5) as f32) as u32 % (vocab as u32 - 5))
        .collect();
    let mask = (0..B * S)
        .map(|i| u8::from(i % S < S - 5 * (i / S)))
        .collect();
    (ids, mask)
}

/// The reference loss (a training tape's forward, the pretraining step's),
/// and the largest |logit| over the rows with a target, in f64.
fn reference(model: &Model, p: &[Param], x: &Inputs) -> (f64, f64) {
    let mut tape = Tape::<f32>::new();
    let f = model.lm_forward(&mut tape, &p.values(), x, 0.0).unwrap();
    let h = tape.value(f.logits).unwrap().to_vec();
    let d = model.cfg.d;
    let table = &p.iter().find(|q| q.name == "tok_embed").unwrap().value;
    let mut scale = 0f64;
    for (r, &t) in next_token_targets(x).iter().enumerate() {
        if t == IGNORE {
            continue;
        }
        let row = &h[r * d..(r + 1) * d];
        for e in table.chunks_exact(d) {
            let z: f64 = row.iter().zip(e).map(|(&a, &b)| a as f64 * b as f64).sum();
            scale = scale.max(z.abs());
        }
    }
    (f.task_loss as f64, scale)
}

fn check(ffn: FfnKind) {
    let cfg = common::micro_config(ffn, 0);
    let (model, p) = common::margin_params(&cfg, 0.05);
    let (ids, mask) = batch(cfg.vocab);
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: B,
        s: S,
    };
    let (want, scale) = reference(&model, &p, &x);
    let targets = next_token_targets(&x)
        .iter()
        .filter(|&&t| t != IGNORE)
        .count() as u64;
    assert!(
        want.is_finite() && want > 0.0 && scale > 1.0,
        "{want} {scale}"
    );

    // The reference engine without a tape, split across threads or not.
    let (sum, n, routing) = lm_loss_batch(&model, Weights::Cpu(&p), &x, true).unwrap();
    assert_eq!(n, targets);
    assert!(
        (sum / n as f64 - want).abs() <= 1e-5 * want,
        "{ffn:?} reference without a tape: {} vs {want}",
        sum / n as f64
    );
    if ffn == FfnKind::Moe {
        assert_eq!(routing.len(), cfg.layers * B * S * cfg.top_k);
    } else {
        assert!(routing.is_empty());
    }

    let mut engines: Vec<(String, CpuBf16, Bf16Params, f64)> = Vec::new();
    for kernel in common::bf16_kernels() {
        let e = CpuBf16::with_kernel(kernel).unwrap();
        engines.push((
            format!("bf16 {}", kernel.name()),
            e,
            Bf16Params::pack(&p),
            0.04,
        ));
    }
    match Kernel::detect_f32() {
        Some(kernel) => {
            let e = CpuBf16::with_kernel(kernel).unwrap();
            let store = Bf16Params::pack_as(Elem::F32, &p);
            engines.push((format!("f32 {}", kernel.name()), e, store, 2e-4));
        }
        None => eprintln!("this CPU has no AVX-512F: the packed f32 engine is not tested"),
    }
    for (name, engine, store, tol) in &engines {
        let (sum, n, got_routing) =
            lm_loss_batch(&model, Weights::CpuBf16(engine, store), &x, true)
                .unwrap_or_else(|e| panic!("{ffn:?} {name}: {e:#}"));
        assert_eq!(n, targets, "{ffn:?} {name}");
        assert_eq!(got_routing, routing, "{ffn:?} {name}: routing differs");
        let err = (sum / n as f64 - want).abs();
        let bound = 2.0 * tol * scale;
        assert!(
            err <= bound,
            "{ffn:?} {name}: loss {} vs {want} (bound {bound})",
            sum / n as f64
        );
        eprintln!(
            "{ffn:?} {name}: loss off by {err:.2e}, {:.3} % of the bound",
            100.0 * err / bound
        );
    }

    // The GPU engine in the simulator (bf16 products).
    let sim = Loaded::with_precision(Device::Sim, p.clone(), Precision::Bf16).unwrap();
    let (sum, n, got_routing) = lm_loss_batch(&model, sim.weights(), &x, true).unwrap();
    assert_eq!(n, targets);
    assert_eq!(got_routing, routing, "{ffn:?} sim: routing differs");
    let err = (sum / n as f64 - want).abs();
    assert!(
        err <= 2.0 * 0.04 * scale,
        "{ffn:?} sim: {} vs {want}",
        sum / n as f64
    );
}

#[test]
fn moe_lm_loss_agrees_on_every_engine() {
    check(FfnKind::Moe);
}

#[test]
fn dense_lm_loss_agrees_on_every_engine() {
    check(FfnKind::Dense);
}

/// The packed engines' LM head op alone against the loss computed in f64,
/// with a bound per logit rather than per batch: a product of f32 operands
/// is off by at most `(k + 2) · 2^-24 · Σ|h_i e_i|`; rounding both operands
/// to bf16 first adds `(2 · 2^-9 + 2^-18) · Σ|h_i e_i|`. A row's loss moves
/// by at most twice its largest logit error, plus the f32 softmax pass's own
/// rounding: the sum of `V` exponentials (each within 2 ulps) off by at most
/// `(V + 4) · 2^-22` relatively, which `ln` carries over as is. The mean
/// loss is then within the mean of the rows' bounds. The head runs a
/// vocabulary slice of 2,048 entries at a time with a running softmax:
/// 4,500 entries are three slices, the last of 404, each rescaling the
/// sum by `exp` of the change in the maximum (two more roundings a slice,
/// inside the `V + 4`).
#[test]
fn the_packed_lm_head_is_within_its_rounding_bound() {
    use traffic_moe::engine::Backend;
    let (t, d, v) = (300usize, 64usize, 4500usize);
    let h: Vec<f32> = common::values(t * d, 1).iter().map(|x| 2.0 * x).collect();
    let table = common::values(v * d, 2);
    // Every third row has no target.
    let targets: Vec<u32> = (0..t)
        .map(|r| {
            if r % 3 == 2 {
                IGNORE
            } else {
                (r * 37 % v) as u32
            }
        })
        .collect();
    let embed = Param::new("tok_embed", vec![v, d], table.clone(), 0).unwrap();
    let (mut exact, mut rows, mut bound_f32, mut bound_bf16) = (0f64, 0f64, 0f64, 0f64);
    for (r, &tg) in targets.iter().enumerate() {
        if tg == IGNORE {
            continue;
        }
        let hr = &h[r * d..(r + 1) * d];
        let (mut z, mut mag) = (Vec::with_capacity(v), 0f64);
        for e in table.chunks_exact(d) {
            z.push(
                hr.iter()
                    .zip(e)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>(),
            );
            let m: f64 = hr
                .iter()
                .zip(e)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            mag = mag.max(m);
        }
        let mx = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = mx + z.iter().map(|&zi| (zi - mx).exp()).sum::<f64>().ln();
        exact += lse - z[tg as usize];
        rows += 1.0;
        let softmax = (v + 4) as f64 * 2f64.powi(-22);
        let f32_err = (d + 2) as f64 * 2f64.powi(-24) * mag;
        bound_f32 += 2.0 * f32_err + softmax;
        bound_bf16 += 2.0 * (f32_err + (2.0 * 2f64.powi(-9) + 2f64.powi(-18)) * mag) + softmax;
    }
    let (exact, bound_f32, bound_bf16) = (exact / rows, bound_f32 / rows, bound_bf16 / rows);
    let mut cases = Vec::new();
    for kernel in common::bf16_kernels() {
        cases.push((kernel, Elem::Bf16Pair, bound_bf16));
    }
    if let Some(kernel) = Kernel::detect_f32() {
        cases.push((kernel, Elem::F32, bound_f32));
    }
    for (kernel, elem, bound) in cases {
        let engine = CpuBf16::with_kernel(kernel).unwrap();
        let store = Bf16Params::pack_as(elem, std::slice::from_ref(&embed));
        let (loss, ()) = engine
            .lm_head_xent_fwd(&h, store.values()[0], d, &targets, IGNORE)
            .unwrap();
        let err = (loss as f64 - exact).abs();
        eprintln!(
            "{} {elem:?}: loss {loss} vs {exact:.6}, off by {err:.2e} (bound {bound:.2e})",
            kernel.name()
        );
        assert!(
            err <= bound,
            "{} {elem:?}: {loss} vs {exact}",
            kernel.name()
        );
    }
}

/// Flows of one token have no target: a batch of them counts none (no
/// loss, no error), and beside flows with targets, a part of them still
/// gives its tokens' routing (the batch's routing is every token's).
#[test]
fn flows_without_targets_count_none() {
    let cfg = common::micro_config(FfnKind::Moe, 0);
    let (model, p) = common::margin_params(&cfg, 0.05);
    let ids = vec![7u32; 4 * 3];
    let x = |mask: &[u8]| -> (f64, u64, Vec<u32>) {
        let x = Inputs {
            ids: &ids,
            mask,
            b: 4,
            s: 3,
        };
        let loaded = Loaded::with_precision(Device::Cpu, p.clone(), Precision::Bf16).unwrap();
        lm_loss_batch(&model, loaded.weights(), &x, true).unwrap()
    };
    let (sum, n, routing) = x(&[1u8, 0, 0].repeat(4));
    assert_eq!((sum, n), (0.0, 0));
    assert_eq!(routing.len(), cfg.layers * 4 * 3 * cfg.top_k);
    // Rows 0 and 1 (one part on 2 threads) have no target, rows 2 and 3 two each.
    let (sum, n, routing) = x(&[1u8, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1]);
    assert_eq!(n, 4);
    assert!(sum > 0.0);
    assert_eq!(routing.len(), cfg.layers * 4 * 3 * cfg.top_k);
}
