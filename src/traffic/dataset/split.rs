//! Deduplication and the deterministic, stratified 8:1:1 train/val/test split.
//!
//! - By flow: within each class, flows are shuffled with the seed and cut into
//!   `round(n/10)` validation, `round(n/10)` test and the rest training flows;
//!   a class with at least 3 flows gets at least one of each.
//! - By file: every flow of a capture goes to the same part. A capture belongs to
//!   its majority class; within each class, captures (shuffled, then largest
//!   first) go one by one to the part furthest below its 80/10/10 share of
//!   that class's flows; a class with at least 3 captures gets at least one
//!   capture in each part.
//! - By time: each capture's flows in time order, the earliest 80 % train, the
//!   next 10 % validation and the latest 10 % test.
//!
//! The shuffle is our own SplitMix64, so splits stay identical across platforms
//! and crate versions.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    #[default]
    Flow,
    File,
    /// Within each capture, by time: its earliest flows train, the latest
    /// test (the paper's time-shift setting: a model meets later traffic).
    Time,
}

/// As `--split-by` spells it (reports and messages).
impl std::fmt::Display for SplitBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitBy::Flow => "flow",
            SplitBy::File => "file",
            SplitBy::Time => "time",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Val, Part::Test];
    /// The parts' names, as files and `--split` spell them.
    pub const NAMES: [&'static str; 3] = [Part::Train.name(), Part::Val.name(), Part::Test.name()];
    pub const fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// SplitMix64: tiny, seedable, stable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0; the tiny modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Indices of the first occurrence of every distinct (tokens, label) pair, in order.
pub fn dedup_indices(rows: &[Vec<u32>], labels: &[Option<u32>]) -> Vec<usize> {
    let mut seen: HashSet<(&[u32], Option<u32>)> = HashSet::with_capacity(rows.len());
    (0..rows.len())
        .filter(|&i| seen.insert((rows[i].as_slice(), labels[i])))
        .collect()
}

/// (train, val, test) sizes of a class of `n` items.
pub fn targets(n: usize) -> (usize, usize, usize) {
    let tenth = (n as f64 / 10.0).round() as usize;
    let small = if n >= 3 { tenth.max(1) } else { 0 };
    (n - 2 * small, small, small)
}

/// Stratified split of flows by their labels.
pub fn split_by_flow(labels: &[u32], seed: u64) -> Vec<Part> {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = Rng::new(seed);
    let mut out = vec![Part::Train; labels.len()];
    for idx in by_class.values_mut() {
        rng.shuffle(idx);
        let (_, nv, nt) = targets(idx.len());
        for &i in &idx[..nv] {
            out[i] = Part::Val;
        }
        for &i in &idx[nv..nv + nt] {
            out[i] = Part::Test;
        }
    }
    out
}

/// Split keeping all flows of a capture (`files[i]`) in one part.
pub fn split_by_file(labels: &[u32], files: &[u32], seed: u64) -> Vec<Part> {
    // Flow counts per file and class.
    let mut file_class: BTreeMap<u32, BTreeMap<u32, usize>> = BTreeMap::new();
    for (&l, &f) in labels.iter().zip(files) {
        *file_class.entry(f).or_default().entry(l).or_default() += 1;
    }
    // Majority class of each file (ties: lowest class id) -> (file, size).
    let mut class_files: BTreeMap<u32, Vec<(u32, usize)>> = BTreeMap::new();
    for (&f, counts) in &file_class {
        let (&class, _) = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .expect("non-empty");
        class_files
            .entry(class)
            .or_default()
            .push((f, counts.values().sum()));
    }
    let mut rng = Rng::new(seed);
    let mut file_part: HashMap<u32, Part> = HashMap::new();
    for list in class_files.values_mut() {
        rng.shuffle(list);
        list.sort_by_key(|x| std::cmp::Reverse(x.1)); // stable: shuffled order breaks ties
        let total: usize = list.iter().map(|x| x.1).sum();
        let share = [0.8 * total as f64, 0.1 * total as f64, 0.1 * total as f64];
        let mut got = [0usize; 3];
        let mut members: [Vec<(u32, usize)>; 3] = Default::default();
        for &(f, n) in list.iter() {
            let p = (0..3)
                .max_by(|&a, &b| {
                    let da = share[a] - got[a] as f64;
                    let db = share[b] - got[b] as f64;
                    da.total_cmp(&db).then(b.cmp(&a))
                })
                .unwrap();
            got[p] += n;
            members[p].push((f, n));
        }
        if list.len() >= 3 {
            for p in [Part::Val, Part::Test] {
                if members[p.index()].is_empty() {
                    // Move the smallest file of the biggest part.
                    let from = (0..3).max_by_key(|&q| members[q].len()).unwrap();
                    let (pos, _) = members[from]
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, x)| x.1)
                        .unwrap();
                    let moved = members[from].remove(pos);
                    members[p.index()].push(moved);
                }
            }
        }
        for (p, m) in Part::ALL.iter().zip(&members) {
            for &(f, _) in m {
                file_part.insert(f, *p);
            }
        }
    }
    files.iter().map(|f| file_part[f]).collect()
}

/// Each capture's flows in time order: the first 80 % train, the next 10 %
/// validation, the last 10 % test ([`targets`] per capture; a capture with
/// fewer than 3 flows trains). `files[i]` and `first_ts[i]` describe flow i.
pub fn split_by_time(files: &[u32], first_ts: &[u64]) -> Vec<Part> {
    let mut by_file: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &f) in files.iter().enumerate() {
        by_file.entry(f).or_default().push(i);
    }
    let mut out = vec![Part::Train; files.len()];
    for idx in by_file.values_mut() {
        // Ties by index: the order the reader emitted them.
        idx.sort_by_key(|&i| (first_ts[i], i));
        let (ntr, nv, _) = targets(idx.len());
        for &i in &idx[ntr..ntr + nv] {
            out[i] = Part::Val;
        }
        for &i in &idx[ntr + nv..] {
            out[i] = Part::Test;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_time_keeps_each_captures_latest_flows_for_test() {
        // Capture 7: ten flows, given out of time order; capture 9: two flows.
        let files = [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 9, 9];
        let ts = [90, 10, 20, 30, 40, 50, 60, 70, 80, 100, 5, 1];
        let p = split_by_time(&files, &ts);
        assert_eq!(p[9], Part::Test, "the latest flow of capture 7");
        assert_eq!(p[0], Part::Val, "the second latest");
        assert!(p[1..9].iter().all(|&x| x == Part::Train));
        assert_eq!(&p[10..], &[Part::Train, Part::Train], "too few to split");
    }

    #[test]
    fn targets_small_and_large() {
        assert_eq!(targets(0), (0, 0, 0));
        assert_eq!(targets(2), (2, 0, 0));
        assert_eq!(targets(3), (1, 1, 1));
        assert_eq!(targets(100), (80, 10, 10));
        assert_eq!(targets(15), (11, 2, 2));
    }

    #[test]
    fn rng_is_stable() {
        // SplitMix64 reference values for seed 0.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(r.next_u64(), 0x6e789e6aa1b965f4);
    }
}
