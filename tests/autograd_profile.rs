//! The op profile (`tmoe bench model --profile`): a profiled training step
//! names every op kind the model ran, in both passes and the optimizer,
//! within the step's wall time; profiling off records nothing and leaves
//! the step's results bit for bit; the CPU inference forward, split across
//! threads, is profiled too. Profiling is process-wide, so these tests take
//! turns (`SERIAL`).

mod common;

use std::time::Instant;

use traffic_moe::autograd::profile::{self, Pass};
use traffic_moe::engine::{Device, Param, Precision};
use traffic_moe::model::{FfnKind, Model};
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Two training steps of the micro model, the second profiled if asked: its
/// wall time, the weights after it, and the profile.
fn two_steps(ffn: FfnKind, profiled: bool) -> (f64, Vec<Param>, Option<profile::Profile>) {
    let cfg = common::micro_config(ffn, 3);
    let (model, params) = Model::new(cfg, 5).unwrap();
    let opt = AdamW::new(AdamWConfig::default(), &params);
    let mut tr = Trainer::new(Device::Cpu, Precision::F32, params, opt).unwrap();
    let data = common::micro_batches();
    tr.step(&model, &data[0], Task::Classify, 0.02, 3e-3, 1.0)
        .unwrap();
    if profiled {
        profile::start();
    }
    let t = Instant::now();
    tr.step(&model, &data[1], Task::Classify, 0.02, 3e-3, 1.0)
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let p = profiled.then(profile::stop);
    (wall, tr.params().unwrap(), p)
}

#[test]
fn a_profiled_step_names_each_op_in_both_passes_within_its_wall_time() {
    let _turn = serial();
    for (ffn, layer_op) in [(FfnKind::Moe, "moe"), (FfnKind::Dense, "ffn")] {
        let (wall, _, p) = two_steps(ffn, true);
        let p = p.unwrap();
        let calls = |op: &str, pass: Pass| {
            p.entries
                .iter()
                .find(|e| e.op == op && e.pass == pass)
                .map_or(0, |e| e.calls)
        };
        // The micro model has 2 layers: one attention and one FFN layer each.
        for pass in [Pass::Forward, Pass::Backward] {
            assert_eq!(calls("attention", pass), 2, "{layer_op} {pass:?}");
            assert_eq!(calls(layer_op, pass), 2, "{layer_op} {pass:?}");
            assert!(calls("linear", pass) >= 2, "{layer_op} {pass:?}");
            assert_eq!(calls("embedding", pass), 1, "{layer_op} {pass:?}");
        }
        for op in ["zero_grad", "clip_norm", "adamw"] {
            assert_eq!(calls(op, Pass::Optimizer), 1, "{op}");
        }
        // The spans are disjoint parts of the step: together, no longer than it.
        assert!(p.total() > 0.0);
        assert!(
            p.total() <= wall,
            "{layer_op}: {} s attributed in a step of {wall} s",
            p.total()
        );
        assert!(!profile::on(), "stop() turns profiling off");
        assert_eq!(p.threads, 1, "a training step's tape runs on the caller");
    }
}

#[test]
fn the_inference_forward_is_profiled_on_every_thread_it_runs_on() {
    let _turn = serial();
    let cfg = common::micro_config(FfnKind::Moe, 3);
    let (model, params) = Model::new(cfg, 5).unwrap();
    let loaded =
        traffic_moe::eval::predict::Loaded::with_precision(Device::Cpu, params, Precision::F32)
            .unwrap();
    let b = &common::micro_batches()[0];
    let x = b.inputs();
    profile::start();
    traffic_moe::eval::predict::class_logits(&model, loaded.weights(), &x, false).unwrap();
    let p = profile::stop();
    let forward = |op: &str| {
        p.entries
            .iter()
            .filter(|e| e.op == op && e.pass == Pass::Forward)
            .map(|e| e.calls)
            .sum::<u64>()
    };
    // Every piece of the split batch runs both layers' attention and MoE.
    assert!(
        forward("attention") >= 2 && forward("attention") % 2 == 0,
        "{p:?}"
    );
    assert_eq!(forward("attention"), forward("moe"), "{p:?}");
    assert!(p.entries.iter().all(|e| e.pass == Pass::Forward), "{p:?}");
}

#[test]
fn profiling_changes_no_result() {
    let _turn = serial();
    let (_, plain, none) = two_steps(FfnKind::Moe, false);
    let (_, profiled, _) = two_steps(FfnKind::Moe, true);
    assert!(none.is_none());
    common::assert_same_bits(&plain, &profiled, "after a profiled step");
}

#[test]
fn bench_model_profile_prints_a_table_and_writes_it_in_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = common::tmoe_with(
        dir.path(),
        &[
            "bench",
            "model",
            "--device",
            "cpu",
            "--train",
            "--batch",
            "2",
            "--seq",
            "16",
            "--iters",
            "1",
            "--only",
            "dense",
            "--profile",
            "--out",
            json.to_str().unwrap(),
        ],
        |_| {},
    );
    assert!(out.contains("(unattributed)"), "{out}");
    assert!(out.contains("ffn            backward"), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let text = v.to_string();
    assert!(text.contains("\"profile\""), "no profile in the JSON");
    assert!(text.contains("\"pass\":\"optimizer\""), "{text}");
}
