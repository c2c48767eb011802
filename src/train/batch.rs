//! Batches of token sequences: a source trait (token shards implement it;
//! tests use in-memory data), seeded shuffling, and batch assembly that
//! trims trailing padding (exact: attention is causal and pooling masked).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Fixed-length, zero-padded token sequences with optional labels.
pub trait Sequences: Sync {
    fn count(&self) -> usize;
    fn seq_len(&self) -> usize;
    fn tokens(&self, i: usize) -> &[u32];
    fn n_tokens(&self, i: usize) -> usize;
    fn label(&self, i: usize) -> Option<u32>;
}

/// Sequences held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemSequences {
    pub seq_len: usize,
    pub tokens: Vec<u32>,
    pub lens: Vec<usize>,
    pub labels: Vec<Option<u32>>,
}

impl MemSequences {
    pub fn new(seq_len: usize) -> Self {
        MemSequences {
            seq_len,
            ..Default::default()
        }
    }
    /// Adds one sequence (cut to `seq_len`, padded with 0).
    pub fn push(&mut self, toks: &[u32], label: Option<u32>) {
        let n = toks.len().min(self.seq_len);
        self.tokens.extend_from_slice(&toks[..n]);
        self.tokens.extend(std::iter::repeat_n(0, self.seq_len - n));
        self.lens.push(n);
        self.labels.push(label);
    }
}

impl Sequences for MemSequences {
    fn count(&self) -> usize {
        self.lens.len()
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn tokens(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }
    fn n_tokens(&self, i: usize) -> usize {
        self.lens[i]
    }
    fn label(&self, i: usize) -> Option<u32> {
        self.labels[i]
    }
}

/// One batch `[b, s]`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    /// Class labels (`u32::MAX` where a sequence has none).
    pub labels: Vec<u32>,
    pub b: usize,
    pub s: usize,
    /// Real (non-pad) tokens in the batch.
    pub n_tokens: usize,
}

/// Gathers sequences `idx`, cut to at most `max_len` tokens, and trims the
/// batch to its longest sequence.
pub fn make_batch(src: &dyn Sequences, idx: &[usize], max_len: usize) -> Batch {
    let cap = max_len.min(src.seq_len()).max(1);
    let s = idx
        .iter()
        .map(|&i| src.n_tokens(i).min(cap))
        .max()
        .unwrap_or(1)
        .max(1);
    let b = idx.len();
    let mut ids = vec![0u32; b * s];
    let mut mask = vec![0u8; b * s];
    let mut n_tokens = 0;
    for (r, &i) in idx.iter().enumerate() {
        let n = src.n_tokens(i).min(s);
        ids[r * s..r * s + n].copy_from_slice(&src.tokens(i)[..n]);
        mask[r * s..r * s + n].iter_mut().for_each(|m| *m = 1);
        n_tokens += n;
    }
    let labels = idx
        .iter()
        .map(|&i| src.label(i).unwrap_or(u32::MAX))
        .collect();
    Batch {
        ids,
        mask,
        labels,
        b,
        s,
        n_tokens,
    }
}

/// Endless seeded shuffled passes over a set of indices.
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
    let mut keep: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| seen.insert(src.label(i)))
        .collect();
    for &i in &all {
        if keep.len() >= want {
            break;
        }
        if !keep.contains(&i) {
            keep.push(i);
        }
    }
    keep.sort_unstable();
    keep
}

impl Sequences for crate::traffic::shard::Shard {
    fn count(&self) -> usize {
        self.len()
    }
    fn seq_len(&self) -> usize {
        crate::traffic::shard::Shard::seq_len(self)
    }
    fn tokens(&self, i: usize) -> &[u32] {
        crate::traffic::shard::Shard::tokens(self, i)
    }
    fn n_tokens(&self, i: usize) -> usize {
        crate::traffic::shard::Shard::n_tokens(self, i)
    }
    fn label(&self, i: usize) -> Option<u32> {
        crate::traffic::shard::Shard::label(self, i)
    }
}

/// Opens `dir/<part>.tmoe`, naming the file in errors.
pub fn open_part(
    dir: &std::path::Path,
    part: &str,
) -> anyhow::Result<crate::traffic::shard::Shard> {
    let p = dir.join(format!("{part}.tmoe"));
    crate::traffic::shard::Shard::open(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
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

    #[test]
    fn batch_trims_to_longest_and_masks_padding() {
        let mut m = MemSequences::new(6);
        m.push(&[5, 6, 7], Some(1));
        m.push(&[8], None);
        let b = make_batch(&m, &[0, 1], 6);
        assert_eq!((b.b, b.s, b.n_tokens), (2, 3, 4));
        assert_eq!(b.ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(b.mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(b.labels, vec![1, u32::MAX]);
        let c = make_batch(&m, &[0], 2);
        assert_eq!(c.ids, vec![5, 6]);
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
}
