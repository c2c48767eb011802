//! Training on the GPU engine (`--device sim` here: the CUDA kernels in the
//! simulator; `cuda` on a GPU): a few pretraining steps and a few
//! fine-tuning steps lower the loss, rerun bit-identically (no float
//! atomics, fixed reduction orders), and agree with the CPU engine's first
//! step; checkpoints round-trip through the device.

mod common;
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::engine::params::GpuParams;
use traffic_moe::backend::gpu::testing::executors;
use traffic_moe::engine::Device;
use traffic_moe::model::{FfnKind, Model};
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

/// `sim`, and `cuda` when this build has a GPU (required with
/// TMOE_REQUIRE_GPU=1); only `cuda` with TMOE_GPU_ONLY=1, as the kernel
/// tests (a lent GPU's minutes are few).
fn devices() -> Vec<Device> {
    let ex = executors("engine_gpu_train");
    let mut v = Vec::new();
    if ex.iter().any(|e| !e.is_gpu()) {
        v.push(Device::Sim);
    }
    if ex.iter().any(|e| e.is_gpu()) {
        v.push(Device::Cuda);
    }
    v
}

fn check(ffn: FfnKind, task: Task) {
    for dev in devices() {
        check_on(dev, ffn, task);
    }
}

fn check_on(dev: Device, ffn: FfnKind, task: Task) {
    let steps = 12;
    let (a, pa) = common::micro_train(dev, ffn, task, steps);
    let first = a[..4].iter().sum::<f32>();
    let last = a[steps - 4..].iter().sum::<f32>();
    assert!(
        last < 0.8 * first,
        "{ffn:?} {task:?}: loss {a:?} did not fall"
    );
    let (b, pb) = common::micro_train(dev, ffn, task, steps);
    assert_eq!(a, b, "{ffn:?} {task:?}: losses differ between two runs");
    common::assert_same_bits(&pa, &pb, &format!("between two runs ({ffn:?} {task:?})"));
    // The first step's loss is the same forward as the CPU engine's (bf16 activations).
    let (c, _) = common::micro_train(Device::Cpu, ffn, task, 1);
    assert!(
        (a[0] - c[0]).abs() < 0.03 * c[0],
        "{ffn:?} {task:?}: first loss {} on {dev:?} vs {} on cpu",
        a[0],
        c[0]
    );
}

#[test]
fn moe_pretraining_on_sim_learns_and_is_deterministic() {
    check(FfnKind::Moe, Task::Lm);
}

#[test]
fn moe_finetuning_on_sim_learns_and_is_deterministic() {
    check(FfnKind::Moe, Task::Classify);
}

#[test]
fn dense_pretraining_on_sim_learns_and_is_deterministic() {
    check(FfnKind::Dense, Task::Lm);
}

#[test]
fn optimizer_state_round_trips_through_the_device() {
    for dev in devices() {
        optimizer_state_round_trips_on(dev);
    }
}

fn optimizer_state_round_trips_on(dev: Device) {
    let cfg = common::micro_config(FfnKind::Moe, 0);
    let (model, params) = Model::new(cfg, 5).unwrap();
    let opt = AdamW::new(AdamWConfig::default(), &params);
    let mut tr = Trainer::new(
        dev,
        traffic_moe::engine::Precision::F32,
        params.clone(),
        opt,
    )
    .unwrap();
    tr.step(
        &model,
        &common::micro_batches()[0],
        Task::Lm,
        0.02,
        1e-3,
        1.0,
    )
    .unwrap();
    let (p1, o1) = (tr.params().unwrap(), tr.optimizer().unwrap());
    assert_eq!(o1.step, 1);
    assert!(
        o1.m.iter().flatten().any(|&x| x != 0.0),
        "moments stayed zero"
    );
    // Upload what was downloaded: the same state comes back (packing is exact).
    let tr2 = Trainer::new(
        dev,
        traffic_moe::engine::Precision::F32,
        p1.clone(),
        o1.clone(),
    )
    .unwrap();
    let (p2, o2) = (tr2.params().unwrap(), tr2.optimizer().unwrap());
    assert_eq!(p1, p2, "{dev:?}");
    assert_eq!((o1.m, o1.v, o1.step), (o2.m, o2.v, o2.step), "{dev:?}");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if traffic_moe::backend::gpu::Executor::cuda().is_ok() {
        return traffic_moe::testing::skip("a GPU is present");
    }
    let err = Device::Cuda.gpu().err().expect("no GPU here");
    assert!(
        err.to_string().contains("--device cuda"),
        "unclear error: {err}"
    );
}

