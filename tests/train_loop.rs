//! Training loops on small synthetic sequences: pretraining lowers the LM
//! loss, resumes, and is deterministic; fine-tuning learns the classes.

mod tiny_train;
use tiny_train::{tiny_finetune, tiny_model};
use traffic_moe::engine::Param;
use traffic_moe::eval::predict::Weights;
use traffic_moe::model::batch::MemSequences;
use traffic_moe::model::checkpoint::{CheckpointMeta, load_classifier};
use traffic_moe::model::{FfnKind, ModelConfig};
use traffic_moe::train::finetune::{FinetuneOpts, evaluate, finetune};
use traffic_moe::train::pretrain::{PretrainOpts, pretrain};

fn cfg(ffn: FfnKind) -> ModelConfig {
    tiny_model(ffn, 40, 32)
}

fn data(n: usize, seed: u32) -> MemSequences {
    tiny_train::sequences::three_classes(n, seed)
}

fn popts(out: &std::path::Path, steps: u64, ffn: FfnKind) -> PretrainOpts {
    PretrainOpts {
        cfg: cfg(ffn),
        steps,
        batch: 8,
        seq_len: 24,
        lr: 3e-3,
        warmup: 5,
        clip: 1.0,
        seed: 3,
        save_every: 10,
        out: out.to_path_buf(),
        resume: false,
        progress: false,
        force: false,
        stop_after: None,
        device: traffic_moe::engine::Device::Cpu,
        precision: traffic_moe::engine::Precision::F32,
        keep_at: Vec::new(),
    }
}

/// Every tensor of a safetensors file: name -> (dtype, shape, bytes).
fn tensors(path: &std::path::Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    out.sort();
    out
}

/// (step, loss, aux, lr, grad_norm) of every line of a pretraining log, as
/// written (the text of each number, so equality is bit for bit).
fn logged(dir: &std::path::Path) -> Vec<[String; 5]> {
    std::fs::read_to_string(dir.join("pretrain_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ["step", "loss", "aux", "lr", "grad_norm"].map(|k| v[k].to_string())
        })
        .collect()
}

#[test]
fn pretraining_lowers_loss_resumes_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let train = data(96, 0);
    let r = pretrain(&popts(&dir.path().join("a"), 60, FfnKind::Moe), &train, 1).unwrap();
    let first: f32 = r.history[..5].iter().map(|h| h.1).sum::<f32>() / 5.0;
    let last: f32 = r.history[55..].iter().map(|h| h.1).sum::<f32>() / 5.0;
    assert!(
        last < 0.6 * first,
        "LM loss did not fall: {first} -> {last}"
    );

    // The same seed gives the same losses.
    let r2 = pretrain(&popts(&dir.path().join("b"), 60, FfnKind::Moe), &train, 1).unwrap();
    assert_eq!(r.history, r2.history);

    // Interrupted right after the checkpoint of step 30, then resumed with the
    // same --steps: the same losses, log and weights as the uninterrupted run,
    // bit for bit.
    let c = dir.path().join("c");
    let mut o = popts(&c, 60, FfnKind::Moe);
    o.stop_after = Some(30);
    let r3a = pretrain(&o, &train, 1).unwrap();
    assert_eq!(r3a.history[..], r.history[..30]);
    let meta = traffic_moe::model::checkpoint::read_meta(&r3a.checkpoint).unwrap();
    assert_eq!(meta.step, 30);
    // Steps an interrupted run logged after its checkpoint (and damaged
    // lines) do not survive the resume.
    let extra = std::fs::read_to_string(c.join("pretrain_log.jsonl"))
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .replace("\"step\":30,", "\"step\":31,");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(c.join("pretrain_log.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{extra}\n").as_bytes()).unwrap();
    // A damaged line (not UTF-8) kept the whole log from being trimmed.
    std::io::Write::write_all(&mut f, b"{\"step\":32,\xff\xfe}\n").unwrap();
    let mut o = popts(&c, 60, FfnKind::Moe);
    o.resume = true;
    let r3 = pretrain(&o, &train, 1).unwrap();
    assert_eq!(r3.history[..], r.history[30..]);
    assert_eq!(logged(&c), logged(&dir.path().join("a")));
    assert_eq!(logged(&c).len(), 60);
    let a = dir.path().join("a");
    for file in ["model.safetensors", "model.optim.safetensors"] {
        let (x, y) = (tensors(&a.join(file)), tensors(&c.join(file)));
        assert!(!x.is_empty());
        assert_eq!(x.len(), y.len(), "{file}");
        for (tx, ty) in x.iter().zip(&y) {
            assert!(tx == ty, "{file}: tensor {} differs after resume", tx.0);
        }
    }
    // Refuses to overwrite without --resume or --force; --force starts afresh.
    let e = pretrain(&popts(&c, 10, FfnKind::Moe), &train, 1).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let mut o = popts(&c, 10, FfnKind::Moe);
    o.force = true;
    assert_eq!(pretrain(&o, &train, 1).unwrap().history.len(), 10);
}

