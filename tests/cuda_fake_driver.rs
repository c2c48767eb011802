//! The GPU executor's host code (src/backend/gpu/cuda.rs: cudarc, the stream,
//! pinned staging, events, shared-memory attributes) without a GPU: the fake
//! CUDA driver (cuda/sim/fake_driver.cpp) runs its kernels in the simulator
//! and queued work only when the host waits for it, so a host that reuses a
//! buffer too early or reads too soon sees stale bytes here as on a GPU.
//! `--features cuda` only (`.ci/run` runs it): `cargo test --features cuda
//! --test cuda_fake_driver`.
#![cfg(feature = "cuda")]

mod common;

use std::ffi::CString;
use std::sync::Mutex;

use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::Launch;
use traffic_moe::backend::gpu::cuda::HostContext;
use traffic_moe::backend::gpu::fake_driver::{self, FakeDriver};
use traffic_moe::backend::gpu::ops::attention::{self as gattn, AttnSaved, AttnShape, Rows};
use traffic_moe::backend::gpu::ops::cast;
use traffic_moe::backend::gpu::params::CastF32Bf16Params;
use traffic_moe::capi;
use traffic_moe::engine::Device;
use traffic_moe::eval::predict::{Loaded, class_logits};
use traffic_moe::model::{FfnKind, Model};
use traffic_moe::traffic::capture::container::CaptureReader;
use traffic_moe::train::optim::{AdamW, AdamWConfig};
use traffic_moe::train::step::Task;
use traffic_moe::train::trainer::Trainer;

/// The driver, loaded before anything opens the CUDA executor, and a lock:
/// the counters are process-wide, so tests that read them run one at a time.
fn fake() -> Option<(&'static FakeDriver, std::sync::MutexGuard<'static, ()>)> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let d = fake_driver::install(std::path::Path::new(fake_driver::BUILT))
        .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = Executor::cuda() {
        // Without nvcc there are no fatbins to load (TMOE_SKIP_NVCC=1 builds).
        traffic_moe::testing::skip_or_fail(format_args!("the fake driver cannot open: {e}"));
        return None;
    }
    Some((d, guard))
}

#[test]
fn uploads_through_the_staging_ring_arrive_intact() {
    let Some((d, _g)) = fake() else { return };
    let ex = Executor::cuda().unwrap();
    let before = d.counters();
    // More small uploads than the ring has slots, none waited for: a slot
    // refilled before its copy ran would hand a later buffer's bytes to an
    // earlier one.
    let data: Vec<Vec<u32>> = (0..20u32)
        .map(|k| (0..1000 + 37 * k).map(|i| i ^ (k << 20)).collect())
        .collect();
    let bufs: Vec<_> = data.iter().map(|v| ex.upload(v).unwrap()).collect();
    // And one above the staging limit (the synchronous path).
    let big: Vec<u32> = (0..(5u32 << 20) / 4).map(|i| i.wrapping_mul(7)).collect();
    let big_buf = ex.upload(&big).unwrap();
    for (k, (b, want)) in bufs.iter().zip(&data).enumerate() {
        let got = ex.download(b).unwrap();
        let first = got.iter().zip(want).position(|(g, w)| g != w);
        assert!(
            first.is_none(),
            "upload {k} arrived changed from element {first:?}"
        );
    }
    assert!(
        ex.download(&big_buf).unwrap() == big,
        "the large upload arrived changed"
    );
    let c = d.counters().since(&before);
    assert_eq!(c.htod_async, 20, "small uploads go through pinned staging");
    assert_eq!(c.htod_sync, 1, "the large upload is synchronous");
    assert!(d.error().is_none(), "{:?}", d.error());
}