#[test]
fn weights_loaded_for_inference_keep_bf16_and_little_fp32() {
    let cfg = common::micro_config(FfnKind::Moe, 3);
    let (_, params) = Model::new(cfg, 5).unwrap();
    for ex in executors("weights_loaded_for_inference_keep_bf16_and_little_fp32") {
        bf16_and_little_fp32_on(&ex, &params);
    }
}

fn bf16_and_little_fp32_on(ex: &Executor, params: &[traffic_moe::engine::Param]) {
    let n: usize = params.iter().map(|p| p.value.len()).sum();
    let store = GpuParams::upload_inference(ex, params).unwrap();
    // bf16 for every tensor (2 bytes each) and fp32 for the norms, biases,
    // router and shared gate only (not the embedding table, gathered from its
    // bf16 copy): about 2 bytes a parameter, where fp32 + bf16 for all would
    // be 6. Each tensor's region may round up to 8 elements in both arenas.
    let f32_params: usize = params
        .iter()
        .filter(|p| {
            !p.name.contains("w_")
                && !p.name.contains("attn.w")
                && !p.name.contains("head.w")
                && p.name != "tok_embed"
        })
        .map(|p| p.value.len())
        .sum();
    let bytes = store.device_bytes();
    let (least, slack) = (2 * n + 4 * f32_params, (2 + 4) * 8 * params.len());
    assert!(
        (least..=least + slack).contains(&bytes),
        "{bytes} bytes for {n} params ({f32_params} of them kept in fp32)"
    );
    let err = store.download().expect_err("no fp32 masters to download");
    assert!(
        err.to_string().contains("inference"),
        "unclear error: {err}"
    );
}

/// Weights loaded for inference (bf16 copies only; the embedding gathered
/// from its bf16 copy by `embed_fwd_bf16`) give the classifier the logits and
/// routing of weights loaded for training, bit for bit: the fp32 masters they
/// drop are never what an inference forward reads.
#[test]
fn inference_weights_give_the_training_weights_logits_bit_for_bit() {
    use traffic_moe::eval::predict::{Weights, class_logits};

    for (dev, ffn) in devices()
        .into_iter()
        .flat_map(|d| [(d, FfnKind::Moe), (d, FfnKind::Dense)])
    {
        let (model, params) = Model::new(common::micro_config(ffn, 3), 5).unwrap();
        let gpu = dev.gpu().unwrap().expect("a GPU engine");
        let batch = &common::micro_batches()[0];
        let x = batch.inputs();
        let logits = |store: &GpuParams| {
            let (l, routing) = class_logits(&model, Weights::Gpu(&gpu, store), &x, true).unwrap();
            (l.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), routing)
        };
        let train = GpuParams::upload(gpu.executor(), &params).unwrap();
        let infer = GpuParams::upload_inference(gpu.executor(), &params).unwrap();
        let (want, got) = (logits(&train), logits(&infer));
        assert!(!want.0.is_empty());
        assert_eq!(got, want, "{dev:?} {ffn:?}: logits or routing differ");
    }
}

