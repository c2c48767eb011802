//! Checkpoints as safetensors files (f32 tensors by name) that PyTorch users can
//! read, with the metadata needed to refuse a wrong pairing at load time: format
//! version, code version, model config (JSON), vocabulary hash, class names and
//! training step. Optimizer state for resuming lives in a separate file beside
//! the model (`train::optim_state`) so the model file stays small and
//! shareable.
//!
//! Files are written to a temporary name and moved into place, and never replace
//! an existing file unless the caller passes `force`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde_json::Value;
use thiserror::Error;

use crate::engine::Param;
use crate::model::{Model, ModelConfig};

/// `format` metadata value: marks files written by this crate.
pub const FORMAT: &str = "traffic-moe";
/// Bumped whenever tensor names or metadata change incompatibly.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        /// In the message, not `source()`: printed once in an error chain.
        cause: std::io::Error,
    },
    #[error(
        "{path}: is a folder; expected a checkpoint file (a run folder holds classifier.safetensors after finetune, model.safetensors after pretrain)"
    )]
    NotAFile { path: PathBuf },
    #[error(
        "{path}: not a regular file (a device, pipe or socket); expected a checkpoint file (.safetensors)"
    )]
    NotRegular { path: PathBuf },
    #[error("{path}: could not write: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error("refusing to overwrite {path}: it already exists (pass force / --force to replace it)")]
    Exists { path: PathBuf },
    #[error("{path}: not a readable safetensors file: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: not a traffic-moe checkpoint ({detail})")]
    NotOurs { path: PathBuf, detail: String },
    #[error(
        "{path}: checkpoint format version {found}, this build reads version {expected}; re-create it with a matching tmoe"
    )]
    FormatVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: metadata `{key}` is invalid: {detail}")]
    Metadata {
        path: PathBuf,
        key: String,
        detail: String,
    },
    #[error(
        "{path}: vocabulary hash {found:016x} differs from the data's {expected:016x}: the checkpoint was trained with another vocab.txt"
    )]
    VocabMismatch {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path}: model config differs from the expected one: {diff}")]
    ConfigMismatch { path: PathBuf, diff: String },
    #[error(
        "{path}: not a classifier checkpoint (no class list: a pretrained model? `tmoe finetune --init` makes a classifier of it)"
    )]
    NotClassifier { path: PathBuf },
    #[error(
        "{path}: class list {} differs from the expected {}",
        .found.join(", "),
        .expected.join(", ")
    )]
    ClassesMismatch {
        path: PathBuf,
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("{path}: missing tensors {}", .names.join(", "))]
    MissingTensors { path: PathBuf, names: Vec<String> },
    #[error(
        "{path}: unexpected tensors {} (the model has no such parameters)",
        .names.join(", ")
    )]
    ExtraTensors { path: PathBuf, names: Vec<String> },
    #[error("{path}: tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` holds {value}: {why}")]
    Value {
        path: PathBuf,
        name: String,
        value: f32,
        why: String,
    },
    #[error("{path}: tensor `{name}` is {dtype:?}; only F32 is read")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: Dtype,
    },
}

pub type Result<T> = std::result::Result<T, CheckpointError>;

