//! Checkpoint save/load: round trips and every refusal, each naming the file.

use serde_json::json;
use std::path::Path;
use traffic_moe::model::checkpoint::{self, CheckpointError, CheckpointMeta, Expect};
use traffic_moe::train::optim::{AdamW, AdamWConfig, Param};
use traffic_moe::train::optim_state::{self, optimizer_path};

fn params() -> Vec<Param> {
    vec![
        Param::new(
            "tok_embed",
            vec![4, 2],
            (0..8).map(|i| i as f32 * 0.5).collect(),
            0,
        )
        .unwrap(),
        Param::new(
            "layers.0.w",
            vec![2, 3],
            vec![1.5, -2.0, 3.25, 0.0, -0.125, 7.0],
            1,
        )
        .unwrap(),
        Param::new("head.b", vec![3], vec![0.1, 0.2, 0.3], 2).unwrap(),
    ]
}

fn meta() -> CheckpointMeta {
    let mut m = CheckpointMeta::new(
        json!({"d_model": 2, "n_layers": 1, "moe": {"n_experts": 8, "top_k": 2}}),
        0xdead_beef_0123_4567,
        vec!["alpha".into(), "beta".into(), "gamma".into()],
        42,
    );
    m.extra.insert("kind".into(), "finetune".into());
    m
}

fn zeroed() -> Vec<Param> {
    let mut p = params();
    p.iter_mut().for_each(|p| p.value.fill(0.0));
    p
}

fn saved(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("run/model.safetensors");
    checkpoint::save(&path, &meta(), &params(), false).unwrap();
    path
}

#[test]
fn round_trip_restores_values_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let mut p = zeroed();
    let cfg = meta().model_config;
    let classes = meta().classes;
    let expect = Expect {
        model_config: Some(&cfg),
        vocab_hash: Some(0xdead_beef_0123_4567),
        classes: Some(&classes),
        ..Default::default()
    };
    let m = checkpoint::load_into(&path, &expect, &mut p).unwrap();
    assert_eq!(m, meta());
    assert_eq!(p, params());
    assert_eq!(checkpoint::read_meta(&path).unwrap(), meta());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "a model file is shareable");
    }
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let e = checkpoint::save(&path, &meta(), &params(), false).unwrap_err();
    assert!(matches!(e, CheckpointError::Exists { .. }));
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let mut m2 = meta();
    m2.step = 43;
    checkpoint::save(&path, &m2, &params(), true).unwrap();
    assert_eq!(checkpoint::read_meta(&path).unwrap().step, 43);
    // no temporary files left behind
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn refuses_vocab_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let expect = Expect {
        vocab_hash: Some(1),
        ..Default::default()
    };
    let e = checkpoint::load_into(&path, &expect, &mut zeroed()).unwrap_err();
    assert!(matches!(e, CheckpointError::VocabMismatch { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains("model.safetensors") && s.contains("deadbeef01234567"),
        "{s}"
    );
}

#[test]
fn refuses_config_mismatch_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let other = json!({"d_model": 2, "n_layers": 1, "moe": {"n_experts": 4, "top_k": 2}});
    let expect = Expect {
        model_config: Some(&other),
        ..Default::default()
    };
    let mut p = zeroed();
    let e = checkpoint::load_into(&path, &expect, &mut p).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("moe.n_experts: checkpoint 8, expected 4"), "{s}");
    // nothing was loaded
    assert_eq!(p, zeroed());
}

#[test]
fn refuses_class_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let classes = vec!["alpha".to_string(), "beta".to_string()];
    let expect = Expect {
        classes: Some(&classes),
        ..Default::default()
    };
    let e = checkpoint::load_into(&path, &expect, &mut zeroed()).unwrap_err();
    assert!(matches!(e, CheckpointError::ClassesMismatch { .. }), "{e}");
    // A pretrained model (no classes) where a classifier is expected: said so.
    let pretrained = dir.path().join("pt/model.safetensors");
    let mut m = meta();
    m.classes.clear();
    checkpoint::save(&pretrained, &m, &params(), false).unwrap();
    let e = checkpoint::load_into(&pretrained, &expect, &mut zeroed()).unwrap_err();
    assert!(matches!(e, CheckpointError::NotClassifier { .. }), "{e}");
    assert!(e.to_string().contains("not a classifier"), "{e}");
}