/// Training through the driver gives the simulator's results bit for bit
/// (the same kernels in the same order: the host path changes nothing).
fn same_as_sim(ffn: FfnKind, task: Task) {
    let Some((d, _g)) = fake() else { return };
    let (a, pa) = common::micro_train(Device::Cuda, ffn, task, 3);
    assert!(d.error().is_none(), "{:?}", d.error());
    let (b, pb) = common::micro_train(Device::Sim, ffn, task, 3);
    assert_eq!(a, b, "{ffn:?} {task:?}: losses on the fake driver vs sim");
    common::assert_same_bits(
        &pa,
        &pb,
        &format!("between the fake driver and sim ({ffn:?} {task:?})"),
    );
}

#[test]
fn moe_pretraining_through_the_driver_equals_sim() {
    same_as_sim(FfnKind::Moe, Task::Lm);
}

#[test]
fn dense_finetuning_through_the_driver_equals_sim() {
    same_as_sim(FfnKind::Dense, Task::Classify);
}

/// What one training step asks of the driver once warm: no allocation (the
/// caching pool), the batch uploaded once.
#[test]
fn a_warm_training_step_allocates_nothing() {
    let Some((d, _g)) = fake() else { return };
    let cfg = common::micro_config(FfnKind::Moe, 0);
    let (model, params) = Model::new(cfg, 5).unwrap();
    let opt = AdamW::new(AdamWConfig::default(), &params);
    let mut tr = Trainer::new(
        Device::Cuda,
        traffic_moe::engine::Precision::F32,
        params,
        opt,
    )
    .unwrap();
    let data = common::micro_batches();
    for b in &data[..2] {
        tr.step(&model, b, Task::Lm, 0.02, 1e-3, 1.0).unwrap();
    }
    let before = d.counters();
    tr.step(&model, &data[2], Task::Lm, 0.02, 1e-3, 1.0)
        .unwrap();
    let c = d.counters().since(&before);
    assert_eq!(c.mem_alloc, 0, "a warm step allocates device memory: {c:?}");
    assert_eq!(c.mem_free, 0, "a warm step frees device memory: {c:?}");
    // The batch once (ids, mask, the LM head's targets: not once per op or
    // per row block), and two one-float scalars (the loss as a tensor, the
    // backward's seed).
    assert_eq!(
        c.htod_async + c.htod_sync,
        5,
        "uploads of a warm step: {c:?}"
    );
    // Reads: every MoE layer's aux loss in one copy at the end of the
    // forward (not one per layer), the LM loss, and the gradient norm after
    // AdamW's launch (the loss's gradient, the seed 1, is not read back).
    assert_eq!(c.dtoh_sync, 3, "reads of a warm step: {c:?}");
}

/// Inference through the driver: the simulator's logits bit for bit, in
/// one read per batch (no tape, no per-layer sync); a warm batch allocates
/// nothing and zeroes almost nothing.
#[test]
fn inference_reads_once_per_batch_and_equals_sim() {
    let Some((d, _g)) = fake() else { return };
    let cfg = common::micro_config(FfnKind::Moe, 3);
    let (model, params) = Model::new(cfg, 7).unwrap();
    let data = common::micro_batches();
    // Two passes over the batches: the second finds every buffer in the pool.
    let logits = |dev: Device| {
        let w = Loaded::new(dev, params.clone()).unwrap();
        let mut out = Vec::new();
        let mut per_batch = Vec::new();
        for b in data.iter().chain(&data) {
            let x = b.inputs();
            let before = d.counters();
            out.push(class_logits(&model, w.weights(), &x, false).unwrap().0);
            per_batch.push(d.counters().since(&before));
        }
        (out, per_batch)
    };
    let (gpu, per_batch) = logits(Device::Cuda);
    let (sim, _) = logits(Device::Sim);
    assert_eq!(gpu, sim, "logits through the fake driver vs sim");
    assert!(d.error().is_none(), "{:?}", d.error());
    for (i, c) in per_batch.iter().enumerate() {
        assert_eq!(c.dtoh_sync, 1, "batch {i}: one read, the logits: {c:?}");
        assert_eq!(c.htod_sync, 0, "batch {i}: {c:?}");
        assert_eq!(
            c.htod_async, 2,
            "batch {i}: the ids and the mask only: {c:?}"
        );
        assert_eq!(c.ctx_syncs + c.stream_syncs, 0, "batch {i}: {c:?}");
        if i >= data.len() {
            assert_eq!(c.mem_alloc, 0, "warm batch {i} allocates: {c:?}");
        }
        // Outputs that kernels write in full are not zeroed first (that
        // would double the activations' DRAM writes): what is zeroed (router
        // and plan state, about 8 KiB here) is small next to the memory in
        // use (about 720 KiB); zeroing one more [B·S, d] activation (16 KiB)
        // would cross the 2 %.
        assert!(
            c.memset_bytes * 50 < c.bytes_allocated,
            "batch {i} zeroes {} bytes: {c:?}",
            c.memset_bytes
        );
    }
}

