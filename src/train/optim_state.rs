//! The optimizer state beside a model checkpoint, for resuming:
//! `<stem>.optim.safetensors` with tensors `m.<name>` / `v.<name>`, the step,
//! hyper-parameters and lr group multipliers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::model::checkpoint::{
    CheckpointError, FORMAT, FORMAT_VERSION, Result, Staged, check_format, read_tensors,
    stage_tensors,
};
use crate::train::optim::{AdamW, AdamWConfig, Param};

/// Where the optimizer state of `model_path` goes: `run/model.safetensors` ->
/// `run/model.optim.safetensors`.
pub fn optimizer_path(model_path: &Path) -> PathBuf {
    // As an OsString: a lossy stem gave two non-UTF-8 model names one file.
    let mut name = model_path
        .file_stem()
        .unwrap_or(std::ffi::OsStr::new("model"))
        .to_os_string();
    name.push(".optim.safetensors");
    model_path.with_file_name(name)
}

/// Saves AdamW moments (`m.<name>`, `v.<name>`), step, hyper-parameters and
/// group multipliers for resuming.
pub fn save_optimizer(path: &Path, opt: &AdamW, params: &[Param], force: bool) -> Result<()> {
    stage_optimizer(path, opt, params, force)?.place(force)
}

/// [`save_optimizer`], staged: written whole under a temporary name, placed
/// later (with the weights of its step).
pub fn stage_optimizer(path: &Path, opt: &AdamW, params: &[Param], force: bool) -> Result<Staged> {
    opt.check(params).map_err(|e| CheckpointError::Metadata {
        path: path.to_path_buf(),
        key: "optimizer".into(),
        detail: e.to_string(),
    })?;
    let mut meta = HashMap::new();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("kind".into(), "optimizer".into());
    meta.insert("format_version".into(), FORMAT_VERSION.to_string());
    meta.insert("adam_step".into(), opt.step.to_string());
    meta.insert(
        "adamw".into(),
        serde_json::to_string(&opt.cfg).expect("config serialises"),
    );
    meta.insert(
        "group_lr".into(),
        serde_json::to_string(&opt.group_lr).expect("floats serialise"),
    );
    let names: Vec<(String, String)> = params
        .iter()
        .map(|p| (format!("m.{}", p.name), format!("v.{}", p.name)))
        .collect();
    let mut tensors = Vec::with_capacity(2 * params.len());
    for (i, p) in params.iter().enumerate() {
        tensors.push((names[i].0.as_str(), p.shape.as_slice(), opt.m[i].as_slice()));
        tensors.push((names[i].1.as_str(), p.shape.as_slice(), opt.v[i].as_slice()));
    }
    stage_tensors(path, meta, &tensors, force)
}

/// Loads the optimizer state saved by [`save_optimizer`] for exactly `params`.
pub fn load_optimizer(path: &Path, params: &[Param]) -> Result<AdamW> {
    let (metadata, mut tensors) = read_tensors(path)?;
    check_format(path, &metadata, "optimizer")?;
    let bad = |key: &str, detail: String| CheckpointError::Metadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        detail,
    };
    let get = |key: &str| metadata.get(key).ok_or_else(|| bad(key, "missing".into()));
    let version: u32 = get("format_version")?
        .parse()
        .map_err(|e| bad("format_version", format!("{e}")))?;
    if version != FORMAT_VERSION {
        return Err(CheckpointError::FormatVersion {
            path: path.to_path_buf(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let step: u32 = get("adam_step")?
        .parse()
        .map_err(|e| bad("adam_step", format!("{e}")))?;
    let cfg: AdamWConfig =
        serde_json::from_str(get("adamw")?).map_err(|e| bad("adamw", e.to_string()))?;
    let group_lr: Vec<f32> =
        serde_json::from_str(get("group_lr")?).map_err(|e| bad("group_lr", e.to_string()))?;
    // A damaged setting or moment was trained on as saved: silently (a
    // beta of 1.5, an eps of 0), or until the run "diverged" with the
    // blame on --lr (a NaN or negative second moment, a huge multiplier).
    let setting_ok = |x: f32, lo: f32, hi: f32| x.is_finite() && x >= lo && x < hi;
    if !(setting_ok(cfg.beta1, 0.0, 1.0)
        && setting_ok(cfg.beta2, 0.0, 1.0)
        && setting_ok(cfg.eps, f32::MIN_POSITIVE, f32::INFINITY)
        && setting_ok(cfg.weight_decay, 0.0, f32::INFINITY))
    {
        return Err(bad(
            "adamw",
            format!("{cfg:?}: betas must be in [0, 1), eps above 0, weight_decay 0 or more"),
        ));
    }
    if let Some(x) = group_lr.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(bad("group_lr", format!("multiplier {x} is not in [0, 1]")));
    }
    let mut take = |name: String, p: &Param| -> Result<Vec<f32>> {
        let t = tensors
            .remove(&name)
            .ok_or_else(|| CheckpointError::MissingTensors {
                path: path.to_path_buf(),
                names: vec![name.clone()],
            })?;
        if t.shape != p.shape {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                name,
                found: t.shape,
                expected: p.shape.clone(),
            });
        }
        let second = name.starts_with("v.");
        if let Some(&value) = t
            .data
            .iter()
            .find(|x| !x.is_finite() || (second && **x < 0.0))
        {
            let why = if second {
                "not a second moment (finite, 0 or more)"
            } else {
                "not a first moment (finite)"
            };
            return Err(CheckpointError::Value {
                path: path.to_path_buf(),
                name,
                value,
                why: why.into(),
            });
        }
        Ok(t.data)
    };
    let mut opt = AdamW {
        cfg,
        step,
        m: Vec::with_capacity(params.len()),
        v: Vec::with_capacity(params.len()),
        group_lr,
    };
    for p in params {
        opt.m.push(take(format!("m.{}", p.name), p)?);
        opt.v.push(take(format!("v.{}", p.name), p)?);
    }
    if !tensors.is_empty() {
        return Err(CheckpointError::ExtraTensors {
            path: path.to_path_buf(),
            names: tensors.into_keys().collect(),
        });
    }
    opt.check(params)
        .map_err(|e| bad("group_lr", e.to_string()))?;
    Ok(opt)
}
