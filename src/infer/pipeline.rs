//! Captures -> verdicts as a pipeline: reader threads read captures in
//! parallel and tokenize each file's flows as it completes; this thread pools
//! the flows of many files, sorts them by length and runs the model on full
//! batches (an inference tape: no backward state), so one-flow captures no
//! longer make batches of one. Results come back file by file in input order,
//! and within a file by (first timestamp, key), so the output never depends
//! on thread timing: a flow's class does not depend on the batch it rode in
//! (attention is causal, pooling masked, routing per token).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::Instant;

use anyhow::Result;

use super::classifier::Classifier;
use crate::model::batch::MemSequences;
use crate::traffic::capture::reader::read_capture;
use crate::traffic::capture::stats::FileStats;
use crate::traffic::tokens::tokenize::FlowTokenizer;
use crate::traffic::types::Flow;

/// How the pipeline batches and reads.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Flows per model call.
    pub batch: usize,
    /// Flows with fewer packets are counted and not classified.
    pub min_packets: usize,
    /// Reader threads (0: one per core).
    pub readers: usize,
    /// Flows pooled before they are sorted by length and cut into batches:
    /// more means less padding, at the cost of memory and latency.
    pub window: usize,
    /// Flow-table cap per capture (None: the reader's default).
    pub max_flows: Option<usize>,
}

impl PipelineConfig {
    pub fn new(batch: usize, min_packets: usize) -> PipelineConfig {
        let batch = batch.max(1);
        PipelineConfig {
            batch,
            min_packets: min_packets.max(1),
            readers: 0,
            window: batch * 16,
            max_flows: None,
        }
    }
}

/// One flow and its verdict. The flow's packets are dropped once tokenized.
#[derive(Clone, Debug)]
pub struct Classified {
    pub flow: Flow,
    pub class_id: u32,
    pub probability: f32,
}

/// Where a run's time went (for `tmoe bench classify`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PipelineStats {
    /// Seconds this thread spent in the model (the readers run beside it).
    pub model_seconds: f64,
    /// Seconds it waited for the readers with nothing to classify.
    pub wait_seconds: f64,
    pub flows: usize,
    /// Model calls.
    pub batches: usize,
    /// Tokens the model read, and the padding it ran over besides.
    pub tokens: usize,
    pub padding: usize,
}

/// A capture read and classified, handed out in input order.
pub struct FileResult<'a> {
    pub index: usize,
    pub path: &'a Path,
    /// What reading found (an error means nothing was read; warnings mean the
    /// flows before the problem are kept).
    pub stats: FileStats,
    /// Flows under the packet minimum (not classified).
    pub too_short: usize,
    /// Sorted by (first timestamp, key).
    pub flows: Vec<Classified>,
}

/// A file read by a reader thread, waiting for its verdicts.
struct ReadFile {
    index: usize,
    stats: FileStats,
    too_short: usize,
    flows: Vec<Flow>,
    tokens: Vec<Vec<u32>>,
}

/// A file whose flows are (partly) in the model's queue.
struct Slot {
    read: ReadFile,
    verdicts: Vec<(u32, f32)>,
    remaining: usize,
    /// Of the file's bytes, those reported done: the share of its flows
    /// classified.
    credited: u64,
}

