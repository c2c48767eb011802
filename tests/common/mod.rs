//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use traffic_moe::engine::Device;
use traffic_moe::engine::Param;
use traffic_moe::model::batch::Batch;
use traffic_moe::model::{FfnKind, Model, ModelConfig};
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

/// The real captures of `../shared/data` (relative to the crate root), or
/// `TMOE_DATA` when set. When absent the test skips visibly
/// (`traffic_moe::testing::skip_or_fail`), except under `TMOE_CI=1` (set by
/// `.ci/run`), where the data is promised and its absence is a failure.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("TMOE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = root.join(sub);
    if dir.exists() {
        return Some(dir);
    }
    traffic_moe::testing::skip_or_fail(format_args!(
        "{} not found (set TMOE_DATA or provide ../shared/data)",
        dir.display()
    ));
    None
}

/// The micro model the GPU-engine tests run (head_dim 32, which the
/// attention kernels support; small enough for the simulator).
pub fn micro_config(ffn: FfnKind, n_classes: usize) -> ModelConfig {
    ModelConfig {
        name: "micro".into(),
        ffn,
        d: 64,
        layers: 2,
        heads: 2,
        n_experts: 4,
        top_k: 2,
        shared_ff: 128,
        vocab: 512,
        max_seq: 32,
        rope_theta: 10000.0,
        aux_weight: 0.02,
        n_classes,
    }
}

/// A model of `cfg` with weights larger than the 0.02 init (uniform noise of
/// amplitude `noise` added) so every path carries signal, and routing with
/// clear margins: each token's embedding carries a permutation of (1.5, 0.5,
/// -0.5, -1.5) in its first four coordinates, and each router reads expert
/// e's logit from coordinate e, so the top-2 are decided by gaps of about 1
/// in the normalised activations, far above bf16 rounding (about 1 %).
pub fn margin_params(cfg: &ModelConfig, noise: f32) -> (Model, Vec<Param>) {
    let (model, mut p) = Model::new(cfg.clone(), 11).unwrap();
    let mut s = 77u64;
    for q in &mut p {
        for v in &mut q.value {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v += noise * (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0);
        }
    }
    let d = cfg.d;
    let levels = [1.5f32, 0.5, -0.5, -1.5];
    for q in &mut p {
        if q.name == "tok_embed" {
            for (v, row) in q.value.chunks_mut(d).enumerate() {
                let mut perm = [0usize, 1, 2, 3];
                let mut r = v;
                for i in (1..4).rev() {
                    perm.swap(i, r % (i + 1));
                    r /= i + 1;
                }
                for (e, &j) in perm.iter().enumerate() {
                    row[e] = levels[j];
                }
            }
        } else if q.name.ends_with("moe.router") {
            q.value.fill(0.0);
            for e in 0..cfg.n_experts {
                q.value[e * d + e] = 1.0;
            }
        }
    }
    (model, p)
}

/// Four batches of 4 sequences: a repeating pattern (learnable) with the
/// class in the first token, and some padding.
pub fn micro_batches() -> Vec<Batch> {
    (0..4)
        .map(|k| {
            let (b, s) = (4, 32);
            let mut ids = Vec::new();
            let mut mask = Vec::new();
            let mut labels = Vec::new();
            for r in 0..b {
                let class = ((k + r) % 3) as u32;
                let len = s - 3 * r;
                for i in 0..s {
                    let id = if i == 0 {
                        class + 5
                    } else {
                        (10 + class * 40 + (i as u32 % 7) * 3) % 512
                    };
                    ids.push(if i < len { id } else { 0 });
                    mask.push(u8::from(i < len));
                }
                labels.push(class);
            }
            let n_tokens = mask.iter().filter(|&&m| m != 0).count();
            Batch {
                ids,
                mask,
                labels,
                b,
                s,
                n_tokens,
            }
        })
        .collect()
}

