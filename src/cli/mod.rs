//! One file per `tmoe` subcommand: its clap arguments and its `run`.
//!
//! The doc comments on arguments here are clap's `--help` text, written for a
//! terminal (`[END]`, `<split>.tmoe`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

pub mod args;
pub mod baseline;
pub mod bench;
pub mod classify;
pub mod classify_stream;
pub mod demo;
pub mod dump_logits;
pub mod eval;
pub mod finetune;
pub mod flow_parts;
pub mod inspect;
pub mod interrupt;
pub mod model_info;
pub mod pretrain;
mod stdin_pump;
pub mod study;
pub mod synth;
pub mod tokenize;
pub mod vocab;

/// The warning `eval` and `classify` give for a checkpoint whose
/// fine-tuning run did not finish (killed, or still going): `at` is where
/// it was ("epoch 3 of 6"), the checkpoint its best epoch so far.
pub(crate) fn unfinished_warning(checkpoint: &std::path::Path, at: &str) -> String {
    format!(
        "warning: {} is from a fine-tuning run that did not finish (saved at {at}, its best \
         epoch so far); scoring it as it is",
        checkpoint.display()
    )
}

/// Advice on stderr about `--precision` on the CPU, never a refusal: a
/// warning when bf16 is likely slower than the default f32 here (no
/// AVX-512, or a `vdpbf16ps` rate, measured in about 40 ms, not well above
/// the f32 FMA's, so that bf16 runs on the portable kernel, widened onto
/// the FMA, or on a `vdpbf16ps` that barely pays), and a note when f32
/// leaves AMX tiles unused (bf16 on them ran
/// the small model's inference 3-4x faster than f32 on the Xeon of
/// 2026-12-04).
pub(crate) fn advise_cpu_precision(
    device: crate::engine::Device,
    precision: crate::engine::Precision,
) {
    use crate::engine::Precision;
    if device != crate::engine::Device::Cpu {
        return;
    }
    match precision {
        Precision::Bf16 => {
            if let Some(why) = crate::backend::cpu_bf16::peak::bf16_slower_here() {
                eprintln!("warning: --precision bf16: {why}");
            }
        }
        Precision::F32 => {
            if crate::backend::cpu_bf16::Kernel::AmxBf16.available() {
                eprintln!(
                    "note: this CPU has AMX tiles: --precision bf16 runs the products on them \
                     (bf16 operands, f32 sums): inference several times faster than f32, \
                     training at the small config's shapes and up faster too"
                );
            }
        }
    }
}

