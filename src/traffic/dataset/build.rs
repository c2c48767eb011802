//! Captures -> labelled, deduplicated, split token shards: the whole of
//! Traffic2Token in one call.
//!
//! Steps: find captures -> read flows (reader) -> sort them (the reader is
//! parallel; sorting by file, time and key makes every later step deterministic)
//! -> label -> drop flows below `min_packets` (unless their class is rare) ->
//! train or load the vocabulary -> tokenise (parallel) -> deduplicate ->
//! split 8:1:1 -> augment the training part -> write `vocab.txt`,
//! `train/val/test.tmoe` and `dataset.json`.
//!
//! Without labels (`LabelSource::None`) the run is a pretraining corpus: every
//! kept, deduplicated flow goes to `train.tmoe` with no label, and no
//! `val`/`test` shards are written.

use crate::atomic_file::write_then_rename;
use crate::os_text::os_text;
use crate::stop::Interrupted;
use crate::traffic::capture::reader::{ReadConfig, find_captures, read_captures_until};
use crate::traffic::capture::stats::RunStats;
use crate::traffic::dataset::augment::time_slices;
use crate::traffic::dataset::labels::{
    FlowLabels, LabelSource, class_table, folder_label, prefix_label,
};
use crate::traffic::dataset::packet_meta::{self, PacketSlot, slots_of};
use crate::traffic::dataset::shard::{FlowMeta, NO_LABEL, ip_bytes, write_dataset_shard};
use crate::traffic::dataset::split::{
    Part, SplitBy, dedup_indices, split_by_file, split_by_flow, split_by_time,
};
use crate::traffic::tokens::features::flow_features;
use crate::traffic::tokens::tokenize::{FlowTokenizer, TokenizerConfig};
use crate::traffic::tokens::vocab::{BigramCounts, DEFAULT_LEARNED, Vocab};
use crate::traffic::types::Flow;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const DATASET_FORMAT: u32 = 1;

/// Everything that decides a dataset (stored in dataset.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetConfig {
    /// Capture files or folders (searched recursively).
    pub inputs: Vec<PathBuf>,
    pub labels: LabelSource,
    /// Use this vocabulary instead of training one.
    pub vocab_file: Option<PathBuf>,
    /// Learned vocabulary entries to train (the 5 specials come on top);
    /// unused with `vocab_file` (`DatasetInfo::vocab_size` is the size used).
    pub vocab_size: usize,
    pub tokenizer: TokenizerConfig,
    /// Flows with fewer packets are dropped ...
    pub min_packets: usize,
    /// ... unless their class has fewer than this many flows that pass (0 = off).
    pub keep_rare: usize,
    pub split_by: SplitBy,
    pub seed: u64,
    /// Time-slice augmentation of training flows (seconds per slice).
    pub slice_seconds: Option<f64>,
    /// Packets read per flow when augmenting (see `dataset::augment`).
    pub slice_packets: usize,
    /// Flow idle timeout of the reader.
    pub idle_timeout_s: f64,
    /// Flows open at once per capture; beyond it the least recently active
    /// one ends early (counted in the summary). Absent in older dataset.json
    /// files, which were read with the default.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
}

fn default_max_flows() -> usize {
    crate::traffic::capture::reader::DEFAULT_MAX_FLOWS
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            inputs: Vec::new(),
            labels: LabelSource::Folder,
            vocab_file: None,
            vocab_size: DEFAULT_LEARNED,
            tokenizer: TokenizerConfig::default(),
            min_packets: 3,
            keep_rare: 0,
            split_by: SplitBy::Flow,
            seed: 42,
            slice_seconds: None,
            slice_packets: 100,
            idle_timeout_s: 120.0,
            max_flows: default_max_flows(),
        }
    }
}

/// Flow counts of one class in each part.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartCounts {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Augmented sub-flows (counted in `train` too).
    pub augmented: usize,
}

impl PartCounts {
    fn add(&mut self, p: Part) {
        match p {
            Part::Train => self.train += 1,
            Part::Val => self.val += 1,
            Part::Test => self.test += 1,
        }
    }
    pub fn total(&self) -> usize {
        self.train + self.val + self.test
    }
}

/// Flows that did not make it, by reason.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DropCounts {
    pub too_few_packets: usize,
    pub unlabelled: usize,
    pub duplicates: usize,
    /// Augmented sub-flows equal to a kept flow.
    pub augmented_duplicates: usize,
    /// With `--split-by time`: augmented sub-flows of a training flow that
    /// begin at or after the first validation or test flow of their capture
    /// (they would train on the traffic the split holds out as later).
    #[serde(default)]
    pub augmented_after_split: usize,
    /// Labels with flows of which none was kept (all below `min_packets`),
    /// with their flow counts: classes missing from `classes`.
    #[serde(default)]
    pub classes: BTreeMap<String, usize>,
}