/// What a model checkpoint says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub format_version: u32,
    /// crate version that wrote the file (informational, not checked).
    pub code_version: String,
    /// The model's config as JSON (the `model` module's config type, serialised).
    pub model_config: Value,
    /// `FlowTokenizer::hash()` / `Shard::vocab_hash()` of the training vocabulary.
    pub vocab_hash: u64,
    /// Class names by id (empty for a pretrained language model).
    pub classes: Vec<String>,
    /// Optimizer steps taken when saved.
    pub step: u64,
    /// Free-form extras (e.g. `kind` = `pretrain` / `finetune`, validation score).
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMeta {
    pub fn new(model_config: Value, vocab_hash: u64, classes: Vec<String>, step: u64) -> Self {
        CheckpointMeta {
            format_version: FORMAT_VERSION,
            code_version: env!("CARGO_PKG_VERSION").to_string(),
            model_config,
            vocab_hash,
            classes,
            step,
            extra: BTreeMap::new(),
        }
    }

    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("format_version".into(), self.format_version.to_string());
        m.insert("code_version".into(), self.code_version.clone());
        m.insert("model_config".into(), self.model_config.to_string());
        // Hex string: JSON readers (Python included) lose precision on u64 numbers.
        m.insert("vocab_hash".into(), format!("{:016x}", self.vocab_hash));
        m.insert(
            "classes".into(),
            serde_json::to_string(&self.classes).expect("strings serialise"),
        );
        m.insert("step".into(), self.step.to_string());
        for (k, v) in &self.extra {
            m.insert(format!("extra.{k}"), v.clone());
        }
        m
    }

    fn from_map(path: &Path, m: &HashMap<String, String>) -> Result<Self> {
        let bad = |key: &str, detail: String| CheckpointError::Metadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            detail,
        };
        let get = |key: &str| {
            m.get(key)
                .ok_or_else(|| bad(key, "missing".to_string()))
                .map(String::as_str)
        };
        let format_version: u32 = get("format_version")?
            .parse()
            .map_err(|e| bad("format_version", format!("{e}")))?;
        if format_version != FORMAT_VERSION {
            return Err(CheckpointError::FormatVersion {
                path: path.to_path_buf(),
                found: format_version,
                expected: FORMAT_VERSION,
            });
        }
        let model_config = serde_json::from_str(get("model_config")?)
            .map_err(|e| bad("model_config", format!("not JSON: {e}")))?;
        let vocab_hash = u64::from_str_radix(get("vocab_hash")?, 16)
            .map_err(|e| bad("vocab_hash", format!("not a hex u64: {e}")))?;
        let classes = serde_json::from_str(get("classes")?)
            .map_err(|e| bad("classes", format!("not a JSON list of strings: {e}")))?;
        let step = get("step")?
            .parse()
            .map_err(|e| bad("step", format!("{e}")))?;
        let extra = m
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("extra.")?.to_string(), v.clone())))
            .collect();
        Ok(CheckpointMeta {
            format_version,
            code_version: m.get("code_version").cloned().unwrap_or_default(),
            model_config,
            vocab_hash,
            classes,
            step,
            extra,
        })
    }
}

/// One tensor read from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A whole checkpoint file read into memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    pub tensors: BTreeMap<String, Tensor>,
}

/// What the loader must find; `None` skips a check.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    pub model_config: Option<&'a Value>,
    pub vocab_hash: Option<u64>,
    pub classes: Option<&'a [String]>,
    /// Parameters whose name starts with one of these may be absent from the file
    /// (e.g. a fresh classifier head when loading a pretrained backbone).
    pub allow_missing_prefixes: &'a [&'a str],
    /// File tensors whose name starts with one of these are skipped if the model
    /// has no such parameter (e.g. the LM head when fine-tuning).
    pub ignore_extra_prefixes: &'a [&'a str],
}

/// f32 slice as a safetensors view (little-endian on disk).
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Rewrites the `__metadata__` of a safetensors file just written in key
/// order: the crate writes it in its `HashMap`'s order, which changes from
/// one process to the next, so the same weights gave files of other bytes.
/// The entries are the same, so the header keeps its length.
fn sort_header_metadata(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const KEY: &[u8] = b"{\"__metadata__\":";
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| e.to_string())?;
    let n = usize::try_from(u64::from_le_bytes(len)).map_err(|e| e.to_string())?;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).map_err(|e| e.to_string())?;
    let Some(rest) = header.strip_prefix(KEY) else {
        return Ok(()); // no metadata
    };
    let mut it = serde_json::Deserializer::from_slice(rest).into_iter::<BTreeMap<String, String>>();
    let sorted = match it.next() {
        Some(Ok(m)) => serde_json::to_vec(&m).map_err(|e| e.to_string())?,
        _ => return Err("safetensors header without readable metadata".into()),
    };
    if sorted.len() != it.byte_offset() {
        return Err("safetensors metadata changed length when sorted".into());
    }
    f.seek(SeekFrom::Start((8 + KEY.len()) as u64))
        .and_then(|_| f.write_all(&sorted))
        .map_err(|e| e.to_string())
}

