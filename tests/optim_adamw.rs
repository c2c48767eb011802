//! AdamW, layer-wise lr decay and gradient clipping against hand computations.

use traffic_moe::train::optim::{
    AdamW, AdamWConfig, Param, clip_grad_norm, global_grad_norm, llrd_multipliers,
};

fn cfg() -> AdamWConfig {
    AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    }
}

#[test]
fn two_adamw_steps_match_hand_computation() {
    // A decayed matrix [1,1] and an undecayed vector [1]: same gradients.
    let mut params = vec![
        Param::new("layers.0.w", vec![1, 1], vec![1.0], 1).unwrap(),
        Param::new("layers.0.norm", vec![1], vec![1.0], 1).unwrap(),
    ];
    let mut opt = AdamW::new(cfg(), &params);
    for p in params.iter_mut() {
        p.grad[0] = 0.5;
    }
    opt.step(&mut params, 0.1).unwrap();
    // Step 1: m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25,
    // p = 1*(1 - 0.1*0.01) - 0.1 * 0.5/(0.5 + 1e-8) = 0.999 - 0.099999998.
    assert!((params[0].value[0] as f64 - 0.899_000_002).abs() < 1e-6);
    // Undecayed: p = 1 - 0.099999998.
    assert!((params[1].value[0] as f64 - 0.900_000_002).abs() < 1e-6);
    assert!((opt.m[0][0] - 0.05).abs() < 1e-7);
    // f32 (1 - 0.999) = 0.00099998713: relative, not absolute, agreement.
    assert!((opt.v[0][0] / 0.00025 - 1.0).abs() < 1e-4);

    for p in params.iter_mut() {
        p.grad[0] = -0.5;
    }
    opt.step(&mut params, 0.1).unwrap();
    // Step 2: m = 0.9*0.05 - 0.05 = -0.005, v = 0.999*0.00025 + 0.001*0.25 = 0.00049975,
    // m_hat = -0.005/0.19 = -0.0263158, v_hat = 0.00049975/0.001999 = 0.2500000,
    // p = 0.899000002*0.999 + 0.1*0.0263158/(0.5 + 1e-8) = 0.898101 + 0.00526316.
    assert!(
        (params[0].value[0] as f64 - 0.903_364_16).abs() < 1e-6,
        "{}",
        params[0].value[0]
    );
    assert!(
        (params[1].value[0] as f64 - 0.905_263_16).abs() < 1e-6,
        "{}",
        params[1].value[0]
    );
    assert_eq!(opt.step, 2);
}

#[test]
fn llrd_multipliers_follow_xi_power() {
    let m = llrd_multipliers(3, 0.9);
    // groups: embeddings, layers 1..=3, head
    let want = [0.729, 0.81, 0.9, 1.0, 1.0];
    assert_eq!(m.len(), want.len());
    for (g, w) in m.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{m:?}");
    }
}

#[test]
fn llrd_scales_each_groups_step() {
    // With no decay and a first step, |delta| = lr_group (Adam's first step is +-lr).
    let mut params: Vec<Param> = (0..5)
        .map(|g| Param::new(format!("p{g}"), vec![1], vec![0.0], g).unwrap())
        .collect();
    for p in params.iter_mut() {
        p.grad[0] = 3.0;
    }
    let mut opt = AdamW::new(cfg(), &params).with_layerwise_decay(3, 0.5);
    opt.step(&mut params, 1e-2).unwrap();
    let want = [0.125e-2, 0.25e-2, 0.5e-2, 1e-2, 1e-2];
    for (p, w) in params.iter().zip(want) {
        assert!(
            (p.value[0] + w).abs() < 1e-8,
            "{}: {} vs {}",
            p.name,
            p.value[0],
            -w
        );
    }
}

#[test]
fn step_refuses_a_group_without_multiplier() {
    let mut params = vec![Param::new("head.w", vec![2, 2], vec![0.0; 4], 9).unwrap()];
    let mut opt = AdamW::new(cfg(), &params).with_layerwise_decay(2, 0.9);
    let e = opt.step(&mut params, 1e-3).unwrap_err();
    assert!(e.to_string().contains("head.w"), "{e}");
}

