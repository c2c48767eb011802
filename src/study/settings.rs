//! What a study folder's runs were made with (`study.json`). Runs are
//! cached by row, seed and fraction, so a later call with another learning
//! rate, model or split would otherwise reuse them as if they had been made
//! with the new settings. Rows, seeds and fractions are not recorded: adding
//! them only adds runs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::StudyOpts;
use super::report::REPORT_FILES;
use crate::traffic::dataset::labels::LabelSource;

/// The settings that change a run's result.
fn settings(o: &StudyOpts) -> Value {
    json!({
        "captures": o.captures,
        "labels": o.labels,
        "model": o.cfg,
        "seq_len": o.seq_len,
        "vocab_file": o.vocab_file,
        "vocab_size": o.vocab_size,
        "split_by": o.split_by,
        "mask_identifiers": o.mask_identifiers,
        "pretrain_steps": o.pretrain_steps,
        "epochs": o.epochs,
        "max_per_class": o.max_per_class,
        "lr": o.lr,
        "batch": o.batch,
        "device": o.device,
        // The budget run's schedule is cosine to the largest budget, so
        // the kept weights depend on it.
        "budget_max": o.budgets.iter().max(),
        "pretrain_extra": o.pretrain_extra,
    })
}

/// Records the settings in a new folder; in a used one, refuses settings
/// that differ from those its runs were made with, naming each.
/// Whether the study folder holds anything made with its recorded
/// settings: a run's result (`runs/*.json`) or a tokenized dataset
/// (`data-*/dataset.json`).
fn made_anything(out: &Path) -> bool {
    let entries = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    let result = entries(&out.join("runs"))
        .iter()
        .any(|p| p.extension().is_some_and(|x| x == "json"));
    let data = entries(out).iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("data-"))
            && p.join("dataset.json").exists()
    });
    result || data
}

pub fn check_or_record(o: &StudyOpts) -> Result<()> {
    let path = o.out.join("study.json");
    let now = settings(o);
    match std::fs::read_to_string(&path) {
        // A call that failed before making anything (a wrong path, say)
        // binds nothing: the corrected call records its own settings.
        Ok(_) if !made_anything(&o.out) => write(&path, &now),
        Ok(text) => {
            let was: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a study settings file", path.display()))?;
            // The budget run's settings bind only once a call has made it,
            // and only calls that ask for it.
            let had_budget = was.get("budget_max").is_some_and(|v| !v.is_null());
            let mut diff = Vec::new();
            for (key, value) in now.as_object().expect("an object") {
                let old = &canonical(key, was.get(key).unwrap_or(&Value::Null));
                let value = &canonical(key, value);
                let budget_key = key == "budget_max" || key == "pretrain_extra";
                if budget_key && (!had_budget || o.budgets.is_empty()) {
                    continue;
                }
                if old != value {
                    let (old, value) = (short(shown(key, old)), short(shown(key, value)));
                    diff.push(format!("{key}: {old} then, {value} now"));
                }
            }
            if !diff.is_empty() {
                bail!(
                    "{}: this study folder's runs were made with other settings ({}); \
                     use another --out, or the runs already there would be reported \
                     as if made with the new ones",
                    path.display(),
                    diff.join("; ")
                );
            }
            if !had_budget && !o.budgets.is_empty() {
                write(&path, &now)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse_others_report_files(&o.out)?;
            write(&path, &now)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A folder that is not a study's (no `study.json`) holding a file of a
/// study report's names is refused, naming them: the study replaced them
/// (a `macro-f1.png` of the user's, say) when it wrote its report.
fn refuse_others_report_files(out: &Path) -> Result<()> {
    let held: Vec<&str> = REPORT_FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    anyhow::ensure!(
        held.is_empty(),
        "{} is not a study folder (no study.json) but holds {}, which a study's report \
         would replace; choose another --out",
        out.display(),
        held.join(", ")
    );
    Ok(())
}

/// At most 200 characters of a shown setting (a list of thousands of
/// captures made a megabyte-long message), with the count left out.
fn short(s: String) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!(
            "{} ... ({} more characters)",
            &s[..cut],
            s[cut..].chars().count()
        ),
        None => s,
    }
}

/// A recorded setting as the command line spells it: `--labels folder`,
/// not the JSON of its type (`"Folder"`).
fn shown(key: &str, v: &Value) -> String {
    if key == "labels"
        && let Ok(l) = serde_json::from_value::<LabelSource>(v.clone())
    {
        return l.to_string();
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "not set".into(),
        Value::Array(items) => {
            let shown: Vec<String> = items.iter().map(|x| shown(key, x)).collect();
            shown.join(", ")
        }
        other => other.to_string(),
    }
}

/// Paths as the file system resolves them, so that `../data` and
/// `/abs/data` are one setting; paths that do not resolve stay as given.
fn canonical(key: &str, v: &Value) -> Value {
    if !matches!(key, "captures" | "vocab_file" | "pretrain_extra") {
        return v.clone();
    }
    match v {
        Value::String(p) => std::fs::canonicalize(p)
            .map_or_else(|_| v.clone(), |c| Value::String(c.display().to_string())),
        Value::Array(items) => Value::Array(items.iter().map(|x| canonical(key, x)).collect()),
        _ => v.clone(),
    }
}

fn write(path: &Path, v: &Value) -> Result<()> {
    // Rewritten when budgets are added to a study: cut short, every later
    // call stopped at "not a study settings file".
    crate::atomic_file::write_whole(path, (serde_json::to_string_pretty(v)? + "\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn a_long_setting_is_cut_in_the_message() {
        assert_eq!(short("a, b".into()), "a, b");
        let long = "é".repeat(250);
        let s = short(long);
        assert!(s.starts_with(&"é".repeat(200)), "{s}");
        assert!(s.ends_with(" ... (50 more characters)"), "{s}");
    }
}