/// Inference over batches of changing shapes on a device too small for the
/// caching pool to keep every shape's buffers: the pool evicts (bounded by
/// the most ever in use), and when the driver is out of
/// memory it frees its cache and asks again, so the run goes on with the
/// unbounded device's logits bit for bit.
#[test]
fn a_small_device_runs_changing_shapes_by_freeing_the_cache() {
    let Some((d, _g)) = fake() else { return };
    let cfg = common::micro_config(FfnKind::Moe, 3);
    let (model, params) = Model::new(cfg, 7).unwrap();
    let shapes: Vec<(usize, usize)> = [2, 5, 3, 6]
        .iter()
        .flat_map(|&b| (6..=32).step_by(13).map(move |s| (b, s)))
        .collect();
    let run = || {
        let w = Loaded::new(Device::Cuda, params.clone()).unwrap();
        let mut out = Vec::new();
        for &(b, s) in &shapes {
            let mut batch = common::micro_batches().remove(0);
            batch.ids = (0..b * s).map(|i| (i * 7 % 500) as u32 + 5).collect();
            batch.mask = vec![1; b * s];
            (batch.b, batch.s, batch.n_tokens) = (b, s, b * s);
            batch.labels = vec![0; b];
            let logits = class_logits(&model, w.weights(), &batch.inputs(), false);
            out.push(logits.map(|l| l.0).map_err(|e| format!("{b} x {s}: {e:#}")));
        }
        let Loaded::Gpu(gpu, _) = &w else {
            unreachable!()
        };
        (out, gpu.executor().pool_stats().unwrap())
    };
    let (want, roomy) = run();
    let want: Vec<Vec<f32>> = want.into_iter().map(Result::unwrap).collect();
    // Room for the weights (held by no one now) and the largest working set
    // with a little to spare, not for a cache beside it.
    let live = d.counters().bytes_allocated as usize;
    d.set_total_mem(live + roomy.peak_in_use * 5 / 4);
    let (got, tight) = run();
    d.set_total_mem(16 << 30);
    let got: Vec<Vec<f32>> = got
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}; pools {roomy:?} then {tight:?}")))
        .collect();
    assert!(got == want, "logits changed on the small device");
    assert!(tight.freed > roomy.freed, "{roomy:?} then {tight:?}");
    assert!(d.error().is_none(), "{:?}", d.error());
}

