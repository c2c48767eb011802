//! The whole classifier on the bf16 CPU inference engine
//! (`backend::cpu_bf16`, both micro-kernels where the CPU has them) against
//! the f32 CPU engine: the micro Traffic-MoE of `tests/common` and its dense
//! twin, through `Loaded::with_precision` and `class_logits` (what predict,
//! eval and `bench model` run).
//!
//! Tolerance, from bf16: a product rounds its activations and weights to 8
//! significant bits (at most 2^-9 relative each), so its outputs are off by
//! at most 2 · 2^-9 ≈ 0.4 % of their scale; the micro classifier chains 10
//! products (2 blocks x QKV, out, FFN gate|up, down; the head's two), and
//! letting every one add its worst case gives 4 %: each logit must be within
//! 4 % of its row's largest magnitude. (Norms, softmax, routing and the
//! attention core are f32 on both engines.) Each row's top class must be the
//! same, and the f32 margin between its top two classes is asserted to exceed
//! twice that tolerance, so an agreement is not luck. Routing must be
//! identical: the weights give every token clear top-k margins (as in
//! tests/engine_gpu_model.rs), and the router is f32 on the bf16 engine.

mod common;
use traffic_moe::backend::cpu_bf16::{Bf16Param, Bf16Params, CpuBf16};
use traffic_moe::engine::{AttnDims, Backend, Device, MoeDims, Param, Precision};
use traffic_moe::eval::predict::{Loaded, Weights, class_logits};
use traffic_moe::model::{FfnKind, Inputs, Model, ModelConfig};

const B: usize = 12;
const S: usize = 32;
const CLASSES: usize = 3;
const TOL: f32 = 0.04;

/// `n` sequences of lengths from 32 down to 5 (padding is exercised).
fn candidates(n: usize) -> (Vec<u32>, Vec<u8>) {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let ids: Vec<u32> = (0..n * S).map(|_| (next() % 512) as u32).collect();
    let mask: Vec<u8> = (0..n * S)
        .map(|i| u8::from(i % S < S - (i / S) * 27 / n))
        .collect();
    (ids, mask)
}

/// The tolerance of a row of f32 logits: TOL of its largest magnitude.
fn tolerance(row: &[f32]) -> f32 {
    TOL * row.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// B sequences whose f32 logits have a clear top class (margin over the
/// runner-up above twice the tolerance), picked from 4·B candidates. Rows
/// are independent (attention, pooling and routing are per sequence), so the
/// picked rows' logits do not depend on the batch they are in.
fn batch(model: &Model, p: &[Param]) -> (Vec<u32>, Vec<u8>) {
    let n = 4 * B;
    let (ids, mask) = candidates(n);
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: n,
        s: S,
    };
    let (logits, _) = class_logits(model, Weights::Cpu(p), &x, false).unwrap();
    let clear: Vec<usize> = (0..n)
        .filter(|&r| {
            let row = &logits[r * CLASSES..][..CLASSES];
            top2(row).1 > 2.0 * tolerance(row)
        })
        .take(B)
        .collect();
    assert_eq!(clear.len(), B, "too few candidates with a clear top class");
    (pick(&ids, &clear), pick(&mask, &clear))
}

/// Sequences `rows` of a `[n, S]` batch.
fn pick<T: Copy>(v: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter()
        .flat_map(|&r| v[r * S..][..S].to_vec())
        .collect()
}

/// The shared margin weights (tests/common), noise amplitude 0.05.
fn params(cfg: &ModelConfig) -> (Model, Vec<Param>) {
    common::margin_params(cfg, 0.05)
}

fn top2(row: &[f32]) -> (usize, f32) {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    (idx[0], row[idx[0]] - row[idx[1]])
}

fn check(ffn: FfnKind) {
    let cfg = common::micro_config(ffn, CLASSES);
    let (model, p) = params(&cfg);
    let (ids, mask) = batch(&model, &p);
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: B,
        s: S,
    };
    let (want, want_routing) = class_logits(&model, Weights::Cpu(&p), &x, true).unwrap();
    let engines = common::bf16_kernels()
        .into_iter()
        .map(|k| CpuBf16::with_kernel(k).unwrap());
    let store = Bf16Params::pack(&p);
    for engine in engines {
        let ctx = format!("{ffn:?} on {}", engine.kernel().name());
        let (got, routing) = class_logits(&model, Weights::CpuBf16(&engine, &store), &x, true)
            .unwrap_or_else(|e| panic!("{ctx}: {e:#}"));
        assert_eq!(got.len(), B * CLASSES, "{ctx}");
        assert_eq!(routing, want_routing, "{ctx}: routing differs");
        let mut worst = 0f32;
        for (r, (g, w)) in got.chunks(CLASSES).zip(want.chunks(CLASSES)).enumerate() {
            let tol = tolerance(w);
            let scale = tol / TOL;
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() <= tol, "{ctx}: row {r}: {g:?} vs f32 {w:?}");
                worst = worst.max((a - b).abs() / scale);
            }
            let (top, margin) = top2(w);
            assert!(
                margin > 2.0 * tol,
                "{ctx}: row {r} has no clear margin on f32 ({margin} vs tolerance {tol})"
            );
            assert_eq!(top2(g).0, top, "{ctx}: row {r}: {g:?} vs f32 {w:?}");
        }
        eprintln!(
            "{ctx}: largest logit error {:.3} % of the row's scale",
            worst * 100.0
        );
    }
}