/// Writes named f32 tensors plus metadata; refuses an existing `path` unless `force`.
pub fn write_tensors(
    path: &Path,
    metadata: HashMap<String, String>,
    tensors: &[(&str, &[usize], &[f32])],
    force: bool,
) -> Result<()> {
    stage_tensors(path, metadata, tensors, force)?.place(force)
}

/// A file written whole under a temporary name beside `path` (and synced to
/// the disk), not yet in place: [`Staged::place`] renames it; dropped
/// unplaced, it is removed. Files that must change together (the weights
/// and the optimizer state of one step) are all staged before any is
/// placed, so that a full disk or an error while writing one leaves the
/// earlier ones as they were.
#[must_use = "a staged file is removed unless placed"]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    placed: bool,
}

impl Staged {
    /// Moves the file to its real name: replacing what is there with
    /// `force`, else refusing an existing file (a hard link fails if the
    /// target appeared meanwhile: no silent overwrite).
    pub fn place(mut self, force: bool) -> Result<()> {
        let placed = if force {
            std::fs::rename(&self.tmp, &self.path)
        } else {
            std::fs::hard_link(&self.tmp, &self.path).and_then(|()| std::fs::remove_file(&self.tmp))
        };
        self.placed = placed.is_ok();
        placed.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CheckpointError::Exists {
                    path: self.path.clone(),
                }
            } else {
                CheckpointError::Io {
                    path: self.path.clone(),
                    cause: e,
                }
            }
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes named f32 tensors plus metadata to a temporary file beside `path`
/// (see [`Staged`]); refuses an existing `path` unless `force`.
pub fn stage_tensors(
    path: &Path,
    metadata: HashMap<String, String>,
    tensors: &[(&str, &[usize], &[f32])],
    force: bool,
) -> Result<Staged> {
    let io = |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    };
    if !force && path.exists() {
        return Err(CheckpointError::Exists {
            path: path.to_path_buf(),
        });
    }
    for (name, shape, data) in tensors {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                name: name.to_string(),
                found: vec![data.len()],
                expected: shape.to_vec(),
            });
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let views = tensors
        .iter()
        .map(|(name, shape, data)| (*name, F32View { shape, data }));
    let staged = Staged {
        tmp: crate::atomic_file::tmp_beside(path),
        path: path.to_path_buf(),
        placed: false,
    };
    let tmp = &staged.tmp;
    safetensors::serialize_to_file(views, Some(metadata), tmp)
        .map_err(|e| e.to_string())
        .and_then(|()| sort_header_metadata(tmp))
        // On the disk before the rename: after a crash (power loss, a
        // reboot) the rename could otherwise expose an empty file in place
        // of the earlier checkpoint.
        .and_then(|()| {
            File::open(tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| e.to_string())
        })
        .map_err(|detail| CheckpointError::Write {
            path: path.to_path_buf(),
            detail,
        })?;
    // safetensors writes through a private (0600) temporary file; a model file
    // is meant to be shared, so give it the usual 0644.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    Ok(staged)
}

/// Saves model parameters (values only) with `meta`.
pub fn save(path: &Path, meta: &CheckpointMeta, params: &[Param], force: bool) -> Result<()> {
    stage(path, meta, params, force)?.place(force)
}

/// [`save`], staged: written whole under a temporary name, placed later.
pub fn stage(path: &Path, meta: &CheckpointMeta, params: &[Param], force: bool) -> Result<Staged> {
    let tensors: Vec<_> = params
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice(), p.value.as_slice()))
        .collect();
    stage_tensors(path, meta.to_map(), &tensors, force)
}

