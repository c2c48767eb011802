//! The capture side's entry points: captures in, finished flows and stats out.
//! Container reading (container.rs) -> decoding (decode.rs) -> flow table
//! (`flows::table`), one file per rayon task.

use std::hash::BuildHasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::traffic::capture::container::CaptureReader;
use crate::traffic::capture::decode::decode_frame;
use crate::traffic::capture::stats::{FileError, FileStats, RunStats, peak_rss_kib};
use crate::traffic::flows::table::{FlowTable, KeyedState};
use crate::traffic::types::Flow;

/// How captures become flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadConfig {
    /// K: packets kept per flow (the flow's total count is kept regardless).
    pub max_packets: usize,
    /// L4 payload bytes kept per packet.
    pub payload_bytes: usize,
    /// A flow silent for longer than this ends; the next packet starts a new one.
    pub idle_timeout_ns: u64,
    /// A TCP flow ends after FIN from both sides, or RST.
    pub split_on_fin_rst: bool,
    /// Flows held at once (per file); a new flow beyond it ends the least
    /// recently active one early (counted as evicted). A held flow costs
    /// about 0.75 KB with one packet (room for K = 10 is reserved) and some
    /// 1.2 KB when full (bench/results/cpu/stream-flood.txt), so the default
    /// bounds one table near 0.75-1.2 GB: far above any real capture's
    /// concurrency (7.6 MiB peak over ../shared/data), but a bound on a
    /// crafted SYN flood's.
    pub max_flows: usize,
}

/// `ReadConfig::max_flows` unless set otherwise.
pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            max_packets: 10,
            payload_bytes: 40,
            idle_timeout_ns: 120_000_000_000,
            split_on_fin_rst: true,
            max_flows: DEFAULT_MAX_FLOWS,
        }
    }
}

/// Streams one capture; calls `on_flow` for every finished flow (any packet
/// count). Never panics; a broken file returns partial results plus an error
/// or warnings in the returned stats.
pub fn read_capture(
    path: &Path,
    file_index: u32,
    cfg: &ReadConfig,
    on_flow: &mut dyn FnMut(Flow),
) -> FileStats {
    read_capture_with(path, file_index, cfg, KeyedState::new(), on_flow)
}

/// [`read_capture`] with the flow table hashing through `hasher` (the
/// default is the keyed `KeyedState`; benches compare it with `FastState`).
pub fn read_capture_with<S: BuildHasher>(
    path: &Path,
    file_index: u32,
    cfg: &ReadConfig,
    hasher: S,
    on_flow: &mut dyn FnMut(Flow),
) -> FileStats {
    let start = Instant::now();
    let mut st = FileStats {
        path: path.to_path_buf(),
        file_index,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        ..FileStats::default()
    };
    let problem = |e: crate::traffic::capture::container::CaptureError| FileError {
        path: path.to_path_buf(),
        kind: e.kind,
        offset: e.offset,
        message: e.detail,
    };
    let mut reader = match CaptureReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            st.error = Some(problem(e));
            st.elapsed = start.elapsed();
            return st;
        }
    };
    st.format = Some(reader.format());
    let mut table = FlowTable::with_hasher(cfg, file_index, hasher);
    // Link types change rarely: count runs, not a map lookup per frame.
    let (mut run_lt, mut run_len) = (u32::MAX, 0u64);
    let result = reader.for_each_frame(|frame| {
        st.frames += 1;
        if frame.link_type != run_lt {
            if run_len > 0 {
                *st.link_types.entry(run_lt).or_default() += run_len;
            }
            (run_lt, run_len) = (frame.link_type, 0);
        }
        run_len += 1;
        match decode_frame(frame.link_type, frame.data, frame.orig_len) {
            Ok(pkt) => {
                st.packets += 1;
                st.truncated_packets += u64::from(pkt.truncated);
                st.first_fragments += u64::from(pkt.first_fragment);
                table.push(frame.ts_ns, &pkt, on_flow);
            }
            Err(reason) => st.skips.add(reason),
        }
    });
    if run_len > 0 {
        *st.link_types.entry(run_lt).or_default() += run_len;
    }
    if let Err(e) = result {
        st.warnings.push(problem(e));
    }
    // Frames naming an undeclared pcapng interface are frames too (skipped).
    st.unknown_interface_frames = reader.unknown_interface_frames;
    st.frames += reader.unknown_interface_frames;
    table.flush(on_flow);
    st.flows = table.emitted();
    st.flows_evicted = table.evicted();
    st.elapsed = start.elapsed();
    st
}

/// Reads many files in parallel (rayon), with a progress bar (bytes, MB/s,
/// ETA) when `progress` is set. `on_flow` is called from worker threads; the
/// file a flow came from is `flow.file_index` (its index in `paths`).
pub fn read_captures(
    paths: &[PathBuf],
    cfg: &ReadConfig,
    progress: bool,
    on_flow: &(dyn Fn(Flow) + Sync),
) -> RunStats {
    read_captures_until(paths, cfg, progress, on_flow, &AtomicBool::new(false))
}