#[test]
fn refuses_missing_and_extra_tensors_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    // model with a new tensor the file lacks
    let mut more = zeroed();
    more.push(Param::new("head.w", vec![3, 2], vec![9.0; 6], 2).unwrap());
    let e = checkpoint::load_into(&path, &Expect::default(), &mut more).unwrap_err();
    assert!(e.to_string().contains("missing tensors head.w"), "{e}");
    let allow = Expect {
        allow_missing_prefixes: &["head."],
        ..Default::default()
    };
    checkpoint::load_into(&path, &allow, &mut more).unwrap();
    assert_eq!(more[3].value, vec![9.0; 6]); // untouched
    assert_eq!(more[1].value, params()[1].value);

    // model without a tensor the file has
    let mut fewer = zeroed();
    fewer.pop();
    let e = checkpoint::load_into(&path, &Expect::default(), &mut fewer).unwrap_err();
    assert!(e.to_string().contains("unexpected tensors head.b"), "{e}");
    let ignore = Expect {
        ignore_extra_prefixes: &["head."],
        ..Default::default()
    };
    checkpoint::load_into(&path, &ignore, &mut fewer).unwrap();
}

#[test]
fn refuses_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let mut p = zeroed();
    p[1] = Param::new("layers.0.w", vec![3, 2], vec![0.0; 6], 1).unwrap();
    let e = checkpoint::load_into(&path, &Expect::default(), &mut p).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("`layers.0.w` has shape [2, 3], the model expects [3, 2]"),
        "{s}"
    );
}

#[test]
fn refuses_other_format_versions_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.safetensors");
    let mut m = meta();
    m.format_version = 2;
    checkpoint::save(&path, &m, &params(), false).unwrap();
    let e = checkpoint::read(&path).unwrap_err();
    assert!(
        matches!(e, CheckpointError::FormatVersion { found: 2, .. }),
        "{e}"
    );

    let foreign = dir.path().join("foreign.safetensors");
    let t = [1.0f32, 2.0];
    checkpoint::write_tensors(&foreign, Default::default(), &[("x", &[2], &t)], false).unwrap();
    let e = checkpoint::read(&foreign).unwrap_err();
    assert!(
        e.to_string().contains("not a traffic-moe checkpoint"),
        "{e}"
    );

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x08\0\0\0\0\0\0\0{not json").unwrap();
    let e = checkpoint::read(&junk).unwrap_err();
    assert!(
        e.to_string()
            .contains("junk.safetensors: not a readable safetensors"),
        "{e}"
    );

    let e = checkpoint::read(&dir.path().join("absent.safetensors")).unwrap_err();
    assert!(e.to_string().contains("absent.safetensors"), "{e}");
}

#[test]
fn optimizer_state_round_trips_and_resumes_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = params();
    let mut opt = AdamW::new(AdamWConfig::default(), &a).with_layerwise_decay(1, 0.9);
    for (i, p) in a.iter_mut().enumerate() {
        p.grad
            .iter_mut()
            .enumerate()
            .for_each(|(j, g)| *g = (i + j) as f32 - 1.5);
    }
    opt.step(&mut a, 1e-2).unwrap();
    let model = dir.path().join("model.safetensors");
    let opath = optimizer_path(&model);
    assert_eq!(opath, dir.path().join("model.optim.safetensors"));
    #[cfg(unix)]
    {
        // Two models whose names differ in non-UTF-8 bytes keep two states.
        use std::os::unix::ffi::OsStrExt;
        let named = |n: &[u8]| optimizer_path(&dir.path().join(std::ffi::OsStr::from_bytes(n)));
        let (a, b) = (named(b"m\xfe.safetensors"), named(b"m\xff.safetensors"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            dir.path()
                .join(std::ffi::OsStr::from_bytes(b"m\xfe.optim.safetensors"))
        );
    }
    checkpoint::save(&model, &meta(), &a, false).unwrap();
    optim_state::save_optimizer(&opath, &opt, &a, false).unwrap();

    let mut b = zeroed();
    checkpoint::load_into(&model, &Expect::default(), &mut b).unwrap();
    let mut opt_b = optim_state::load_optimizer(&opath, &b).unwrap();
    assert_eq!(opt_b.step, 1);
    assert_eq!(opt_b.m, opt.m);
    assert_eq!(opt_b.v, opt.v);
    assert_eq!(opt_b.group_lr, opt.group_lr);
    // one more identical step from each: bit-identical parameters
    for (pa, pb) in a.iter_mut().zip(b.iter_mut()) {
        pb.grad.copy_from_slice(&pa.grad);
    }
    opt.step(&mut a, 1e-2).unwrap();
    opt_b.step(&mut b, 1e-2).unwrap();
    assert_eq!(a, b);

    // a model checkpoint is not optimizer state, and vice versa
    assert!(optim_state::load_optimizer(&model, &b).is_err());
    assert!(
        checkpoint::read(&opath)
            .unwrap_err()
            .to_string()
            .contains("optimizer")
    );
}

