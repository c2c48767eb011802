//! Next-token loss on held-out flows, beside the count models a pretrained
//! model has to beat to have learnt anything beyond byte statistics: a
//! unigram and a bigram table (add-one unigram; bigram with a Dirichlet
//! prior of strength 1 towards the unigram), fitted on the pretraining
//! corpus. All in nats per predicted token, over the same targets the
//! model's LM loss uses (each real token followed by a real token).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use anyhow::Result;

use crate::engine::Param;
use crate::eval::predict::{Weights, lm_loss_batch};
use crate::model::Model;
use crate::model::batch::{Sequences, make_batch};

/// (current token, next token) pairs of sequence `i`, cut to `seq_len`.
fn pairs<'a>(
    data: &'a dyn Sequences,
    i: usize,
    seq_len: usize,
) -> impl Iterator<Item = (u32, u32)> + 'a {
    let n = data.n_tokens(i).min(seq_len);
    data.tokens(i)[..n].windows(2).map(|w| (w[0], w[1]))
}

/// The model's mean next-token loss over every target of sequences `idx`
/// (CPU reference engine, no tape: [`lm_loss_batch`]), and the number of
/// targets. Fails with [`crate::stop::Interrupted`] once `stop` is set (a
/// study's Ctrl-C; polled before each batch).
pub fn lm_loss(
    model: &Model,
    params: &[Param],
    data: &dyn Sequences,
    idx: &[usize],
    (batch, seq_len): (usize, usize),
    stop: &AtomicBool,
) -> Result<(f64, u64)> {
    let weights = Weights::Cpu(params);
    let (sum, count) = summed_loss(
        model,
        weights,
        data,
        idx,
        (batch, seq_len),
        Some(stop),
        |_| {},
    )?;
    anyhow::ensure!(count > 0, "no next-token targets in the held-out flows");
    Ok((sum / count as f64, count))
}

/// The summed next-token loss over sequences `idx`, `batch` at a time on
/// the engine holding `weights`, and the number of targets; `stop` polled
/// before each batch, `done(flows)` after it.
fn summed_loss(
    model: &Model,
    weights: Weights,
    data: &dyn Sequences,
    idx: &[usize],
    (batch, seq_len): (usize, usize),
    stop: Option<&AtomicBool>,
    mut done: impl FnMut(usize),
) -> Result<(f64, u64)> {
    let (mut sum, mut count) = (0f64, 0u64);
    for rows in idx.chunks(batch.max(1)) {
        if let Some(stop) = stop {
            crate::stop::Interrupted::check(stop)?;
        }
        let b = make_batch(data, rows, seq_len);
        let (s, n, _) = lm_loss_batch(model, weights, &b.inputs(), false)?;
        sum += s;
        count += n;
        done(rows.len());
    }
    Ok((sum, count))
}

/// A pretrained model's next-token loss on one split of a dataset, beside
/// the count models fitted on the dataset's training split: what `tmoe
/// eval` reports for a checkpoint without a classifier head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LmEval {
    pub split: String,
    pub flows: usize,
    /// Next-token targets scored (each real token followed by a real token).
    pub targets: u64,
    /// Mean loss in nats per target, and `exp` of it.
    pub loss: f64,
    pub perplexity: f64,
    /// The count models' mean losses on the same targets (nats), fitted on
    /// `baselines_fitted_on`.
    pub unigram: f64,
    pub bigram: f64,
    pub baselines_fitted_on: String,
    pub seq_len: usize,
}

impl LmEval {
    /// The lines `tmoe eval` prints.
    pub fn summary(&self) -> String {
        let in_sample = if self.baselines_fitted_on == self.split {
            " (the same flows: in-sample)"
        } else {
            ""
        };
        format!(
            "{} split: {} flows, {} next-token targets, sequence {}\n\
             next-token loss {:.4} nats (perplexity {:.2})\n\
             count models fitted on the {} split{in_sample}: unigram {:.4}, bigram {:.4} nats",
            self.split,
            self.flows,
            self.targets,
            self.seq_len,
            self.loss,
            self.perplexity,
            self.baselines_fitted_on,
            self.unigram,
            self.bigram
        )
    }
}

