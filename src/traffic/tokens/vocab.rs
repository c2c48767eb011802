//! The WordPiece vocabulary over bigram words.
//!
//! Training uses the `tokenizers` crate's WordPiece trainer algorithm (BPE with
//! `##` continuation pieces, as ET-BERT and NetGPT did): we count the 65,536
//! possible bigram words exactly and hand the counts to its BPE trainer with
//! the `##` prefix, then convert with `WordPiece::from_bpe`, which is exactly
//! what `WordPieceTrainer::train` does (it only lacks a way to feed counts).
//!
//! File format: BERT `vocab.txt`, one token per line, line number = id, the
//! five specials first: `[PAD]`=0 `[UNK]`=1 `[PD]`=2 `[PY]`=3 `[END]`=4.
//! The vocabulary hash is FNV-1a 64 of the canonical file text (tokens joined
//! by `\n`, with a final `\n`), which is byte-for-byte what [`Vocab::save`] writes.
//!
//! Tokenising a bigram word is greedy longest-match-first (the crate's WordPiece
//! model); because there are only 65,536 words, every word's pieces are computed
//! once when the vocabulary is built and looked up afterwards.

use ahash::AHashMap;
use anyhow::{Context, bail};
use compact_str::CompactString;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::{AddedToken, Model};

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;
pub const PD: u32 = 2;
pub const PY: u32 = 3;
pub const END: u32 = 4;
/// Special tokens in id order.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[PD]", "[PY]", "[END]"];
/// The paper's learned vocabulary size (65,541 with the specials).
pub const DEFAULT_LEARNED: usize = 65_536;
/// The most learned entries a command takes (`--size`, `--vocab-size`):
/// far past what a bigram corpus holds (its words are 4 hex digits: 74,272
/// WordPiece pieces at most), small enough that the trainer's table for
/// that many entries (it is sized by the request) fits in memory.
pub const MAX_LEARNED: usize = 1 << 20;
/// The largest `vocab.txt` read: its entries are WordPiece pieces of
/// 4-hex-digit words (`##` and 4 digits at most), so even [`MAX_LEARNED`]
/// of them fill under 8 MiB.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Exact counts of the 65,536 bigram words in a corpus.
#[derive(Clone)]
pub struct BigramCounts(pub Box<[u64; 65536]>);

impl Default for BigramCounts {
    fn default() -> Self {
        BigramCounts(vec![0u64; 65536].into_boxed_slice().try_into().unwrap())
    }
}

impl BigramCounts {
    pub fn add_segment(&mut self, bytes: &[u8]) {
        crate::traffic::tokens::bigram::count_bigrams(bytes, &mut self.0);
    }
    pub fn merge(mut self, other: &BigramCounts) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
        self
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn distinct(&self) -> usize {
        self.0.iter().filter(|&&c| c > 0).count()
    }
}