/// Reader totals kept in dataset.json.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReadTotals {
    pub files: u64,
    pub files_failed: u64,
    pub files_warned: u64,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

/// The contents of dataset.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub format: u32,
    /// Class names sorted; class id = index. Empty for a pretraining corpus.
    pub classes: Vec<String>,
    pub vocab_hash: u64,
    pub vocab_hash_hex: String,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub labelled: bool,
    /// Shard file name of each part that was written.
    pub shards: BTreeMap<String, String>,
    /// Flows per part.
    pub split_counts: BTreeMap<String, usize>,
    pub class_counts: BTreeMap<String, PartCounts>,
    pub dropped: DropCounts,
    pub read: ReadTotals,
    /// Capture files; `FlowMeta::file_id` indexes this list.
    pub files: Vec<String>,
    /// Label CSV rows that matched no flow (CSV labels only).
    pub csv_rows_unmatched: Option<usize>,
    /// What this build wrote (a hash of every part's rows and metadata),
    /// also in each shard's header: a shard of another build (say the
    /// `test.tmoe` of the same captures split with another seed, whose
    /// flows may be this one's training flows) is refused on opening.
    /// Absent in datasets built before it, whose shards are not checked.
    #[serde(default)]
    pub dataset_id: Option<u64>,
    /// Kept flows whose tokens equal those of a kept flow of another label
    /// (deduplication keeps one per label): no model can tell them apart,
    /// and the copies may sit in different parts. Counted, not dropped.
    #[serde(default)]
    pub ambiguous_flows: usize,
    pub config: DatasetConfig,
}

/// The end-of-run summary.
#[derive(Clone, Debug)]
pub struct DatasetSummary {
    pub info: DatasetInfo,
    pub read: RunStats,
    pub elapsed: Duration,
    pub tokenize_secs: f64,
    pub vocab_secs: f64,
}

impl std::fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.info;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "files {} ({} failed, {} with warnings), {:.1} MB, {} packets, {} flows read",
            i.read.files,
            i.read.files_failed,
            i.read.files_warned,
            i.read.bytes as f64 / 1e6,
            i.read.packets,
            i.read.flows
        )?;
        let d = &i.dropped;
        writeln!(
            f,
            "dropped: {} with too few packets, {} unlabelled, {} duplicates, {} duplicate sub-flows{}",
            d.too_few_packets,
            d.unlabelled,
            d.duplicates,
            d.augmented_duplicates,
            if d.augmented_after_split > 0 {
                format!(
                    ", {} sub-flows past their capture's time split",
                    d.augmented_after_split
                )
            } else {
                String::new()
            }
        )?;
        if i.ambiguous_flows > 0 {
            writeln!(
                f,
                "warning: {} kept flows have the same tokens as a flow of another label \
                 (kept under each label; no model can tell them apart)",
                i.ambiguous_flows
            )?;
        }
        if !d.classes.is_empty() {
            let gone: Vec<String> = d
                .classes
                .iter()
                .map(|(c, n)| format!("{c} ({n} flows)"))
                .collect();
            writeln!(
                f,
                "classes left out, no flow kept (all too short; see --min-packets, --keep-rare): {}",
                gone.join(", ")
            )?;
        }
        let kept: Vec<String> = Part::ALL
            .iter()
            .filter_map(|p| {
                i.split_counts
                    .get(p.name())
                    .map(|n| format!("{} {n}", p.name()))
            })
            .collect();
        writeln!(f, "kept: {}", kept.join(", "))?;
        if !i.class_counts.is_empty() {
            writeln!(
                f,
                "{:<28} {:>8} {:>8} {:>8} {:>10}",
                "class", "train", "val", "test", "augmented"
            )?;
            for (c, n) in &i.class_counts {
                writeln!(
                    f,
                    "{c:<28} {:>8} {:>8} {:>8} {:>10}",
                    n.train, n.val, n.test, n.augmented
                )?;
            }
        }
        if let Some(u) = i.csv_rows_unmatched {
            writeln!(f, "label CSV rows that matched no flow: {u}")?;
        }
        writeln!(
            f,
            "vocabulary {} entries (hash {}), seq_len {}; vocab {:.1} s, tokenise {:.1} s",
            i.vocab_size, i.vocab_hash_hex, i.seq_len, self.vocab_secs, self.tokenize_secs
        )?;
        write!(
            f,
            "total {:.1} s: {:.1} MB/s, {:.0} flows/s",
            secs,
            i.read.bytes as f64 / 1e6 / secs,
            i.read.flows as f64 / secs
        )
    }
}

