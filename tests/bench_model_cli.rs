//! `tmoe bench model --device cpu` reports peak memory as the GPU engine
//! does, from the heap meter `tmoe` installs (`traffic_moe::heap`): the
//! bytes held before the timed runs are the weights (f32: 4 bytes a
//! parameter, and little else), the peak lies above them, and the dense
//! twin's activations (its FFN hidden is 1,280 wide at tiny) outgrow the
//! MoE's as the batch grows.

use std::process::Command;

#[test]
fn cpu_peak_memory_counts_weights_and_activations() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .args(["bench", "model", "--device", "cpu", "--config", "tiny"])
        .args(["--batch", "2,8", "--seq", "16", "--iters", "1", "--out"])
        .arg(&json)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("peak memory x"), "no memory ratio: {err}");
    // With --out the report goes to the file only (stdout stays free).
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
    let mut above = std::collections::HashMap::new();
    for row in r["rows"].as_array().unwrap() {
        let ffn = row["ffn"].as_str().unwrap();
        let params = num(
            &r,
            if ffn == "moe" {
                "params_moe"
            } else {
                "params_dense"
            },
        );
        let (held, peak) = (num(row, "weight_bytes"), num(row, "peak_bytes"));
        assert!(
            (4.0 * params..4.2 * params).contains(&held),
            "{ffn}: {held} bytes held for {params} f32 parameters"
        );
        assert!(peak > held, "{ffn}: peak {peak} not above {held}");
        above.insert((ffn.to_string(), num(row, "batch") as usize), peak - held);
    }
    let act = |ffn: &str, b: usize| above[&(ffn.to_string(), b)];
    assert!(act("moe", 8) > act("moe", 2), "{above:?}");
    assert!(act("dense", 8) > act("moe", 8), "{above:?}");
}