fn fopts(out: &std::path::Path, ffn: FfnKind, init: Option<std::path::PathBuf>) -> FinetuneOpts {
    let classes = ["a", "b", "c"].map(String::from);
    FinetuneOpts {
        init,
        seq_len: 24,
        ..tiny_finetune(cfg(ffn), &classes, out)
    }
}

#[test]
fn finetune_records_seq_len_and_refuses_to_replace_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = (data(24, 0), data(9, 1));
    let out = dir.path().join("ft");
    let mut o = fopts(&out, FfnKind::Dense, None);
    o.max_epochs = 1;
    o.seq_len = 20;
    let r = finetune(&o, &train, &val, 9).unwrap();
    let (_, _, meta) = load_classifier(&r.checkpoint).unwrap();
    assert_eq!(meta.extra.get("seq_len").map(String::as_str), Some("20"));
    let before = std::fs::read(&r.checkpoint).unwrap();
    o.seed = 2;
    let e = finetune(&o, &train, &val, 9).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read(&r.checkpoint).unwrap(),
        before,
        "file untouched"
    );
    o.force = true;
    finetune(&o, &train, &val, 9).unwrap();
    assert_ne!(std::fs::read(&r.checkpoint).unwrap(), before, "replaced");
}

#[test]
fn finetuning_learns_the_classes_from_pretrained_and_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let train = data(120, 0);
    let val = data(30, 1);
    let test = data(30, 2);
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        let pt = pretrain(
            &popts(&dir.path().join(format!("pt{ffn:?}")), 30, ffn),
            &train,
            9,
        )
        .unwrap();
        for init in [Some(pt.checkpoint.clone()), None] {
            let out = dir.path().join(format!("ft{ffn:?}{}", init.is_some()));
            let opts = fopts(&out, ffn, init.clone());
            let r = finetune(&opts, &train, &val, 9).unwrap();
            assert!(
                r.best_val_macro_f1 > 0.9,
                "{ffn:?} init={}: val macro-F1 {}",
                init.is_some(),
                r.best_val_macro_f1
            );
            let (model, params, meta) = load_classifier(&r.checkpoint).unwrap();
            assert_eq!(meta.classes.len(), 3);
            let (_, f1, _, _) = evaluate(&model, Weights::Cpu(&params), &test, 16, 24).unwrap();
            assert!(f1 > 0.9, "test macro-F1 {f1}");
        }
    }
}

/// A pretraining run into `dir` stopped after step 2 of 4, its checkpoint
/// then rewritten with what `damage` makes of its metadata and tensors.
fn damaged_checkpoint(
    dir: &std::path::Path,
    train: &MemSequences,
    damage: impl FnOnce(&mut CheckpointMeta, &mut [Param]),
) -> std::path::PathBuf {
    let mut o = popts(dir, 4, FfnKind::Moe);
    o.stop_after = Some(2);
    let ckpt = pretrain(&o, train, 1).unwrap().checkpoint;
    let c = traffic_moe::model::checkpoint::read(&ckpt).unwrap();
    let mut meta = c.meta.clone();
    let mut params: Vec<_> = c
        .tensors
        .into_iter()
        .map(|(name, t)| Param::new(name, t.shape, t.data, 0).unwrap())
        .collect();
    damage(&mut meta, &mut params);
    traffic_moe::model::checkpoint::save(&ckpt, &meta, &params, true).unwrap();
    ckpt
}

/// The error of resuming [`damaged_checkpoint`]'s run.
fn resume_error(dir: &std::path::Path, train: &MemSequences) -> String {
    let mut o = popts(dir, 4, FfnKind::Moe);
    o.resume = true;
    format!("{:#}", pretrain(&o, train, 1).unwrap_err())
}

