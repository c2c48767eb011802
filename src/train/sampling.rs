//! Which training flows a step sees: seeded shuffled passes, a seeded
//! fraction of the flows (every class kept), a cap per class.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::model::batch::Sequences;

/// Seeded shuffled passes over a set of indices: endless batches
/// (`next_batch`, pretraining's steps) or one pass an epoch (`next_in_pass`).
pub struct Shuffler {
    items: Vec<usize>,
    pos: usize,
    rng: StdRng,
    pub epoch: usize,
}

impl Shuffler {
    pub fn new(items: Vec<usize>, seed: u64) -> Self {
        let mut s = Shuffler {
            items,
            pos: 0,
            rng: StdRng::seed_from_u64(seed),
            epoch: 0,
        };
        s.items.shuffle(&mut s.rng);
        s
    }

    /// The next `n` indices, reshuffling at the end of each pass.
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && !self.items.is_empty() {
            if self.pos == self.items.len() {
                self.items.shuffle(&mut self.rng);
                self.pos = 0;
                self.epoch += 1;
            }
            out.push(self.items[self.pos]);
            self.pos += 1;
        }
        out
    }

    /// The next at most `n` indices of the current pass, starting a new
    /// pass (reshuffled) when this one is done: `ceil(len / n)` calls are
    /// exactly one pass, every index once, the last batch the remainder
    /// (an epoch, as PyTorch's DataLoader without `drop_last` makes it).
    pub fn next_in_pass(&mut self, n: usize) -> Vec<usize> {
        if self.pos == self.items.len() && !self.items.is_empty() {
            self.items.shuffle(&mut self.rng);
            self.pos = 0;
            self.epoch += 1;
        }
        let end = (self.pos + n).min(self.items.len());
        let out = self.items[self.pos..end].to_vec();
        self.pos = end;
        out
    }
}

/// Seeded subset of `fraction` of the indices, at least one per class when
/// labels exist (keeps rare classes present in small training fractions).
pub fn subsample(src: &dyn Sequences, fraction: f64, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..src.count()).collect();
    if fraction >= 1.0 {
        return all;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    all.shuffle(&mut rng);
    let want = ((src.count() as f64 * fraction).round() as usize).max(1);
    let mut seen = std::collections::HashSet::new();
    let mut kept = vec![false; src.count()];
    let mut keep: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| seen.insert(src.label(i)))
        .collect();
    for &i in &keep {
        kept[i] = true;
    }
    // A flag per index, not `keep.contains`: that was O(n · want), some
    // 10^11 steps at a million flows and half of them.
    for &i in &all {
        if keep.len() >= want {
            break;
        }
        if !kept[i] {
            kept[i] = true;
            keep.push(i);
        }
    }
    keep.sort_unstable();
    keep
}

/// Keeps at most `cap` indices per label (seeded choice), in index order:
/// bounds the cost of an epoch on very imbalanced data.
pub fn cap_per_class(src: &dyn Sequences, idx: Vec<usize>, cap: usize, seed: u64) -> Vec<usize> {
    let mut shuffled = idx;
    shuffled.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5eed));
    let mut per: std::collections::HashMap<Option<u32>, usize> = std::collections::HashMap::new();
    let mut keep: Vec<usize> = shuffled
        .into_iter()
        .filter(|&i| {
            let n = per.entry(src.label(i)).or_default();
            *n += 1;
            *n <= cap
        })
        .collect();
    keep.sort_unstable();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same subset as the quadratic loop it replaced (written here as
    /// it was), every class present, `fraction` of the flows.
    #[test]
    fn subsample_keeps_its_choices_and_every_class() {
        let mut data = crate::model::batch::MemSequences::new(4);
        for i in 0..500u32 {
            // Class 3 is rare: two flows.
            let label = if i % 250 == 0 { 3 } else { i % 3 };
            data.push(&[i + 5, 1, 2, 4], Some(label));
        }
        for (fraction, seed) in [(0.1, 1), (0.5, 7), (0.01, 3)] {
            let got = subsample(&data, fraction, seed);
            let mut all: Vec<usize> = (0..500).collect();
            all.shuffle(&mut StdRng::seed_from_u64(seed));
            let want = ((500.0 * fraction).round() as usize).max(1);
            let mut seen = std::collections::HashSet::new();
            let mut old: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&i| seen.insert(data.label(i)))
                .collect();
            for &i in &all {
                if old.len() >= want {
                    break;
                }
                if !old.contains(&i) {
                    old.push(i);
                }
            }
            old.sort_unstable();
            assert_eq!(got, old, "fraction {fraction}");
            assert_eq!(got.len(), want.max(4));
            let classes: std::collections::BTreeSet<_> =
                got.iter().map(|&i| data.label(i)).collect();
            assert_eq!(classes.len(), 4, "every class kept at {fraction}");
        }
    }

    #[test]
    fn shuffler_covers_every_item_each_pass() {
        let mut s = Shuffler::new((0..5).collect(), 1);
        let mut first: Vec<usize> = s.next_batch(5);
        first.sort();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.next_batch(3).len(), 3);
        assert_eq!(s.epoch, 1);
    }

    #[test]
    fn an_epoch_of_batches_in_pass_is_every_item_once() {
        // 7 items in batches of 3: [3, 3, 1] each epoch, never a batch that
        // spills into the next pass.
        let mut s = Shuffler::new((0..7).collect(), 3);
        let mut orders = Vec::new();
        for epoch in 0..4 {
            let batches: Vec<Vec<usize>> =
                (0..7usize.div_ceil(3)).map(|_| s.next_in_pass(3)).collect();
            let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
            assert_eq!(sizes, vec![3, 3, 1], "epoch {epoch}");
            let order: Vec<usize> = batches.concat();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>(), "epoch {epoch}");
            orders.push(order);
        }
        assert!(
            orders.windows(2).any(|w| w[0] != w[1]),
            "reshuffled between epochs"
        );
    }
}
