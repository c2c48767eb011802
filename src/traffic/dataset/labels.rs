//! Where class labels come from: folder names, file-name prefixes, or a CSV of
//! per-flow labels keyed by the bidirectional 5-tuple.
//!
//! - **folder**: the first folder below the input root that holds the capture
//!   (`root/Aria/x.pcap` -> `Aria`, `root/VPN/email/x.pcap` -> `VPN`); a capture
//!   given directly as an input is labelled by its parent folder's name.
//! - **prefix**: the file name up to the first delimiter character (default
//!   `-` and `_`; `prefix:DELIMS` picks others), e.g. `youtube_01.pcap` -> `youtube`.
//! - **csv**: two layouts, told apart by their header names:
//!   the nDPI layout of `ndpi/flow_labels.csv` (`file,l4,src,dst,app,category,...`,
//!   `src`/`dst` as `ip:port`, IPv6 in brackets or plain; label = the part of
//!   `app` after its last dot, or `category`), and the CIC layout (`Src IP`/`Source IP`,
//!   `Src Port`, `Dst IP`, `Dst Port`, `Protocol`, `Label`; header names are
//!   trimmed and matched case-insensitively). A `file` column, when present,
//!   restricts a row to captures with that file name. A key seen twice keeps
//!   its first label; disagreements are counted.

use crate::os_text::os_text;
use crate::traffic::types::{Endpoint, FlowKey, PROTO_TCP, PROTO_UDP};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Which CSV column gives the label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsvColumn {
    /// nDPI `app`, the part after the last dot (`TLS.YouTube` -> `YouTube`).
    App,
    /// nDPI `category`.
    Category,
    /// A column by (trimmed, case-insensitive) name, e.g. CIC's `Label`.
    Named(String),
}

/// The label source of a dataset run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelSource {
    /// No labels: pretraining corpus.
    None,
    Folder,
    /// File-name prefix up to the first of these characters.
    Prefix {
        delimiters: String,
    },
    Csv {
        path: PathBuf,
        column: Option<CsvColumn>,
    },
}

/// As `--labels` spells it, so messages read like the command line.
impl std::fmt::Display for LabelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelSource::None => f.write_str("none"),
            LabelSource::Folder => f.write_str("folder"),
            LabelSource::Prefix { delimiters } => write!(f, "prefix:{delimiters}"),
            LabelSource::Csv { path, column } => {
                write!(f, "csv:{}", path.display())?;
                match column {
                    None => Ok(()),
                    Some(CsvColumn::App) => f.write_str(":app"),
                    Some(CsvColumn::Category) => f.write_str(":category"),
                    Some(CsvColumn::Named(c)) => write!(f, ":{c}"),
                }
            }
        }
    }
}

impl LabelSource {
    /// Parses `none | folder | prefix[:DELIMS] | csv:PATH[:app|category|COLUMN]`.
    pub fn parse(s: &str) -> anyhow::Result<LabelSource> {
        match s {
            "none" => return Ok(LabelSource::None),
            "folder" => return Ok(LabelSource::Folder),
            "prefix" => {
                return Ok(LabelSource::Prefix {
                    delimiters: "-_".into(),
                });
            }
            _ => {}
        }
        if let Some(d) = s.strip_prefix("prefix:") {
            if d.is_empty() {
                bail!("--labels prefix: needs at least one delimiter character");
            }
            return Ok(LabelSource::Prefix {
                delimiters: d.into(),
            });
        }
        if let Some(rest) = s.strip_prefix("csv:") {
            // A trailing `:word` without path characters names the column.
            if let Some((path, col)) = rest.rsplit_once(':')
                && !col.is_empty()
                && !col.contains(['/', '\\', '.'])
                && !path.is_empty()
            {
                let column = match col.to_ascii_lowercase().as_str() {
                    "app" => CsvColumn::App,
                    "category" => CsvColumn::Category,
                    _ => CsvColumn::Named(col.into()),
                };
                return Ok(LabelSource::Csv {
                    path: path.into(),
                    column: Some(column),
                });
            }
            return Ok(LabelSource::Csv {
                path: rest.into(),
                column: None,
            });
        }
        bail!(
            "unknown --labels {s:?}: use none, folder, prefix[:DELIMS] or csv:PATH[:app|category|COLUMN]"
        )
    }

