//! Per-file and per-run accounting: every frame is either turned into a flow
//! packet or counted under a skip reason, and every file ends ok, with
//! warnings (partial read) or failed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::traffic::capture::container::{CaptureErrorKind, CaptureFormat};
use crate::traffic::capture::decode::SkipReason;

/// Frames skipped, per reason (indexed by `SkipReason::index`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCounts(pub [u64; SkipReason::ALL.len()]);

impl SkipCounts {
    pub fn add(&mut self, reason: SkipReason) {
        self.0[reason.index()] += 1;
    }
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.0[reason.index()]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn merge(&mut self, other: &SkipCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// `skipped N frames: reason n; ...` (with pcapng frames of an unknown
    /// interface), or None when nothing was skipped: every command that
    /// reads captures reports skips in these words.
    pub fn summary(&self, unknown_interface_frames: u64) -> Option<String> {
        let skipped = self.total() + unknown_interface_frames;
        if skipped == 0 {
            return None;
        }
        let mut s = format!("skipped {skipped} frames:");
        for reason in SkipReason::ALL {
            let n = self.get(reason);
            if n > 0 {
                s += &format!(" {} {n};", reason.as_str());
            }
        }
        if unknown_interface_frames > 0 {
            s += &format!(" unknown pcapng interface {unknown_interface_frames};");
        }
        Some(s)
    }
}

/// The packets kept although incomplete, or None when there were none.
pub fn care_line(truncated_packets: u64, first_fragments: u64) -> Option<String> {
    (truncated_packets + first_fragments > 0).then(|| {
        format!(
            "used with care: {truncated_packets} truncated packets (snaplen), {first_fragments} first IP fragments"
        )
    })
}

/// A problem with one file, located by byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub kind: CaptureErrorKind,
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at byte offset {}",
            self.path.display(),
            self.kind.as_str(),
            self.offset
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// How reading one file ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStatus {
    Ok,
    /// Read in part (a bad record/block stopped it) or nothing decodable.
    Warned,
    /// Not readable at all (empty, not a capture, bad header, I/O).
    Failed,
}

/// What reading one capture file produced.
#[derive(Clone, Debug, Default)]
pub struct FileStats {
    pub path: PathBuf,
    pub file_index: u32,
    pub format: Option<CaptureFormat>,
    /// File size in bytes.
    pub bytes: u64,
    /// Frames (records / packet blocks) read, decodable or not.
    pub frames: u64,
    /// TCP/UDP packets that went into flows.
    pub packets: u64,
    /// Of `packets`: captured shorter than their headers declare.
    pub truncated_packets: u64,
    /// Of `packets`: first fragments of fragmented IP packets.
    pub first_fragments: u64,
    pub skips: SkipCounts,
    /// pcapng packet blocks naming an interface with no IDB (not decodable).
    pub unknown_interface_frames: u64,
    /// Frames per link type.
    pub link_types: BTreeMap<u32, u64>,
    /// Flows emitted.
    pub flows: u64,
    /// Of `flows`: ended early because the flow table was full
    /// (`ReadConfig::max_flows`).
    pub flows_evicted: u64,
    /// The file could not be read at all.
    pub error: Option<FileError>,
    /// The read stopped early, or produced nothing usable.
    pub warnings: Vec<FileError>,
    pub elapsed: Duration,
}

impl FileStats {
    pub fn status(&self) -> FileStatus {
        if self.error.is_some() {
            FileStatus::Failed
        } else if !self.warnings.is_empty() {
            FileStatus::Warned
        } else {
            FileStatus::Ok
        }
    }
}

/// Totals of a run over many files.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub files: u64,
    pub files_ok: u64,
    pub files_warned: u64,
    pub files_failed: u64,
    pub bytes: u64,
    pub frames: u64,
    pub packets: u64,
    pub truncated_packets: u64,
    pub first_fragments: u64,
    pub skips: SkipCounts,
    pub unknown_interface_frames: u64,
    pub link_types: BTreeMap<u32, u64>,
    pub flows: u64,
    /// Of `flows`: ended early because a file's flow table was full.
    pub flows_evicted: u64,
    /// Every failure and warning, in file order.
    pub problems: Vec<FileError>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Peak resident memory of the process (VmHWM), in KiB, when known.
    pub peak_rss_kib: Option<u64>,
}

