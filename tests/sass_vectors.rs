//! The streaming kernels keep their 16-byte vector paths in the compiled SASS
//! (sm_90a), and the tensor-core kernels their 16-byte cp.async tile loads. A vector path can vanish without any test failing (the compiler
//! splits a 16-byte access it cannot prove aligned, or an edit sends every
//! launch down the scalar fallback) and the only symptom would be a GPU
//! benchmark at a fraction of the bandwidth; this catches it with no GPU.
//! Needs the fatbins (nvcc) and cuobjdump (`tools/install-cuda-toolchain.sh`):
//! skips visibly with the reason when they are absent, and fails under
//! `TMOE_CI=1` (`.ci/run`, which installs them).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use traffic_moe::backend::gpu::registry::FATBIN_DIR;

/// Kernels whose main path streams 16-byte loads (and, when `stores`, 16-byte stores).
const VECTOR_KERNELS: &[(&str, bool)] = &[
    ("rmsnorm_fwd", true),
    ("rmsnorm_bwd", true),
    ("embed_fwd", true),
    ("embed_fwd_bf16", true),
    ("embed_bwd_tile", true),
    ("embed_bwd_reduce", true),
    ("rope_fwd", true),
    ("rope_bwd", true),
    ("swiglu_fwd", true),
    ("swiglu_bwd", true),
    ("moe_gather", true),
    ("moe_combine_fwd", true),
    ("moe_combine_bwd_rows", true),
    ("moe_combine_bwd_tokens", true),
    ("lb_loss_partial", false),
    ("xent_fwd_bwd", true),
    ("pool_mean_fwd", false),
    ("pool_mean_bwd", true),
    ("adamw_step", true),
    ("grad_norm_partial", false),
    ("add_fwd", true),
    ("gelu_fwd", true),
    ("gelu_bwd", true),
    ("rowdot_fwd", false),
    ("rowdot_bwd_dz", true),
    ("rowdot_bwd_dw", false),
    ("bias_grad_partial", false),
    ("cast_f32_bf16", true),
];

/// bf16-output GEMMs whose epilogue leaves through shared memory as 16-byte stores.
const STAGED_EPILOGUES: &[&str] = &[
    "gemm_nt",
    "gemm_nn",
    "gemm_nt_swiglu",
    "gemm_nt_small",
    "gemm_nn_small",
    "gemm_nt_swiglu_small",
];

#[derive(serde::Deserialize)]
struct KernelSass {
    #[serde(rename = "LDG")]
    ldg: HashMap<String, u32>,
    #[serde(rename = "STG")]
    stg: HashMap<String, u32>,
    #[serde(rename = "cp.async")]
    cp_async: HashMap<String, u32>,
}

/// Tensor-core kernels (GEMMs, attention) whose operand tiles arrive by
/// 16-byte cp.async.
const CP_ASYNC_KERNELS: &[&str] = &[
    "gemm_nt",
    "gemm_nn",
    "gemm_tn",
    "gemm_nt_small",
    "gemm_nn_small",
    "gemm_tn_small",
    "gemm_nt_swiglu",
    "gemm_nt_swiglu_small",
    "gemm_tn_grouped",
    "gemm_tn_grouped_small",
    "attn_fwd_hd32",
    "attn_fwd_hd64",
    "attn_bwd_dq_hd32",
    "attn_bwd_dq_hd64",
    "attn_bwd_dkdv_hd32",
    "attn_bwd_dkdv_hd64",
];

/// Skips visibly; fails under TMOE_CI=1, where .ci/run has installed the
/// CUDA toolchain (tools/install-cuda-toolchain.sh).
fn skip_or_fail(why: &str) {
    traffic_moe::testing::skip_or_fail(format_args!(
        "{why} (install: tools/install-cuda-toolchain.sh)"
    ));
}

#[test]
fn streaming_kernels_issue_16_byte_accesses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let has_fatbins = std::fs::read_dir(FATBIN_DIR)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "fatbin"))
        })
        .unwrap_or(false);
    if !has_fatbins {
        return skip_or_fail("this build has no fatbins (nvcc was not found)");
    }
    if !root.join(".cuda-toolchain/bin/cuobjdump").exists() {
        return skip_or_fail("cuobjdump is not installed");
    }
    let out = Command::new("python3")
        .arg(root.join("tools/sass-report.py"))
        .args(["--json", "--fatbins", FATBIN_DIR])
        .output()
        .expect("running python3 tools/sass-report.py");
    assert!(
        out.status.success(),
        "sass-report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: HashMap<String, KernelSass> =
        serde_json::from_slice(&out.stdout).expect("sass-report --json output");
    let mut problems = Vec::new();
    for &(kernel, stores) in VECTOR_KERNELS {
        let Some(k) = report.get(kernel) else {
            problems.push(format!("{kernel}: not in the fatbins"));
            continue;
        };
        if k.ldg.get("128").copied().unwrap_or(0) == 0 {
            problems.push(format!("{kernel}: no 16-byte global load ({:?})", k.ldg));
        }
        if stores && k.stg.get("128").copied().unwrap_or(0) == 0 {
            problems.push(format!("{kernel}: no 16-byte global store ({:?})", k.stg));
        }
    }
    for &kernel in STAGED_EPILOGUES {
        if report
            .get(kernel)
            .is_none_or(|k| k.stg.get("128").copied().unwrap_or(0) == 0)
        {
            problems.push(format!("{kernel}: no 16-byte epilogue store"));
        }
    }
    for &kernel in CP_ASYNC_KERNELS {
        match report.get(kernel) {
            None => problems.push(format!("{kernel}: not in the fatbins")),
            Some(k) if k.cp_async.get("128").copied().unwrap_or(0) == 0 => {
                problems.push(format!("{kernel}: no 16-byte cp.async ({:?})", k.cp_async))
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
