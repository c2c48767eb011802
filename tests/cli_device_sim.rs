//! `--device sim` end to end from the command line: synth -> tokenize ->
//! `pretrain`, `finetune` and `eval` on the GPU engine (its CUDA kernels run
//! by the simulator), and the same classifier evaluated on the CPU engine
//! gives the same confusion matrix. `--device cuda` without a GPU is a clear
//! error, not a fallback.

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