/// Reads, tokenizes and classifies every file; calls `on_file` for each in
/// the order of `files`, on this thread. `on_progress(bytes, flows)`, on
/// this thread too, reports work done for a progress bar: flows classified,
/// and capture bytes as their flows are classified (a file's bytes in the
/// share of its flows done; a file without flows to classify when read),
/// so a bar over the captures' bytes moves with the model, the slow part,
/// instead of reaching its end when reading does (one large capture was
/// read in a second and classified for minutes under a full bar). Stops at
/// the first error from the model or `on_file`; a capture that cannot be
/// read is not an error (see `FileResult::stats`).
pub fn classify_files(
    clf: &Classifier,
    files: &[PathBuf],
    cfg: &PipelineConfig,
    on_progress: &mut dyn FnMut(u64, usize),
    on_file: &mut dyn FnMut(FileResult) -> Result<()>,
) -> Result<PipelineStats> {
    let readers = match cfg.readers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
    .min(files.len())
    .max(1);
    // A few files per reader in flight: enough to keep the model fed.
    let (tx, rx) = sync_channel::<ReadFile>(readers * 4);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut read_cfg = clf.read_config();
    if let Some(m) = cfg.max_flows {
        read_cfg.max_flows = m.max(1);
    }
    let tokenizer = &clf.tokenizer;
    let (seq_len, min_packets) = (clf.seq_len, cfg.min_packets);
    std::thread::scope(|scope| {
        for _ in 0..readers {
            let tx = tx.clone();
            let (next, stop, read_cfg) = (&next, &stop, &read_cfg);
            scope.spawn(move || {
                // Files are claimed in order, so they finish roughly in order
                // and the writer holds few finished files back.
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let mut flows = Vec::new();
                    let stats = read_capture(path, i as u32, read_cfg, &mut |f| flows.push(f));
                    let read = tokenize_file(i, stats, flows, tokenizer, seq_len, min_packets);
                    if tx.send(read).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = run_model(clf, files, cfg, &rx, on_progress, on_file);
        // On an error, readers stop claiming files; dropping the receiver
        // unblocks any waiting in `send`.
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        result
    })
}

/// Drops short flows, orders the rest and turns them into tokens.
fn tokenize_file(
    index: usize,
    stats: FileStats,
    mut flows: Vec<Flow>,
    tokenizer: &FlowTokenizer,
    seq_len: usize,
    min_packets: usize,
) -> ReadFile {
    let before = flows.len();
    flows.retain(|f| f.total_packets as usize >= min_packets);
    let too_short = before - flows.len();
    flows.sort_by_key(|f| (f.first_ts_ns, f.key));
    let tokens = flows
        .iter_mut()
        .map(|f| {
            let mut t = tokenizer.encode(f);
            t.truncate(seq_len);
            // The tokens are all the model needs; the packets can go.
            f.packets = Vec::new();
            t
        })
        .collect();
    ReadFile {
        index,
        stats,
        too_short,
        flows,
        tokens,
    }
}

/// The model's side: pools flows from the readers, classifies them in
/// length-sorted batches and hands finished files out in order.
fn run_model(
    clf: &Classifier,
    files: &[PathBuf],
    cfg: &PipelineConfig,
    rx: &Receiver<ReadFile>,
    on_progress: &mut dyn FnMut(u64, usize),
    on_file: &mut dyn FnMut(FileResult) -> Result<()>,
) -> Result<PipelineStats> {
    let mut st = PipelineStats::default();
    let mut slots: BTreeMap<usize, Slot> = BTreeMap::new();
    // (file, row) of every flow waiting for the model.
    let mut queue: Vec<(usize, usize)> = Vec::new();
    let mut next_out = 0usize;
    let mut reading = true;
    while reading || !queue.is_empty() {
        if reading && queue.len() < cfg.window {
            // Wait for one file when there is not a batch to run, then take
            // whatever else is ready without waiting.
            let first = if queue.len() >= cfg.batch {
                None
            } else {
                let t = Instant::now();
                let got = rx.recv();
                st.wait_seconds += t.elapsed().as_secs_f64();
                match got {
                    Ok(f) => Some(f),
                    Err(_) => {
                        reading = false;
                        None
                    }
                }
            };
            if let Some(f) = first {
                admit(f, &mut slots, &mut queue, on_progress);
            }
            while reading && queue.len() < cfg.window {
                match rx.try_recv() {
                    Ok(f) => admit(f, &mut slots, &mut queue, on_progress),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => reading = false,
                }
            }
        }
        // Full batches while files keep coming; everything at the end.
        let take = if reading {
            queue.len().min(cfg.window) / cfg.batch * cfg.batch
        } else {
            queue.len().min(cfg.window)
        };
        if take > 0 {
            let t = Instant::now();
            let bytes = classify_queued(clf, cfg.batch, &mut queue, take, &mut slots, &mut st)?;
            st.model_seconds += t.elapsed().as_secs_f64();
            on_progress(bytes, take);
        }
        while let Some(slot) = slots.get(&next_out) {
            if slot.remaining > 0 {
                break;
            }
            let slot = slots.remove(&next_out).expect("slot present");
            on_file(finish(slot, files))?;
            next_out += 1;
        }
    }
    anyhow::ensure!(
        next_out == files.len(),
        "internal error: {} of {} captures came back from the readers",
        next_out,
        files.len()
    );
    Ok(st)
}

fn admit(
    f: ReadFile,
    slots: &mut BTreeMap<usize, Slot>,
    queue: &mut Vec<(usize, usize)>,
    on_progress: &mut dyn FnMut(u64, usize),
) {
    let n = f.flows.len();
    queue.extend((0..n).map(|r| (f.index, r)));
    // Nothing to wait for: its bytes are done now.
    let credited = if n == 0 { f.stats.bytes } else { 0 };
    if credited > 0 {
        on_progress(credited, 0);
    }
    slots.insert(
        f.index,
        Slot {
            verdicts: vec![(0, 0.0); n],
            remaining: n,
            read: f,
            credited,
        },
    );
}

/// Classifies `take` queued flows, shortest first (less padding per batch);
/// returns the capture bytes newly done (see [`classify_files`]).
fn classify_queued(
    clf: &Classifier,
    batch: usize,
    queue: &mut Vec<(usize, usize)>,
    take: usize,
    slots: &mut BTreeMap<usize, Slot>,
    st: &mut PipelineStats,
) -> Result<u64> {
    let rest = queue.split_off(take);
    let mut run = std::mem::replace(queue, rest);
    let len_of = |&(f, r): &(usize, usize)| slots[&f].read.tokens[r].len();
    run.sort_by_key(|e| (len_of(e), *e));
    let mut seqs = MemSequences::new(clf.seq_len);
    for &(f, r) in &run {
        seqs.push(&slots[&f].read.tokens[r], None);
    }
    let verdicts = clf.classify_tokens(&seqs, batch)?;
    // The same batches as classify_tokens forms: sorted by length, cut in order.
    for rows in seqs.lens.chunks(batch) {
        let longest = rows.iter().copied().max().unwrap_or(0).max(1);
        st.tokens += rows.iter().sum::<usize>();
        st.padding += rows.iter().map(|&n| longest - n).sum::<usize>();
        st.batches += 1;
    }
    st.flows += run.len();
    for (&(f, r), v) in run.iter().zip(verdicts) {
        let slot = slots.get_mut(&f).expect("queued flow has a slot");
        slot.verdicts[r] = v;
        slot.remaining -= 1;
    }
    let mut files: Vec<usize> = run.iter().map(|&(f, _)| f).collect();
    files.sort_unstable();
    files.dedup();
    let mut bytes = 0;
    for f in files {
        let slot = slots.get_mut(&f).expect("queued flow has a slot");
        let (total, n) = (slot.read.stats.bytes, slot.verdicts.len() as u64);
        // u128: a terabyte of capture times millions of flows.
        let done =
            (u128::from(total) * u128::from(n - slot.remaining as u64) / u128::from(n)) as u64;
        bytes += done - slot.credited;
        slot.credited = done;
    }
    Ok(bytes)
}

fn finish(slot: Slot, files: &[PathBuf]) -> FileResult<'_> {
    let ReadFile {
        index,
        stats,
        too_short,
        flows,
        ..
    } = slot.read;
    let flows = flows
        .into_iter()
        .zip(slot.verdicts)
        .map(|(flow, (class_id, probability))| Classified {
            flow,
            class_id,
            probability,
        })
        .collect();
    FileResult {
        index,
        path: &files[index],
        stats,
        too_short,
        flows,
    }
}
