//! Value parsers for arguments with bounds: clap refuses `--batch 0` or
//! `--lr -1` before any work, naming the argument, where the run would
//! otherwise panic (`bench model --seq 0`, `finetune --batch 0`), print NaN
//! rates (`bench model --iters 0`) or write a model trained on nothing
//! (`pretrain --steps 0`).

use std::fmt::Display;
use std::str::FromStr;

/// The parts of a dataset a `--split` names.
pub const SPLITS: [&str; 3] = crate::traffic::dataset::split::Part::NAMES;

/// A count of at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    at_least_one(s)
}

/// The most flows in a batch: far past what fits in memory at any config,
/// but small enough that no tensor's size overflows (past it, `--batch
/// 10000000000` panicked in the allocator instead of saying "out of memory").
pub const MAX_BATCH: usize = 1 << 20;
/// The longest sequence: the tokenizer's own bound (128 times the paper's
/// 512). The model has no position limit (RoPE); the bound keeps batch x
/// sequence x width well inside the address space.
pub const MAX_SEQ: usize = crate::traffic::tokens::tokenize::MAX_SEQ_LEN;

/// A sequence length: at least 2 tokens (one, then `[END]`), at most [`MAX_SEQ`].
pub fn seq_len(s: &str) -> Result<usize, String> {
    let n = at_least(s, 2).map_err(|e| format!("{e} (a token and [END])"))?;
    at_most(n, MAX_SEQ)
}

/// A learned vocabulary size: at least 1 entry, at most
/// [`MAX_LEARNED`](crate::traffic::tokens::vocab::MAX_LEARNED) (past it,
/// `--size 1000000000000` asked the trainer for 69 TB and ended as "out of
/// memory ... a smaller --batch needs less", naming another option).
pub fn vocab_size(s: &str) -> Result<usize, String> {
    at_most(count(s)?, crate::traffic::tokens::vocab::MAX_LEARNED)
        .map_err(|e| format!("{e} (a corpus of byte bigrams has at most 74272 pieces)"))
}

/// The most flows `tmoe synth` writes per class: about 2 TB of captures at
/// the classes' average of 23 KB a flow, past any disk it would be run on.
pub const MAX_SYNTH_FLOWS: usize = 100_000_000;

/// Flows to synthesise per class: at least 1, at most [`MAX_SYNTH_FLOWS`]
/// (past it, `--flows-per-class 1000000000000` ran out of memory listing
/// the files to write).
pub fn synth_flows(s: &str) -> Result<usize, String> {
    at_most(count(s)?, MAX_SYNTH_FLOWS)
}

/// A number of flows to synthesise where none is a choice (0: none), at
/// most [`MAX_SYNTH_FLOWS`].
pub fn synth_flows_or_none(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    at_most(n, MAX_SYNTH_FLOWS)
}

/// A batch size: at least 1 flow, at most [`MAX_BATCH`].
pub fn batch(s: &str) -> Result<usize, String> {
    at_most(count(s)?, MAX_BATCH)
}

fn at_most(n: usize, max: usize) -> Result<usize, String> {
    if n <= max {
        Ok(n)
    } else {
        Err(format!("must be at most {max}"))
    }
}

/// A count of at least 1, as `u64` (steps).
pub fn count_u64(s: &str) -> Result<u64, String> {
    at_least_one(s)
}

/// A count of at least 1, as `u16` (trees).
pub fn count_u16(s: &str) -> Result<u16, String> {
    at_least_one(s)
}

fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + From<u8>,
    T::Err: Display,
{
    at_least(s, 1)
}

fn at_least<T>(s: &str, min: u8) -> Result<T, String>
where
    T: FromStr + PartialOrd + From<u8>,
    T::Err: Display,
{
    let x: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if x >= T::from(min) {
        Ok(x)
    } else {
        Err(format!("must be at least {min}"))
    }
}

/// A finite number above 0 (learning rates, clipping norms, timeouts, rates).
pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err("must be a number above 0".into())
    }
}

/// A fraction in (0, 1].
pub fn fraction(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err("must be a fraction in (0, 1]".into())
    }
}

/// [`fraction`] as `f32` (the layer-wise decay factor).
pub fn fraction_f32(s: &str) -> Result<f32, String> {
    fraction(s).map(|x| x as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count_u64("1"), Ok(1));
        assert_eq!(count_u16("0"), Err("must be at least 1".into()));
        assert!(count("-1").is_err() && count("x").is_err());
        assert_eq!(positive("3e-4"), Ok(3e-4));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(fraction("1"), Ok(1.0));
        assert_eq!(fraction_f32("0.9"), Ok(0.9));
        for bad in ["0", "1.5", "-0.1", "nan"] {
            assert!(fraction(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_that_would_overflow_a_tensor_are_refused() {
        assert_eq!(batch("1048576"), Ok(MAX_BATCH));
        assert_eq!(batch("1048577"), Err("must be at most 1048576".into()));
        assert!(batch("10000000000000000000000").is_err());
        assert_eq!(seq_len("65536"), Ok(MAX_SEQ));
        assert_eq!(seq_len("1000000"), Err("must be at most 65536".into()));
        assert!(seq_len("1").unwrap_err().contains("at least 2"));
        // The largest batch of the longest sequences at base width, in
        // bytes, still fits a usize: the memory limit, not an overflow, stops it.
        assert!((MAX_BATCH * MAX_SEQ).checked_mul(3 * 768 * 4).is_some());
    }
}