/// `steps` training steps of the micro model (seed 5, AdamW at lr 3e-3)
/// over [`micro_batches`] on `device`: each step's loss, and the weights.
pub fn micro_train(
    device: Device,
    ffn: FfnKind,
    task: Task,
    steps: usize,
) -> (Vec<f32>, Vec<Param>) {
    micro_train_in(
        device,
        traffic_moe::engine::Precision::F32,
        ffn,
        task,
        steps,
    )
}

/// [`micro_train`] in `precision` (bf16 on the CPU: mixed precision).
pub fn micro_train_in(
    device: Device,
    precision: traffic_moe::engine::Precision,
    ffn: FfnKind,
    task: Task,
    steps: usize,
) -> (Vec<f32>, Vec<Param>) {
    let cfg = micro_config(ffn, if task == Task::Classify { 3 } else { 0 });
    let (model, params) = Model::new(cfg, 5).unwrap();
    let opt = AdamW::new(AdamWConfig::default(), &params);
    let mut tr = Trainer::new(device, precision, params, opt).unwrap();
    let data = micro_batches();
    let losses = (0..steps)
        .map(|i| {
            tr.step(&model, &data[i % data.len()], task, 0.02, 3e-3, 1.0)
                .unwrap()
                .loss
        })
        .collect();
    (losses, tr.params().unwrap())
}

/// Runs `tmoe args` in `dir` (after `setup` on the command, e.g. its
/// environment); panics with its output unless it succeeds, else returns
/// stdout and stderr together.
pub fn tmoe_with(
    dir: &std::path::Path,
    args: &[&str],
    setup: impl FnOnce(&mut std::process::Command),
) -> String {
    let (ok, text) = tmoe_outcome_with(dir, args, setup);
    assert!(ok, "tmoe {args:?} failed:\n{text}");
    text
}

/// Runs `tmoe args` in `dir` whatever comes of it: whether it succeeded,
/// and stdout and stderr together.
pub fn tmoe_outcome(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    tmoe_outcome_with(dir, args, |_| {})
}

/// [`tmoe_outcome`] after `setup` on the command.
pub fn tmoe_outcome_with(
    dir: &std::path::Path,
    args: &[&str],
    setup: impl FnOnce(&mut std::process::Command),
) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tmoe"));
    cmd.current_dir(dir).args(args);
    setup(&mut cmd);
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`tmoe_with`] as it is.
pub fn tmoe(dir: &std::path::Path, args: &[&str]) -> String {
    tmoe_with(dir, args, |_| {})
}

/// Runs `tmoe args` in `dir` under a file size limit of `blocks` (`ulimit
/// -f`; SIGXFSZ ignored, so a write past it fails with "File too large"):
/// a full disk, without touching a device node.
pub fn tmoe_on_a_full_disk(
    dir: &std::path::Path,
    blocks: u32,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f {blocks}; trap '' XFSZ; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_tmoe"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// A FIFO at `path` that a thread fills with `bytes` once a reader opens it
/// (a capture given as a pipe, as `<(zcat x.pcap.gz)` gives one); join the
/// thread after the read.
pub fn fifo_with(path: &std::path::Path, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    let path = path.to_path_buf();
    // Opening for writing waits for the reader.
    std::thread::spawn(move || std::fs::write(path, bytes).unwrap())
}

/// A classic pcap of `flows` UDP flows of 3 packets each (10.0.0.1 port
/// 4000 + i to 10.0.0.2:53), interleaved: a capture every command reads.
pub fn udp_capture(flows: u16) -> Vec<u8> {
    use traffic_moe::traffic::capture::pcap_writer::{PcapWriter, eth_ipv4, udp};
    let mut w = PcapWriter::new(Vec::new(), 1).unwrap();
    for k in 0..3 * u64::from(flows) {
        let frame = eth_ipv4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            traffic_moe::traffic::types::PROTO_UDP,
            &udp(
                4000 + (k % u64::from(flows)) as u16,
                53,
                format!("query {k}").as_bytes(),
            ),
        );
        w.write_frame(1_000_000_000 + k * 1_000, &frame).unwrap();
    }
    w.into_inner()
}