    pub fn is_none(&self) -> bool {
        matches!(self, LabelSource::None)
    }
}

/// Label of a capture from its folder (see module doc); `root` is the input it was found under.
pub fn folder_label(root: &Path, capture: &Path) -> Option<String> {
    if let Ok(rel) = capture.strip_prefix(root)
        && let Some(first) = rel.parent().and_then(|p| p.components().next())
    {
        return Some(os_text(first.as_os_str()));
    }
    let parent = capture.parent()?.file_name()?;
    Some(os_text(parent))
}

/// Label of a capture from its file-name prefix.
pub fn prefix_label(capture: &Path, delimiters: &str) -> Option<String> {
    let name = os_text(capture.file_name()?);
    let prefix = name.split(|c| delimiters.contains(c)).next().unwrap_or("");
    // No delimiter at all: the name without extension.
    let prefix = if prefix == name {
        name.split('.').next().unwrap_or("")
    } else {
        prefix
    };
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// Per-flow labels from a CSV.
#[derive(Debug, Default)]
pub struct FlowLabels {
    by_file: HashMap<(String, FlowKey), String>,
    any_file: HashMap<FlowKey, String>,
    /// Rows read with a usable key.
    pub rows: usize,
    /// Rows skipped for a protocol other than TCP and UDP (ICMP and the
    /// like: expected in nDPI's CSVs).
    pub other_protocol: usize,
    /// Rows skipped because an address, port or protocol number does not
    /// parse, and the first of them ("line N: ...").
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
    /// Rows skipped for an empty label.
    pub empty_label: usize,
    /// Keys seen again with a different label (first one kept).
    pub conflicts: usize,
    /// Rows read for each (file, key) of [`FlowLabels::entries`] (a CIC
    /// CSV repeats a 5-tuple for every flow it cut).
    row_counts: HashMap<(Option<String>, FlowKey), usize>,
}

impl FlowLabels {
    /// The label of a flow of capture `file_name`.
    pub fn get(&self, file_name: &str, key: &FlowKey) -> Option<&str> {
        if let Some(l) = self.by_file.get(&(file_name.to_string(), *key)) {
            return Some(l);
        }
        self.any_file.get(key).map(String::as_str)
    }
    /// The capture file names that rows of the CSV's `file` column name.
    pub fn named_files(&self) -> HashSet<&str> {
        self.by_file.keys().map(|(f, _)| f.as_str()).collect()
    }
    pub fn len(&self) -> usize {
        self.by_file.len() + self.any_file.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every (file, key) with its label (`None` file = any capture).
    pub fn entries(&self) -> impl Iterator<Item = (Option<&str>, &FlowKey, &str)> {
        self.by_file
            .iter()
            .map(|((f, k), l)| (Some(f.as_str()), k, l.as_str()))
            .chain(self.any_file.iter().map(|(k, l)| (None, k, l.as_str())))
    }

    /// Rows read for an entry of [`FlowLabels::entries`].
    pub fn rows_of(&self, file: Option<&str>, key: &FlowKey) -> usize {
        self.row_counts
            .get(&(file.map(str::to_string), *key))
            .copied()
            .unwrap_or(0)
    }

    /// Rows not used, by reason, in one line ("" when every row was used).
    pub fn skipped_note(&self) -> String {
        let mut parts = Vec::new();
        if self.unreadable > 0 {
            let first = self.first_unreadable.as_deref().unwrap_or("");
            parts.push(format!("{} unreadable (first: {first})", self.unreadable));
        }
        if self.empty_label > 0 {
            parts.push(format!("{} with an empty label", self.empty_label));
        }
        if self.other_protocol > 0 {
            parts.push(format!(
                "{} of a protocol other than TCP and UDP",
                self.other_protocol
            ));
        }
        if self.conflicts > 0 {
            parts.push(format!(
                "{} repeating a flow with another label (the first kept)",
                self.conflicts
            ));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!("{} rows used; {}", self.rows, parts.join(", "))
    }

    /// Whether some rows were not used for a reason other than their
    /// protocol (a mistake in the file, worth a warning).
    pub fn has_bad_rows(&self) -> bool {
        self.unreadable + self.empty_label + self.conflicts > 0
    }

    fn unreadable_row(&mut self, line: usize, what: &str) {
        self.unreadable += 1;
        self.first_unreadable
            .get_or_insert_with(|| format!("line {line}: {what}"));
    }

    pub fn load(path: &Path, column: Option<&CsvColumn>) -> anyhow::Result<FlowLabels> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading label CSV {}", path.display()))?;
        FlowLabels::parse(&text, column).with_context(|| format!("in label CSV {}", path.display()))
    }

    pub fn parse(text: &str, column: Option<&CsvColumn>) -> anyhow::Result<FlowLabels> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            bail!("empty file (no header)");
        };
        let names: Vec<String> = split_csv_line(header.trim_start_matches('\u{feff}'))
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let find = |cands: &[&str]| names.iter().position(|n| cands.contains(&n.as_str()));
        let layout = if let (Some(src), Some(dst)) = (find(&["src"]), find(&["dst"])) {
            Layout::Ndpi {
                l4: find(&["l4"]).context("nDPI layout without an `l4` column")?,
                src,
                dst,
            }
        } else if let (Some(si), Some(sp), Some(di), Some(dp), Some(pr)) = (
            find(&["src ip", "source ip"]),
            find(&["src port", "source port"]),
            find(&["dst ip", "destination ip"]),
            find(&["dst port", "destination port"]),
            find(&["protocol"]),
        ) {
            Layout::Cic { si, sp, di, dp, pr }
        } else {
            bail!(
                "unrecognised header {header:?}: expected nDPI columns (file,l4,src,dst,app,category) \
                 or CIC columns (Src IP, Src Port, Dst IP, Dst Port, Protocol, Label)"
            );
        };
        let (label_col, app_suffix) = match (column, &layout) {
            (Some(CsvColumn::App), _) | (None, Layout::Ndpi { .. }) => {
                (find(&["app"]).context("no `app` column")?, true)
            }
            (Some(CsvColumn::Category), _) => {
                (find(&["category"]).context("no `category` column")?, false)
            }
            (Some(CsvColumn::Named(n)), _) => {
                let n = n.trim().to_ascii_lowercase();
                (
                    find(&[n.as_str()]).with_context(|| format!("no `{n}` column"))?,
                    false,
                )
            }
            (None, Layout::Cic { .. }) => (find(&["label"]).context("no `Label` column")?, false),
        };
        let file_col = find(&["file"]);
        // The columns a row must reach: a shorter one (a cut or broken
        // line) is counted as unreadable, as a bad endpoint is.
        let used = match &layout {
            Layout::Ndpi { l4, src, dst } => vec![*l4, *src, *dst],
            Layout::Cic { si, sp, di, dp, pr } => vec![*si, *sp, *di, *dp, *pr],
        };
        let width = 1 + used
            .into_iter()
            .chain([label_col])
            .chain(file_col)
            .max()
            .unwrap_or(0);

        let mut out = FlowLabels::default();
        for (lineno, line) in lines {
            let cells = split_csv_line(line);
            if cells.len() < width {
                let what = format!("only {} columns, {width} expected", cells.len());
                out.unreadable_row(lineno + 1, &what);
                continue;
            }
            let cell = |i: usize| -> anyhow::Result<&str> {
                cells
                    .get(i)
                    .map(|s| s.trim())
                    .with_context(|| format!("line {}: only {} columns", lineno + 1, cells.len()))
            };
            let key = match &layout {
                Layout::Ndpi { l4, src, dst } => {
                    let proto = match cell(*l4)?.to_ascii_uppercase().as_str() {
                        "TCP" => PROTO_TCP,
                        "UDP" => PROTO_UDP,
                        _ => {
                            out.other_protocol += 1;
                            continue;
                        }
                    };
                    let (src, dst) = (cell(*src)?, cell(*dst)?);
                    match (parse_endpoint(src), parse_endpoint(dst)) {
                        (Some(a), Some(b)) => FlowKey::new(proto, a, b),
                        _ => {
                            let what = format!("endpoints {src:?}, {dst:?} (expected ip:port)");
                            out.unreadable_row(lineno + 1, &what);
                            continue;
                        }
                    }
                }
                Layout::Cic { si, sp, di, dp, pr } => {
                    let proto: u8 = match cell(*pr)?.parse() {
                        Ok(p @ (PROTO_TCP | PROTO_UDP)) => p,
                        Ok(_) => {
                            out.other_protocol += 1;
                            continue;
                        }
                        Err(_) => {
                            let what = format!("protocol {:?} (expected a number)", cell(*pr)?);
                            out.unreadable_row(lineno + 1, &what);
                            continue;
                        }
                    };
                    let ep = |ip: &str, port: &str| -> Option<Endpoint> {
                        Some(Endpoint {
                            ip: parse_ip(ip)?,
                            port: port.parse().ok()?,
                        })
                    };
                    let (a, b) = ((cell(*si)?, cell(*sp)?), (cell(*di)?, cell(*dp)?));
                    match (ep(a.0, a.1), ep(b.0, b.1)) {
                        (Some(x), Some(y)) => FlowKey::new(proto, x, y),
                        _ => {
                            let what = format!(
                                "endpoints {:?} port {:?}, {:?} port {:?}",
                                a.0, a.1, b.0, b.1
                            );
                            out.unreadable_row(lineno + 1, &what);
                            continue;
                        }
                    }
                }
            };
            let raw = cell(label_col)?;
            let label = if app_suffix {
                raw.rsplit('.').next().unwrap_or(raw)
            } else {
                raw
            };
            if label.is_empty() {
                out.empty_label += 1;
                continue;
            }
            out.rows += 1;
            let file = file_col.map(cell).transpose()?.filter(|f| !f.is_empty());
            *out.row_counts
                .entry((file.map(file_name_of), key))
                .or_default() += 1;
            let slot = match file {
                Some(f) => out.by_file.entry((file_name_of(f), key)),
                None => {
                    // Reuse the map shape: `any_file` keyed by key alone.
                    match out.any_file.get(&key) {
                        Some(prev) if prev != label => out.conflicts += 1,
                        Some(_) => {}
                        None => {
                            out.any_file.insert(key, label.to_string());
                        }
                    }
                    continue;
                }
            };
            match slot {
                std::collections::hash_map::Entry::Occupied(e) => {
                    if e.get() != label {
                        out.conflicts += 1;
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(label.to_string());
                }
            }
        }
        Ok(out)
    }
}

enum Layout {
    Ndpi {
        l4: usize,
        src: usize,
        dst: usize,
    },
    Cic {
        si: usize,
        sp: usize,
        di: usize,
        dp: usize,
        pr: usize,
    },
}

/// The file-name part of a CSV `file` cell (it may hold a path).
fn file_name_of(f: &str) -> String {
    f.rsplit(['/', '\\']).next().unwrap_or(f).to_string()
}

/// IP with optional brackets or IPv6 zone stripped; an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, as dual-stack tools log IPv4 peers) as the
/// IPv4 address the flow has on the wire (it never matched one).
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let s = s.split('%').next().unwrap_or(s);
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// `ip:port`, `[v6]:port`, or plain `v6:port` (the port after the last colon).
pub fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let s = s.trim();
    let (ip, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        (ip, after.strip_prefix(':')?)
    } else {
        s.rsplit_once(':')?
    };
    Some(Endpoint {
        ip: parse_ip(ip)?,
        port: port.parse().ok()?,
    })
}

/// Splits one CSV line; double quotes group, `""` inside quotes is a quote.
pub fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Class ids from sorted, distinct class names.
pub fn class_table<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().map(str::to_string).collect();
    v.sort();
    v.dedup();
    v
}
