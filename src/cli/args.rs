//! Value parsers for arguments with bounds: clap refuses `--batch 0` or
//! `--lr -1` before any work, naming the argument, where the run would
//! otherwise panic (`bench model --seq 0`, `finetune --batch 0`), print NaN
//! rates (`bench model --iters 0`) or write a model trained on nothing
//! (`pretrain --steps 0`).

use std::fmt::Display;
use std::str::FromStr;

/// A count of at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    at_least_one(s)
}

/// A sequence length: at least 2 tokens (one, then `[END]`).
pub fn seq_len(s: &str) -> Result<usize, String> {
    at_least(s, 2).map_err(|e| format!("{e} (a token and [END])"))
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
}