/// Maps a checkpoint read-only. Safety of the map: checkpoints are written
/// whole to a temporary name and renamed, so a file is not expected to change
/// while it is read.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    };
    match std::fs::metadata(path) {
        // Mapping a folder fails with "No such device", which names neither.
        Ok(m) if m.is_dir() => {
            return Err(CheckpointError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        // So does mapping /dev/null, and opening a pipe waits for a writer
        // for ever: only a plain file is opened.
        Ok(m) if !m.is_file() => {
            return Err(CheckpointError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        _ => {}
    }
    let file = File::open(path).map_err(io)?;
    // SAFETY: read-only map of a file not modified in place (see above).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// Reads every tensor and the raw metadata; checks only that it is a
/// safetensors file of f32 tensors.
pub fn read_tensors(path: &Path) -> Result<(HashMap<String, String>, BTreeMap<String, Tensor>)> {
    let map = map_file(path)?;
    let parse = |detail: String| CheckpointError::Parse {
        path: path.to_path_buf(),
        detail,
    };
    let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| parse(e.to_string()))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| parse(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::Dtype {
                path: path.to_path_buf(),
                name,
                dtype: view.dtype(),
            });
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((metadata, tensors))
}

pub(crate) fn check_format(path: &Path, m: &HashMap<String, String>, kind: &str) -> Result<()> {
    match m.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(CheckpointError::NotOurs {
                path: path.to_path_buf(),
                detail: format!("metadata format is `{f}`, expected `{FORMAT}`"),
            });
        }
        None => {
            return Err(CheckpointError::NotOurs {
                path: path.to_path_buf(),
                detail: "no `format` metadata".to_string(),
            });
        }
    }
    let found = m.get("kind").map(String::as_str).unwrap_or("model");
    if found != kind {
        return Err(CheckpointError::NotOurs {
            path: path.to_path_buf(),
            detail: format!("it holds {found} state, expected {kind} state"),
        });
    }
    Ok(())
}

/// Reads a model checkpoint, checking format and format version only.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let (metadata, tensors) = read_tensors(path)?;
    check_format(path, &metadata, "model")?;
    let meta = CheckpointMeta::from_map(path, &metadata)?;
    Ok(Checkpoint {
        path: path.to_path_buf(),
        meta,
        tensors,
    })
}