/// [`LmEval`] of `model` on every flow of `split` (`data`), a batch of
/// `batch` flows at a time on the engine holding `weights`, shortest
/// flows first (less padding); `train` fits the count models. A progress
/// bar when `progress`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_lm(
    model: &Model,
    weights: Weights,
    (split, data): (&str, &dyn Sequences),
    (train_name, train): (&str, &dyn Sequences),
    vocab: usize,
    batch: usize,
    seq_len: usize,
    progress: bool,
) -> Result<LmEval> {
    let mut idx: Vec<usize> = (0..data.count()).collect();
    idx.sort_by_key(|&i| data.n_tokens(i));
    let pb = crate::progress::progress_bar(idx.len() as u64, "next-token loss", progress);
    let (sum, count) = summed_loss(model, weights, data, &idx, (batch, seq_len), None, |n| {
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    anyhow::ensure!(
        count > 0,
        "the {split} split has no next-token targets (every flow is one token long)"
    );
    let all: Vec<usize> = (0..train.count()).collect();
    let counts = CountLm::fit(&[(train, &all)], seq_len, vocab);
    let (unigram, bigram) = counts.losses(data, &idx, seq_len);
    let loss = sum / count as f64;
    Ok(LmEval {
        split: split.to_string(),
        flows: idx.len(),
        targets: count,
        loss,
        perplexity: loss.exp(),
        unigram,
        bigram,
        baselines_fitted_on: train_name.to_string(),
        seq_len,
    })
}

/// Unigram and bigram count models of next tokens.
pub struct CountLm {
    vocab: usize,
    /// Next-token counts, and their total.
    uni: Vec<u64>,
    total: u64,
    /// (current, next) counts and per-current totals.
    bi: HashMap<(u32, u32), u64>,
    ctx: HashMap<u32, u64>,
}

impl CountLm {
    /// Counts the pairs of sequences `idx` of each source.
    pub fn fit(sources: &[(&dyn Sequences, &[usize])], seq_len: usize, vocab: usize) -> CountLm {
        let mut m = CountLm {
            vocab,
            uni: vec![0; vocab],
            total: 0,
            bi: HashMap::new(),
            ctx: HashMap::new(),
        };
        for (data, idx) in sources {
            for &i in *idx {
                for (a, b) in pairs(*data, i, seq_len) {
                    if let Some(u) = m.uni.get_mut(b as usize) {
                        *u += 1;
                        m.total += 1;
                        *m.bi.entry((a, b)).or_default() += 1;
                        *m.ctx.entry(a).or_default() += 1;
                    }
                }
            }
        }
        m
    }

    fn p_uni(&self, b: u32) -> f64 {
        let c = self.uni.get(b as usize).copied().unwrap_or(0);
        (c as f64 + 1.0) / (self.total as f64 + self.vocab as f64)
    }

    fn p_bi(&self, a: u32, b: u32) -> f64 {
        let c = self.bi.get(&(a, b)).copied().unwrap_or(0) as f64;
        let n = self.ctx.get(&a).copied().unwrap_or(0) as f64;
        (c + self.p_uni(b)) / (n + 1.0)
    }

    /// Mean next-token loss (nats) of the unigram and the bigram table on
    /// sequences `idx`.
    pub fn losses(&self, data: &dyn Sequences, idx: &[usize], seq_len: usize) -> (f64, f64) {
        let (mut u, mut b, mut n) = (0f64, 0f64, 0u64);
        for &i in idx {
            for (x, y) in pairs(data, i, seq_len) {
                u -= self.p_uni(y).ln();
                b -= self.p_bi(x, y).ln();
                n += 1;
            }
        }
        let n = n.max(1) as f64;
        (u / n, b / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::batch::MemSequences;

    #[test]
    fn the_bigram_table_learns_a_deterministic_chain_and_the_unigram_does_not() {
        // 5 -> 6 -> 7 -> 5 ... : each next token is fixed by the current one.
        let mut m = MemSequences::new(16);
        for start in 0..30u32 {
            let seq: Vec<u32> = (0..16).map(|j| 5 + (start + j) % 3).collect();
            m.push(&seq, None);
        }
        let all: Vec<usize> = (0..30).collect();
        let lm = CountLm::fit(&[(&m, &all)], 16, 10);
        let (uni, bi) = lm.losses(&m, &all, 16);
        // Three equally frequent next tokens: about ln 3 for the unigram.
        assert!((uni - 3f64.ln()).abs() < 0.05, "{uni}");
        // The chain is deterministic: the bigram's loss is near 0 (only the
        // prior's mass is lost).
        assert!(bi < 0.01, "{bi}");
        // 15 pairs per sequence, cut to 4 tokens: 3 pairs.
        assert_eq!(pairs(&m, 0, 4).count(), 3);
    }
}