#[test]
fn a_refused_launch_is_an_error_naming_the_kernel() {
    let Some((d, _g)) = fake() else { return };
    let ex = Executor::cuda().unwrap();
    let n = 1000;
    let src: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let a = ex.upload(&src).unwrap();
    let dst = ex.alloc_zeroed::<half::bf16>(n).unwrap();
    cast::f32_to_bf16(&ex, &a, &dst, n).unwrap();
    let err = ex
        .launch(&Launch {
            kernel: "cast_f32_bf16",
            grid: [1, 1, 1],
            block: [512, 1, 1],
            smem: 0,
            params: CastF32Bf16Params {
                in_: a.cptr(),
                out: dst.mptr(),
                n: n as i32,
                _pad: 0,
            },
        })
        .expect_err("a GPU refuses a block above the launch bound");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cast_f32_bf16") && msg.contains("OUT_OF_RESOURCES"),
        "unclear error: {msg}"
    );
    let got = ex.download(&dst).unwrap();
    for (i, (&g, &x)) in got.iter().zip(&src).enumerate() {
        assert_eq!(g, half::bf16::from_f32(x), "element {i}");
    }
    assert!(d.error().is_none(), "{:?}", d.error());
}

/// `tmoe bench model` on `cuda`, as small as it goes (writes `bench.json`).
const BENCH_TINY: [&str; 14] = [
    "bench",
    "model",
    "--device",
    "cuda",
    "--config",
    "tiny",
    "--batch",
    "2",
    "--seq",
    "32",
    "--iters",
    "1",
    "--out",
    "bench.json",
];

/// `tmoe args` in `dir`, on the fake driver when `fake`.
fn tmoe(dir: &std::path::Path, fake: bool, args: &[&str]) -> String {
    common::tmoe_with(dir, args, |cmd| {
        if fake {
            cmd.env(fake_driver::ENV, "1");
        } else {
            cmd.env_remove(fake_driver::ENV);
        }
    })
}

