//! What the benchmarks count: `tmoe bench kernels`' bytes per kernel
//! (derived here from the kernels' reads and writes at the simulator's smoke
//! shapes, independently of the benchmark code) and the device peaks the
//! shares are taken of.

mod common;

use traffic_moe::backend::gpu::executor::{SpecPeaks, device_info_for, spec_peaks};
use traffic_moe::backend::gpu::ops::{grad_norm, moe_permute, rmsnorm};
use traffic_moe::cli::bench::{Args, What};

/// `bench kernels --exec sim --filter <filter>`: the JSON results.
fn results_of(filter: &str) -> Vec<serde_json::Value> {
    let v = common::bench_kernels_report(filter, None, None, None).unwrap();
    v["results"].as_array().unwrap().clone()
}

/// Each reported kernel's bytes.
fn bytes_of(filter: &str) -> Vec<(String, u64)> {
    results_of(filter)
        .iter()
        .map(|r| {
            (
                r["kernel"].as_str().unwrap().to_string(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn one(filter: &str, kernel: &str) -> u64 {
    let all = bytes_of(filter);
    all.iter()
        .find(|(k, _)| k == kernel)
        .unwrap_or_else(|| panic!("{kernel} not in {all:?}"))
        .1
}

#[test]
fn moe_and_xent_kernels_count_each_byte_once() {
    // train_kernels' simulator shape: 2 x 32 tokens, d 4 x 24, N 8, k 2, tile 16.
    let (t, d, n, k, tile) = (64u64, 96u64, 8u64, 2u64, 16u64);
    let rows = moe_permute::max_rows(t as usize, k as usize, n as usize, tile as usize) as u64;
    // Gather: x [t, d] read once (a token's k rows are copies of one row),
    // every padded row written.
    assert_eq!(one("moe_gather", "moe_gather"), t * d * 2 + rows * d * 2);
    // Plan: topk_idx read once, slot_pos written, sorted_slot per padded row.
    assert_eq!(
        one("moe_permute", "moe_permute_plan"),
        t * k * 4 + t * k * 4 + rows * 4
    );
    // Combine backward per row: dout [t, d] read once, Y's t*k routed rows
    // read, dY written for every padded row.
    assert_eq!(
        one("moe_combine", "moe_combine_bwd_rows"),
        t * d * 2 + t * k * d * 2 + rows * d * 2
    );
    // Cross-entropy with its gradient: 16 rows of 1000 bf16 logits read,
    // as many bf16 gradients written.
    assert_eq!(one("xent", "xent_fwd_bwd"), 16 * 1000 * (2 + 2));
    assert_eq!(one("xent", "xent_fwd"), 16 * 1000 * 2);
    // The mean over all 64 tokens' losses: losses and targets read, one
    // float written.
    assert_eq!(one("xent", "xent_mean"), t * (4 + 4) + 4);
}

#[test]
fn rmsnorm_backward_counts_its_partials_and_the_accumulated_dw() {
    // bench.rs' simulator shape: 64 rows of 96.
    let (rows, d) = (64u64, 96u64);
    let partials = rmsnorm::bwd_scratch_len(rows as usize, d as usize) as u64;
    assert!(partials >= d, "at least one partial row");
    // x, dy read and dx written (bf16); rstd read; w read, dw read + written
    // (fp32, +=); the partial rows written, then read by the reduce.
    assert_eq!(
        one("rmsnorm_bwd", "rmsnorm_bwd"),
        rows * d * 6 + rows * 4 + d * 4 + d * 8 + partials * 8
    );
}

#[test]
fn grad_norm_counts_its_f64_partials_and_norm() {
    let all = results_of("grad_norm");
    let r = all
        .iter()
        .find(|r| r["kernel"] == "grad_norm")
        .expect("grad_norm reported");
    // The shape names the arena's length: "<n> fp32 params in <k> tensors".
    let n: u64 = r["shape"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let partials = grad_norm::n_partials(n as usize) as u64;
    assert!(partials >= 1);
    // fp32 gradients read once; each f64 partial written, then read by the
    // final pass; the f64 norm written.
    assert_eq!(r["bytes"].as_u64().unwrap(), n * 4 + partials * 16 + 8);
}

#[test]
fn attention_counts_its_row_statistics_and_mask() {
    // attention_kernels' simulator shape: batch 1, seq 40, heads 2, hd 32.
    let (t, w, rows) = (40u64, 64u64, 2 * 40u64);
    let all = bytes_of("attn");
    let get = |name: &str| all.iter().find(|(k, _)| k == name).unwrap().1;
    // Forward: Q, K, V read, O written (bf16), the row statistics (m, 1/l)
    // written (two fp32 per query row), the mask read.
    assert_eq!(get("attn_fwd"), 4 * t * w * 2 + rows * 8 + t);
    // Backward: Q, K, V, O, dO read, dQ, dK, dV written; the statistics
    // read; delta written, then read by the second kernel; the mask read.
    assert_eq!(get("attn_bwd"), 8 * t * w * 2 + rows * 8 + rows * 8 + t);
}

#[test]
fn grouped_gemms_read_the_gathered_tokens_once() {
    // gemm_kernels' simulator shape: 96 tokens, d 64, N 4, k 2, expert ffn 64.
    let (t, d, e, k, f) = (96u64, 64u64, 4u64, 2u64, 64u64);
    let (routed, gu) = (t * k, 2 * f);
    let all = bytes_of("gemm_moe");
    let get = |name: &str| all.iter().find(|(k, _)| k == name).unwrap().1;
    // X [t, d] once, W [E, 2f, d], H [routed, 2f] written.
    assert_eq!(
        get("gemm_moe_gate_up_fwd"),
        2 * (t * d + e * gu * d + routed * gu)
    );
    assert_eq!(
        get("gemm_moe_gate_up_swiglu_fwd"),
        2 * (t * d + e * gu * d + routed * f)
    );
    // dH rows, X once, dW fp32 read + written (no split-K at this size).
    assert_eq!(
        get("gemm_moe_gate_up_dw"),
        2 * (routed * gu + t * d) + 8 * e * gu * d
    );
    // Not gathered: the down projection's dW reads H's routed rows.
    assert_eq!(
        get("gemm_moe_down_dw"),
        2 * (routed * d + routed * f) + 8 * e * d * f
    );
}

#[test]
fn device_peaks_follow_the_device_name() {
    let p = |name: &str| spec_peaks(name);
    let both = |bw: f64, fl: f64| SpecPeaks {
        bandwidth: Some(bw),
        bf16_flops: Some(fl),
    };
    // The names the driver reports (nvidia-smi's), data-sheet figures.
    assert_eq!(p("NVIDIA H200"), both(4.8e12, 989.4e12));
    assert_eq!(p("NVIDIA H200 NVL"), both(4.8e12, 835.5e12));
    assert_eq!(p("NVIDIA H100 80GB HBM3"), both(3.35e12, 989.4e12));
    assert_eq!(p("NVIDIA H100 PCIe"), both(2.0e12, 756.5e12));
    assert_eq!(p("NVIDIA H100 NVL"), both(3.9e12, 835.5e12));
    assert_eq!(p("NVIDIA A100-SXM4-80GB"), both(2.039e12, 312e12));
    assert_eq!(p("NVIDIA A100-SXM4-40GB"), both(1.555e12, 312e12));
    // A GH200's memory is not in its name: the clock query decides.
    assert_eq!(p("NVIDIA GH200 480GB").bandwidth, None);
    assert_eq!(p("NVIDIA GH200 480GB").bf16_flops, Some(989.4e12));

    // The driver's memory clock x bus width first; without it the data
    // sheet of the device the name says (not an H200's for every device),
    // and for a device not in the table no peak at all.
    let info = device_info_for("NVIDIA H200".into(), Some(4.814e12), None);
    assert_eq!(info.peak_bandwidth, Some(4.814e12));
    let cases = [
        ("NVIDIA H200", 4.8e12),
        ("NVIDIA H100 80GB HBM3", 3.35e12),
        ("NVIDIA H100 PCIe", 2.0e12),
    ];
    for (name, bw) in cases {
        let info = device_info_for(name.into(), None, None);
        assert_eq!(info.peak_bandwidth, Some(bw), "{name}");
    }
    let info = device_info_for("fake CUDA driver (SIMT simulator)".into(), None, None);
    assert_eq!((info.peak_bandwidth, info.peak_bf16_flops), (None, None));
    let info = device_info_for("NVIDIA GH200 480GB".into(), Some(4.0e12), None);
    assert_eq!(info.peak_bandwidth, Some(4.0e12));
}

#[test]
fn model_info_matches_an_independent_count_of_base() {
    use traffic_moe::model::info::model_info;
    use traffic_moe::model::{FfnKind, ModelConfig};
    // DESIGN.md's base: d 768, 12 layers, N 8, k 2, d' 2048, vocab 65,541.
    let (d, l, n, k, f, v) = (768usize, 12usize, 8usize, 2usize, 2048usize, 65_541usize);
    let attn = 4 * d * d + 2 * d; // wqkv, wo, two RMSNorm gains
    let swiglu = |ff: usize| 3 * d * ff;
    let moe_layer = attn + n * d + d + swiglu(f) + n * swiglu(f / k);
    let dense_layer = attn + swiglu(f + n * f / k);
    let (embed, top) = (v * d, d); // tied embedding, final norm
    let moe_total = embed + l * moe_layer + top;
    let dense_total = embed + l * dense_layer + top;
    let moe_active = moe_total - l * (n - k) * swiglu(f / k);
    let cfg = ModelConfig::named("base").unwrap();
    for seq in [256usize, 512] {
        let m = model_info(&cfg, seq).unwrap();
        let dn = model_info(&cfg.clone().with_ffn(FfnKind::Dense), seq).unwrap();
        assert_eq!((m.total_params, m.active_params), (moe_total, moe_active));
        assert_eq!(
            (dn.total_params, dn.active_params),
            (dense_total, dense_total)
        );
        // 2 FLOPs per active non-embedding weight; causal attention: the
        // query at position i scores and mixes i + 1 keys (4·d FLOPs each),
        // 2·(seq + 1)·d a token on average, per layer.
        let attn_flops = |s: usize| (l * 2 * (s + 1) * d) as f64;
        let want_moe = 2.0 * (moe_active - embed) as f64 + attn_flops(seq);
        let want_dense = 2.0 * (dense_total - embed) as f64 + attn_flops(seq);
        for (got, want) in [
            (m.flops_per_token, want_moe),
            (dn.flops_per_token, want_dense),
        ] {
            assert!(
                (got / want - 1.0).abs() < 1e-3,
                "seq {seq}: {got} vs {want}"
            );
        }
        assert_eq!(m.lm_head_flops, 2.0 * embed as f64);
    }
    // The dense twin needs x2.18 the MoE's forward FLOPs at context 256,
    // x2.16 at the GPU benchmark's 512.
    let ratio = |seq| {
        let m = model_info(&cfg, seq).unwrap().flops_per_token;
        let dn = model_info(&cfg.clone().with_ffn(FfnKind::Dense), seq).unwrap();
        dn.flops_per_token / m
    };
    assert!((ratio(256) - 2.179).abs() < 0.005, "{}", ratio(256));
    assert!((ratio(512) - 2.160).abs() < 0.005, "{}", ratio(512));
}

#[test]
fn bench_model_ratios_are_moe_over_dense_beside_the_papers() {
    use traffic_moe::cli::bench::model::ModelArgs;
    use traffic_moe::engine::{Device, Precision};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.json");
    traffic_moe::cli::bench::run(Args {
        what: What::Model(ModelArgs {
            device: Device::Sim,
            precision: Precision::F32,
            config: Some("tiny".into()),
            batch: vec![2],
            seq: Some(8),
            train: false,
            objective: traffic_moe::cli::bench::model::Objective::Classify,
            iters: Some(1),
            only: None,
            out: Some(out.clone()),
            force: false,
            profile: false,
        }),
    })
    .unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let row = |ffn: &str| {
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["ffn"] == ffn)
            .unwrap()
            .clone()
    };
    let (m, d) = (row("moe"), row("dense"));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let close = |a: f64, b: f64| assert!((a / b - 1.0).abs() < 1e-12, "{a} vs {b}");
    for x in [&m, &d] {
        // Every position of the random batch is a real token.
        close(f(x, "tokens_per_s"), f(x, "flows_per_s") * 8.0);
        close(f(x, "flows_per_s"), 2.0 / (f(x, "mean_latency_ms") / 1e3));
        // The pool's high-water mark holds the bf16 weights (2 bytes a
        // parameter, held before the run) and the activations above them.
        assert!(f(x, "weight_bytes") < f(x, "peak_bytes"));
    }
    let params = f(&r, "params_moe");
    assert!(f(&m, "weight_bytes") >= 2.0 * params, "{m}");
    let ratio = &r["ratios"][0];
    close(
        f(ratio, "throughput"),
        f(&m, "flows_per_s") / f(&d, "flows_per_s"),
    );
    close(
        f(ratio, "mean_latency"),
        f(&m, "mean_latency_ms") / f(&d, "mean_latency_ms"),
    );
    close(
        f(ratio, "peak_memory"),
        f(&m, "peak_bytes") / f(&d, "peak_bytes"),
    );
    // The paper (batch 64): +37.45 % throughput, -27.25 % latency, -27.04 %
    // peak memory, as MoE / dense in the same directions. Throughput is
    // flows per second of latency, so the paper's two are one measurement.
    let p = &r["paper_batch64"];
    close(f(p, "throughput"), 1.3745);
    close(f(p, "mean_latency"), 1.0 - 0.2725);
    close(f(p, "peak_memory"), 1.0 - 0.2704);
    assert!((f(p, "throughput") * f(p, "mean_latency") - 1.0).abs() < 1e-4);
}