/// Out of memory (here a 3 GB address-space limit against a batch of
/// 200,000 flows), `tmoe` says what the failed allocation means for the run
/// before Rust aborts.
#[cfg(target_os = "linux")]
#[test]
fn out_of_memory_is_explained() {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 3000000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tmoe"))
        .args(["bench", "model", "--device", "cpu", "--config", "tiny"])
        .args(["--batch", "200000", "--seq", "64", "--iters", "1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("tmoe: out of memory") && err.contains("smaller --batch"),
        "{err}"
    );
}

fn tmoe_bench_train(limit: Option<&str>, batch_seq: [&str; 2]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tmoe"));
    cmd.args([
        "bench", "model", "--device", "cpu", "--config", "tiny", "--train",
    ])
    .args([
        "--batch",
        batch_seq[0],
        "--seq",
        batch_seq[1],
        "--iters",
        "1",
    ])
    .env("RUST_BACKTRACE", "0");
    match limit {
        Some(l) => cmd.env("TMOE_MEMORY_LIMIT", l),
        None => cmd.env_remove("TMOE_MEMORY_LIMIT"),
    };
    cmd.output().unwrap()
}

/// A run that would pass its memory limit ends at once with status 1 and a
/// message (not the kernel's out-of-memory kill, which says nothing): a
/// training step at batch 512 needs more than 100 MiB, at batch 2 less.
#[test]
fn a_run_past_its_memory_limit_ends_with_a_message() {
    let out = tmoe_bench_train(Some("100M"), ["512", "64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("past its limit of 100 MiB (set by TMOE_MEMORY_LIMIT)")
            && err.contains("smaller --batch"),
        "{err}"
    );
    let out = tmoe_bench_train(Some("100M"), ["2", "64"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without TMOE_MEMORY_LIMIT the limit is the machine's available memory:
/// the largest batch of the longest sequences asks for 256 GiB at once and
/// is stopped before the system allocator is asked.
#[cfg(target_os = "linux")]
#[test]
fn the_default_limit_is_the_memory_the_machine_has() {
    let out = tmoe_bench_train(None, ["1048576", "65536"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("90 % of the memory available"), "{err}");
}

#[test]
fn a_limit_that_is_not_a_size_is_refused() {
    let out = tmoe_bench_train(Some("12Q"), ["2", "16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TMOE_MEMORY_LIMIT: cannot read \"12Q\""),
        "{err}"
    );
}

#[test]
fn an_out_that_cannot_be_written_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .current_dir(dir.path())
        .args(["bench", "model", "--device", "cpu", "--config", "tiny"])
        .args(["--batch", "2", "--seq", "16", "--iters", "1"])
        .args(["--out", "notes.txt/r.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // Said before the benchmark (it ran whole, then failed at the write as
    // "creating notes.txt: File exists").
    assert!(
        err.contains("error: cannot write notes.txt/r.json: notes.txt is not a folder"),
        "{err}"
    );
    assert!(!err.contains("MoE/dense"), "the benchmark ran first: {err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine\n"
    );
    // A folder that does not exist yet is made, as before.
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .current_dir(dir.path())
        .args(["bench", "model", "--device", "cpu", "--config", "tiny"])
        .args([
            "--batch", "2", "--seq", "16", "--iters", "1", "--only", "moe",
        ])
        .args(["--out", "new/deeper/r.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("new/deeper/r.json").exists());
}

/// `--train --objective lm` times pretraining's step: next-token loss over
/// the config's vocabulary on a model without the classifier head (the
/// report's parameter count is the classifier's less exactly that head),
/// reported as mode "pretrain"; without `--train`, the LM's forward with
/// its loss and no tape (mode "lm-forward", bf16 too), where it was refused.
#[test]
fn the_lm_objective_times_a_pretraining_step() {
    let dir = tempfile::tempdir().unwrap();
    let report = |objective: &str, more: &[&str]| -> serde_json::Value {
        let json = dir
            .path()
            .join(format!("{objective}{}.json", more.join("")));
        let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
            .args(["bench", "model", "--device", "cpu", "--config", "tiny"])
            .args(["--objective", objective, "--only", "moe"])
            .args(more)
            .args(["--batch", "2", "--seq", "16", "--iters", "1", "--out"])
            .arg(&json)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{objective}: {err}");
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
    };
    let (lm, clf) = (report("lm", &["--train"]), report("classify", &["--train"]));
    assert_eq!(lm["mode"], "pretrain");
    assert_eq!(clf["mode"], "train");
    let row = &lm["rows"][0];
    assert_eq!(row["ffn"], "moe");
    assert!(row["tokens_per_s"].as_f64().unwrap() > 0.0, "{row}");
    // tiny's head: Linear d->d with bias, then d->16 classes with bias.
    let d = 128;
    let head = d * d + d + 16 * d + 16;
    let params = |r: &serde_json::Value| r["params_moe"].as_u64().unwrap() as usize;
    assert_eq!(params(&lm) + head, params(&clf));

    for precision in ["f32", "bf16"] {
        let fwd = report("lm", &["--precision", precision]);
        assert_eq!(fwd["mode"], "lm-forward", "{precision}");
        assert_eq!(params(&fwd), params(&lm), "{precision}");
        let row = &fwd["rows"][0];
        assert!(
            row["tokens_per_s"].as_f64().unwrap() > 0.0,
            "{precision}: {row}"
        );
        // The routing was read back: per layer, the experts' shares sum to 1.
        let layers = row["expert_load"].as_array().unwrap();
        assert_eq!(layers.len(), 4, "{precision}: tiny has 4 layers: {row}");
        for l in layers {
            let total: f64 = l
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .sum();
            assert!((total - 1.0).abs() < 1e-9, "{precision}: {row}");
        }
    }
}

/// `TMOE_BF16_KERNEL` pins the bf16 micro-kernel (the portable one runs on
/// every CPU), named in the run's header; a name that is no kernel is
/// said to be ignored, and the run goes on with the automatic choice.
#[test]
fn the_bf16_kernel_can_be_pinned_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |kernel: &str| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
            .args(["bench", "model", "--device", "cpu", "--config", "tiny"])
            .args(["--precision", "bf16", "--only", "moe"])
            .args(["--batch", "2", "--seq", "16", "--iters", "1", "--out"])
            .arg(dir.path().join(format!("{kernel}.json")))
            .env("TMOE_BF16_KERNEL", kernel)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{kernel}: {err}");
        err
    };
    let portable = run("portable");
    assert!(portable.contains("bf16 kernel portable"), "{portable}");
    assert!(
        portable.contains("warning: --precision bf16") && portable.contains("portable kernel"),
        "the portable kernel is slower than f32, and said so: {portable}"
    );
    let bogus = run("avx1024");
    assert!(
        bogus.contains("TMOE_BF16_KERNEL=avx1024 names no kernel") && bogus.contains("avx512-fma"),
        "{bogus}"
    );
}