#[test]
fn moe_classifier_agrees_with_the_f32_engine() {
    check(FfnKind::Moe);
}

#[test]
fn dense_classifier_agrees_with_the_f32_engine() {
    check(FfnKind::Dense);
}

#[test]
fn precision_bf16_loads_the_bf16_engine_on_the_cpu_and_the_gpu_engine_elsewhere() {
    let cfg = common::micro_config(FfnKind::Moe, CLASSES);
    let (model, p) = params(&cfg);
    let loaded = Loaded::with_precision(Device::Cpu, p.clone(), Precision::Bf16).unwrap();
    assert!(matches!(loaded, Loaded::CpuBf16(..)));
    let (ids, mask) = candidates(B);
    let x = Inputs {
        ids: &ids,
        mask: &mask,
        b: B,
        s: S,
    };
    let (logits, _) = class_logits(&model, loaded.weights(), &x, false).unwrap();
    assert!(logits.len() == B * CLASSES && logits.iter().all(|v| v.is_finite()));
    // The GPU engine computes in bf16 either way: bf16 is accepted there
    // (it was refused, where training took it) and gives f32's logits.
    let on_sim = |precision| {
        let loaded = Loaded::with_precision(Device::Sim, p.clone(), precision).unwrap();
        assert!(matches!(loaded, Loaded::Gpu(..)), "{precision:?}");
        class_logits(&model, loaded.weights(), &x, false).unwrap().0
    };
    assert_eq!(on_sim(Precision::Bf16), on_sim(Precision::F32));
}

#[test]
fn backward_ops_are_errors_not_panics() {
    let cfg = common::micro_config(FfnKind::Moe, CLASSES);
    let (_, p) = params(&cfg);
    let store = Bf16Params::pack(&p);
    let v = store.values();
    let e = CpuBf16::new();
    let at = |name: &str| v[p.iter().position(|q| q.name == name).unwrap()];
    let (d, t) = (cfg.d, 4);
    let x = vec![0.5f32; t * d];
    let mask = vec![1u8; t];
    // Forward ops first (their saved state feeds the backward calls).
    let y = e
        .linear_fwd(&x, at("layers.0.attn.wqkv"), None, t, d, 3 * d)
        .unwrap();
    let (_, rstd) = e.rmsnorm_fwd(&x, at("layers.0.attn_norm"), d).unwrap();
    let dims = AttnDims {
        b: 1,
        h: cfg.heads,
        s: t,
        hd: cfg.head_dim(),
    };
    let (_, attn) = e.attention_fwd(&y, &mask, &dims, 1e4).unwrap();
    let moe_dims = MoeDims {
        t,
        d,
        n: cfg.n_experts,
        k: cfg.top_k,
        shared_ff: cfg.shared_ff,
        expert_ff: cfg.expert_ff(),
    };
    let names = [
        "router",
        "shared_gate",
        "shared.w_gate",
        "shared.w_up",
        "shared.w_down",
        "experts.w_gate",
        "experts.w_up",
        "experts.w_down",
    ];
    let moe_w = names.map(|n| at(&format!("layers.0.moe.{n}")));
    let (_, routing) = e.moe_fwd(&x, &x, &mask, moe_w, &moe_dims, false).unwrap();
    // Any parameter will do as a gradient: the ops must refuse before writing.
    let mut g: Vec<Bf16Param> = (0..8)
        .map(|_| Bf16Param::F32(vec![0.0; 3 * d * d]))
        .collect();
    let [g0, g1, g2, g3, g4, g5, g6, g7] = &mut g[..] else {
        unreachable!()
    };
    let errs = [
        e.moe_bwd(
            &x,
            moe_w,
            &routing,
            &x,
            0.1,
            &moe_dims,
            [g0, g1, g2, g3, g4, g5, g6, g7],
        )
        .err(),
        e.attention_bwd(&attn, &x, &dims, 1e4).err(),
        e.linear_bwd(
            &x,
            at("layers.0.attn.wqkv"),
            &y,
            t,
            d,
            3 * d,
            &mut g[0],
            None,
        )
        .err(),
        e.rmsnorm_bwd(&x, at("layers.0.attn_norm"), &rstd, &x, d, &mut g[0])
            .err(),
        e.embedding_bwd(&[0], &x[..d].to_vec(), d, &mut g[0]).err(),
        e.swiglu_bwd(&x, &x, &x).err(),
        e.gelu_bwd(&x, &x).err(),
        e.mean_pool_bwd(&x[..d].to_vec(), &mask[..1], 1, 1, d).err(),
        e.xent_bwd(&x[..3].to_vec(), &[0], u32::MAX, 1.0).err(),
        e.lm_head_xent_bwd(&x, at("tok_embed"), d, &[0; 4], &(), 1.0, &mut g[0])
            .err(),
    ];
    for (i, err) in errs.iter().enumerate() {
        let err = err
            .as_ref()
            .unwrap_or_else(|| panic!("backward op {i} returned Ok"));
        assert!(err.to_string().contains("inference-only"), "op {i}: {err}");
    }
}
