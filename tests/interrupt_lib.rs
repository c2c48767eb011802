//! The library's stop flag (what `tmoe`'s Ctrl-C sets, `tests/interrupt_cli.rs`)
//! in the phases that once polled none: set before a phase starts, or by
//! the phase itself (data that sets it when first read), it stops there,
//! and what is left is what the caller says (nothing half written). No
//! race: the flag is set at a known point, not by a signal.

mod common;
mod tiny_train;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::names_in;
use tiny_train::{tiny_finetune, tiny_model};
use traffic_moe::model::FfnKind;
use traffic_moe::model::batch::{MemSequences, Sequences};
use traffic_moe::stop::Interrupted;
use traffic_moe::train::finetune::{FinetuneOpts, finetune_until};
use traffic_moe::train::head_fit::{HeadFitOpts, fit_head_until};

fn data(n: usize, seed: u32) -> MemSequences {
    tiny_train::sequences::three_classes(n, seed)
}

fn opts(out: &Path, head_epochs: usize) -> FinetuneOpts {
    let classes = ["a", "b", "c"].map(String::from);
    FinetuneOpts {
        max_epochs: 3,
        patience: 3,
        head_epochs,
        seq_len: 24,
        ..tiny_finetune(tiny_model(FfnKind::Moe, 40, 24), &classes, out)
    }
}

/// Sequences that set `flag` the first time a flow's tokens are read: a
/// stop that arrives inside the first pass over them.
struct Tripwire<'a> {
    inner: &'a MemSequences,
    flag: &'a AtomicBool,
}

impl Sequences for Tripwire<'_> {
    fn count(&self) -> usize {
        self.inner.count()
    }
    fn seq_len(&self) -> usize {
        self.inner.seq_len()
    }
    fn tokens(&self, i: usize) -> &[u32] {
        self.flag.store(true, Ordering::SeqCst);
        self.inner.tokens(i)
    }
    fn n_tokens(&self, i: usize) -> usize {
        self.inner.n_tokens(i)
    }
    fn label(&self, i: usize) -> Option<u32> {
        self.inner.label(i)
    }
}

/// A stop before LP-FT's head fit (its features are the first work) ends
/// the run in "epoch 0" with nothing saved: no checkpoint, no log. The old
/// head fit polled nothing: it ran to its end, epoch 0 was scored and saved
/// as a checkpoint, and the run stopped only at epoch 1's first step.
#[test]
fn a_stop_in_the_head_fit_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ft");
    let stop = AtomicBool::new(true);
    let r = finetune_until(&opts(&out, 50), &data(60, 0), &data(15, 1), 9, &stop).unwrap();
    assert_eq!(r.interrupted_in, Some(0), "{:?}", r.history);
    assert!(r.history.is_empty(), "{:?}", r.history);
    assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
}

/// The head fit's steps poll the flag too: once set, the fit fails with
/// `Interrupted` before its next step, the head left as it was.
#[test]
fn a_stop_inside_the_head_fit_s_steps_fails_with_interrupted() {
    let cfg = traffic_moe::model::ModelConfig {
        n_classes: 3,
        ..tiny_model(FfnKind::Moe, 40, 24)
    };
    let (model, before) = traffic_moe::model::Model::new(cfg, 7).unwrap();
    let d = model.cfg.d;
    let x: Vec<f32> = (0..12 * d).map(|i| (i % 7) as f32 / 7.0).collect();
    let y: Vec<u32> = (0..12).map(|i| i % 3).collect();
    let o = HeadFitOpts {
        epochs: 1000,
        batch: 4,
        lr: 1e-2,
        seed: 3,
    };
    let mut params = before.clone();
    let e = fit_head_until(&model, &mut params, &x, &y, &o, &AtomicBool::new(true)).unwrap_err();
    assert!(e.is::<Interrupted>(), "{e:#}");
    assert!(before.iter().zip(&params).all(|(a, b)| a.value == b.value));
}

/// A stop while an epoch is scored on the validation flows abandons that
/// epoch unscored, as a stop in its steps does: here the first, so nothing
/// is kept. The old scoring polled nothing: epoch 1 was scored and saved,
/// and the run stopped in epoch 2.
#[test]
fn a_stop_while_an_epoch_is_scored_abandons_it_unscored() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ft");
    let stop = AtomicBool::new(false);
    // Three scoring batches of 32: the flag is set in the first.
    let val = data(80, 1);
    let val = Tripwire {
        inner: &val,
        flag: &stop,
    };
    let r = finetune_until(&opts(&out, 0), &data(60, 0), &val, 9, &stop).unwrap();
    assert_eq!(r.interrupted_in, Some(1), "{:?}", r.history);
    assert!(r.history.is_empty(), "{:?}", r.history);
    assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
}

/// A study's linear probe polls the flag per batch of features: here set
/// by the training flows when first read, it fails with `Interrupted`
/// (the study then records no result for the row).
#[test]
fn a_stop_while_the_probe_reads_its_features_fails_with_interrupted() {
    use traffic_moe::study::probe::{Encoder, fit_and_score};
    let enc = Encoder::random(
        &tiny_model(FfnKind::Moe, 40, 24),
        1,
        traffic_moe::engine::Device::Cpu,
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    // Several batches of 8: the flag is set in the first.
    let train = data(60, 0);
    let train = Tripwire {
        inner: &train,
        flag: &stop,
    };
    let (val, test) = (data(15, 1), data(15, 2));
    let test_idx: Vec<usize> = (0..test.count()).collect();
    let scored = fit_and_score(
        &enc,
        (&train, &val, &test),
        &test_idx,
        3,
        1.0,
        None,
        1,
        (8, 24),
        &stop,
    );
    let e = scored.err().expect("the probe ran to its end");
    assert!(e.is::<Interrupted>(), "{e:#}");
}

/// The held-out LM loss of a study's pretraining budgets polls the flag
/// per batch: here set by the held-out flows when first read, it fails
/// with `Interrupted` (the study then stores no loss for that budget).
#[test]
fn a_stop_while_the_held_out_loss_is_measured_fails_with_interrupted() {
    let (model, params) =
        traffic_moe::model::Model::new(tiny_model(FfnKind::Moe, 40, 24), 1).unwrap();
    let stop = AtomicBool::new(false);
    // Several batches of 8: the flag is set in the first.
    let held = data(60, 0);
    let held = Tripwire {
        inner: &held,
        flag: &stop,
    };
    let idx: Vec<usize> = (0..held.count()).collect();
    let measured = traffic_moe::eval::lm::lm_loss(&model, &params, &held, &idx, (8, 24), &stop);
    let e = measured.expect_err("the loss was measured to its end");
    assert!(e.is::<Interrupted>(), "{e:#}");
}
