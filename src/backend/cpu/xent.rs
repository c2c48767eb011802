//! Softmax cross-entropy over rows of logits, with an ignore index.

use crate::engine::float::Float;
use rayon::prelude::*;

/// Per-row losses (0 for ignored rows); returns the mean over valid rows
/// (0 if none).
pub fn fwd<F: Float>(logits: &[F], targets: &[u32], ignore: u32, losses: &mut [F]) -> F {
    let t = targets.len();
    if t == 0 {
        return F::ZERO;
    }
    let v = logits.len() / t;
    losses
        .par_iter_mut()
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter())
        .for_each(|((l, row), &y)| {
            if y == ignore {
                *l = F::ZERO;
                return;
            }
            let m = row.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
            let s: F = row.iter().map(|&x| (x - m).exp()).sum();
            // (m - x_y) + ln s, not ln s + m - x_y: exact when x_y is the
            // maximum (m + ln s drops ln s once |m| is large: an all-equal
            // row of 1e30 lost its ln V), as cuda/xent.cu computes it.
            *l = (m - row[y as usize]) + s.ln();
        });
    let n = targets.iter().filter(|&&y| y != ignore).count();
    if n == 0 {
        return F::ZERO;
    }
    let total: f64 = losses.iter().map(|l| l.to_f64()).sum();
    F::from_f64(total / n as f64)
}

/// `dlogits = dloss * (softmax - onehot) / n_valid`, zero rows for ignored (=).
pub fn bwd<F: Float>(logits: &[F], targets: &[u32], ignore: u32, dloss: F, dlogits: &mut [F]) {
    let t = targets.len();
    if t == 0 {
        return;
    }
    let v = logits.len() / t;
    let n = targets.iter().filter(|&&y| y != ignore).count().max(1);
    let scale = dloss / F::from_usize(n);
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter())
        .for_each(|((d, row), &y)| {
            if y == ignore {
                d.iter_mut().for_each(|x| *x = F::ZERO);
                return;
            }
            let m = row.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
            let mut s = F::ZERO;
            for (o, &x) in d.iter_mut().zip(row) {
                *o = (x - m).exp();
                s += *o;
            }
            let inv = scale / s;
            d.iter_mut().for_each(|x| *x *= inv);
            d[y as usize] -= scale;
        });
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn loss_and_gradient() {
        let (t, v) = (4, 5);
        let logits = vals(t * v, 1);
        let targets = [2u32, 0, 99, 4];
        let mut l = vec![0.0; t];
        let mean = fwd(&logits, &targets, 99, &mut l);
        assert_eq!(l[2], 0.0);
        let r = &logits[..v];
        let want = r.iter().map(|x| x.exp()).sum::<f64>().ln() - r[2];
        assert!((l[0] - want).abs() < 1e-12);
        assert!((mean - (l[0] + l[1] + l[3]) / 3.0).abs() < 1e-12);
        let mut d = vec![0.0; t * v];
        bwd(&logits, &targets, 99, 1.5, &mut d);
        check_grad(
            &logits,
            &d,
            |x| {
                let mut l = vec![0.0; t];
                1.5 * fwd(x, &targets, 99, &mut l)
            },
            "dlogits",
        );
    }
}
