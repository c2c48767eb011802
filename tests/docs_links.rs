//! Every relative Markdown link in README.md, docs/*.md, cuda/README.md and
//! the committed reports under bench/results/ names a file or folder that
//! exists: the README's detail lives in docs/, so a moved or renamed file
//! would otherwise leave a dead link that only a reader finds (a study's
//! report linked heatmaps that were never committed). A `#anchor` into a
//! Markdown file (or the file itself) must name one of its headings as
//! GitHub makes anchors of them: the README's links into docs/ name headings
//! with dates in them, which change when the figures are measured again.
//! Web links are not checked.

use std::collections::HashSet;
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

/// The lines of a Markdown text outside its fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of `[text](target)` links in `text`, outside fenced blocks
/// and inline code (where `](` is code, not a link).
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
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

/// GitHub's anchor for a heading: its text as rendered (a link keeps its
/// text; code and emphasis marks go), lowercased, every character but
/// letters, digits, `_`, `-` and spaces dropped, and each space a `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](target) -> text
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|e| close + e) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown text's ATX headings (outside fenced blocks); a
/// repeated heading gets `-1`, `-2`, ... as on GitHub.
fn heading_anchors(text: &str) -> HashSet<String> {
    let mut anchors = HashSet::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while !anchors.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    anchors
}

#[test]
fn relative_links_in_readme_docs_cuda_readme_and_reports_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut checked, mut anchors_checked) = (0, 0);
    let mut broken = Vec::new();
    for md in markdown_files(root) {
        let text = std::fs::read_to_string(&md).unwrap();
        let dir = md.parent().unwrap();
        let shown = md.strip_prefix(root).unwrap_or(&md).display().to_string();
        for target in link_targets(&text) {
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            if !(is_relative_file(&target) || target.starts_with('#')) {
                continue;
            }
            let file = if path.is_empty() {
                md.clone()
            } else {
                dir.join(path)
            };
            checked += 1;
            if !file.exists() {
                broken.push(format!("{shown}: ({target}): no such file"));
                continue;
            }
            let Some(anchor) = anchor.filter(|_| file.extension().is_some_and(|e| e == "md"))
            else {
                continue;
            };
            anchors_checked += 1;
            let headings = heading_anchors(&std::fs::read_to_string(&file).unwrap());
            if !headings.contains(anchor) {
                broken.push(format!("{shown}: ({target}): no heading makes #{anchor}"));
            }
        }
    }
    // The README and docs/ link to each other, and to each other's sections;
    // finding few means the parse broke, not that every link is fine.
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(
        anchors_checked >= 10,
        "only {anchors_checked} anchors found"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(
        slug("Issues 8 and 11 on the CPU: the 2-core AMD EPYC Zen 5, 2026-12-07"),
        "issues-8-and-11-on-the-cpu-the-2-core-amd-epyc-zen-5-2026-12-07"
    );
    assert_eq!(
        slug("`tmoe bench` and [the kernels](cuda/README.md) (H200, 1.5x)"),
        "tmoe-bench-and-the-kernels-h200-15x"
    );
    let text = "# A\n## Notes\n```\n# not a heading\n```\n### Notes\n#tag\n## Notes ##\n";
    let mut anchors: Vec<_> = heading_anchors(text).into_iter().collect();
    anchors.sort();
    assert_eq!(anchors, ["a", "notes", "notes-1", "notes-2"]);
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
