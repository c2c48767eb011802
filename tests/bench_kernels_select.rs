//! What a profiler picks with `tmoe bench kernels`: the model shape the
//! kernels run at (`--config`, `--batch`, `--seq`), the CUDA kernels each
//! entry launches (the names ncu and nsys show), and `--filter` by either
//! name. On the simulator (`--exec sim`): the launches are the same there.

mod common;

use common::bench_kernels_report as report;
use traffic_moe::backend::gpu::ops::moe_permute;

/// Each result's (entry, shape, launched kernels).
fn entries(r: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let launches = k["launches"].as_array().unwrap().iter().map(s).collect();
            (s(&k["kernel"]), s(&k["shape"]), launches)
        })
        .collect()
}

#[test]
fn the_chosen_model_shape_is_the_one_launched() {
    // tiny: d 128, 4 heads of 32, 8 experts top-2 of ffn 128; 3 x 24 tokens.
    let r = report("rmsnorm_bwd", Some("tiny"), Some(3), Some(24)).unwrap();
    assert_eq!(
        r["shape"],
        "model tiny (d 128, heads 4, experts 8 top-2, expert ffn 128, vocab 8192) at batch 3 x seq 24"
    );
    assert_eq!(
        entries(&r),
        [(
            "rmsnorm_bwd".into(),
            "rows 72 d 128".into(),
            vec!["rmsnorm_bwd".into(), "rmsnorm_dw_reduce".into()]
        )]
    );
    // The MoE's gate|up GEMM over the 72 x 2 routed rows, padded as the
    // engine pads them (tile 64 at so few tokens per expert).
    let padded = moe_permute::max_rows(72, 2, 8, 64);
    let r = report("gemm_moe_gate_up_fwd", Some("tiny"), Some(3), Some(24)).unwrap();
    assert_eq!(
        entries(&r)[0].1,
        format!("rows 144 (padded {padded}) N 256 K 128")
    );
    // small has head_dim 64: the attention backward launches its hd64
    // kernels (the smoke shape and tiny launch hd32); the simulator's
    // defaults with only --config: batch 2 x seq 32.
    let r = report("attn_bwd", Some("small"), None, None).unwrap();
    assert_eq!(
        entries(&r),
        [(
            "attn_bwd".into(),
            "batch 2 seq 32 heads 6 head_dim 64 causal".into(),
            vec!["attn_bwd_dq_hd64".into(), "attn_bwd_dkdv_hd64".into()]
        )]
    );
    // A config that does not exist is refused, naming the choices.
    let e = format!(
        "{:#}",
        report("rmsnorm", Some("huge"), None, None).unwrap_err()
    );
    assert!(
        e.contains("huge") && e.contains("tiny, small or base"),
        "{e}"
    );
}

#[test]
fn filter_takes_the_cuda_kernel_names_ncu_shows() {
    let names = |f: &str| -> Vec<String> {
        entries(&report(f, None, None, None).unwrap())
            .into_iter()
            .map(|e| e.0)
            .collect()
    };
    // Kernels that no entry is named after: the entries that launch them.
    assert_eq!(names("attn_bwd_dkdv"), ["attn_bwd"]);
    assert_eq!(
        names("gemm_tn_grouped"),
        ["gemm_moe_gate_up_dw", "gemm_moe_down_dw"]
    );
    // A kernel of a group's own name runs that group alone (rowdot_bwd_dw
    // launches rmsnorm_dw_reduce too, but is not the rmsnorm group's).
    assert_eq!(names("rmsnorm_dw_reduce"), ["rmsnorm_bwd"]);
    // A name neither an entry's nor a kernel's: the error names the
    // filter and lists the benchmarks.
    let e = format!("{:#}", report("attn_bwd_dv", None, None, None).unwrap_err());
    assert!(e.contains("--filter attn_bwd_dv: no entry"), "{e}");
    assert!(
        e.contains("rmsnorm, embed") && e.contains("gemm_moe"),
        "{e}"
    );
}

/// The kernels a `.cu` file defines: `extern "C" __global__ ... NAME(const T p)`.
fn kernels_in(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("extern \"C\" __global__"))
        .filter_map(|l| {
            let head = &l[..l.find("(const")?];
            let start = head
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            Some(head[start..].to_string())
        })
        .collect()
}

/// Every kernel in cuda/*.cu is launched by a `bench kernels` entry, and
/// every file has a row in cuda/README.md's map naming test files that exist:
/// a new kernel without a benchmark, or a file without its row, fails here.
#[test]
fn every_kernel_has_a_benchmark_and_every_file_a_row_in_the_map() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("cuda/README.md")).unwrap();
    let mut defined = std::collections::BTreeSet::new();
    for f in std::fs::read_dir(root.join("cuda")).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                map.contains(&format!("| `{name}`")),
                "{name}: no row in cuda/README.md"
            );
            defined.extend(kernels_in(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(
        defined.len() > 50 && defined.contains("attn_bwd_dkdv_hd64"),
        "{defined:?}"
    );
    // Test files the map names exist.
    for word in map
        .split('`')
        .filter(|w| w.starts_with("kernel_") && w.ends_with(".rs"))
    {
        assert!(
            root.join("tests").join(word).exists(),
            "cuda/README.md names {word}"
        );
    }
    // Launched: every entry at the smoke shapes, attention at head_dim 64,
    // the bias gradient over rows enough to split (then reduced).
    let mut launched = std::collections::BTreeSet::new();
    for r in [
        report("", None, None, None).unwrap(),
        report("attn", Some("small"), Some(1), Some(16)).unwrap(),
        report("bias_grad", Some("tiny"), Some(4), Some(128)).unwrap(),
    ] {
        launched.extend(entries(&r).into_iter().flat_map(|e| e.2));
    }
    // Launched only at bigger shapes than a test can run in the simulator:
    // the 128 x 128 tile (a product of 132 such tiles or more, as at base)
    // and the split-K reduce of dW (from 2,048 rows on).
    let bigger = [
        "gemm_nt",
        "gemm_nn",
        "gemm_tn",
        "gemm_nt_swiglu",
        "gemm_tn_grouped",
        "gemm_splitk_reduce",
    ];
    for k in &defined {
        assert!(
            launched.contains(k) != bigger.contains(&k.as_str()),
            "{k}: launched by an entry here: {}, listed as launched only at bigger shapes: {}",
            launched.contains(k),
            bigger.contains(&k.as_str())
        );
    }
}
