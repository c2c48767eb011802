//! The GPU engine's LM head in training (the tape records): the forward
//! also makes `dh` and `dE` for `dloss = 1`, and the backward only adds `dE`
//! into the table's gradient. Checked against the engine's own forward then
//! backward (the path tape-free inference and any other `dloss` take), on
//! every executor (the simulator in both thread orders; the GPU when there
//! is one), in one block of rows and in blocks of 64.
//!
//! Both paths run the same bf16 kernels on the same bf16 operands (the
//! logits, then dlogits with the same scale `1 / valid`, then the same two
//! products per block), so no bf16 rounding differs between them:
//!
//! - the loss and `dh`: the same values, bit for bit;
//! - the table's gradient (fp32): from zero, the same; added to a gradient
//!   that is not zero (a second micro batch), the training pass sums the
//!   blocks' `dE` first and adds that sum, the old path adds block by
//!   block: fp32 reassociation of three terms, a few units of 2^-24 of the
//!   largest value; allowed `1e-6` of it (16 such units), where a block's
//!   share lost or counted twice is off by order 1.
//!
//! The bf16 tolerances against the CPU engine are in engine_gpu_ops.rs
//! (`lm_head_xent_tied_table`, which runs both paths too).

mod common;

use std::rc::Rc;
use std::sync::Mutex;

use anyhow::{Result, ensure};
use half::bf16;
use traffic_moe::autograd::{Backend, ParamStore};
use traffic_moe::backend::gpu::engine::{Gpu, GpuParams, GpuTensor};
use traffic_moe::backend::gpu::testing::executors;
use traffic_moe::backend::gpu::{Executor, kernel_profile};
use traffic_moe::engine::Param;

const IGNORE: u32 = u32::MAX;
const T: usize = 150;
const D: usize = 64;
/// Padded to 80 rows on the device.
const VOCAB: usize = 75;

/// The kernel profile counts every launch in the process: the tests of this
/// file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Deterministic values in [-scale, scale) (`common::values`), rounded to bf16.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    common::values(n, seed)
        .into_iter()
        .map(|u| bf16::from_f32(scale * u).to_f32())
        .collect()
}

/// Targets with every `skip`-th row (from row 1) ignored.
fn targets(mul: u32, skip: u32) -> Vec<u32> {
    (0..T as u32)
        .map(|i| {
            if i % skip == 1 {
                IGNORE
            } else {
                (i * mul) % VOCAB as u32
            }
        })
        .collect()
}

/// What one path gives: per call, the loss and `dh`; the table's gradient
/// after each call.
#[derive(PartialEq)]
struct Run {
    losses: Vec<f32>,
    dhs: Vec<Vec<f32>>,
    dtables: Vec<Vec<f32>>,
}

/// Two micro batches (`calls`: targets and `dloss`) into one gradient, each
/// a forward (the training pass when `train`) and a backward.
fn run(g: &Gpu, train: bool, h: &[f32], table: &Param, calls: &[(Vec<u32>, f32)]) -> Result<Run> {
    let mut store = GpuParams::upload(g.executor(), std::slice::from_ref(table))?;
    let hb: Vec<bf16> = h.iter().map(|&v| bf16::from_f32(v)).collect();
    let th = GpuTensor::Bf16(Rc::new(g.executor().upload(&hb)?));
    let mut out = Run {
        losses: vec![],
        dhs: vec![],
        dtables: vec![],
    };
    for (tg, dloss) in calls {
        let dh = {
            let (v, mut gr) = store.split();
            let (loss, saved) = if train {
                g.lm_head_xent_train_fwd(&th, v[0], D, tg, IGNORE)?
            } else {
                g.lm_head_xent_fwd(&th, v[0], D, tg, IGNORE)?
            };
            out.losses.push(loss);
            g.lm_head_xent_bwd(&th, v[0], D, tg, &saved, *dloss, &mut *gr[0])?
        };
        out.dhs.push(g.to_host(&dh)?);
        out.dtables.push(store.download_grads()?.remove(0).grad);
    }
    Ok(out)
}