#[test]
fn clipping_scales_to_max_norm_and_reports_old_norm() {
    let mut params = vec![
        Param::new("a", vec![2], vec![0.0; 2], 0).unwrap(),
        Param::new("b", vec![1], vec![0.0], 0).unwrap(),
    ];
    params[0].grad = vec![3.0, 0.0];
    params[1].grad = vec![4.0];
    assert!((global_grad_norm(&params) - 5.0).abs() < 1e-12);
    let before = clip_grad_norm(&mut params, 1.0);
    assert!((before - 5.0).abs() < 1e-12);
    assert!((global_grad_norm(&params) - 1.0).abs() < 1e-5);
    assert!((params[0].grad[0] - 0.6).abs() < 1e-5);
    assert!((params[1].grad[0] - 0.8).abs() < 1e-5);
    // Below the limit: untouched.
    let before = clip_grad_norm(&mut params, 10.0);
    assert!((before - 1.0).abs() < 1e-5);
    assert!((params[1].grad[0] - 0.8).abs() < 1e-5);
}

#[test]
fn clipping_leaves_non_finite_gradients_for_the_caller() {
    let mut params = vec![Param::new("a", vec![2], vec![0.0; 2], 0).unwrap()];
    params[0].grad = vec![f32::NAN, 1.0];
    let n = clip_grad_norm(&mut params, 1.0);
    assert!(n.is_nan());
    assert_eq!(params[0].grad[1], 1.0);
}

#[test]
fn grad_norm_accumulates_in_f64() {
    // 1e6 gradients of 1e-3: f32 accumulation of squares drifts, f64 is exact to ~1e-12.
    let mut p = Param::new("a", vec![1_000_000], vec![0.0; 1_000_000], 0).unwrap();
    p.grad.fill(1e-3);
    let n = global_grad_norm(&[p]);
    let want = (1e6f64 * (1e-3f32 as f64).powi(2)).sqrt();
    assert!((n - want).abs() < 1e-9, "{n} vs {want}");
}

/// The decay policy on a real MoE model: with zero gradients one AdamW step
/// changes only the decayed tensors, each by exactly `lr * wd * p`. The
/// shared expert's gate is a `[1, d]` vector (a gate, like the norm gains),
/// which the policy keeps undecayed; matrices (attention, router, experts,
/// head weights) decay; embeddings, norms and biases do not.
#[test]
fn weight_decay_spares_vectors_gates_norms_and_embeddings() {
    use traffic_moe::model::{FfnKind, Model, ModelConfig};
    let model_cfg = ModelConfig {
        name: "test".into(),
        ffn: FfnKind::Moe,
        d: 8,
        layers: 1,
        heads: 2,
        n_experts: 4,
        top_k: 2,
        shared_ff: 8,
        vocab: 12,
        max_seq: 8,
        rope_theta: 10000.0,
        aux_weight: 0.02,
        n_classes: 3,
    };
    let (_, mut params) = Model::new(model_cfg, 1).unwrap();
    let before: Vec<Vec<f32>> = params.iter().map(|p| p.value.clone()).collect();
    let mut opt = AdamW::new(cfg(), &params);
    opt.step(&mut params, 0.1).unwrap();
    let undecayed = [
        "tok_embed",
        "layers.0.attn_norm",
        "layers.0.ffn_norm",
        "layers.0.moe.shared_gate",
        "norm_f",
        "head.b1",
        "head.b2",
    ];
    for (p, old) in params.iter().zip(&before) {
        let decays = !undecayed.contains(&p.name.as_str());
        assert_eq!(p.decay, decays, "{}", p.name);
        for (&new, &old) in p.value.iter().zip(old) {
            let want = if decays {
                old - 0.1 * (0.01 * old)
            } else {
                old
            };
            assert_eq!(new.to_bits(), want.to_bits(), "{}: {old} -> {new}", p.name);
        }
    }
}

/// A constant gradient makes every bias-corrected update exactly
/// `lr / (1 + eps)` (m_hat = g, v_hat = g^2), as PyTorch's AdamW computes
/// it with its f64 bias corrections. With `1 - beta2^t` computed in f32 the
/// second to fifth updates were off by 2e-6 to 7e-6 (the cancellation in
/// 1 - 0.999^t), which tools/train_reference.py measured on whole models.
#[test]
fn bias_corrections_are_exact_under_a_constant_gradient() {
    let mut params = vec![Param::new("layers.0.norm", vec![1], vec![0.0], 1).unwrap()];
    let mut opt = AdamW::new(cfg(), &params);
    let lr = 1e-3f32;
    for t in 1..=5 {
        // From 0 each time, so the weight holds this step's update alone.
        params[0].value[0] = 0.0;
        params[0].grad[0] = 1.0;
        opt.step(&mut params, lr).unwrap();
        let update = -params[0].value[0] as f64;
        let want = lr as f64 / (1.0 + 1e-8);
        let err = (update / want - 1.0).abs();
        assert!(err < 1e-6, "step {t}: update {update} vs {want}: {err:.1e}");
    }
}