/// Reads `dir/dataset.json`.
pub fn load_dataset_info(dir: &Path) -> anyhow::Result<DatasetInfo> {
    let p = dir.join("dataset.json");
    // A missing folder or a file (a shard, say) said only "reading
    // X/dataset.json: No such file or directory" or "Not a directory".
    anyhow::ensure!(
        dir.exists(),
        "{}: no such folder (a dataset is the folder `tmoe tokenize CAPTURES --out DIR` writes)",
        dir.display()
    );
    anyhow::ensure!(
        dir.is_dir(),
        "{}: a file, not a dataset (a dataset is the folder `tmoe tokenize CAPTURES --out DIR` \
         writes)",
        dir.display()
    );
    anyhow::ensure!(
        p.exists(),
        "{}: not a dataset (no dataset.json; `tmoe tokenize CAPTURES --out DIR` makes one)",
        dir.display()
    );
    super::refuse_special_file(&p)?;
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let info: DatasetInfo =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    if info.format != DATASET_FORMAT {
        bail!(
            "{}: dataset format {}, this build reads {}",
            p.display(),
            info.format,
            DATASET_FORMAT
        );
    }
    // Readers believe the tokenizer's sizes (a row is allocated per flow):
    // refuse a damaged one here, where the file can be named.
    info.config
        .tokenizer
        .check()
        .with_context(|| format!("{}: config.tokenizer is invalid", p.display()))?;
    // `classify --data` and `inspect --dataset` cut flows with it as
    // tokenize did: 0 or below made every packet its own flow, and every
    // flow was silently dropped as too short.
    let idle = info.config.idle_timeout_s;
    if !(idle.is_finite() && idle > 0.0) {
        bail!(
            "{}: config.idle_timeout_s {idle} is not a flow idle timeout (seconds above 0)",
            p.display()
        );
    }
    if info.seq_len != info.config.tokenizer.seq_len {
        bail!(
            "{}: seq_len {} differs from config.tokenizer.seq_len {}",
            p.display(),
            info.seq_len,
            info.config.tokenizer.seq_len
        );
    }
    Ok(info)
}

/// Paths for a message, as written: `a.pcap, caps/` rather than Debug's
/// `["a.pcap", "caps/"]`.
pub fn path_list(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// Capture files of all inputs with the root each was found under, in input
/// order, each input's files sorted, duplicates removed.
pub fn collect_captures(inputs: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    Ok(collect_captures_real(inputs)?
        .into_iter()
        .map(|c| (c.path, c.root))
        .collect())
}

/// A capture file of [`collect_captures_real`].
#[derive(Clone, Debug)]
pub struct FoundCapture {
    /// As found under its input (or the input itself).
    pub path: PathBuf,
    /// The input it was found under.
    pub root: PathBuf,
    /// Its canonical path, which told repeats apart (`None` where it has
    /// none: its spelling did).
    pub real: Option<PathBuf>,
}

/// [`collect_captures`], each file with its canonical path.
pub fn collect_captures_real(inputs: &[PathBuf]) -> anyhow::Result<Vec<FoundCapture>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for input in inputs {
        let meta =
            std::fs::metadata(input).with_context(|| format!("input {}", input.display()))?;
        let found = if meta.is_dir() {
            find_captures(input)
                .with_context(|| format!("listing captures under {}", input.display()))?
        } else {
            vec![input.clone()]
        };
        for f in found {
            // By the file, not the spelling: `caps` and `./caps` are one.
            let real = std::fs::canonicalize(&f).ok();
            if seen.insert(real.clone().unwrap_or_else(|| f.clone())) {
                out.push(FoundCapture {
                    path: f,
                    root: input.clone(),
                    real,
                });
            }
        }
    }
    Ok(out)
}