/// A step whose gradients are not finite is refused on every engine, and
/// leaves the weights and the optimizer as they were, as on the CPU engine
/// (on the GPU engine the weights became NaN and AdamW counted the step).
#[test]
fn a_diverged_step_changes_nothing_on_any_engine() {
    let (model, mut params) = Model::new(common::micro_config(FfnKind::Moe, 3), 5).unwrap();
    let w1 = params.iter().position(|p| p.name == "head.w1").unwrap();
    // Logits of ±inf: a NaN loss and NaN gradients.
    params[w1].value[..2].copy_from_slice(&[1e30, -1e30]);
    for dev in std::iter::once(Device::Cpu).chain(devices()) {
        let opt = AdamW::new(AdamWConfig::default(), &params);
        let mut tr = Trainer::new(
            dev,
            traffic_moe::engine::Precision::F32,
            params.clone(),
            opt,
        )
        .unwrap();
        let batch = &common::micro_batches()[0];
        let err = tr
            .step(&model, batch, Task::Classify, 0.02, 1e-3, 1.0)
            .expect_err("a NaN gradient norm");
        assert!(err.to_string().contains("diverged"), "{dev:?}: {err}");
        common::assert_same_bits(
            &tr.params().unwrap(),
            &params,
            &format!("after a refused step on {dev:?}"),
        );
        let o = tr.optimizer().unwrap();
        assert_eq!(o.step, 0, "{dev:?}: the refused step was counted");
        assert!(
            o.m.iter().chain(&o.v).flatten().all(|&x| x == 0.0),
            "{dev:?}: moments moved"
        );
    }
}

/// A step whose gradients are finite but huge (head.w2 scaled by 1e22:
/// gradients far above 1.8e19, whose squares overflow f32) is clipped and
/// taken on every engine, with the CPU engine's norm: the GPU engine summed
/// the squares in f32, got an infinite norm and called the step diverged.
#[test]
fn a_huge_gradient_is_clipped_on_every_engine() {
    let (model, mut params) = Model::new(common::micro_config(FfnKind::Moe, 3), 5).unwrap();
    let w2 = params.iter().position(|p| p.name == "head.w2").unwrap();
    params[w2].value.iter_mut().for_each(|x| *x *= 1e22);
    let mut norms = Vec::new();
    for dev in std::iter::once(Device::Cpu).chain(devices()) {
        let opt = AdamW::new(AdamWConfig::default(), &params);
        let mut tr = Trainer::new(
            dev,
            traffic_moe::engine::Precision::F32,
            params.clone(),
            opt,
        )
        .unwrap();
        let batch = &common::micro_batches()[0];
        let st = tr
            .step(&model, batch, Task::Classify, 0.02, 1e-3, 1.0)
            .unwrap_or_else(|e| panic!("{dev:?}: {e}"));
        assert!(
            st.grad_norm.is_finite() && st.grad_norm > 1e20,
            "{dev:?}: norm {}",
            st.grad_norm
        );
        norms.push((dev, st.grad_norm));
        let o = tr.optimizer().unwrap();
        assert_eq!(o.step, 1, "{dev:?}: the clipped step was not counted");
        let after = tr.params().unwrap();
        assert!(
            after.iter().flat_map(|p| &p.value).all(|x| x.is_finite()),
            "{dev:?}: weights not finite"
        );
        assert_ne!(after[0].value, params[0].value, "{dev:?}: no update");
    }
    // The same norm (bf16 activations on the GPU engine, f32 on the CPU).
    let cpu = norms[0].1;
    for &(dev, n) in &norms[1..] {
        assert!(
            ((n - cpu) / cpu).abs() < 0.05,
            "norm {n:e} on {dev:?} vs {cpu:e} on cpu"
        );
    }
}

/// Parameters in a learning-rate group the optimizer has no multiplier for
/// are refused on every engine (the GPU engine trained them at 1).
#[test]
fn a_missing_lr_group_is_refused_on_every_engine() {
    let (model, params) = Model::new(common::micro_config(FfnKind::Moe, 3), 5).unwrap();
    for dev in std::iter::once(Device::Cpu).chain(devices()) {
        let mut opt = AdamW::new(AdamWConfig::default(), &params);
        opt.group_lr.truncate(2);
        let err = Trainer::new(
            dev,
            traffic_moe::engine::Precision::F32,
            params.clone(),
            opt,
        )
        .and_then(|mut tr| {
            tr.step(
                &model,
                &common::micro_batches()[0],
                Task::Classify,
                0.02,
                1e-3,
                1.0,
            )
        })
        .expect_err("no multiplier for groups 2 and 3");
        assert!(
            err.to_string().contains("only 2 multipliers"),
            "{dev:?}: {err}"
        );
    }
}