/// [`read_captures`], reading no further capture once `stop` is set (a
/// caller's Ctrl-C; polled before each file): the stats then miss the
/// files skipped, so a caller that set it keeps nothing of the read.
pub fn read_captures_until(
    paths: &[PathBuf],
    cfg: &ReadConfig,
    progress: bool,
    on_flow: &(dyn Fn(Flow) + Sync),
    stop: &AtomicBool,
) -> RunStats {
    let start = Instant::now();
    let total_bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = if progress {
        let bar = crate::progress::new_bar(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "      read [{bar:40.cyan/blue}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut stats = paths
        .par_iter()
        .enumerate()
        .map(|(i, path)| {
            let mut run = RunStats::default();
            if stop.load(Ordering::SeqCst) {
                return run;
            }
            let fs = read_capture(path, i as u32, cfg, &mut |f| on_flow(f));
            bar.inc(fs.bytes);
            run.add_file(&fs);
            run
        })
        .reduce(RunStats::default, |mut a, b| {
            a.merge(b);
            a
        });
    bar.finish_and_clear();
    stats.elapsed = start.elapsed();
    stats.peak_rss_kib = peak_rss_kib();
    stats
}

fn has_capture_extension(path: &Path) -> Option<bool> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    match ext {
        "pcap" | "pcapng" | "cap" => Some(true),
        // Text and data files that sit next to captures.
        "txt" | "md" | "json" | "csv" | "py" | "sh" | "yaml" | "yml" | "rules" | "conf" => {
            Some(false)
        }
        _ => None,
    }
}

/// True when the file starts with a pcap or pcapng magic number.
fn has_capture_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut magic).is_err() {
        return false;
    }
    matches!(
        u32::from_le_bytes(magic),
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 | 0xa1b2_cd34 | 0x0a0d_0d0a
    )
}

/// Recursively lists capture files under `root` (by extension .pcap, .pcapng,
/// .cap; other files by magic number; compressed files left out, with a warning), sorted by path.
pub fn find_captures(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    if root.is_file() {
        found.push(root.to_path_buf());
        return Ok(found);
    }
    let mut stack = vec![root.to_path_buf()];
    let mut compressed = Vec::new();
    // Linked folders are followed, but never to `root`'s own folders or
    // above it, and each real folder is searched once: a link back up
    // (`up -> ..`) was followed some 40 levels deep, every capture read as
    // many times and labelled by the folder it was reached through.
    let real_root = std::fs::canonicalize(root)?;
    let mut searched = std::collections::HashSet::from([real_root.clone()]);
    let mut links_left_out = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                let link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
                let seen = std::fs::canonicalize(&path).is_ok_and(|real| {
                    (link && (real_root.starts_with(&real) || real.starts_with(&real_root)))
                        || !searched.insert(real)
                });
                if seen {
                    links_left_out.push(path);
                } else {
                    stack.push(path);
                }
            } else if path.is_file() {
                if is_compressed(&path) {
                    compressed.push(path);
                    continue;
                }
                let keep = match has_capture_extension(&path) {
                    Some(k) => k,
                    None => has_capture_magic(&path),
                };
                if keep {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    if let Some(first) = links_left_out.iter().min() {
        eprintln!(
            "warning: {}: {} linked folder(s) left out (e.g. {}): each leads to a folder searched through another path, or above {}",
            root.display(),
            links_left_out.len(),
            first.display(),
            root.display()
        );
    }
    if let Some(first) = compressed.iter().min() {
        eprintln!(
            "warning: {}: {} compressed file(s) left out (e.g. {}): decompress them (gunzip, unxz, ...) to read them",
            root.display(),
            compressed.len(),
            first.display()
        );
    }
    Ok(found)
}

/// A compressed file (the reader reads plain pcap / pcapng only).
fn is_compressed(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    [".gz", ".xz", ".zst", ".bz2", ".lz4", ".zip", ".7z"]
        .iter()
        .any(|e| name.ends_with(e))
}

#[cfg(test)]
mod find_tests {
    use super::find_captures;

    #[test]
    fn compressed_captures_and_notes_are_left_out_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pcap_magic = [0xd4u8, 0xc3, 0xb2, 0xa1];
        for name in [
            "a.pcap",
            "b.PCAPNG",
            "c.pcap.gz",
            "d.pcap.xz",
            "e.zst",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), pcap_magic).unwrap();
        }
        // No extension: kept by its magic number.
        std::fs::write(dir.path().join("capture"), pcap_magic).unwrap();
        std::fs::write(dir.path().join("other"), b"hello").unwrap();
        let names: Vec<String> = find_captures(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.pcap", "b.PCAPNG", "capture"]);
    }
}
