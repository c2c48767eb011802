//! The model's input batches: a source of token sequences (token shards
//! implement it; tests use in-memory data) and batch assembly that trims
//! trailing padding (exact: attention is causal and pooling masked).
//! Training, evaluation and inference all batch through here.

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

impl Batch {
    /// The batch as the model's forward reads it.
    pub fn inputs(&self) -> super::Inputs<'_> {
        super::Inputs {
            ids: &self.ids,
            mask: &self.mask,
            b: self.b,
            s: self.s,
        }
    }
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

/// Several sources read as one: indices run through each in turn (a
/// pretraining corpus of a dataset's training flows and other captures).
pub struct Chain<'a> {
    parts: Vec<&'a dyn Sequences>,
    /// Index of each part's first sequence.
    starts: Vec<usize>,
    seq_len: usize,
}

impl<'a> Chain<'a> {
    pub fn new(parts: Vec<&'a dyn Sequences>) -> Chain<'a> {
        let mut starts = Vec::with_capacity(parts.len());
        let mut n = 0;
        for p in &parts {
            starts.push(n);
            n += p.count();
        }
        let seq_len = parts.iter().map(|p| p.seq_len()).min().unwrap_or(0);
        Chain {
            parts,
            starts,
            seq_len,
        }
    }

    fn locate(&self, i: usize) -> (&'a dyn Sequences, usize) {
        let p = self.starts.partition_point(|&s| s <= i) - 1;
        (self.parts[p], i - self.starts[p])
    }
}

impl Sequences for Chain<'_> {
    fn count(&self) -> usize {
        self.parts.iter().map(|p| p.count()).sum()
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn tokens(&self, i: usize) -> &[u32] {
        let (p, j) = self.locate(i);
        &p.tokens(j)[..self.seq_len]
    }
    fn n_tokens(&self, i: usize) -> usize {
        let (p, j) = self.locate(i);
        p.n_tokens(j).min(self.seq_len)
    }
    fn label(&self, i: usize) -> Option<u32> {
        let (p, j) = self.locate(i);
        p.label(j)
    }
}

impl Sequences for crate::traffic::dataset::shard::Shard {
    fn count(&self) -> usize {
        self.len()
    }
    fn seq_len(&self) -> usize {
        crate::traffic::dataset::shard::Shard::seq_len(self)
    }
    fn tokens(&self, i: usize) -> &[u32] {
        crate::traffic::dataset::shard::Shard::tokens(self, i)
    }
    fn n_tokens(&self, i: usize) -> usize {
        crate::traffic::dataset::shard::Shard::n_tokens(self, i)
    }
    fn label(&self, i: usize) -> Option<u32> {
        crate::traffic::dataset::shard::Shard::label(self, i)
    }
}

/// Opens `dir/<part>.tmoe` and checks it against the dataset's
/// `dataset.json`: the vocabulary it was tokenized with, and labels within
/// the class list. A damaged shard is refused here, naming the file, not
/// met as an index past a table inside the model (a training step's loss
/// indexes its logits by label).
pub fn open_part(
    dir: &std::path::Path,
    part: &str,
) -> anyhow::Result<crate::traffic::dataset::shard::Shard> {
    let info = crate::traffic::dataset::build::load_dataset_info(dir)?;
    let p = dir.join(format!("{part}.tmoe"));
    // ShardError names the file.
    let shard = crate::traffic::dataset::shard::Shard::open(&p)?;
    check_part(&p, part, &shard, &info)?;
    Ok(shard)
}

/// `shard` (at `p`) is part `part` of the dataset `info` describes.
fn check_part(
    p: &std::path::Path,
    part: &str,
    shard: &crate::traffic::dataset::shard::Shard,
    info: &crate::traffic::dataset::build::DatasetInfo,
) -> anyhow::Result<()> {
    crate::traffic::dataset::shard::ensure_part(p, shard.part_tag(), part)?;
    anyhow::ensure!(
        shard.vocab_hash() == info.vocab_hash && shard.vocab_size() == info.vocab_size,
        "{}: vocabulary (hash {:016x}, {} entries) differs from dataset.json's ({:016x}, {})",
        p.display(),
        shard.vocab_hash(),
        shard.vocab_size(),
        info.vocab_hash,
        info.vocab_size
    );
    // Another build's shard (the same vocabulary, another seed or split)
    // would mix its flows with this one's: its test flows may be this
    // dataset's training flows.
    if let Some(id) = info.dataset_id {
        anyhow::ensure!(
            shard.dataset_id() == id,
            "{}: belongs to another dataset (dataset id {:016x}, dataset.json's is {:016x}); \
             a shard copied from another build would mix its flows with this one's",
            p.display(),
            shard.dataset_id(),
            id
        );
    }
    // Unlabelled datasets (pretraining corpora) have no class list to check.
    let n = info.classes.len() as u32;
    if n > 0
        && let Some(i) = (0..shard.len()).find(|&i| shard.label(i).is_some_and(|l| l >= n))
    {
        anyhow::bail!(
            "{}: flow {i} has label {}, but dataset.json lists {n} classes",
            p.display(),
            shard.meta(i).label
        );
    }
    Ok(())
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
    fn a_chain_reads_its_parts_in_turn() {
        let mut a = MemSequences::new(4);
        a.push(&[1, 2], Some(0));
        let mut b = MemSequences::new(3);
        b.push(&[3, 4, 5], None);
        b.push(&[6], Some(1));
        let c = Chain::new(vec![&a, &b]);
        assert_eq!((c.count(), c.seq_len()), (3, 3));
        assert_eq!(
            (c.tokens(0), c.n_tokens(0), c.label(0)),
            (&[1, 2, 0][..], 2, Some(0))
        );
        assert_eq!(
            (c.tokens(1), c.n_tokens(1), c.label(1)),
            (&[3, 4, 5][..], 3, None)
        );
        assert_eq!(
            (c.tokens(2), c.n_tokens(2), c.label(2)),
            (&[6, 0, 0][..], 1, Some(1))
        );
    }
}