/// `|got - want| <= 1e-6 max |want|`, element by element (module doc).
fn close(what: &str, got: &[f32], want: &[f32]) -> Result<()> {
    ensure!(got.len() == want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
    ensure!(scale > 0.0, "{what}: all zero");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        ensure!(
            (a - b).abs() <= 1e-6 * scale,
            "{what}[{i}]: {a} vs {b} (largest {scale})"
        );
    }
    Ok(())
}

/// The training pass against forward-then-backward: `dloss = 1` twice (the
/// saved gradients, the second added to a gradient that is not zero), then
/// `dloss = 0.75` (the backward makes them again) and a batch with every
/// target ignored (no loss, no gradient).
#[test]
fn training_pass_matches_forward_then_backward() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let h = values(5, T * D, 1.0);
    let table = Param::new("tok_embed", vec![VOCAB, D], values(6, VOCAB * D, 0.5), 1)
        .expect("shape matches");
    let calls = [(targets(13, 4), 1.0), (targets(7, 5), 1.0)];
    let scaled = [(targets(13, 4), 0.75)];
    let none = [(vec![IGNORE; T], 1.0)];
    // Per blocking, the first executor's run.
    let mut first: [Option<Run>; 2] = [None, None];
    for ex in executors("lm_head_train") {
        let name = ex.name();
        for (k, (what, g)) in [
            ("one block", Gpu::new(&ex)),
            (
                "blocks of 64 rows",
                Gpu::new(&ex).with_lm_head_block(64 * VOCAB),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let at = format!("{name}, {what}");
            let (new, old) = (
                run(&g, true, &h, &table, &calls),
                run(&g, false, &h, &table, &calls),
            );
            let (new, old) = (new.expect(&at), old.expect(&at));
            assert!(new.losses == old.losses, "{at}: losses differ");
            assert!(new.dhs == old.dhs, "{at}: dh differs");
            assert!(
                new.dtables[0] == old.dtables[0],
                "{at}: dtable from zero differs"
            );
            close("dtable", &new.dtables[1], &old.dtables[1]).expect(&at);
            let (a, b) = (
                run(&g, true, &h, &table, &scaled),
                run(&g, false, &h, &table, &scaled),
            );
            assert!(a.expect(&at) == b.expect(&at), "{at}: dloss 0.75 differs");
            let z = run(&g, true, &h, &table, &none).expect(&at);
            assert_eq!(z.losses, [0.0], "{at}: all ignored, loss");
            let zero = |v: &[Vec<f32>]| v.iter().flatten().all(|&x| x == 0.0);
            assert!(
                zero(&z.dhs) && zero(&z.dtables),
                "{at}: all ignored, a gradient"
            );
            // The blocks run in a fixed order: the same bits on every
            // executor (thread order), blocking for blocking.
            match &first[k] {
                None => first[k] = Some(new),
                Some(f) => assert!(&new == f, "{at}: not the first executor's bits"),
            }
        }
    }
}

/// Products (GEMM launches, the split-K reduction aside) of a forward and a
/// backward in three blocks of 64 rows: forward-then-backward makes the
/// logits twice (4 per block), the training pass once (3 per block), and its
/// backward none.
#[test]
fn training_pass_makes_three_products_per_block() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let h = values(5, T * D, 1.0);
    let table = Param::new("tok_embed", vec![VOCAB, D], values(6, VOCAB * D, 0.5), 1)
        .expect("shape matches");
    let calls = [(targets(13, 4), 1.0)];
    let ex = Executor::sim();
    let g = Gpu::new(&ex).with_lm_head_block(64 * VOCAB);
    let products = |train| {
        kernel_profile::start();
        run(&g, train, &h, &table, &calls).expect("runs");
        let k = ex.kernel_profile_stop().expect("profile");
        k.iter()
            .filter(|k| k.kernel.starts_with("gemm_") && k.kernel != "gemm_splitk_reduce")
            .map(|k| k.calls)
            .sum::<u64>()
    };
    assert_eq!(products(false), 4 * 3, "forward then backward");
    assert_eq!(products(true), 3 * 3, "training pass then backward");
}