/// `tmoe ... --device cuda` with `TMOE_FAKE_CUDA=1`: pretraining writes the
/// same weights as `--device sim`, bit for bit; `classify` (batched across
/// captures, and the overlapped stream) gives the same verdicts; and `bench
/// model` runs its GPU path (events, the driver's memory info) to the end;
/// the C API on `cuda` gives the same verdicts on the caller's thread and in
/// the background.
#[test]
fn the_command_line_on_the_fake_driver() {
    let Some((fake, _g)) = fake() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::synth_dataset(d, "4", "3");
    let pretrain = |device: &str| {
        let out = format!("pt-{device}");
        let text = tmoe(
            d,
            device == "cuda",
            &[
                "pretrain",
                "--data",
                "data",
                "--config",
                "tiny",
                "--out",
                &out,
                "--steps",
                "2",
                "--batch",
                "4",
                "--seq-len",
                "32",
                "--device",
                device,
                "--quiet",
            ],
        );
        assert!(text.contains("pretrained 2 steps"), "{text}");
        let bytes = std::fs::read(d.join(&out).join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| (name, t.data().to_vec()))
            .collect();
        tensors.sort();
        tensors
    };
    let (cuda, sim) = (pretrain("cuda"), pretrain("sim"));
    assert!(!cuda.is_empty());
    for ((n, a), (_, b)) in cuda.iter().zip(&sim) {
        assert!(
            a == b,
            "{n} differs between --device cuda (fake driver) and sim"
        );
    }
    // A classifier (fine-tuned on sim), then `classify` through the fake
    // driver: batched across captures, and the stream from standard input
    // (reader thread + model overlapped), each as on sim.
    common::finetune_sim(d, "pt-sim/model.safetensors");
    let classify = |device: &str, stream: bool| -> Vec<(String, f64)> {
        let out = format!("cls-{device}-{stream}.csv");
        let mut args = vec![
            "classify",
            "--checkpoint",
            "ft/classifier.safetensors",
            "--data",
            "data",
            "--device",
            device,
            "--batch",
            "4",
            "--out",
            &out,
            "--quiet",
        ];
        if stream {
            args.extend(["--stream", "--early"]);
        } else {
            args.push("caps");
        }
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tmoe"));
        cmd.current_dir(d).args(&args);
        if device == "cuda" {
            cmd.env(fake_driver::ENV, "1");
        }
        if stream {
            let pcap = std::fs::File::open(d.join("caps/dns/dns-000.pcap")).unwrap();
            cmd.stdin(pcap);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "classify {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let csv = std::fs::read_to_string(d.join(&out)).unwrap();
        let mut rows: Vec<(String, f64)> = csv
            .lines()
            .skip(1)
            .map(|l| {
                let (rest, p) = l.rsplit_once(',').unwrap();
                (rest.to_string(), p.parse().unwrap())
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    for stream in [false, true] {
        let (cuda, sim) = (classify("cuda", stream), classify("sim", stream));
        assert!(!cuda.is_empty(), "stream {stream}: no verdicts");
        assert_eq!(cuda.len(), sim.len(), "stream {stream}");
        for ((a, pa), (b, pb)) in cuda.iter().zip(&sim) {
            assert_eq!(a, b, "stream {stream}: a verdict differs");
            assert!((pa - pb).abs() < 1e-5, "stream {stream}: {a}: {pa} vs {pb}");
        }
    }
    // The C API on "cuda", in this process (the driver is installed here):
    // on the caller's thread, and with the model on a thread of its own,
    // which opens the classifier (and binds the GPU context) there.
    // Each runs on a thread of its own with no CUDA context current, as a
    // host's thread: after every call none must be current again (our
    // executor binds its own on the caller's thread; a host driving its own
    // context through the driver API would find ours current instead).
    let via_capi = |flags: u32| -> Vec<(u16, u32, u32)> {
        std::thread::scope(|s| {
            s.spawn(|| via_capi_on_this_thread(d, flags))
                .join()
                .unwrap()
        })
    };
    let caller = via_capi(0);
    assert!(!caller.is_empty(), "the C API classified nothing");
    assert_eq!(
        caller,
        via_capi(capi::TMOE_BACKGROUND),
        "background vs caller's thread"
    );
    assert!(fake.error().is_none(), "{:?}", fake.error());
    let bench = tmoe(d, true, &BENCH_TINY);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("bench.json")).unwrap()).unwrap();
    let text = report.to_string();
    assert!(text.contains("fake CUDA driver"), "{bench}\n{text}");
}

/// The C API on "cuda" over two captures of `d`'s set, its verdicts
/// (port, class, probability x 1e4) sorted; asserts that the calling
/// thread's CUDA context (none) is current after each call.
fn via_capi_on_this_thread(d: &std::path::Path, flags: u32) -> Vec<(u16, u32, u32)> {
    let host = || HostContext::current();
    assert_eq!(host(), Some(0), "a fresh thread has no current context");
    let ckpt = CString::new(d.join("ft/classifier.safetensors").to_str().unwrap()).unwrap();
    let data = CString::new(d.join("data").to_str().unwrap()).unwrap();
    let engine = CString::new("cuda").unwrap();
    let mut verdicts = Vec::new();
    // SAFETY: valid strings and buffers; the handle is closed once.
    unsafe {
        let h = capi::tmoe_open(
            ckpt.as_ptr(),
            data.as_ptr(),
            std::ptr::null(),
            engine.as_ptr(),
            0,
            flags,
        );
        assert!(!h.is_null(), "tmoe_open(cuda, flags {flags}) failed");
        assert_eq!(host(), Some(0), "tmoe_open left a context current");
        for cap in ["caps/dns/dns-000.pcap", "caps/voip/voip-000.pcap"] {
            let mut r = CaptureReader::open(&d.join(cap)).unwrap();
            r.for_each_frame(|f| {
                let rc = capi::tmoe_feed(
                    h,
                    f.ts_ns,
                    f.link_type,
                    f.data.as_ptr(),
                    f.caplen,
                    f.orig_len,
                );
                assert!(rc >= 0, "tmoe_feed");
            })
            .unwrap();
        }
        assert_eq!(host(), Some(0), "tmoe_feed left a context current");
        assert_eq!(capi::tmoe_flush(h), 0);
        let mut v = [capi::TmoeVerdict::default(); 64];
        loop {
            let n = capi::tmoe_poll(h, v.as_mut_ptr(), 64);
            assert!(n >= 0);
            assert_eq!(host(), Some(0), "tmoe_poll left a context current");
            if n == 0 {
                break;
            }
            verdicts.extend(
                v[..n as usize]
                    .iter()
                    .map(|x| (x.src_port, x.class_id, (x.probability * 1e4).round() as u32)),
            );
        }
        capi::tmoe_close(h);
        assert_eq!(host(), Some(0), "tmoe_close left a context current");
    }
    verdicts.sort();
    verdicts
}

/// A device fault mid-run (injected: `TMOE_FAKE_CUDA_FAIL`, since no correct
/// kernel faults) is sticky, as on a GPU: every later driver call fails. The
/// command must end with an error, not a panic (no `unwrap` on a failed free
/// in a drop), a hang or a result file, and say the driver's error once.
#[test]
fn a_device_fault_ends_the_command_with_an_error() {
    let Some((_fake, _g)) = fake() else { return };
    let text = bench_fails_cleanly(("TMOE_FAKE_CUDA_FAIL", "rmsnorm_fwd"));
    assert!(
        text.contains("kernel rmsnorm_fwd failed: injected fault"),
        "{text}"
    );
    // Once: each error in the chain says its cause in its message only.
    assert_eq!(
        text.matches("CUDA_ERROR_LAUNCH_FAILED").count(),
        1,
        "{text}"
    );
}

/// `tmoe bench` on the fake driver with one more environment variable:
/// it must end with exit status 1 and its error (returned: stdout and
/// stderr), no panic and no result file.
fn bench_fails_cleanly((var, value): (&str, &str)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .current_dir(tmp.path())
        .env(fake_driver::ENV, "1")
        .env(var, value)
        .args(BENCH_TINY)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!tmp.path().join("bench.json").exists(), "{text}");
    text
}

/// A driver older than the CUDA 13.0 this build was made for is refused
/// before anything loads, with both versions named (on a real GPU cudarc
/// would otherwise panic at the first symbol the old driver lacks).
#[test]
fn a_driver_older_than_cuda_13_is_refused_clearly() {
    let Some((_fake, _g)) = fake() else { return };
    let text = bench_fails_cleanly(("TMOE_FAKE_CUDA_DRIVER_VERSION", "12080"));
    assert!(
        text.contains("supports CUDA 12.8") && text.contains("need CUDA 13.0"),
        "{text}"
    );
}

/// A block's 48 KiB without the opt-in attribute include its static shared
/// memory: the executor asks the driver for each kernel's, and the fake
/// driver answers with ptxas's figure (build.rs), which must reach it.
#[test]
fn each_kernels_static_shared_memory_reaches_the_executor() {
    use traffic_moe::backend::gpu::cuda::CudaExecutor;
    use traffic_moe::backend::gpu::registry::KERNELS;
    let Some((_d, _g)) = fake() else { return };
    let cuda = CudaExecutor::shared().unwrap();
    let report = std::fs::read_to_string(
        std::path::Path::new(traffic_moe::backend::gpu::registry::FATBIN_DIR)
            .with_file_name("kernel-report.txt"),
    )
    .unwrap();
    // ptxas's figure per kernel, the most over its architectures.
    let from_report = |kernel: &str| {
        report
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&kernel)).then(|| f[3].parse::<u32>().unwrap())
            })
            .max()
    };
    for (kernel, _, _) in KERNELS {
        let got = cuda.static_smem_of(kernel);
        assert_eq!(got, from_report(kernel), "{kernel}");
    }
    // kvalid (64 B), then m, 1/l and delta of two query blocks (3 x 512 B).
    assert_eq!(cuda.static_smem_of("attn_bwd_dkdv_hd64"), Some(1600));
}

