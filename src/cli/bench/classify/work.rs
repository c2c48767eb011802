//! The bench's work folder (what a run may make, reuse or remove) and
//! what it puts there: synthesised captures, a dataset, random checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::{ClassifyArgs, Input};

use crate::engine::Device;
use crate::model::checkpoint::{self, CheckpointMeta};
use crate::model::{FfnKind, Model, ModelConfig};
use crate::traffic::capture::reader::find_captures;
use crate::traffic::capture::synth::{SynthConfig, synthesize_with_progress};
use crate::traffic::dataset::build::{DatasetConfig, build_dataset_with, load_dataset_info};
use crate::traffic::tokens::tokenize::TokenizerConfig;

/// What a run writes in its work folder besides its mark, and replaces
/// when it is there: the synthesised captures, the dataset and the
/// checkpoints of `config`.
pub(super) fn work_entries(config: &str) -> Vec<String> {
    let mut names: Vec<String> = ["one-flow", "synth-flows", "data"].map(String::from).into();
    for ffn in [FfnKind::Moe, FfnKind::Dense] {
        names.push(checkpoint_name(config, ffn));
    }
    names
}

pub(super) fn checkpoint_name(config: &str, ffn: FfnKind) -> String {
    format!("{config}-{ffn:?}.safetensors").to_lowercase()
}

