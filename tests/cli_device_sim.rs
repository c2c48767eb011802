//! `--device sim` end to end from the command line: synth -> tokenize ->
//! `pretrain`, `finetune` and `eval` on the GPU engine (its CUDA kernels run
//! by the simulator), and the same classifier evaluated on the CPU engine
//! gives the same confusion matrix; `--precision bf16` is taken by every
//! command there and changes nothing. `--device cuda` without a GPU is a
//! clear error, not a fallback.

use std::path::Path;
use std::process::Command;

mod common;
use common::tmoe;

fn confusion(path: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["confusion_matrix"]["counts"].clone()
}

#[test]
fn pretrain_finetune_eval_on_sim() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::synth_dataset(d, "6", "1");
    let pt = tmoe(
        d,
        &[
            "pretrain",
            "--data",
            "data",
            "--config",
            "tiny",
            "--out",
            "pt",
            "--steps",
            "2",
            "--batch",
            "4",
            "--seq-len",
            "32",
            "--device",
            "sim",
            "--quiet",
        ],
    );
    assert!(pt.contains("pretrained 2 steps"), "{pt}");
    let ft = common::finetune_sim(d, "pt/model.safetensors");
    assert!(ft.contains("fine-tuned 1 epoch "), "{ft}");
    let ckpt = "ft/classifier.safetensors";
    tmoe(
        d,
        &[
            "eval",
            "--checkpoint",
            ckpt,
            "--data",
            "data",
            "--out",
            "ev-sim",
            "--device",
            "sim",
            "--quiet",
        ],
    );
    tmoe(
        d,
        &[
            "eval",
            "--checkpoint",
            ckpt,
            "--data",
            "data",
            "--out",
            "ev-cpu",
            "--quiet",
        ],
    );
    let (sim, cpu) = (
        confusion(&d.join("ev-sim/metrics.json")),
        confusion(&d.join("ev-cpu/metrics.json")),
    );
    assert!(sim.as_array().is_some_and(|r| !r.is_empty()), "{sim}");
    assert_eq!(
        sim, cpu,
        "the GPU engine (sim) and the CPU engine classify differently"
    );
    // `classify` on the GPU engine: the same class per flow as on the CPU.
    let classes = |device: &str| -> Vec<String> {
        let out = format!("cls-{device}.csv");
        tmoe(
            d,
            &[
                "classify",
                "--checkpoint",
                ckpt,
                "--data",
                "data",
                "caps/dns",
                "caps/voip",
                "--device",
                device,
                "--batch",
                "4",
                "--out",
                &out,
                "--quiet",
            ],
        );
        let csv = std::fs::read_to_string(d.join(&out)).unwrap();
        csv.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                // Everything but the probability.
                f[..f.len() - 1].join(",")
            })
            .collect()
    };
    let (sim, cpu) = (classes("sim"), classes("cpu"));
    assert!(sim.len() >= 12, "{sim:?}");
    assert_eq!(sim, cpu, "classify on sim and on cpu");
}

#[test]
fn device_cuda_without_a_gpu_is_refused_clearly() {
    if traffic_moe::backend::gpu::Executor::cuda().is_ok() {
        return traffic_moe::testing::skip("a GPU is present");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .args(["bench", "model", "--device", "cuda"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--device cuda ran without a GPU");
    assert!(err.contains("--device cuda"), "unclear error: {err}");
}

/// `--precision bf16` on the GPU engine: every command takes it, as on the
/// CPU, and runs what it runs without it (the GPU engine computes in bf16
/// either way): the same checkpoints byte for byte from `pretrain` and
/// `finetune`, the same metrics from `eval`, the same verdicts from
/// `classify`; `bench model` reports bf16. `eval` and `classify` (and
/// inference in `bench model`) refused it, where `pretrain` and `finetune`
/// took it, so the same flags gave a refusal from one command and not another.
#[test]
fn precision_bf16_is_taken_by_every_command_on_sim() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::synth_dataset(d, "6", "1");
    let bytes = |p: &str| std::fs::read(d.join(p)).unwrap();
    for p in ["f32", "bf16"] {
        let (pt, ft) = (format!("pt-{p}"), format!("ft-{p}"));
        let out = tmoe(
            d,
            &[
                "pretrain",
                "--data",
                "data",
                "--config",
                "tiny",
                "--out",
                &pt,
                "--steps",
                "1",
                "--batch",
                "4",
                "--seq-len",
                "32",
                "--device",
                "sim",
                "--precision",
                p,
                "--quiet",
            ],
        );
        assert!(out.contains("pretrained 1 step"), "{p}: {out}");
        let init = format!("{pt}/model.safetensors");
        let out = tmoe(
            d,
            &[
                "finetune",
                "--data",
                "data",
                "--init",
                &init,
                "--out",
                &ft,
                "--epochs",
                "1",
                "--batch",
                "8",
                "--seq-len",
                "32",
                "--device",
                "sim",
                "--precision",
                p,
                "--quiet",
            ],
        );
        assert!(out.contains("fine-tuned 1 epoch "), "{p}: {out}");
        let ckpt = format!("{ft}/classifier.safetensors");
        tmoe(
            d,
            &[
                "eval",
                "--checkpoint",
                &ckpt,
                "--data",
                "data",
                "--out",
                &format!("ev-{p}"),
                "--device",
                "sim",
                "--precision",
                p,
                "--quiet",
            ],
        );
        tmoe(
            d,
            &[
                "classify",
                "--checkpoint",
                &ckpt,
                "--data",
                "data",
                "caps/dns",
                "--device",
                "sim",
                "--precision",
                p,
                "--batch",
                "4",
                "--out",
                &format!("cls-{p}.csv"),
                "--quiet",
            ],
        );
    }
    assert!(
        bytes("pt-f32/model.safetensors") == bytes("pt-bf16/model.safetensors"),
        "pretrain --precision bf16 on sim trained another model"
    );
    assert!(
        bytes("ft-f32/classifier.safetensors") == bytes("ft-bf16/classifier.safetensors"),
        "finetune --precision bf16 on sim trained another model"
    );
    let metrics = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&bytes(&format!("ev-{p}/metrics.json"))).unwrap()
    };
    assert_eq!(
        confusion(&d.join("ev-f32/metrics.json")),
        confusion(&d.join("ev-bf16/metrics.json")),
        "eval --precision bf16 on sim"
    );
    assert_eq!(metrics("f32")["macro"], metrics("bf16")["macro"]);
    let csv = |p: &str| String::from_utf8(bytes(&format!("cls-{p}.csv"))).unwrap();
    assert!(csv("bf16").lines().count() > 1, "{}", csv("bf16"));
    assert_eq!(
        csv("f32").replace("ft-f32", "ft-bf16"),
        csv("bf16"),
        "classify --precision bf16 on sim"
    );

    let out = tmoe(
        d,
        &[
            "bench",
            "model",
            "--device",
            "sim",
            "--precision",
            "bf16",
            "--iters",
            "1",
            "--out",
            "bench.json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes("bench.json")).unwrap();
    assert_eq!(v["precision"], "bf16", "{out}");
}