/// Refuses a report directory that already holds any file of a report's
/// names (`EvalReport::FILES`: not only `metrics.json`, whose absence let a
/// user's `confusion.png` or `routing.json` be replaced without a word),
/// unless `force`; with it, removes the old report's files so that none of
/// them (an earlier run's routing heatmap, say) sits beside the new report
/// as if it were its own. Other files in the folder are left alone.
pub(crate) fn prepare_report_dir(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    // Said now, not after the evaluation, at the first write.
    refuse_file_as_out_folder(out)?;
    let held: Vec<&str> = crate::eval::report::EvalReport::FILES
        .into_iter()
        .filter(|name| out.join(name).symlink_metadata().is_ok())
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    anyhow::ensure!(
        force,
        "{} already holds a report ({}); choose another --out or pass --force to replace it",
        out.display(),
        held.join(", ")
    );
    for name in crate::eval::report::EvalReport::FILES {
        let p = out.join(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(
                    anyhow::Error::new(e).context(format!("removing the old {}", p.display()))
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses an `--out` folder that exists as something else (a file), before
/// any work, in one wording for every command that writes a folder ("File
/// exists" or "Not a directory" named neither the option nor the fix).
pub(crate) fn refuse_file_as_out_folder(out: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.exists() || out.is_dir(),
        "{} exists and is not a folder: --out takes a folder (created if missing)",
        out.display()
    );
    Ok(())
}

/// Runs `write` (a report's files into `out`); when it fails part-way (a
/// full disk, an unreadable training log), takes back the report files this
/// run made, and the folder if it made it and it is then empty: a partial
/// report (metrics.json first) would pass for a whole one and make the next
/// run refuse without --force. Other files are left alone.
pub(crate) fn write_report_or_take_back(
    out: &std::path::Path,
    write: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use crate::eval::report::EvalReport;
    let made_dir = !out.exists();
    let had: Vec<bool> = EvalReport::FILES
        .iter()
        .map(|n| out.join(n).exists())
        .collect();
    let written = write();
    if written.is_err() {
        for (name, had) in EvalReport::FILES.iter().zip(had) {
            if !had {
                let _ = std::fs::remove_file(out.join(name));
            }
        }
        if made_dir {
            let _ = std::fs::remove_dir(out);
        }
    }
    written
}

/// Refuses an existing `--out` unless `force`: the one wording every
/// command uses for it (classify, dump-logits, bench, vocab, ...); and a
/// folder, which `--force` cannot replace (it was told to try, then failed
/// at the write: for a benchmark, after the whole run).
pub(crate) fn refuse_existing_out(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.is_dir(),
        "{} is a folder; --out takes a file name",
        out.display()
    );
    anyhow::ensure!(
        force || !out.exists(),
        "{} exists; pass --force to replace it",
        out.display()
    );
    Ok(())
}

/// A checkpoint argument that names a run folder (what `pretrain` and
/// `finetune` take as `--out`) stands for the first of `names` inside it
/// that exists, said on stderr; anything else is returned as given, so a
/// folder without them is refused by the loader, naming what it holds.
pub(crate) fn checkpoint_in_run(
    flag: &str,
    path: std::path::PathBuf,
    names: &[&str],
) -> std::path::PathBuf {
    if !path.is_dir() {
        return path;
    }
    match names.iter().map(|n| path.join(n)).find(|p| p.is_file()) {
        Some(file) => {
            eprintln!(
                "{flag} {}: a run folder; reading {}",
                path.display(),
                file.display()
            );
            file
        }
        None => path,
    }
}

/// Whether `out` is an existing file that is `input` under any spelling
/// (a link, `./`, `..`): a run writing `out` would replace its own input.
pub(crate) fn is_same_file(out: &std::path::Path, input: &std::path::Path) -> bool {
    match std::fs::canonicalize(out) {
        Ok(real) => std::fs::canonicalize(input).is_ok_and(|i| i == real),
        Err(_) => false,
    }
}

/// Refuses an `--out` that is one of the captures (under any spelling),
/// which the run would replace: with `--force`, the capture was lost.
/// `captures`: each as given, with its canonical path (`None` where it has
/// none), as the listing that removed repeats found it: not asked again.
pub(crate) fn refuse_out_among_captures<'a>(
    out: &std::path::Path,
    captures: impl IntoIterator<Item = (&'a std::path::Path, Option<&'a std::path::Path>)>,
) -> anyhow::Result<()> {
    let Ok(real) = std::fs::canonicalize(out) else {
        return Ok(());
    };
    if let Some((f, _)) = captures.into_iter().find(|(_, c)| *c == Some(&real)) {
        anyhow::bail!(
            "--out {} is one of the captures given ({}); choose another --out",
            out.display(),
            f.display()
        );
    }
    Ok(())
}

/// Refuses an output file before any work: one that exists (unless
/// `force`), a folder, or one whose folder is missing or not writable (a
/// probe file is created and removed there), so a long run never fails at
/// its last write.
pub(crate) fn check_out_file(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    refuse_existing_out(out, force)?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "cannot write {}: folder {} does not exist",
        out.display(),
        dir.display()
    );
    probe_writable(out, dir)
}

/// Refuses, before any work, an output file that [`refuse_existing_out`]
/// refuses, or whose folder could not be made or written: the nearest of
/// its folders that exists (the rest are made at the write) must be a
/// folder that takes a new file. A file in the way (`notes.txt/r.json`)
/// or a read-only folder failed only at the write, after a whole benchmark,
/// as "creating notes.txt: File exists".
pub(crate) fn check_out_file_in_new_folder(
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<()> {
    refuse_existing_out(out, force)?;
    let mut near = out.parent().unwrap_or(std::path::Path::new(""));
    while !near.as_os_str().is_empty() && near.symlink_metadata().is_err() {
        near = near.parent().unwrap_or(std::path::Path::new(""));
    }
    if near.as_os_str().is_empty() {
        near = std::path::Path::new(".");
    }
    anyhow::ensure!(
        near.is_dir(),
        "cannot write {}: {} is not a folder",
        out.display(),
        near.display()
    );
    probe_writable(out, near)
}

/// Creates and removes a probe file in `dir`, the folder `out` is to be
/// written in (or the nearest one of its that exists).
fn probe_writable(out: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let probe = dir.join(format!(".tmoe-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| {
            format!(
                "cannot write {}: folder {} is not writable",
                out.display(),
                dir.display()
            )
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The sequence length to train on: `--seq-len` where given, cut to the
/// dataset's tokens per flow (its shards hold no more), with a warning
/// where it is cut; else the dataset's.
pub(crate) fn seq_len_within(asked: Option<usize>, data: usize) -> usize {
    match asked {
        Some(s) if s > data => {
            eprintln!(
                "warning: --seq-len {s} is longer than the dataset's flows ({data} tokens, as tokenized): using {data}"
            );
            data
        }
        Some(s) => s,
        None => data,
    }
}

/// "1 flow", "2 flows": the summary's headline counts.
pub(crate) fn noun(n: u64, singular: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {singular}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sequence_length_beyond_the_dataset_is_cut_to_it() {
        use super::seq_len_within;
        assert_eq!(seq_len_within(Some(100_000), 64), 64);
        assert_eq!(seq_len_within(Some(32), 64), 32);
        assert_eq!(seq_len_within(None, 64), 64);
    }
}