/// Marks a --work folder as this command's scratch, which a later run may
/// replace (its `entries`, the names it writes); refuses a folder with
/// other contents (the user's) unless forced, and even forced one where an
/// entry is there already: it is the user's, not an earlier run's.
pub(super) fn claim_work(work: &Path, force: bool, entries: &[String]) -> anyhow::Result<()> {
    // A file there was found out at the folder's creation, as "creating
    // notes.txt: File exists", naming neither the option nor what is wrong.
    anyhow::ensure!(
        !work.exists() || work.is_dir(),
        "--work {} exists and is not a folder: --work takes a folder (created if missing)",
        work.display()
    );
    let mark = work.join(".tmoe-bench-classify");
    let used = std::fs::read_dir(work).is_ok_and(|mut d| d.next().is_some());
    let ours = mark.exists();
    anyhow::ensure!(
        force || !used || ours,
        "--work {}: not empty, and not a folder an earlier `bench classify` made (a run \
         replaces the captures, dataset and checkpoints it keeps there): choose another \
         --work, or pass --force",
        work.display()
    );
    if !ours {
        let in_the_way: Vec<&str> = entries
            .iter()
            .filter(|e| std::fs::symlink_metadata(work.join(e)).is_ok())
            .map(String::as_str)
            .collect();
        anyhow::ensure!(
            in_the_way.is_empty(),
            "--work {}: holds {}, which this run would replace (it writes {} there), and it is \
             not from an earlier `bench classify`: choose another --work",
            work.display(),
            in_the_way.join(", "),
            entries.join(", ")
        );
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::write(
        &mark,
        "scratch of tmoe bench classify: a later run replaces its contents\n",
    )
    .with_context(|| format!("writing {}", mark.display()))
}

pub(super) fn prepare_inputs(
    a: &ClassifyArgs,
    work: &Path,
    one_flow: usize,
    many: usize,
) -> anyhow::Result<Vec<Input>> {
    let mut real = a.captures.clone();
    let iot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/iot-sentinel");
    if real.is_empty() && a.device != Device::Sim && iot.is_dir() {
        real.push(iot);
    }
    let mut inputs = Vec::new();
    for dir in real {
        let files = find_captures(&dir).with_context(|| format!("listing {}", dir.display()))?;
        anyhow::ensure!(!files.is_empty(), "{}: no captures", dir.display());
        let name = dir
            .file_name()
            .map_or("captures".into(), |n| n.to_string_lossy().into_owned());
        inputs.push(Input { name, files });
    }
    let mut synth = |name: &str, flows: usize, per_file: usize| -> anyhow::Result<()> {
        let out = work.join(name);
        let t = Instant::now();
        let s = synthesize_with_progress(
            &SynthConfig {
                out: out.clone(),
                flows_per_class: flows
                    .div_ceil(crate::traffic::capture::synth::CLASSES.len())
                    .max(1),
                flows_per_file: per_file,
                seed: 7,
                force: true,
            },
            true,
        )?;
        eprintln!(
            "synthesised {} flows in {} files under {} ({:.1} s)",
            s.flows,
            s.files,
            out.display(),
            t.elapsed().as_secs_f64()
        );
        inputs.push(Input {
            name: format!("{name} ({} flows)", s.flows),
            files: find_captures(&out)?,
        });
        Ok(())
    };
    synth("one-flow", one_flow, 1)?;
    if many > 0 {
        synth(
            "synth-flows",
            many,
            crate::traffic::capture::synth::FLOWS_PER_FILE,
        )?;
    }
    Ok(inputs)
}

/// A dataset (vocabulary and tokenizer settings) learnt on `captures`, in
/// `data` (the work folder's: an earlier run's dataset files there are
/// replaced, nothing else in it is removed).
pub(super) fn build_vocab(captures: &Path, data: &Path, seq: usize) -> anyhow::Result<()> {
    let cfg = DatasetConfig {
        inputs: vec![captures.to_path_buf()],
        vocab_size: 2048,
        tokenizer: TokenizerConfig {
            seq_len: seq,
            ..TokenizerConfig::default()
        },
        min_packets: 1,
        ..DatasetConfig::default()
    };
    build_dataset_with(&cfg, data, false, true)?;
    Ok(())
}

/// A randomly initialised classifier of `config` for the dataset's
/// vocabulary and classes, saved where `Classifier::open` can load it.
pub(super) fn random_classifier(
    config: &str,
    ffn: FfnKind,
    data: &Path,
    seq: usize,
    work: &Path,
) -> anyhow::Result<PathBuf> {
    let info = load_dataset_info(data)?;
    let mut cfg = ModelConfig::named(config)?.with_ffn(ffn);
    cfg.vocab = info.vocab_size;
    cfg.n_classes = info.classes.len();
    cfg.max_seq = cfg.max_seq.max(seq);
    let (_, params) = Model::new(cfg.clone(), 1)?;
    let mut meta = CheckpointMeta::new(
        serde_json::to_value(&cfg)?,
        info.vocab_hash,
        info.classes.clone(),
        0,
    );
    meta.extra.insert("seq_len".into(), seq.to_string());
    let path = work.join(checkpoint_name(config, ffn));
    checkpoint::save(&path, &meta, &params, true)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::{claim_work, work_entries};

    #[test]
    fn a_work_folder_with_the_users_files_is_refused_unless_forced() {
        let entries = work_entries("tiny");
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        claim_work(&fresh, false, &entries).unwrap();
        // Its own scratch, from an earlier run: reused.
        std::fs::write(fresh.join("data.bin"), "x").unwrap();
        std::fs::create_dir(fresh.join("data")).unwrap();
        claim_work(&fresh, false, &entries).unwrap();
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "mine").unwrap();
        let e = claim_work(&mine, false, &entries).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(!mine.join(".tmoe-bench-classify").exists());
        claim_work(&mine, true, &entries).unwrap();
    }

    /// Forced into a folder of the user's, a run that would replace
    /// something there (a dataset in data/, a checkpoint of its name) is
    /// refused, naming it, and marks nothing.
    #[test]
    fn a_forced_work_folder_that_holds_what_a_run_writes_is_refused() {
        let entries = work_entries("tiny");
        assert!(entries.contains(&"tiny-moe.safetensors".to_string()));
        for name in ["data", "tiny-moe.safetensors", "one-flow"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(name), "mine").unwrap();
            let e = claim_work(dir.path(), true, &entries).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(&format!("holds {name},")), "{e}");
            assert!(
                e.contains("choose another --work") && !e.contains("--force"),
                "{e}"
            );
            assert!(!dir.path().join(".tmoe-bench-classify").exists());
        }
    }
}
