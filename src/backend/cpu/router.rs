//! MoE router: softmax over N experts (fp32 in training), top-k selection
//! with ties to the lower expert index, and the load-balancing loss.

use crate::engine::float::Float;

/// Softmax over `n` logits per row, then top-`k` per row ordered by
/// descending probability (ties: lower index first). Weights are the kept
/// probabilities, not renormalised. `counts[e]` = routed slots of expert e.
pub fn fwd<F: Float>(
    logits: &[F],
    n: usize,
    k: usize,
    probs: &mut [F],
    topk_idx: &mut [u32],
    topk_w: &mut [F],
    counts: &mut [u32],
) {
    assert!(k <= n, "router: k={k} > n={n}");
    counts[..n].iter_mut().for_each(|c| *c = 0);
    for (t, (lr, pr)) in logits
        .chunks_exact(n)
        .zip(probs.chunks_exact_mut(n))
        .enumerate()
    {
        let m = lr.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
        let mut sum = F::ZERO;
        for (p, &l) in pr.iter_mut().zip(lr) {
            *p = (l - m).exp();
            sum += *p;
        }
        for p in pr.iter_mut() {
            *p /= sum;
        }
        // Selection by repeated argmax: strict `>` keeps the lower index on ties.
        let mut taken = 0u64;
        for j in 0..k {
            let mut best = usize::MAX;
            for e in 0..n {
                if taken >> e & 1 == 0 && (best == usize::MAX || pr[e] > pr[best]) {
                    best = e;
                }
            }
            taken |= 1 << best;
            topk_idx[t * k + j] = best as u32;
            topk_w[t * k + j] = pr[best];
            counts[best] += 1;
        }
    }
}

/// Load-balancing loss `N * sum_e load_e * prob_e`, `load_e = count_e/(T*k)`,
/// `prob_e = mean_t probs[t,e]`.
pub fn lb_loss<F: Float>(probs: &[F], topk_idx: &[u32], t: usize, n: usize, k: usize) -> F {
    let load = loads(topk_idx, t, n, k);
    let mut loss = 0.0;
    for (e, &l) in load.iter().enumerate() {
        let pe: f64 = (0..t).map(|i| probs[i * n + e].to_f64()).sum::<f64>() / t as f64;
        loss += l * pe;
    }
    F::from_f64(n as f64 * loss)
}

fn loads(topk_idx: &[u32], t: usize, n: usize, k: usize) -> Vec<f64> {
    let mut load = vec![0.0; n];
    for &e in &topk_idx[..t * k] {
        load[e as usize] += 1.0;
    }
    load.iter_mut().for_each(|l| *l /= (t * k) as f64);
    load
}

/// Gradient of `dloss * lb_loss` w.r.t. probs (load is a constant): `+=`.
pub fn lb_loss_bwd<F: Float>(
    topk_idx: &[u32],
    t: usize,
    n: usize,
    k: usize,
    dloss: F,
    dprobs: &mut [F],
) {
    let load = loads(topk_idx, t, n, k);
    for row in dprobs[..t * n].chunks_exact_mut(n) {
        for (g, &l) in row.iter_mut().zip(&load) {
            *g += dloss * F::from_f64(n as f64 * l / t as f64);
        }
    }
}

/// Top-k weights are probabilities: route their grads into `dprobs` (`+=`).
pub fn topk_bwd<F: Float>(topk_idx: &[u32], dtopk_w: &[F], n: usize, k: usize, dprobs: &mut [F]) {
    for (s, (&e, &g)) in topk_idx.iter().zip(dtopk_w).enumerate() {
        dprobs[(s / k) * n + e as usize] += g;
    }
}

/// Softmax backward: `dlogits = p * (dp - sum(dp * p))` (=).
pub fn softmax_bwd<F: Float>(probs: &[F], dprobs: &[F], n: usize, dlogits: &mut [F]) {
    for ((pr, dpr), dl) in probs
        .chunks_exact(n)
        .zip(dprobs.chunks_exact(n))
        .zip(dlogits.chunks_exact_mut(n))
    {
        let s: F = pr.iter().zip(dpr).map(|(&p, &g)| p * g).sum();
        for ((o, &p), &g) in dl.iter_mut().zip(pr).zip(dpr) {
            *o = p * (g - s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn topk_orders_by_prob_and_breaks_ties_low() {
        let logits = [0.0f32, 1.0, 1.0, -1.0, 3.0, 0.0, 0.0, 0.0];
        let (n, k) = (4, 2);
        let mut p = [0.0f32; 8];
        let mut idx = [0u32; 4];
        let mut w = [0.0f32; 4];
        let mut c = [0u32; 4];
        fwd(&logits, n, k, &mut p, &mut idx, &mut w, &mut c);
        assert_eq!(idx, [1, 2, 0, 1]);
        assert_eq!(c, [1, 2, 1, 0]);
        assert_eq!(w[0], p[1]);
        assert!((p[..4].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // uniform probs -> loss exactly 1 for any balanced routing
        let probs = [0.25f32; 8];
        let l = lb_loss(&probs, &[0, 1, 2, 3], 2, 4, 2);
        assert!((l - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (t, n, k) = (5, 4, 2);
        let logits = vals(t * n, 7);
        let mut p = vec![0.0; t * n];
        let mut idx = vec![0u32; t * k];
        let mut w = vec![0.0; t * k];
        let mut c = vec![0u32; n];
        fwd(&logits, n, k, &mut p, &mut idx, &mut w, &mut c);
        let dw = vals(t * k, 8);
        // loss = sum(w * dw) + 0.3 * lb_loss, with the selection held fixed
        let f = |l: &[f64]| {
            let mut p = vec![0.0; t * n];
            let mut i2 = vec![0u32; t * k];
            let mut w2 = vec![0.0; t * k];
            let mut c2 = vec![0u32; n];
            fwd(l, n, k, &mut p, &mut i2, &mut w2, &mut c2);
            assert_eq!(i2, idx, "perturbation flipped the selection");
            dot(&w2, &dw) + 0.3 * lb_loss(&p, &i2, t, n, k)
        };
        let mut dp = vec![0.0; t * n];
        topk_bwd(&idx, &dw, n, k, &mut dp);
        lb_loss_bwd(&idx, t, n, k, 0.3, &mut dp);
        let mut dl = vec![0.0; t * n];
        softmax_bwd(&p, &dp, n, &mut dl);
        check_grad(&logits, &dl, f, "dlogits");
    }
}