fn progress_bar(len: u64, what: &str, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = crate::progress::new_bar(len);
    bar.set_style(
        crate::progress::with_rate(
            ProgressStyle::with_template(&format!(
                "{what:>10} [{{bar:40.cyan/blue}}] {{pos}}/{{len}} flows {{rate}}/s ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
        .progress_chars("=> "),
    );
    bar
}

/// Bigram counts of what the tokenizer will see of these flows.
pub fn corpus_counts(flows: &[Flow], cfg: &TokenizerConfig) -> BigramCounts {
    flows
        .par_iter()
        .fold(BigramCounts::default, |mut c, f| {
            for p in flow_features(f, cfg) {
                if let Some(a) = &p.attrs {
                    c.add_segment(a);
                }
                if let Some(pl) = &p.payload {
                    c.add_segment(pl);
                }
            }
            c
        })
        .reduce(BigramCounts::default, |a, b| a.merge(&b))
}

/// Reads flows of many captures, sorted deterministically.
pub fn read_sorted_flows(
    paths: &[PathBuf],
    rc: &ReadConfig,
    progress: bool,
) -> (Vec<Flow>, RunStats) {
    read_sorted_flows_until(paths, rc, progress, &AtomicBool::new(false))
}

/// [`read_sorted_flows`], reading no further capture once `stop` is set
/// (`read_captures_until`: what was read is then partial).
fn read_sorted_flows_until(
    paths: &[PathBuf],
    rc: &ReadConfig,
    progress: bool,
    stop: &AtomicBool,
) -> (Vec<Flow>, RunStats) {
    let sink = Mutex::new(Vec::new());
    let stats = read_captures_until(
        paths,
        rc,
        progress,
        &|f: Flow| sink.lock().unwrap_or_else(|e| e.into_inner()).push(f),
        stop,
    );
    let mut flows = sink.into_inner().unwrap_or_else(|e| e.into_inner());
    flows.sort_by(|a, b| {
        (a.file_index, a.first_ts_ns, a.key, a.total_packets).cmp(&(
            b.file_index,
            b.first_ts_ns,
            b.key,
            b.total_packets,
        ))
    });
    (flows, stats)
}

fn meta_of(flow: &Flow, label: Option<u32>, slice: u16) -> FlowMeta {
    let (src_ip, ver) = ip_bytes(flow.initiator.ip);
    let (dst_ip, _) = ip_bytes(flow.responder.ip);
    FlowMeta {
        label: label.unwrap_or(NO_LABEL),
        file_id: flow.file_index,
        src_ip,
        dst_ip,
        src_port: flow.initiator.port,
        dst_port: flow.responder.port,
        proto: flow.key.proto,
        ip_version: ver,
        slice,
        first_ts_ns: flow.first_ts_ns,
        packet_count: u32::try_from(flow.total_packets).unwrap_or(u32::MAX),
        n_tokens: 0,
    }
}

/// FNV-1a of what each part holds (its name, rows and metadata), never 0
/// (0 in a shard header: no id recorded).
fn dataset_id_of(
    parts: &[Part],
    rows: &BTreeMap<Part, (Vec<Vec<u32>>, Vec<FlowMeta>)>,
    vocab_hash: u64,
    seq_len: usize,
) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    eat(&vocab_hash.to_le_bytes());
    eat(&(seq_len as u64).to_le_bytes());
    for p in parts {
        let (r, m) = rows.get(p).map_or((&[][..], &[][..]), |(r, m)| (r, m));
        eat(p.name().as_bytes());
        eat(&(r.len() as u64).to_le_bytes());
        for (row, meta) in r.iter().zip(m) {
            eat(&(row.len() as u64).to_le_bytes());
            eat(bytemuck::cast_slice(row));
            eat(bytemuck::bytes_of(meta));
        }
    }
    h.max(1)
}

/// How many of the rows `uniq` (one per distinct tokens and label) share
/// their tokens with another of them: a row of another label.
fn ambiguous_rows(rows: &[Vec<u32>], uniq: &[usize]) -> usize {
    let mut per_tokens: HashMap<&[u32], usize> = HashMap::with_capacity(uniq.len());
    for &i in uniq {
        *per_tokens.entry(rows[i].as_slice()).or_default() += 1;
    }
    per_tokens.values().filter(|&&n| n > 1).sum()
}

fn prepare_out_dir(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() {
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "{} exists and is not empty; pass --force to overwrite",
                out.display()
            );
        }
        // Every file a build writes (the packet metadata too: an unlabelled
        // build writes no val/test parts, and stale ones would stay).
        for name in [
            "train.tmoe",
            "val.tmoe",
            "test.tmoe",
            "train.pkts",
            "val.pkts",
            "test.pkts",
            "dataset.json",
            "vocab.txt",
            // What a killed run left half-written.
            "train.tmoe.tmp",
            "val.tmoe.tmp",
            "test.tmoe.tmp",
            "train.pkts.tmp",
            "val.pkts.tmp",
            "test.pkts.tmp",
            "dataset.json.tmp",
        ] {
            let p = out.join(name);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// Nothing to build a dataset from: no input yielded a flow that passes the
/// filters. Carries the read statistics (the per-file problems included) so
/// that the caller reports why before the error itself.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct NoFlows {
    pub read: RunStats,
    pub reason: String,
}

/// What a build has written so far: removed again when it fails, so that no
/// partial dataset (a `vocab.txt` and some shards, no `dataset.json`) is
/// left to pass for one or to make the next run refuse without `--force`.
#[derive(Default)]
struct Written {
    /// Files of this run (an earlier build's were removed before, so every
    /// one of them at these paths is this run's).
    files: Vec<PathBuf>,
    /// The output folder, when this run created it.
    made_dir: Option<PathBuf>,
}

impl Written {
    fn undo(&self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        // Only when empty: anything else in it is not ours.
        if let Some(d) = &self.made_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Builds a dataset directory; `force` allows writing into a non-empty one.
/// Fails with [`NoFlows`] when no flow is left to tokenize; a failed build
/// leaves none of its files behind (nor the folder, when it made it).
pub fn build_dataset_with(
    cfg: &DatasetConfig,
    out_dir: &Path,
    progress: bool,
    force: bool,
) -> anyhow::Result<DatasetSummary> {
    build_dataset_until(cfg, out_dir, progress, force, &AtomicBool::new(false))
}

/// [`build_dataset_with`], stopping once `stop` is set (a study's Ctrl-C):
/// polled before each capture is read, between the phases and per flow
/// tokenized, it fails with [`crate::stop::Interrupted`], leaving none of
/// its files (no `dataset.json`: the next call builds it again).
pub fn build_dataset_until(
    cfg: &DatasetConfig,
    out_dir: &Path,
    progress: bool,
    force: bool,
    stop: &AtomicBool,
) -> anyhow::Result<DatasetSummary> {
    let mut written = Written::default();
    let built = build_into(cfg, out_dir, progress, force, &mut written, stop);
    if built.is_err() {
        written.undo();
    }
    built
}

/// A CSV `file` cell is matched by file name alone (tools log names, or
/// paths from another machine): two captures with a name the CSV gives
/// would both take its rows, so such a set is refused.
fn same_named_captures(paths: &[PathBuf], named: &HashSet<&str>) -> anyhow::Result<()> {
    let mut first: HashMap<String, &Path> = HashMap::new();
    for p in paths {
        // As the flows' names are compared below.
        let name = p.file_name().map(os_text).unwrap_or_default();
        if !named.contains(name.as_str()) {
            continue;
        }
        if let Some(other) = first.insert(name.clone(), p) {
            bail!(
                "captures {} and {} share the file name {name:?}, which the label CSV's \
                 `file` column names (matched by file name only): rename one, or label \
                 them in separate runs",
                other.display(),
                p.display()
            );
        }
    }
    Ok(())
}

fn build_into(
    cfg: &DatasetConfig,
    out_dir: &Path,
    progress: bool,
    force: bool,
    written: &mut Written,
    stop: &AtomicBool,
) -> anyhow::Result<DatasetSummary> {
    let start = Instant::now();
    if cfg.inputs.is_empty() {
        bail!("no inputs given");
    }
    let mut captures = collect_captures(&cfg.inputs)?;
    if captures.is_empty() {
        bail!("no capture files found under {}", path_list(&cfg.inputs));
    }
    // By path, not by the order the inputs were given (a shell's glob sorts
    // by locale): file ids, and so the rows and the split, are the same.
    captures.sort();
    let paths: Vec<PathBuf> = captures.iter().map(|(p, _)| p.clone()).collect();
    let tcfg = &cfg.tokenizer;
    let k = tcfg.packets;
    let slice_ns = cfg
        .slice_seconds
        .map(|s| (s * 1e9) as u64)
        .filter(|&s| s > 0);
    let rc = ReadConfig {
        max_packets: if slice_ns.is_some() {
            cfg.slice_packets.max(k)
        } else {
            k
        },
        payload_bytes: tcfg.payload_bytes_read(),
        idle_timeout_ns: (cfg.idle_timeout_s * 1e9) as u64,
        max_flows: cfg.max_flows.max(1),
        ..ReadConfig::default()
    };

    // Labels per file (folder/prefix) or per flow (CSV).
    let csv = match &cfg.labels {
        LabelSource::Csv { path, column } => {
            let l = FlowLabels::load(path, column.as_ref())?;
            let note = l.skipped_note();
            if !note.is_empty() {
                let kind = if l.has_bad_rows() { "warning" } else { "note" };
                eprintln!("{kind}: label CSV {}: {note}", path.display());
            }
            Some(l)
        }
        _ => None,
    };
    if let Some(c) = &csv {
        same_named_captures(&paths, &c.named_files())?;
    }
    // A given vocabulary is read before the captures, so that a bad file is
    // said at once, not after a long read.
    let given_vocab = cfg.vocab_file.as_deref().map(Vocab::load).transpose()?;
    // Inputs checked: only now is the output folder made (a failed call
    // leaves no empty folder behind).
    let made_dir = !out_dir.exists();
    prepare_out_dir(out_dir, force)?;
    if made_dir {
        written.made_dir = Some(out_dir.to_path_buf());
    }
    let file_labels: Vec<Option<String>> = captures
        .iter()
        .map(|(p, root)| match &cfg.labels {
            LabelSource::Folder => folder_label(root, p),
            LabelSource::Prefix { delimiters } => prefix_label(p, delimiters),
            _ => None,
        })
        .collect();
    let file_names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().map(os_text).unwrap_or_default())
        .collect();

    let (mut flows, read) = read_sorted_flows_until(&paths, &rc, progress, stop);
    // Captures were skipped: the flows are not the dataset's.
    Interrupted::check(stop)?;
    let mut dropped = DropCounts::default();

    // Label, then filter by packet count with the rare-class exemption.
    let labelled = !cfg.labels.is_none();
    let mut names: Vec<Option<String>> = Vec::with_capacity(flows.len());
    // CSV rows that found their flow, by (file name, key) and by key alone.
    let mut matched_csv: HashSet<(&str, crate::traffic::types::FlowKey)> = HashSet::new();
    let mut matched_keys: HashSet<crate::traffic::types::FlowKey> = HashSet::new();
    for f in &flows {
        let l = match &csv {
            Some(c) => {
                let name = file_names[f.file_index as usize].as_str();
                let l = c.get(name, &f.key).map(str::to_string);
                if l.is_some() {
                    matched_csv.insert((name, f.key));
                    matched_keys.insert(f.key);
                }
                l
            }
            None => file_labels[f.file_index as usize].clone(),
        };
        names.push(l);
    }
    let mut passing: BTreeMap<&str, usize> = BTreeMap::new();
    for (f, n) in flows.iter().zip(&names) {
        if let Some(n) = n
            && f.total_packets >= cfg.min_packets as u64
        {
            *passing.entry(n.as_str()).or_default() += 1;
        }
    }
    let mut keep = vec![false; flows.len()];
    for (i, (f, n)) in flows.iter().zip(&names).enumerate() {
        if labelled && n.is_none() {
            dropped.unlabelled += 1;
            continue;
        }
        let rare = n
            .as_deref()
            .is_some_and(|n| passing.get(n).copied().unwrap_or(0) < cfg.keep_rare);
        if f.total_packets >= cfg.min_packets as u64 || (rare && !f.packets.is_empty()) {
            keep[i] = true;
        } else {
            dropped.too_few_packets += 1;
        }
    }
    // A label whose every flow was dropped is no class at all: say so.
    let mut label_flows: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (n, k) in names.iter().zip(&keep) {
        if let Some(n) = n {
            let e = label_flows.entry(n.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(*k);
        }
    }
    dropped.classes = label_flows
        .into_iter()
        .filter(|(_, (_, kept))| *kept == 0)
        .map(|(n, (all, _))| (n.to_string(), all))
        .collect();
    if labelled && !keep.iter().any(|&k| k) {
        let reason = format!(
            "no labelled flow kept: {} flows read, {} without a label, {} with fewer than {} packets",
            flows.len(),
            dropped.unlabelled,
            dropped.too_few_packets,
            cfg.min_packets
        );
        return Err(NoFlows { read, reason }.into());
    }
    if cfg.vocab_file.is_none() && !keep.iter().any(|&k| k) {
        let reason = format!(
            "cannot train a vocabulary on an empty corpus: {} flows read from {} files \
             ({} failed, {} with warnings), {} with fewer than {} packets",
            flows.len(),
            read.files,
            read.files_failed,
            read.files_warned,
            dropped.too_few_packets,
            cfg.min_packets
        );
        return Err(NoFlows { read, reason }.into());
    }
    let classes = class_table(
        names
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .filter_map(|(n, _)| n.as_deref()),
    );
    let class_id = |n: &Option<String>| {
        n.as_ref()
            .map(|n| classes.binary_search(n).expect("class") as u32)
    };
    let mut labels: Vec<Option<u32>> = Vec::new();
    let mut kept_flows: Vec<Flow> = Vec::new();
    for ((f, n), k) in flows.drain(..).zip(&names).zip(&keep) {
        if *k {
            labels.push(class_id(n));
            kept_flows.push(f);
        }
    }
    drop(names);
    // Long packet lists are only needed for augmentation; tokenise the first K.
    let mut long_lists: Vec<Option<Vec<crate::traffic::types::PacketRecord>>> = Vec::new();
    if slice_ns.is_some() {
        long_lists = kept_flows
            .iter_mut()
            .map(|f| {
                (f.packets.len() > k).then(|| {
                    let all = f.packets.clone();
                    f.packets.truncate(k);
                    all
                })
            })
            .collect();
    }

    // Vocabulary.
    Interrupted::check(stop)?;
    let t_vocab = Instant::now();
    let vocab = match given_vocab {
        Some(v) => v,
        None => {
            // The bar's template had no message: it showed "0/1 0/s".
            let spinner = if progress {
                crate::progress::spinner("vocab: training WordPiece".into())
            } else {
                ProgressBar::hidden()
            };
            let counts = corpus_counts(&kept_flows, tcfg);
            let v = Vocab::train(&counts, cfg.vocab_size).context("training the vocabulary")?;
            spinner.finish_and_clear();
            v
        }
    };
    let vocab_secs = t_vocab.elapsed().as_secs_f64();
    let tok = FlowTokenizer::new(vocab, tcfg.clone())?;

    // Tokenise.
    let t_tok = Instant::now();
    Interrupted::check(stop)?;
    let bar = progress_bar(kept_flows.len() as u64, "tokenise", progress);
    // None once `stop` is set: rayon's collect then ends early.
    let rows: Option<Vec<Vec<u32>>> = kept_flows
        .par_iter()
        .map(|f| {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            let r = tok.encode(f);
            bar.inc(1);
            Some(r)
        })
        .collect();
    bar.finish_and_clear();
    let rows = rows.ok_or(Interrupted)?;

    // Deduplicate, then split.
    let uniq = dedup_indices(&rows, &labels);
    dropped.duplicates = rows.len() - uniq.len();
    let ambiguous_flows = ambiguous_rows(&rows, &uniq);
    let parts: Vec<Part> = if labelled {
        let ls: Vec<u32> = uniq.iter().map(|&i| labels[i].expect("labelled")).collect();
        match cfg.split_by {
            SplitBy::Flow => split_by_flow(&ls, cfg.seed),
            SplitBy::File => {
                let fs: Vec<u32> = uniq.iter().map(|&i| kept_flows[i].file_index).collect();
                split_by_file(&ls, &fs, cfg.seed)
            }
            SplitBy::Time => {
                let fs: Vec<u32> = uniq.iter().map(|&i| kept_flows[i].file_index).collect();
                let ts: Vec<u64> = uniq.iter().map(|&i| kept_flows[i].first_ts_ns).collect();
                split_by_time(&fs, &ts)
            }
        }
    } else {
        vec![Part::Train; uniq.len()]
    };

    let mut out_rows: BTreeMap<Part, (Vec<Vec<u32>>, Vec<FlowMeta>)> = BTreeMap::new();
    // Packet sizes, directions and times beside each row, for the baselines.
    let mut out_pkts: BTreeMap<Part, Vec<Vec<PacketSlot>>> = BTreeMap::new();
    let mut class_counts: BTreeMap<String, PartCounts> = classes
        .iter()
        .map(|c| (c.clone(), PartCounts::default()))
        .collect();
    for (&i, &p) in uniq.iter().zip(&parts) {
        let e = out_rows.entry(p).or_default();
        e.0.push(rows[i].clone());
        e.1.push(meta_of(&kept_flows[i], labels[i], 0));
        out_pkts
            .entry(p)
            .or_default()
            .push(slots_of(&kept_flows[i], k));
        if let Some(l) = labels[i] {
            class_counts
                .get_mut(&classes[l as usize])
                .expect("class")
                .add(p);
        }
    }

    // Augment training flows.
    if let Some(slice_ns) = slice_ns {
        let mut seen: HashSet<(Vec<u32>, Option<u32>)> =
            uniq.iter().map(|&i| (rows[i].clone(), labels[i])).collect();
        // Split by time, a capture's held-out flows are its latest: a
        // training flow's slices from then on are held-out time too.
        let mut split_at: HashMap<u32, u64> = HashMap::new();
        if cfg.split_by == SplitBy::Time {
            for (&i, &p) in uniq.iter().zip(&parts) {
                if p != Part::Train {
                    let f = &kept_flows[i];
                    let at = split_at.entry(f.file_index).or_insert(u64::MAX);
                    *at = (*at).min(f.first_ts_ns);
                }
            }
        }
        for (&i, &p) in uniq.iter().zip(&parts) {
            let Some(all) = (p == Part::Train).then(|| long_lists[i].as_ref()).flatten() else {
                continue;
            };
            let split = split_at.get(&kept_flows[i].file_index).copied();
            for (w, sub) in time_slices(&kept_flows[i], all, slice_ns, k, cfg.min_packets) {
                if split.is_some_and(|at| sub.first_ts_ns >= at) {
                    dropped.augmented_after_split += 1;
                    continue;
                }
                let r = tok.encode(&sub);
                if !seen.insert((r.clone(), labels[i])) {
                    dropped.augmented_duplicates += 1;
                    continue;
                }
                let e = out_rows.entry(Part::Train).or_default();
                e.0.push(r);
                e.1.push(meta_of(
                    &sub,
                    labels[i],
                    u16::try_from(w + 1).unwrap_or(u16::MAX),
                ));
                out_pkts
                    .entry(Part::Train)
                    .or_default()
                    .push(slots_of(&sub, k));
                if let Some(l) = labels[i] {
                    let c = class_counts.get_mut(&classes[l as usize]).expect("class");
                    c.train += 1;
                    c.augmented += 1;
                }
            }
        }
    }
    let tokenize_secs = t_tok.elapsed().as_secs_f64();

    // Write (each file whole; the build undone if stopped before the last).
    Interrupted::check(stop)?;
    let vocab_path = out_dir.join("vocab.txt");
    written.files.push(vocab_path.clone());
    tok.vocab().save(&vocab_path)?;
    let mut shards = BTreeMap::new();
    let mut split_counts = BTreeMap::new();
    let written_parts: &[Part] = if labelled { &Part::ALL } else { &[Part::Train] };
    let dataset_id = dataset_id_of(written_parts, &out_rows, tok.hash(), tcfg.seq_len);
    for &p in written_parts {
        let (r, m) = out_rows.remove(&p).unwrap_or_default();
        let pkts = out_dir.join(format!("{}.pkts", p.name()));
        written.files.push(pkts.clone());
        packet_meta::write_tagged(
            &pkts,
            k,
            &out_pkts.remove(&p).unwrap_or_default(),
            dataset_id,
            p.name(),
        )?;
        let name = format!("{}.tmoe", p.name());
        written.files.push(out_dir.join(&name));
        write_dataset_shard(
            &out_dir.join(&name),
            tcfg.seq_len,
            tok.hash(),
            tok.vocab_size(),
            (dataset_id, p.name()),
            &r,
            &m,
        )?;
        shards.insert(p.name().to_string(), name);
        split_counts.insert(p.name().to_string(), r.len());
    }
    let csv_rows_unmatched = csv.as_ref().map(|c| {
        // Rows, not distinct keys: a CSV repeats a 5-tuple per flow it cut.
        c.entries()
            .filter(|(file, key, _)| match file {
                Some(f) => !matched_csv.contains(&(*f, **key)),
                None => !matched_keys.contains(*key),
            })
            .map(|(file, key, _)| c.rows_of(file, key))
            .sum()
    });
    let info = DatasetInfo {
        format: DATASET_FORMAT,
        classes: if labelled { classes } else { Vec::new() },
        vocab_hash: tok.hash(),
        vocab_hash_hex: format!("{:016x}", tok.hash()),
        vocab_size: tok.vocab_size(),
        seq_len: tcfg.seq_len,
        labelled,
        shards,
        split_counts,
        class_counts,
        dropped,
        ambiguous_flows,
        read: ReadTotals {
            files: read.files,
            files_failed: read.files_failed,
            files_warned: read.files_warned,
            bytes: read.bytes,
            packets: read.packets,
            flows: read.flows,
        },
        files: paths.iter().map(|p| p.display().to_string()).collect(),
        csv_rows_unmatched,
        dataset_id: Some(dataset_id),
        config: cfg.clone(),
    };
    // Last, and through a temporary file renamed into place: dataset.json
    // makes the folder a dataset (demo and study reuse a folder that has
    // one), so a run killed before here leaves none, and one killed while
    // writing it leaves no truncated one; every file it names is in place.
    let json_path = out_dir.join("dataset.json");
    written.files.push(json_path.clone());
    let json_tmp = out_dir.join("dataset.json.tmp");
    write_then_rename(&json_path, &json_tmp, 64 << 10, |w| {
        serde_json::to_writer_pretty(w, &info)
            .with_context(|| format!("writing {}", json_tmp.display()))
    })?;
    Ok(DatasetSummary {
        info,
        read,
        elapsed: start.elapsed(),
        tokenize_secs,
        vocab_secs,
    })
}

/// Builds a dataset into a new or empty directory (see [`build_dataset_with`]).
pub fn build_dataset(
    cfg: &DatasetConfig,
    out_dir: &Path,
    progress: bool,
) -> anyhow::Result<DatasetSummary> {
    build_dataset_with(cfg, out_dir, progress, false)
}