/// A tiny classifier saved with `config` as its metadata's model_config
/// (its tensors are those of the real config) and `seq_len` recorded.
fn classifier_with(dir: &Path, config: serde_json::Value, seq_len: &str) -> std::path::PathBuf {
    use traffic_moe::model::{FfnKind, Model, ModelConfig};
    let cfg = ModelConfig {
        name: "t".into(),
        ffn: FfnKind::Moe,
        d: 16,
        layers: 1,
        heads: 2,
        n_experts: 2,
        top_k: 1,
        shared_ff: 16,
        vocab: 10,
        max_seq: 8,
        rope_theta: 10000.0,
        aux_weight: 0.02,
        n_classes: 2,
    };
    let (_, p) = Model::new(cfg.clone(), 1).unwrap();
    let mut real = serde_json::to_value(&cfg).unwrap();
    for (k, v) in config.as_object().unwrap() {
        real[k] = v.clone();
    }
    let mut m = CheckpointMeta::new(real, 1, vec!["a".into(), "b".into()], 1);
    m.extra.insert("seq_len".into(), seq_len.into());
    let path = dir.join("clf.safetensors");
    checkpoint::save(&path, &m, &p, true).unwrap();
    path
}

#[test]
fn a_damaged_classifier_config_is_refused_before_allocating() {
    // A model_config with a huge size once made load_classifier build the
    // model (d = 2^32: 1.8 TB of weights) before looking at the tensors:
    // an abort instead of an error.
    let dir = tempfile::tempdir().unwrap();
    let p = classifier_with(dir.path(), json!({}), "8");
    checkpoint::load_classifier(&p).unwrap();
    let err = |config, seq_len| {
        let p = classifier_with(dir.path(), config, seq_len);
        let e = format!("{:#}", checkpoint::load_classifier(&p).unwrap_err());
        assert!(e.contains(&p.display().to_string()), "{e}");
        e
    };
    let e = err(json!({"d": 4_294_967_296u64}), "8");
    assert!(e.contains("d 4294967296 is above the limit 65536"), "{e}");
    // Within the limits but not what the tensors hold: refused from the header.
    let e = err(json!({"d": 64}), "8");
    assert!(e.contains("tok_embed") && e.contains("[10, 64]"), "{e}");
    // An invalid config names the file too.
    let e = err(json!({"heads": 3}), "8");
    assert!(e.contains("not divisible by heads=3"), "{e}");
    // Classifying pads a row of the recorded length per flow.
    let e = err(json!({}), "1099511627776");
    assert!(
        e.contains("extra.seq_len") && e.contains("is not a sequence length"),
        "{e}"
    );
}

/// Optimizer state a run cannot have made is refused on load, naming the
/// file and what is wrong: a beta of 1.5 or an eps of 0 was trained on
/// silently, a NaN or negative second moment or a huge multiplier until the
/// run "diverged (try a lower --lr)".
#[test]
fn optimizer_state_out_of_range_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = params();
    let good = AdamW::new(AdamWConfig::default(), &a);
    let path = dir.path().join("model.optim.safetensors");
    type Damage = fn(&mut AdamW);
    let cases: [(Damage, &str); 6] = [
        (|o| o.cfg.beta1 = 1.5, "metadata `adamw` is invalid"),
        (|o| o.cfg.eps = 0.0, "metadata `adamw` is invalid"),
        (|o| o.cfg.weight_decay = -5.0, "metadata `adamw` is invalid"),
        (|o| o.group_lr[0] = 2.0, "multiplier 2 is not in [0, 1]"),
        (|o| o.v[0][1] = -1.0, "holds -1: not a second moment"),
        (|o| o.m[0][0] = f32::NAN, "holds NaN: not a first moment"),
    ];
    for (damage, want) in cases {
        let mut opt = good.clone();
        damage(&mut opt);
        optim_state::save_optimizer(&path, &opt, &a, true).unwrap();
        let e = optim_state::load_optimizer(&path, &a)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.optim.safetensors") && e.contains(want),
            "{want}: {e}"
        );
    }
    optim_state::save_optimizer(&path, &good, &a, true).unwrap();
    optim_state::load_optimizer(&path, &a).unwrap();
}