/// The fake driver counts static shared memory as a GPU does: by default a
/// launch may ask for 48 KiB less the kernel's static, and the attribute
/// cannot take static + dynamic past the opt-in limit (227 KiB on sm_90).
#[test]
fn the_fake_driver_counts_static_shared_memory_as_a_gpu_does() {
    use cudarc::driver::{CudaContext, result, sys};
    use sys::CUfunction_attribute::{
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYNAMIC,
        CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES as STATIC,
    };
    let Some((_d, _g)) = fake() else { return };
    let ctx = CudaContext::new(0).unwrap();
    let dir = std::path::Path::new(traffic_moe::backend::gpu::registry::FATBIN_DIR);
    let image = std::fs::read(dir.join("attention.fatbin")).unwrap();
    let module = ctx
        .load_module(cudarc::nvrtc::Ptx::from_binary(image))
        .unwrap();
    let f = module.load_function("attn_bwd_dkdv_hd64").unwrap();
    let fixed = f.get_attribute(STATIC).unwrap();
    assert_eq!(fixed, 1600);
    assert_eq!(f.get_attribute(MAX_DYNAMIC).unwrap(), 48 * 1024 - fixed);
    // One byte past it, without the attribute: refused at launch.
    let params = [0u8; 512];
    let mut args = [params.as_ptr().cast_mut().cast::<std::ffi::c_void>()];
    // SAFETY: the launch is refused before anything reads the params.
    let refused = unsafe {
        result::launch_kernel(
            f.cu_function(),
            (1, 1, 1),
            (128, 1, 1),
            (48 * 1024 - fixed + 1) as u32,
            std::ptr::null_mut(),
            &mut args,
        )
    };
    assert_eq!(
        refused.unwrap_err().0,
        sys::cudaError_enum::CUDA_ERROR_INVALID_VALUE
    );
    // SAFETY: a loaded function's attribute.
    let set = |v: i32| unsafe {
        result::function::set_function_attribute(f.cu_function(), MAX_DYNAMIC, v)
    };
    assert!(
        set(227 * 1024 - fixed + 1).is_err(),
        "past the opt-in limit"
    );
    set(227 * 1024 - fixed).unwrap();
    assert_eq!(f.get_attribute(MAX_DYNAMIC).unwrap(), 227 * 1024 - fixed);
}