/// A loaded or trained vocabulary with the per-bigram piece table.
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
    /// Pieces of bigram `b` are `piece_ids[piece_start[b]..piece_start[b + 1]]`.
    piece_start: Vec<u32>,
    piece_ids: Vec<u32>,
    hash: u64,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab")
            .field("len", &self.tokens.len())
            .field("hash", &format_args!("{:016x}", self.hash))
            .finish()
    }
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Vocab {
    /// Trains `learned` entries (plus the 5 specials) on bigram counts. A small
    /// corpus may run out of merges first; the vocabulary is then smaller.
    pub fn train(counts: &BigramCounts, learned: usize) -> anyhow::Result<Vocab> {
        // The trainer numbers `##` pieces in the order it iterates this map and
        // breaks count ties by those numbers, so a randomly seeded map would make
        // training nondeterministic: fix the seeds and insert in word order.
        let mut fixed = std::collections::HashMap::with_hasher(ahash::RandomState::with_seeds(
            0x7472_6166,
            0x6669_632d,
            0x6d6f_6521,
            0x766f_6361,
        ));
        for (b, &c) in counts.0.iter().enumerate() {
            if c > 0 {
                fixed.insert(CompactString::from(format!("{b:04x}")), c);
            }
        }
        let words: AHashMap<CompactString, u64> = AHashMap::from(fixed);
        if words.is_empty() {
            bail!("cannot train a vocabulary on an empty corpus (no bigrams)");
        }
        let trainer = BpeTrainer::builder()
            .vocab_size(learned + SPECIALS.len())
            .min_frequency(0)
            .show_progress(false)
            .special_tokens(
                SPECIALS
                    .iter()
                    .map(|s| AddedToken::from(*s, true))
                    .collect(),
            )
            .continuing_subword_prefix("##".to_string())
            .build();
        let mut bpe = BPE::default();
        trainer
            .do_train(&words, &mut bpe)
            .map_err(|e| anyhow::anyhow!("WordPiece training failed: {e}"))?;
        let wp = WordPiece::from_bpe(&bpe);
        let mut by_id: Vec<(u32, String)> =
            wp.get_vocab().into_iter().map(|(t, i)| (i, t)).collect();
        by_id.sort();
        let tokens: Vec<String> = by_id.into_iter().map(|(_, t)| t).collect();
        Vocab::from_tokens(tokens)
    }

    /// Builds a vocabulary from tokens in id order; checks the specials.
    pub fn from_tokens(tokens: Vec<String>) -> anyhow::Result<Vocab> {
        for (i, s) in SPECIALS.iter().enumerate() {
            if tokens.get(i).map(String::as_str) != Some(*s) {
                let found = tokens
                    .get(i)
                    .map_or("missing".to_string(), |t| format!("`{t}`"));
                bail!(
                    "vocabulary must start with the specials {}, one per line; line {} is {found}",
                    SPECIALS.join(" "),
                    i + 1
                );
            }
        }
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() || t.contains(char::is_whitespace) {
                bail!(
                    "vocabulary line {} is empty or has whitespace: {t:?}",
                    i + 1
                );
            }
            if index.insert(t.clone(), i as u32).is_some() {
                bail!("vocabulary line {} repeats the token {t:?}", i + 1);
            }
        }
        let wp_vocab: AHashMap<String, u32> = index.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let wp = WordPiece::builder()
            .vocab(wp_vocab)
            .unk_token(SPECIALS[UNK as usize].to_string())
            .continuing_subword_prefix("##".to_string())
            .build()
            .map_err(|e| anyhow::anyhow!("building the WordPiece model: {e}"))?;
        let mut piece_start = Vec::with_capacity(65537);
        let mut piece_ids = Vec::with_capacity(65536 * 2);
        for b in 0..=u16::MAX {
            piece_start.push(piece_ids.len() as u32);
            let word = format!("{b:04x}");
            let pieces = wp
                .tokenize(&word)
                .map_err(|e| anyhow::anyhow!("tokenising {word}: {e}"))?;
            piece_ids.extend(pieces.iter().map(|t| t.id));
        }
        piece_start.push(piece_ids.len() as u32);
        let mut v = Vocab {
            tokens,
            index,
            piece_start,
            piece_ids,
            hash: 0,
        };
        v.hash = fnv1a64(v.to_text().as_bytes());
        Ok(v)
    }

    /// Reads a BERT `vocab.txt`.
    pub fn load(path: &Path) -> anyhow::Result<Vocab> {
        use std::io::Read;
        // Read up to a bound: `--vocab /dev/zero` (or a capture named by
        // mistake) was read whole, until memory ran out.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .with_context(|| format!("reading vocabulary {}", path.display()))?;
        anyhow::ensure!(
            text.len() as u64 <= MAX_FILE_BYTES,
            "vocabulary {}: larger than {} MiB: not a vocab.txt (one of {MAX_LEARNED} entries is a few MiB)",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
        let tokens: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        Vocab::from_tokens(tokens).with_context(|| format!("in vocabulary {}", path.display()))
    }

    /// Writes the canonical `vocab.txt`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        // What is not a plain file (`--out /dev/stdout --force`, a link) is
        // written through: a rename would replace the device or the link.
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
            return std::fs::write(path, self.to_text())
                .with_context(|| format!("writing vocabulary {}", path.display()));
        }
        // Whole or not at all: a full disk leaves no truncated vocabulary
        // under the real name, nor a partial temporary one.
        crate::atomic_file::write_whole(path, self.to_text().as_bytes()).with_context(|| {
            let tmp = crate::atomic_file::tmp_beside(path);
            format!("writing vocabulary {}", tmp.display())
        })
    }

    /// The canonical file text (what `save` writes and `hash` hashes).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.tokens.len() * 8);
        for t in &self.tokens {
            s.push_str(t);
            s.push('\n');
        }
        s
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// FNV-1a 64 of the canonical file text.
    pub fn hash(&self) -> u64 {
        self.hash
    }
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }
    /// WordPiece pieces of one bigram word (`[UNK]` alone if it cannot be spelled).
    pub fn pieces(&self, bigram: u16) -> &[u32] {
        let b = bigram as usize;
        &self.piece_ids[self.piece_start[b] as usize..self.piece_start[b + 1] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn rejects_missing_specials() {
        let err = Vocab::from_tokens(vec!["[PAD]".into(), "aa".into()]).unwrap_err();
        assert!(err.to_string().contains("must start with"), "{err}");
    }

    #[test]
    fn hand_vocab_pieces() {
        let mut t: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        t.extend(["ab", "abcd", "##cd", "##c", "##d"].map(String::from));
        let v = Vocab::from_tokens(t).unwrap();
        assert_eq!(v.pieces(0xabcd), &[v.id("abcd").unwrap()]);
        assert_eq!(
            v.pieces(0xabdd),
            &[
                v.id("ab").unwrap(),
                v.id("##d").unwrap(),
                v.id("##d").unwrap()
            ]
        );
        assert_eq!(v.pieces(0x1234), &[UNK]);
    }
}
