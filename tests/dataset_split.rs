//! Deduplication and the stratified, seeded 8:1:1 split.

use std::collections::{HashMap, HashSet};
use traffic_moe::traffic::dataset::split::{Part, dedup_indices, split_by_file, split_by_flow};

fn labels(counts: &[usize]) -> Vec<u32> {
    // Interleave classes so order carries no class information.
    let mut out = Vec::new();
    let max = *counts.iter().max().unwrap();
    for i in 0..max {
        for (c, &n) in counts.iter().enumerate() {
            if i < n {
                out.push(c as u32);
            }
        }
    }
    out
}

fn per_class(labels: &[u32], parts: &[Part]) -> HashMap<(u32, Part), usize> {
    let mut m = HashMap::new();
    for (&l, &p) in labels.iter().zip(parts) {
        *m.entry((l, p)).or_default() += 1;
    }
    m
}

#[test]
fn by_flow_is_stratified_and_deterministic() {
    let ls = labels(&[1000, 100, 30, 3, 2, 1]);
    let a = split_by_flow(&ls, 7);
    assert_eq!(a, split_by_flow(&ls, 7), "same seed, same split");
    assert_ne!(
        a,
        split_by_flow(&ls, 8),
        "another seed shuffles differently"
    );
    let m = per_class(&ls, &a);
    let get = |c, p| m.get(&(c, p)).copied().unwrap_or(0);
    assert_eq!(
        (get(0, Part::Train), get(0, Part::Val), get(0, Part::Test)),
        (800, 100, 100)
    );
    assert_eq!(
        (get(1, Part::Train), get(1, Part::Val), get(1, Part::Test)),
        (80, 10, 10)
    );
    assert_eq!(
        (get(2, Part::Train), get(2, Part::Val), get(2, Part::Test)),
        (24, 3, 3)
    );
    assert_eq!(
        (get(3, Part::Train), get(3, Part::Val), get(3, Part::Test)),
        (1, 1, 1)
    );
    assert_eq!(get(4, Part::Train), 2);
    assert_eq!(get(5, Part::Train), 1);
}

#[test]
fn by_file_keeps_captures_whole() {
    // 3 classes; class c has 10 + 5c files with 1..=8 flows each.
    let mut ls = Vec::new();
    let mut fs = Vec::new();
    let mut file = 0u32;
    for c in 0..3u32 {
        for j in 0..(10 + 5 * c) {
            for _ in 0..(1 + (j * 7 + c) % 8) {
                ls.push(c);
                fs.push(file);
            }
            file += 1;
        }
    }
    let parts = split_by_file(&ls, &fs, 3);
    assert_eq!(parts, split_by_file(&ls, &fs, 3));
    // No capture is split across parts.
    let mut file_part: HashMap<u32, Part> = HashMap::new();
    for (&f, &p) in fs.iter().zip(&parts) {
        assert_eq!(
            *file_part.entry(f).or_insert(p),
            p,
            "file {f} leaks across parts"
        );
    }
    // Every class reaches all three parts, and train holds most flows.
    let m = per_class(&ls, &parts);
    for c in 0..3u32 {
        let total: usize = Part::ALL
            .iter()
            .map(|&p| m.get(&(c, p)).copied().unwrap_or(0))
            .sum();
        for p in Part::ALL {
            assert!(
                m.get(&(c, p)).copied().unwrap_or(0) > 0,
                "class {c} has no {p:?}"
            );
        }
        let train = m[&(c, Part::Train)] as f64 / total as f64;
        assert!(
            (0.6..=0.92).contains(&train),
            "class {c}: train share {train}"
        );
    }
}

#[test]
fn by_file_with_few_captures() {
    // One class, 2 files: no way to fill three parts; nothing panics.
    let parts = split_by_file(&[0, 0, 0], &[5, 5, 9], 1);
    assert_eq!(parts[0], parts[1]);
}

#[test]
fn dedup_keeps_first_of_each_token_label_pair() {
    let rows = vec![
        vec![2, 5, 4],
        vec![2, 6, 4],
        vec![2, 5, 4],
        vec![2, 5, 4],
        vec![2, 6, 4],
    ];
    let labels = vec![Some(0), Some(0), Some(0), Some(1), Some(0)];
    assert_eq!(dedup_indices(&rows, &labels), vec![0, 1, 3]);
    // After dedup + split, no token row appears in two parts.
    let keep = dedup_indices(&rows, &labels);
    let ls: Vec<u32> = keep.iter().map(|&i| labels[i].unwrap()).collect();
    let parts = split_by_flow(&ls, 1);
    let mut seen: HashMap<(&[u32], Option<u32>), Part> = HashMap::new();
    for (&i, &p) in keep.iter().zip(&parts) {
        assert!(seen.insert((&rows[i], labels[i]), p).is_none());
    }
    let distinct: HashSet<_> = keep.iter().map(|&i| (&rows[i], labels[i])).collect();
    assert_eq!(distinct.len(), keep.len());
}