/// Attention at head_dim 64 (the base model's): its kernels ask for more
/// than 48 KiB of dynamic shared memory, which a GPU refuses unless the
/// kernel's attribute was raised first. Through the driver: the attribute
/// is set once per kernel, and every output equals the simulator's.
#[test]
fn attention_above_48_kib_of_shared_memory_raises_the_limit_once() {
    let Some((d, _g)) = fake() else { return };
    let shape = AttnShape {
        batch: 2,
        seq: 80,
        heads: 2,
        head_dim: 64,
    };
    let (rows, w) = (shape.batch * shape.seq, shape.heads * shape.head_dim);
    let qkv: Vec<half::bf16> = (0..rows * 3 * w)
        .map(|i| half::bf16::from_f32(((i * 7919) % 263) as f32 / 263.0 - 0.5))
        .collect();
    let dout: Vec<half::bf16> = (0..rows * w)
        .map(|i| half::bf16::from_f32(((i * 104_729) % 211) as f32 / 211.0 - 0.5))
        .collect();
    // The second sequence is padded after 50 tokens.
    let mask: Vec<u8> = (0..rows).map(|r| u8::from(r < 80 || r % 80 < 50)).collect();
    let run = |ex: &Executor| -> (Vec<half::bf16>, Vec<f32>, Vec<half::bf16>) {
        let qkv_b = ex.upload(&qkv).unwrap();
        let mask_b = ex.upload(&mask).unwrap();
        let o_b = ex.alloc_zeroed::<half::bf16>(rows * w).unwrap();
        let stats_b = ex.alloc_zeroed::<f32>(shape.stats_len()).unwrap();
        let [q, k, v] = Rows::qkv(&qkv_b, &shape);
        let out = Rows::dense(&o_b, &shape);
        for _ in 0..2 {
            gattn::fwd(ex, q, k, v, &mask_b, out, &stats_b, &shape).unwrap();
        }
        let do_b = ex.upload(&dout).unwrap();
        let dqkv_b = ex.alloc_zeroed::<half::bf16>(rows * 3 * w).unwrap();
        let delta = ex.alloc_zeroed::<f32>(shape.rows()).unwrap();
        let saved = AttnSaved {
            q,
            k,
            v,
            out,
            stats: &stats_b,
            mask: &mask_b,
        };
        let [dq, dk, dv] = Rows::qkv(&dqkv_b, &shape);
        let dout_rows = Rows::dense(&do_b, &shape);
        for _ in 0..2 {
            gattn::bwd(ex, &saved, dout_rows, dq, dk, dv, &delta, &shape).unwrap();
        }
        (
            ex.download(&o_b).unwrap(),
            ex.download(&stats_b).unwrap(),
            ex.download(&dqkv_b).unwrap(),
        )
    };
    let before = d.counters();
    let gpu = run(&Executor::cuda().unwrap());
    let c = d.counters().since(&before);
    let sim = run(&Executor::sim());
    assert!(d.error().is_none(), "{:?}", d.error());
    assert!(gpu.0 == sim.0, "attention output differs from sim");
    assert!(
        gpu.1
            .iter()
            .zip(&sim.1)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "row stats differ from sim"
    );
    assert!(gpu.2 == sim.2, "dQ, dK, dV differ from sim");
    // The forward and both backward kernels ask for more than 48 KiB at
    // head_dim 64: each limit raised once, though each kernel ran twice.
    assert_eq!(c.attr_sets, 3, "{c:?}");
}