#[test]
fn a_damaged_step_is_refused_on_resume() {
    // A checkpoint's step once set how many batches the resume replays: a
    // damaged one (2^40) hung `pretrain --resume`.
    let dir = tempfile::tempdir().unwrap();
    let train = data(24, 0);
    let ckpt = damaged_checkpoint(dir.path(), &train, |meta, _| meta.step = 1 << 40);
    let e = resume_error(dir.path(), &train);
    assert!(
        e.contains(&ckpt.display().to_string())
            && e.contains("saved at step 1099511627776, past this run's 4 steps"),
        "{e}"
    );
}

#[test]
fn nan_weights_are_refused_for_training_naming_the_file() {
    // A NaN weight ended the first step in "training diverged (try a lower
    // --lr)": the run was blamed, not the file.
    let dir = tempfile::tempdir().unwrap();
    let train = data(24, 0);
    let damaged = "layers.0.attn_norm";
    let ckpt = damaged_checkpoint(dir.path(), &train, |_, params| {
        let p = params.iter_mut().find(|p| p.name == damaged);
        p.expect("a norm weight to damage").value[0] = f32::NAN;
    });
    let e = resume_error(dir.path(), &train);
    let want = format!("tensor {damaged} holds NaN or infinite weights");
    assert!(
        e.contains(&ckpt.display().to_string()) && e.contains(&want),
        "{e}"
    );
    let out = dir.path().join("ft");
    let f = fopts(&out, FfnKind::Moe, Some(ckpt.clone()));
    let e = format!("{:#}", finetune(&f, &train, &data(9, 1), 1).unwrap_err());
    assert!(
        e.contains(&ckpt.display().to_string()) && e.contains(&want),
        "{e}"
    );
}

#[test]
fn optimizer_state_of_another_step_is_refused_on_resume() {
    // The weights are saved, then the optimizer state: a run killed between
    // the two writes leaves weights of step 4 beside moments of step 2. The
    // resume continued from them (AdamW's bias correction and moments of
    // step 2 on the weights of step 4), neither run it claims to continue.
    let dir = tempfile::tempdir().unwrap();
    let train = data(24, 0);
    let optim = dir.path().join("model.optim.safetensors");
    let mut o = popts(dir.path(), 6, FfnKind::Moe);
    o.stop_after = Some(2);
    pretrain(&o, &train, 1).unwrap();
    let old = std::fs::read(&optim).unwrap();
    let mut o = popts(dir.path(), 6, FfnKind::Moe);
    o.resume = true;
    o.stop_after = Some(4);
    pretrain(&o, &train, 1).unwrap();
    std::fs::write(&optim, old).unwrap();
    let mut o = popts(dir.path(), 6, FfnKind::Moe);
    o.resume = true;
    let e = format!("{:#}", pretrain(&o, &train, 1).unwrap_err());
    assert!(
        e.contains(&optim.display().to_string()) && e.contains("step 2") && e.contains("step 4"),
        "{e}"
    );
}

#[test]
fn a_failed_optimizer_write_keeps_the_last_checkpoint_resumable() {
    // The optimizer state (twice the weights' size) is where a full disk
    // stops a save. The weights of step 4 were already in place beside the
    // moments of step 2: the resume refused the pair, and the run could only
    // start afresh. Now neither is placed until both are written.
    let dir = tempfile::tempdir().unwrap();
    let train = data(24, 0);
    let (run, whole) = (dir.path().join("run"), dir.path().join("whole"));
    pretrain(&popts(&whole, 6, FfnKind::Moe), &train, 1).unwrap();
    let mut o = popts(&run, 6, FfnKind::Moe);
    o.save_every = 2;
    o.stop_after = Some(2);
    pretrain(&o, &train, 1).unwrap();
    // The optimizer state's temporary file cannot be written (a folder
    // holds its name), as on a full disk.
    let blocker = run.join(format!("model.optim.safetensors.tmp{}", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    o.resume = true;
    o.stop_after = Some(4);
    let e = format!("{:#}", pretrain(&o, &train, 1).unwrap_err());
    assert!(e.contains("model.optim.safetensors"), "{e}");
    std::fs::remove_dir(&blocker).unwrap();
    let names: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
    // The checkpoint of step 2 resumes, to the uninterrupted run's weights.
    assert_eq!(
        traffic_moe::model::checkpoint::read_meta(&run.join("model.safetensors"))
            .unwrap()
            .step,
        2
    );
    o.stop_after = None;
    pretrain(&o, &train, 1).unwrap();
    for file in ["model.safetensors", "model.optim.safetensors"] {
        assert!(
            tensors(&run.join(file)) == tensors(&whole.join(file)),
            "{file} differs from the uninterrupted run's"
        );
    }
}
