//! Flow -> token ids with a fixed vocabulary.
//!
//! Layout, per packet of the first `packets` packets:
//! `[PD]` then the pieces of the attribute bigrams (header and full views),
//! then `[PY]` and the pieces of the payload bigrams (payload and full views);
//! `[END]` closes the flow. In the header view there is no `[PY]`.
//! When the stream would exceed `seq_len`, it is cut after `seq_len - 1` tokens
//! and `[END]` is still appended, so every sequence ends with `[END]` (the model
//! always sees where the flow's tokens stop). Padding with `[PAD]` fills the rest.

use crate::traffic::tokens::bigram::bigrams;
use crate::traffic::tokens::features::{View, flow_features};
use crate::traffic::tokens::identifiers::LONGEST_PATTERN;
use crate::traffic::tokens::vocab::{END, PAD, PD, PY, Vocab};
use crate::traffic::types::Flow;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the tokenizer keeps of a flow and how long sequences are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    /// Sequence length, `[END]` included (default 512).
    pub seq_len: usize,
    /// Packets used per flow (default 10).
    pub packets: usize,
    /// Payload bytes used per packet (default 40).
    pub payload_bytes: usize,
    pub view: View,
    /// Zero payload bytes that spell the flow's own addresses or ports
    /// (`traffic::tokens::identifiers`) before bigrams are formed. Absent in
    /// datasets written before it existed: off.
    #[serde(default)]
    pub mask_identifiers: bool,
}

/// The longest sequence a tokenizer makes: far past any model's context
/// (512 for the named sizes), and small enough that a row (4 bytes a token)
/// never costs more than a few hundred KB, however a config file reads.
pub const MAX_SEQ_LEN: usize = 1 << 16;

impl TokenizerConfig {
    /// Payload bytes the reader must keep per packet: `payload_bytes`, and
    /// with `mask_identifiers` enough more that an address or port which
    /// begins inside the window and ends past it is still matched whole (its
    /// bytes inside the window are zeroed; the extra bytes never become tokens).
    pub fn payload_bytes_read(&self) -> usize {
        if self.mask_identifiers {
            self.payload_bytes.saturating_add(LONGEST_PATTERN - 1)
        } else {
            self.payload_bytes
        }
    }

    /// Why the config cannot be used, if it cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(2..=MAX_SEQ_LEN).contains(&self.seq_len) {
            bail!(
                "seq_len must be 2..={MAX_SEQ_LEN} (a token and [END], at most), got {}",
                self.seq_len
            );
        }
        // As `--packets` is bounded: none made every flow the one sequence
        // `[END]`, and a classifier answered the same for all of them.
        if self.packets == 0 {
            bail!("packets must be at least 1, got 0");
        }
        Ok(())
    }
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            seq_len: 512,
            packets: 10,
            payload_bytes: 40,
            view: View::Full,
            mask_identifiers: false,
        }
    }
}

/// Turns flows into token ids with a fixed vocabulary.
#[derive(Debug)]
pub struct FlowTokenizer {
    vocab: Vocab,
    cfg: TokenizerConfig,
}

impl FlowTokenizer {
    pub fn new(vocab: Vocab, cfg: TokenizerConfig) -> anyhow::Result<FlowTokenizer> {
        cfg.check()?;
        Ok(FlowTokenizer { vocab, cfg })
    }

    /// A vocabulary file with the default configuration.
    pub fn from_vocab_file(path: &Path) -> anyhow::Result<FlowTokenizer> {
        FlowTokenizer::new(Vocab::load(path)?, TokenizerConfig::default())
    }

    /// The vocabulary and configuration a dataset directory was built with.
    pub fn from_dataset_dir(dir: &Path) -> anyhow::Result<FlowTokenizer> {
        let info = crate::traffic::dataset::build::load_dataset_info(dir)?;
        FlowTokenizer::from_dataset(dir, &info)
    }

    /// [`FlowTokenizer::from_dataset_dir`] for a caller that has read the
    /// folder's dataset.json (`info`) already.
    pub fn from_dataset(
        dir: &Path,
        info: &crate::traffic::dataset::build::DatasetInfo,
    ) -> anyhow::Result<FlowTokenizer> {
        let vocab = Vocab::load(&dir.join("vocab.txt"))?;
        if vocab.hash() != info.vocab_hash {
            bail!(
                "{}: vocab.txt hash {:016x} differs from dataset.json's {:016x}",
                dir.display(),
                vocab.hash(),
                info.vocab_hash
            );
        }
        FlowTokenizer::new(vocab, info.config.tokenizer.clone())
            .with_context(|| format!("dataset {}", dir.display()))
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.cfg
    }
    /// The same tokenizer cutting flows at `seq_len` tokens.
    pub fn with_seq_len(self, seq_len: usize) -> anyhow::Result<FlowTokenizer> {
        let cfg = TokenizerConfig {
            seq_len,
            ..self.cfg
        };
        FlowTokenizer::new(self.vocab, cfg)
    }
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
    pub fn hash(&self) -> u64 {
        self.vocab.hash()
    }
    pub fn seq_len(&self) -> usize {
        self.cfg.seq_len
    }

    /// The valid tokens of a flow (at most `seq_len`, last one `[END]`), unpadded.
    pub fn encode(&self, flow: &Flow) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.cfg.seq_len);
        self.encode_into(flow, &mut out);
        out
    }

    /// Writes `seq_len` ids into `out` (padded with `[PAD]`); returns the valid count.
    pub fn encode_padded(&self, flow: &Flow, out: &mut [u32]) -> usize {
        assert_eq!(
            out.len(),
            self.cfg.seq_len,
            "output row must be seq_len long"
        );
        let tokens = self.encode(flow);
        out[..tokens.len()].copy_from_slice(&tokens);
        out[tokens.len()..].fill(PAD);
        tokens.len()
    }

    fn encode_into(&self, flow: &Flow, out: &mut Vec<u32>) {
        let body_cap = self.cfg.seq_len - 1;
        let packets = flow_features(flow, &self.cfg);
        'packets: for p in &packets {
            let push = |t: u32, out: &mut Vec<u32>| -> bool {
                if out.len() < body_cap {
                    out.push(t);
                    true
                } else {
                    false
                }
            };
            if !push(PD, out) {
                break;
            }
            if let Some(attrs) = &p.attrs {
                for b in bigrams(attrs) {
                    for &t in self.vocab.pieces(b) {
                        if !push(t, out) {
                            break 'packets;
                        }
                    }
                }
            }
            if let Some(payload) = &p.payload {
                if !push(PY, out) {
                    break;
                }
                for b in bigrams(payload) {
                    for &t in self.vocab.pieces(b) {
                        if !push(t, out) {
                            break 'packets;
                        }
                    }
                }
            }
        }
        out.push(END);
    }

    /// Human-readable token strings of ids (for `inspect`).
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.vocab.token(i).unwrap_or("<?>").to_string())
            .collect()
    }
}