/// Checks that a model of `cfg` has the parameters the file at `path`
/// holds (names and shapes, within `expect`'s prefixes) from the header
/// alone: a config read from a file is believed only once its tensors
/// bear it out, so a damaged size allocates nothing (a model is as big as
/// its config says, the file's tensors as big as the file).
pub fn check_layout(path: &Path, cfg: &ModelConfig, expect: &Expect) -> anyhow::Result<()> {
    let want = Model::param_shapes(cfg).map_err(|e| CheckpointError::Metadata {
        path: path.to_path_buf(),
        key: "model_config".into(),
        detail: format!("{e:#}"),
    })?;
    let map = map_file(path)?;
    let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| CheckpointError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let found = header.tensors();
    let missing: Vec<String> = want
        .iter()
        .filter(|(name, _)| !found.contains_key(name))
        .filter(|(name, _)| {
            !expect
                .allow_missing_prefixes
                .iter()
                .any(|x| name.starts_with(x))
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(CheckpointError::MissingTensors {
            path: path.to_path_buf(),
            names: missing,
        }
        .into());
    }
    for (name, shape) in &want {
        if let Some(t) = found.get(name)
            && &t.shape != shape
        {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                name: name.clone(),
                found: t.shape.clone(),
                expected: shape.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// Reads only the metadata (fast: the tensors are not copied), e.g. to build
/// the model from its config before [`load_into`].
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let map = map_file(path)?;
    let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| CheckpointError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    check_format(path, &metadata, "model")?;
    CheckpointMeta::from_map(path, &metadata)
}

/// Checks `meta` against `expect` (vocabulary, config, classes).
pub fn check_meta(path: &Path, meta: &CheckpointMeta, expect: &Expect) -> Result<()> {
    if let Some(h) = expect.vocab_hash
        && h != meta.vocab_hash
    {
        return Err(CheckpointError::VocabMismatch {
            path: path.to_path_buf(),
            found: meta.vocab_hash,
            expected: h,
        });
    }
    if let Some(cfg) = expect.model_config
        && cfg != &meta.model_config
    {
        let mut diffs = Vec::new();
        json_diff("", &meta.model_config, cfg, &mut diffs);
        return Err(CheckpointError::ConfigMismatch {
            path: path.to_path_buf(),
            diff: diffs.join("; "),
        });
    }
    if let Some(classes) = expect.classes
        && !classes.is_empty()
        && meta.classes.is_empty()
    {
        return Err(CheckpointError::NotClassifier {
            path: path.to_path_buf(),
        });
    }
    if let Some(classes) = expect.classes
        && classes != meta.classes.as_slice()
    {
        return Err(CheckpointError::ClassesMismatch {
            path: path.to_path_buf(),
            found: meta.classes.clone(),
            expected: classes.to_vec(),
        });
    }
    Ok(())
}

/// Human-readable differences between two JSON values ("key: checkpoint X, expected Y").
fn json_diff(at: &str, found: &Value, want: &Value, out: &mut Vec<String>) {
    match (found, want) {
        (Value::Object(f), Value::Object(w)) => {
            let keys: BTreeSet<&String> = f.keys().chain(w.keys()).collect();
            for k in keys {
                let sub = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (f.get(k), w.get(k)) {
                    (Some(a), Some(b)) => json_diff(&sub, a, b, out),
                    (Some(a), None) => out.push(format!("{sub}: checkpoint {a}, expected absent")),
                    (None, Some(b)) => out.push(format!("{sub}: checkpoint absent, expected {b}")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => {
            let at = if at.is_empty() { "config" } else { at };
            out.push(format!("{at}: checkpoint {a}, expected {b}"));
        }
        _ => {}
    }
}

/// Training from `path`'s weights (`params`, loaded from it) makes sense
/// only if they are finite: a NaN weight ended the first step in "training
/// diverged (try a lower --lr)", which blamed the run, not the file.
pub fn ensure_finite_weights(path: &Path, params: &[Param]) -> anyhow::Result<()> {
    match params
        .iter()
        .find(|p| p.value.iter().any(|v| !v.is_finite()))
    {
        Some(p) => anyhow::bail!(
            "{}: tensor {} holds NaN or infinite weights; this checkpoint cannot be trained from",
            path.display(),
            p.name
        ),
        None => Ok(()),
    }
}

/// Loads a checkpoint into `params` (matched by name) after checking metadata,
/// the exact tensor set (see [`Expect`]'s prefixes) and every shape. Nothing is
/// written to `params` unless all checks pass.
pub fn load_into(path: &Path, expect: &Expect, params: &mut [Param]) -> Result<CheckpointMeta> {
    let ckpt = read(path)?;
    check_meta(path, &ckpt.meta, expect)?;
    let by_name: BTreeMap<&str, usize> = params
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let missing: Vec<String> = params
        .iter()
        .filter(|p| !ckpt.tensors.contains_key(&p.name))
        .filter(|p| {
            !expect
                .allow_missing_prefixes
                .iter()
                .any(|x| p.name.starts_with(x))
        })
        .map(|p| p.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(CheckpointError::MissingTensors {
            path: path.to_path_buf(),
            names: missing,
        });
    }
    let extra: Vec<String> = ckpt
        .tensors
        .keys()
        .filter(|n| !by_name.contains_key(n.as_str()))
        .filter(|n| {
            !expect
                .ignore_extra_prefixes
                .iter()
                .any(|x| n.starts_with(x))
        })
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(CheckpointError::ExtraTensors {
            path: path.to_path_buf(),
            names: extra,
        });
    }
    for p in params.iter() {
        if let Some(t) = ckpt.tensors.get(&p.name)
            && t.shape != p.shape
        {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                name: p.name.clone(),
                found: t.shape.clone(),
                expected: p.shape.clone(),
            });
        }
    }
    for p in params.iter_mut() {
        if let Some(t) = ckpt.tensors.get(&p.name) {
            p.value.copy_from_slice(&t.data);
        }
    }
    Ok(ckpt.meta)
}

/// The fine-tuning length the file records (`extra.seq_len`), if any, is
/// one a tokenizer makes: classifying pads a row of it per flow.
fn check_seq_len(path: &Path, meta: &CheckpointMeta) -> Result<()> {
    let max = crate::traffic::tokens::tokenize::MAX_SEQ_LEN;
    match meta.extra.get("seq_len").map(|s| s.parse::<usize>()) {
        None => Ok(()),
        Some(Ok(n)) if (2..=max).contains(&n) => Ok(()),
        Some(_) => Err(CheckpointError::Metadata {
            path: path.to_path_buf(),
            key: "extra.seq_len".into(),
            detail: format!(
                "{:?} is not a sequence length (2..={max})",
                meta.extra["seq_len"]
            ),
        }),
    }
}

/// Set in the metadata of the checkpoint a fine-tuning run saves at each
/// new best epoch, to "epoch E of N", and removed once the run finishes:
/// a checkpoint that still has it comes from a run that was stopped
/// (killed, or still going), holding its best epoch so far.
pub const UNFINISHED_KEY: &str = "unfinished";

/// Where a fine-tuning run was when it saved `meta` and did not finish
/// ([`UNFINISHED_KEY`]); None for a finished run and other checkpoints.
pub fn unfinished_run(meta: &CheckpointMeta) -> Option<&str> {
    meta.extra.get(UNFINISHED_KEY).map(String::as_str)
}

/// Removes [`UNFINISHED_KEY`] from the checkpoint at `path` (rewritten
/// whole, as it was otherwise): its fine-tuning run has finished.
pub fn mark_finished(path: &Path) -> Result<()> {
    let mut c = read(path)?;
    if c.meta.extra.remove(UNFINISHED_KEY).is_none() {
        return Ok(());
    }
    let views: Vec<(&str, &[usize], &[f32])> = c
        .tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.shape.as_slice(), t.data.as_slice()))
        .collect();
    write_tensors(path, c.meta.to_map(), &views, true)
}

/// Loads a fine-tuned classifier (its architecture from the metadata).
pub fn load_classifier(path: &Path) -> anyhow::Result<(Model, Vec<Param>, CheckpointMeta)> {
    let meta = read_meta(path)?;
    let cfg: ModelConfig = serde_json::from_value(meta.model_config.clone()).map_err(|e| {
        anyhow::anyhow!(
            "{}: model_config is not a traffic-moe config: {e}",
            path.display()
        )
    })?;
    // One name per output of the head: `classify` said a list of another
    // length was "no class list".
    if !meta.classes.is_empty() && meta.classes.len() != cfg.n_classes {
        return Err(CheckpointError::Metadata {
            path: path.to_path_buf(),
            key: "classes".into(),
            detail: format!(
                "names {} classes, but model_config.n_classes is {}",
                meta.classes.len(),
                cfg.n_classes
            ),
        }
        .into());
    }
    // Two outputs under one name: a verdict could not say which it was.
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = meta.classes.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(CheckpointError::Metadata {
            path: path.to_path_buf(),
            key: "classes".into(),
            detail: format!("names class {twice:?} twice"),
        }
        .into());
    }
    check_layout(path, &cfg, &Expect::default())?;
    check_seq_len(path, &meta)?;
    // Every tensor is required (`Expect::default()`): zeros, not random draws.
    let (model, mut params) = Model::zeroed(cfg)?;
    load_into(path, &Expect::default(), &mut params)?;
    Ok((model, params, meta))
}