/// `bench kernels` times each run after 256 MiB written, so that no run
/// reads its inputs from the L2 the run before filled (the runs were back
/// to back, and a small entry could report more than DRAM bandwidth).
#[test]
fn kernel_benchmark_runs_start_with_the_l2_flushed() {
    use traffic_moe::cli::bench::{L2_FLUSH_BYTES, median_ms};
    let Some((d, _g)) = fake() else { return };
    let ex = Executor::cuda().unwrap();
    let buf = ex.alloc_zeroed::<f32>(1024).unwrap();
    let before = d.counters();
    let ms = median_ms(&ex, 3, || ex.zero_range(&buf, 0, 1024)).unwrap();
    let c = d.counters().since(&before);
    assert!(ms >= 0.0);
    // The warm-up and 3 timed runs of 4 KiB each, and 3 flushes.
    assert_eq!(
        c.memset_bytes,
        4 * 4096 + 3 * L2_FLUSH_BYTES as u64,
        "{c:?}"
    );
    assert!(d.error().is_none(), "{:?}", d.error());
}

/// `bench kernels --warmup N`: N untimed runs before the timed ones, none
/// with 0 (a profiler then sees exactly `--iters` launches of a kernel).
#[test]
fn kernel_benchmark_runs_its_warmup_count() {
    use traffic_moe::cli::bench::{L2_FLUSH_BYTES, Reps, median_ms};
    let Some((d, _g)) = fake() else { return };
    let ex = Executor::cuda().unwrap();
    let buf = ex.alloc_zeroed::<f32>(1024).unwrap();
    for warmup in [0, 2] {
        let before = d.counters();
        median_ms(&ex, Reps { warmup, iters: 3 }, || {
            ex.zero_range(&buf, 0, 1024)
        })
        .unwrap();
        let c = d.counters().since(&before);
        let runs = (warmup + 3) as u64;
        assert_eq!(
            c.memset_bytes,
            runs * 4096 + 3 * L2_FLUSH_BYTES as u64,
            "warmup {warmup}: {c:?}"
        );
    }
    assert!(d.error().is_none(), "{:?}", d.error());
}