impl RunStats {
    pub fn add_file(&mut self, f: &FileStats) {
        self.files += 1;
        match f.status() {
            FileStatus::Ok => self.files_ok += 1,
            FileStatus::Warned => self.files_warned += 1,
            FileStatus::Failed => self.files_failed += 1,
        }
        self.bytes += f.bytes;
        self.frames += f.frames;
        self.packets += f.packets;
        self.truncated_packets += f.truncated_packets;
        self.first_fragments += f.first_fragments;
        self.skips.merge(&f.skips);
        self.unknown_interface_frames += f.unknown_interface_frames;
        for (lt, n) in &f.link_types {
            *self.link_types.entry(*lt).or_default() += n;
        }
        self.flows += f.flows;
        self.flows_evicted += f.flows_evicted;
        self.problems.extend(f.error.iter().cloned());
        self.problems.extend(f.warnings.iter().cloned());
    }

    /// Adds another run's totals (for parallel reduction).
    pub fn merge(&mut self, o: RunStats) {
        self.files += o.files;
        self.files_ok += o.files_ok;
        self.files_warned += o.files_warned;
        self.files_failed += o.files_failed;
        self.bytes += o.bytes;
        self.frames += o.frames;
        self.packets += o.packets;
        self.truncated_packets += o.truncated_packets;
        self.first_fragments += o.first_fragments;
        self.skips.merge(&o.skips);
        self.unknown_interface_frames += o.unknown_interface_frames;
        for (lt, n) in o.link_types {
            *self.link_types.entry(lt).or_default() += n;
        }
        self.flows += o.flows;
        self.flows_evicted += o.flows_evicted;
        self.problems.extend(o.problems);
    }

    /// The packets kept with care and the frames skipped by reason, a line
    /// each where there were any (what every command that reads captures
    /// reports, in these words).
    pub fn kept_and_skipped(&self) -> Vec<String> {
        [
            care_line(self.truncated_packets, self.first_fragments),
            self.skips.summary(self.unknown_interface_frames),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs()
    }

    pub fn flows_per_sec(&self) -> f64 {
        self.flows as f64 / self.secs()
    }

    pub fn packets_per_sec(&self) -> f64 {
        self.frames as f64 / self.secs()
    }
}

/// Peak resident set size of this process (VmHWM) in KiB; None off Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many problems the summary lists before "... and N more".
const PROBLEMS_SHOWN: usize = 10;

impl fmt::Display for RunStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "files: {} ({} ok, {} with warnings, {} failed)",
            self.files, self.files_ok, self.files_warned, self.files_failed
        )?;
        writeln!(
            f,
            "read {:.1} MB, {} frames, {} TCP/UDP packets -> {} flows in {:.2} s ({:.1} MB/s, {:.0} flows/s, {:.0} frames/s)",
            self.bytes as f64 / 1e6,
            self.frames,
            self.packets,
            self.flows,
            self.elapsed.as_secs_f64(),
            self.mb_per_sec(),
            self.flows_per_sec(),
            self.packets_per_sec()
        )?;
        if self.flows_evicted > 0 {
            writeln!(
                f,
                "{} flows ended early: the flow table was full (max_flows)",
                self.flows_evicted
            )?;
        }
        for line in self.kept_and_skipped() {
            writeln!(f, "{line}")?;
        }
        if !self.link_types.is_empty() {
            let lts: Vec<String> = self
                .link_types
                .iter()
                .map(|(lt, n)| format!("{lt}:{n}"))
                .collect();
            writeln!(f, "frames per link type: {}", lts.join(" "))?;
        }
        if let Some(kib) = self.peak_rss_kib {
            writeln!(f, "peak memory: {:.1} MiB", kib as f64 / 1024.0)?;
        }
        for p in self.problems.iter().take(PROBLEMS_SHOWN) {
            writeln!(f, "  problem: {p}")?;
        }
        if self.problems.len() > PROBLEMS_SHOWN {
            writeln!(
                f,
                "  ... and {} more problems",
                self.problems.len() - PROBLEMS_SHOWN
            )?;
        }
        Ok(())
    }
}