/// A classifier whose class list is not one name per output of its head is
/// refused, naming the file and both counts: `classify` called it "not a
/// classifier checkpoint (no class list)".
#[test]
fn a_class_list_of_another_length_than_the_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = classifier_with(dir.path(), json!({}), "8");
    let (_, params, meta) = checkpoint::load_classifier(&p).unwrap();
    let q = dir.path().join("three.safetensors");
    // One name per output, each once: `classify --vocab` also took a list
    // that named one class twice.
    for (classes, says) in [
        (
            vec!["a"],
            "names 1 classes, but model_config.n_classes is 2",
        ),
        (
            vec!["a", "b", "c"],
            "names 3 classes, but model_config.n_classes is 2",
        ),
        (vec!["a", "a"], "names class \"a\" twice"),
    ] {
        let m = CheckpointMeta {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            ..meta.clone()
        };
        checkpoint::save(&q, &m, &params, true).unwrap();
        let e = format!(
            "{:#}",
            checkpoint::load_classifier(&q).map(|_| ()).unwrap_err()
        );
        assert!(e.contains("three.safetensors") && e.contains(says), "{e}");
    }
}

/// The same weights and metadata give the same bytes every time: the
/// header's metadata is written in key order, not a hash map's (whose order
/// changes with every map, and every process).
#[test]
fn the_same_checkpoint_is_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta();
    for k in ["seed", "steps", "lr", "batch", "warmup", "clip"] {
        m.extra.insert(k.into(), "1".into());
    }
    let first = dir.path().join("0.safetensors");
    checkpoint::save(&first, &m, &params(), false).unwrap();
    let bytes = std::fs::read(&first).unwrap();
    for i in 1..8 {
        let path = dir.path().join(format!("{i}.safetensors"));
        checkpoint::save(&path, &m, &params(), false).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes, "save {i} differs");
        assert_eq!(checkpoint::read_meta(&path).unwrap(), m);
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let text = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let keys: Vec<&String> = header["__metadata__"].as_object().unwrap().keys().collect();
    let at: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    let mut sorted_at = at.clone();
    sorted_at.sort();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    assert_eq!(keys, sorted_keys);
    assert_eq!(at, sorted_at, "metadata keys written in key order");
}

/// A loaded classifier is the saved one, every value bit for bit, whatever
/// the model it was loaded into started as (zeros now, no random draws:
/// `Model::zeroed` has `Model::new`'s names, shapes and groups).
#[test]
fn a_loaded_classifier_is_the_saved_one_bit_for_bit() {
    use traffic_moe::model::Model;
    let dir = tempfile::tempdir().unwrap();
    let p = classifier_with(dir.path(), json!({}), "8");
    let (saved_meta, saved) = checkpoint::read(&p).map(|c| (c.meta, c.tensors)).unwrap();
    let (model, params, meta) = checkpoint::load_classifier(&p).unwrap();
    assert_eq!(meta.classes, saved_meta.classes);
    assert_eq!(params.len(), saved.len());
    for q in &params {
        let want = &saved[&q.name].data;
        let same = q.value.len() == want.len()
            && q.value
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{} differs from the file", q.name);
    }
    let (_, fresh) = Model::new(model.cfg.clone(), 3).unwrap();
    let (_, zeros) = Model::zeroed(model.cfg.clone()).unwrap();
    for (a, b) in fresh.iter().zip(&zeros) {
        assert_eq!((&a.name, &a.shape, a.group), (&b.name, &b.shape, b.group));
        assert!(b.value.iter().all(|&x| x == 0.0), "{}", b.name);
    }
    assert_eq!(fresh.len(), zeros.len());
}
