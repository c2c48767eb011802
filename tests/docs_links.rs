//! Every relative Markdown link in README.md, docs/*.md, cuda/README.md and
//! the committed reports under bench/results/ names a file or folder that
//! exists: the README's detail lives in docs/, so a moved or renamed file
//! would otherwise leave a dead link that only a reader finds (a study's
//! report linked heatmaps that were never committed). Web links and `#anchor`s are not checked (for `file#anchor`,
//! the file is).

use std::path::{Path, PathBuf};

/// The Markdown files whose links are checked, relative to the crate root.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("cuda/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no docs/*.md found");
    files.extend(docs);
    let mut reports = Vec::new();
    markdown_under(&root.join("bench/results"), &mut reports);
    reports.sort();
    assert!(!reports.is_empty(), "no bench/results/**/*.md found");
    files.extend(reports);
    files
}

/// Every `*.md` file under `dir`, at any depth.
fn markdown_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// The targets of `[text](target)` links in `text`, outside fenced blocks
/// and inline code (where `](` is code, not a link).
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans are the odd pieces between backticks; keep the rest, so
        // that [`cuda/README.md`](cuda/README.md) still shows its target.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            // Angle brackets around the path (it may hold spaces), or a
            // title after it (`path "title"`).
            let raw = &rest[..end];
            let target = match raw.strip_prefix('<') {
                Some(inner) => inner.split('>').next().unwrap_or(""),
                None => raw.split_whitespace().next().unwrap_or(""),
            };
            targets.push(target.to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

/// Whether a link target is one this test checks: relative, not a web
/// address nor a pure anchor.
fn is_relative_file(target: &str) -> bool {
    !(target.is_empty()
        || target.starts_with('#')
        || target.contains("://")
        || target.starts_with("mailto:"))
}

#[test]
fn relative_links_in_readme_docs_cuda_readme_and_reports_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut broken = Vec::new();
    for md in markdown_files(root) {
        let text = std::fs::read_to_string(&md).unwrap();
        let dir = md.parent().unwrap();
        for target in link_targets(&text) {
            if !is_relative_file(&target) {
                continue;
            }
            let path = target.split('#').next().unwrap();
            checked += 1;
            if !dir.join(path).exists() {
                let shown = md.strip_prefix(root).unwrap_or(&md).display().to_string();
                broken.push(format!("{shown}: ({target})"));
            }
        }
    }
    // The README and docs/ link to each other; finding none means the parse
    // broke, not that every link is fine.
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "links to files that do not exist:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_parse_finds_links_and_skips_code() {
    let text = "see [a](docs/a.md#x) and [`b`](b/ \"title\"), [c](<c d.md>)\n\
                `x[i](j)` [w](https://example.org) [h](#here)\n\
                ```\n[f](fenced.md)\n```\n";
    let targets = link_targets(text);
    assert_eq!(
        targets,
        [
            "docs/a.md#x",
            "b/",
            "c d.md",
            "https://example.org",
            "#here"
        ]
    );
    let files: Vec<_> = targets.iter().filter(|t| is_relative_file(t)).collect();
    assert_eq!(files, ["docs/a.md#x", "b/", "c d.md"]);
}
