//! LP-FT's head fit (`train/head_fit.rs`): the head alone learns from fixed
//! features, nothing else moves, runs rerun bit for bit, and fine-tuning
//! with `head_epochs` starts from a fitted head.

mod tiny_train;
use tiny_train::{tiny_finetune, tiny_model};
use traffic_moe::autograd::{ParamStore, Tape};
use traffic_moe::backend::cpu::Cpu;
use traffic_moe::model::batch::MemSequences;
use traffic_moe::model::{FfnKind, Model};
use traffic_moe::train::finetune::finetune;
use traffic_moe::train::head_fit::{HeadFitOpts, fit_head};
use traffic_moe::train::optim::Param;

const CLASSES: usize = 3;

/// `n` feature rows of width `d`: class c is a bump on dimensions 4c..4c+4
/// plus deterministic noise of the same size, so a head must learn it.
fn features(n: usize, d: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    let mut state = 12345u32;
    for i in 0..n {
        let c = (i % CLASSES) as u32;
        for j in 0..d {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let bump = if j / 4 == c as usize { 1.0 } else { 0.0 };
            x.push(bump + noise);
        }
        labels.push(c);
    }
    (x, labels)
}

fn classifier(seed: u64) -> (Model, Vec<Param>) {
    let mut cfg = tiny_model(FfnKind::Moe, 40, 24);
    cfg.n_classes = CLASSES;
    Model::new(cfg, seed).unwrap()
}

/// The head's predictions on feature rows.
fn predict(model: &Model, params: &[Param], x: &[f32]) -> Vec<u32> {
    let mut tape = Tape::<f32, Cpu>::cpu_inference();
    let p = params.values();
    let input = tape.input(x.to_vec());
    let logits = model.head_logits(&mut tape, &p, input).unwrap();
    tape.value(logits)
        .unwrap()
        .chunks_exact(CLASSES)
        .map(|r| (0..CLASSES).fold(0, |b, i| if r[i] > r[b] { i } else { b }) as u32)
        .collect()
}

#[test]
fn the_head_alone_learns_fixed_features_and_nothing_else_moves() {
    let (model, before) = classifier(7);
    let d = model.cfg.d;
    let (x, y) = features(96, d);
    let (xt, yt) = features(60, d);
    let o = HeadFitOpts {
        epochs: 30,
        batch: 16,
        lr: 1e-2,
        seed: 3,
    };
    let mut params = before.clone();
    let losses = fit_head(&model, &mut params, &x, &y, &o).unwrap();
    assert_eq!(losses.len(), 30);
    assert!(
        losses[29] < 0.25 * losses[0],
        "head fit loss {} -> {}",
        losses[0],
        losses[29]
    );
    let right = predict(&model, &params, &xt)
        .iter()
        .zip(&yt)
        .filter(|(a, b)| a == b)
        .count();
    assert!(right >= 57, "{right} of 60 held-out rows right");
    let head = model.head_ids().unwrap();
    for (i, (a, b)) in before.iter().zip(&params).enumerate() {
        if head.contains(&i) {
            assert_ne!(a.value, b.value, "{} was not trained", a.name);
        } else {
            assert!(a.value == b.value, "{} moved during the head fit", a.name);
        }
    }
    // Seeded: the same run gives the same bits.
    let mut again = before.clone();
    let losses2 = fit_head(&model, &mut again, &x, &y, &o).unwrap();
    assert_eq!(losses, losses2);
    assert!(params.iter().zip(&again).all(|(a, b)| a.value == b.value));
}

#[test]
fn a_head_fit_refuses_features_of_the_wrong_width() {
    let (model, mut params) = classifier(1);
    let (x, y) = features(10, model.cfg.d + 1);
    let o = HeadFitOpts {
        epochs: 1,
        batch: 4,
        lr: 1e-3,
        seed: 0,
    };
    let e = fit_head(&model, &mut params, &x, &y, &o).unwrap_err();
    assert!(e.to_string().contains("width"), "{e}");
}

fn data(n: usize, seed: u32) -> MemSequences {
    tiny_train::sequences::three_classes(n, seed)
}

#[test]
fn finetuning_with_head_epochs_fits_the_head_first_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = (data(60, 0), data(15, 1));
    let classes = ["a", "b", "c"].map(String::from);
    let out = dir.path().join("ft");
    let o = traffic_moe::train::finetune::FinetuneOpts {
        max_epochs: 1,
        head_epochs: 20,
        head_lr: 1e-2,
        seq_len: 24,
        ..tiny_finetune(tiny_model(FfnKind::Moe, 40, 24), &classes, &out)
    };
    let r = finetune(&o, &train, &val, 9).unwrap();
    let log = std::fs::read_to_string(out.join("head_fit_log.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 20);
    assert!(losses[19] < 0.5 * losses[0], "head fit {losses:?}");
    // The fitted head is epoch 0, a candidate like any epoch, logged with
    // the head fit's last loss.
    let epochs: Vec<usize> = r.history.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, [0, 1]);
    assert_eq!(r.history[0].train_loss, losses[19] as f32);
    // The head alone already separates these classes on the untrained
    // encoder's features; a later epoch that only ties does not replace it.
    assert!(r.history[0].val_macro_f1 > 0.9, "{:?}", r.history);
    if r.history[1].val_macro_f1 <= r.history[0].val_macro_f1 {
        assert_eq!(r.best_epoch, 0);
    }
    let fresh = finetune(
        &traffic_moe::train::finetune::FinetuneOpts {
            head_epochs: 0,
            out: dir.path().join("fresh"),
            ..o.clone()
        },
        &train,
        &val,
        9,
    )
    .unwrap();
    assert!(!dir.path().join("fresh/head_fit_log.jsonl").exists());
    let first: Vec<usize> = fresh.history.iter().map(|e| e.epoch).collect();
    assert_eq!(first, [1]);
}
