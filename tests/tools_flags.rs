//! Every `tmoe` option that the scripts under tools/ pass, and that the
//! READMEs' (README.md, cuda/README.md) and docs/*.md's command lines show
//! (code blocks, the usage table, inline commands), is one the command accepts: a renamed
//! or removed flag would otherwise show only when someone runs the script,
//! often an hour in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const COMMANDS: &[&str] = &[
    "synth",
    "tokenize",
    "vocab",
    "inspect",
    "model-info",
    "pretrain",
    "finetune",
    "eval",
    "classify",
    "baseline",
    "study",
    "demo",
    "dump-logits",
];
const BENCH: &[&str] = &[
    "kernels",
    "chart",
    "model",
    "classify",
    "cpu-gemm",
    "cpu-attention",
];

/// The long options `tmoe CMD --help` lists.
fn accepted(cmd: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tmoe"))
        .args(cmd)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "tmoe {} --help failed", cmd.join(" "));
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// `(command, option)` of each `--option` in `text` after a `tmoe CMD`
/// (`tmoe`, `$tmoe`, `"$TMOE"`, `target/release/tmoe`, ...), up to the end
/// of its command line: a pipe, `;`, `&&`, a redirect or a closing backtick.
fn options(text: &str, found: &mut Vec<(String, String)>) {
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let name = w.trim_matches(|c| matches!(c, '"' | '\'' | '`' | '$' | '{' | '}'));
        let mut rest = words[i + 1..].iter().copied();
        if name == "tmoe_bench" {
            // tools/gpu-check.sh's `tmoe_bench model|classify NAME ARGS..`.
            let Some(what) = rest.next() else { continue };
            rest.next();
            let mut tail = vec!["bench", what];
            tail.extend(rest);
            options(&format!("tmoe {}", tail.join(" ")), found);
            continue;
        }
        if !name.to_ascii_lowercase().ends_with("tmoe")
            || name.len() > 4 && !name[..name.len() - 4].ends_with('/')
        {
            continue;
        }
        let Some(first) = rest.next() else { continue };
        let mut cmd = vec![first.trim_end_matches('`')];
        if !COMMANDS.contains(&cmd[0]) && cmd[0] != "bench" {
            continue;
        }
        let mut ended = first.ends_with('`');
        if cmd[0] == "bench" && !ended {
            match rest.next() {
                Some(b) if BENCH.contains(&b.trim_end_matches('`')) => {
                    cmd.push(b.trim_end_matches('`'));
                    ended = b.ends_with('`');
                }
                _ => continue,
            }
        }
        for w in rest {
            if ended || matches!(w, "|" | "||" | "&&" | ";" | "<") || w.starts_with('>') {
                break;
            }
            ended = w.contains('`') || w.ends_with(';');
            let w = w.trim_start_matches(['[', '(']);
            if let Some(flag) = w.strip_prefix("--") {
                let flag: String = flag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !flag.is_empty() {
                    found.push((cmd.join(" "), format!("--{flag}")));
                }
            }
        }
    }
}

/// Shell lines joined at a trailing backslash.
fn shell_lines(text: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    for line in text.lines() {
        let last = lines.last_mut().unwrap();
        match line.strip_suffix('\\') {
            Some(head) => last.push_str(head),
            None => {
                last.push_str(line);
                lines.push(String::new());
            }
        }
    }
    lines
}

#[test]
fn scripts_and_readme_pass_only_options_tmoe_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(root.join("tools")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            let text = std::fs::read_to_string(&path).unwrap();
            let before = found.len();
            for line in shell_lines(&text) {
                options(&line, &mut found);
            }
            sources.push((path.display().to_string(), found.len() - before));
        }
    }
    // The READMEs and docs/: fenced blocks as shell, the rest by inline code
    // spans (a table cell's `\|` is an alternative inside the span, not a pipe).
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    docs.sort();
    let markdown = ["cuda/README.md".to_string(), "README.md".to_string()]
        .into_iter()
        .chain(docs);
    for md in markdown {
        let readme = std::fs::read_to_string(root.join(&md)).unwrap();
        let (mut prose, mut block, mut fenced) = (String::new(), String::new(), false);
        for line in readme.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                block.push_str(line);
                block.push('\n');
            } else {
                prose.push_str(&line.replace("\\|", "/"));
                prose.push(' ');
            }
        }
        let before = found.len();
        for line in shell_lines(&block) {
            options(&line, &mut found);
        }
        for span in prose.split('`').skip(1).step_by(2) {
            options(&format!("{span}`"), &mut found);
        }
        sources.push((md, found.len() - before));
    }
    // The parse must keep finding them (a script with no `tmoe` call finds
    // none; cuda/README.md's profiling commands are some). README.md's
    // detail moved to docs/, so the two count together.
    let count = |name: &str| sources.iter().find(|(s, _)| s == name).map_or(0, |s| s.1);
    let readme_count = count("README.md")
        + sources
            .iter()
            .filter(|(s, _)| s.starts_with("docs/"))
            .map(|s| s.1)
            .sum::<usize>();
    let cuda_count = count("cuda/README.md");
    assert!(
        readme_count >= 100 && cuda_count >= 10 && found.len() >= 250,
        "found only {} options ({sources:?}): is the parse still right?",
        found.len()
    );
    let mut help = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    for (cmd, flag) in &found {
        let known = help
            .entry(cmd.clone())
            .or_insert_with(|| accepted(&cmd.split(' ').collect::<Vec<_>>()));
        if !known.contains(flag) {
            unknown.insert(format!("tmoe {cmd} {flag}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "options tmoe does not accept, in tools/*.sh, README.md, docs/*.md or cuda/README.md:\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}