/// `tmoe synth` into `dir/caps`: one flow of each synthetic class, a
/// capture each (the smallest labelled set).
pub fn synth_one_flow_files(dir: &std::path::Path) {
    tmoe(
        dir,
        &[
            "synth",
            "--out",
            "caps",
            "--flows-per-class",
            "1",
            "--flows-per-file",
            "1",
        ],
    );
}

/// Names in `dir`, sorted (none when it is gone).
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// `tmoe synth` into `dir/caps`: `flows_per_class` flows of each synthetic
/// class, `seed`.
pub fn synth_captures(dir: &std::path::Path, flows_per_class: &str, seed: &str) {
    tmoe(
        dir,
        &[
            "synth",
            "--out",
            "caps",
            "--flows-per-class",
            flows_per_class,
            "--seed",
            seed,
        ],
    );
}

/// [`synth_captures`], then `tmoe tokenize` into `dir/data` (sequences of
/// 32, a 600-entry vocabulary): a labelled dataset in seconds.
pub fn synth_dataset(dir: &std::path::Path, flows_per_class: &str, seed: &str) {
    synth_captures(dir, flows_per_class, seed);
    tmoe(
        dir,
        &[
            "tokenize",
            "caps",
            "--out",
            "data",
            "--labels",
            "folder",
            "--seq-len",
            "32",
            "--vocab-size",
            "600",
            "--quiet",
        ],
    );
}

/// One fine-tuning epoch on `sim` over [`synth_dataset`]'s `data` from the
/// checkpoint `init`, into `dir/ft`; returns the command's output.
pub fn finetune_sim(dir: &std::path::Path, init: &str) -> String {
    tmoe(
        dir,
        &[
            "finetune",
            "--data",
            "data",
            "--init",
            init,
            "--out",
            "ft",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--seq-len",
            "32",
            "--device",
            "sim",
            "--quiet",
        ],
    )
}

/// Every parameter of `a` equals `b`'s bit for bit; `what` says what differs
/// (e.g. "between two runs").
pub fn assert_same_bits(a: &[Param], b: &[Param], what: &str) {
    assert_eq!(a.len(), b.len(), "parameter counts differ {what}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            x.value
                .iter()
                .zip(&y.value)
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{} differs {what}",
            x.name
        );
    }
}

/// Every bf16 micro-kernel this CPU runs, the portable one always; those
/// it cannot run are named as untested.
pub fn bf16_kernels() -> Vec<traffic_moe::backend::cpu_bf16::Kernel> {
    use traffic_moe::backend::cpu_bf16::Kernel;
    Kernel::ALL
        .into_iter()
        .filter(|k| {
            let ok = k.available();
            if !ok {
                eprintln!(
                    "this CPU cannot run the {} kernel: not tested here",
                    k.name()
                );
            }
            ok
        })
        .collect()
}

/// `n` values uniform in [-1, 1) from a seeded xorshift: operands of the
/// CPU product tests.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `bench kernels --exec sim --filter F [--config C] [--batch B] [--seq S]`:
/// the JSON report.
pub fn bench_kernels_report(
    filter: &str,
    config: Option<&str>,
    batch: Option<usize>,
    seq: Option<usize>,
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.json");
    use traffic_moe::cli::bench::{Args, KernelArgs, What};
    traffic_moe::cli::bench::run(Args {
        what: What::Kernels(KernelArgs {
            exec: Some("sim".into()),
            filter: Some(filter.into()),
            iters: 1,
            warmup: 1,
            config: config.map(String::from),
            batch,
            seq,
            json: false,
            out: Some(out.clone()),
            force: false,
        }),
    })?;
    Ok(serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap())
}
