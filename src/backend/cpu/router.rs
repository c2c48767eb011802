//! MoE router: softmax over N experts (fp32 in training), top-k selection
//! with ties to the lower expert index, and the load-balancing loss.
//!
//! `valid` (`[T]`, 1 = real token, 0 = `[PAD]`; `None` = all real) restricts the
//! load-balancing statistics to the batch's real tokens: `counts`, `Load_e`
//! and `Prob_e` are over real tokens only, and T in their denominators is the
//! number of real tokens. Padded positions are still routed (probs, top-k) and
//! get the top-k weights' gradient, but no aux-loss gradient.

use crate::engine::float::Float;

/// A layer's routing of `t` tokens (what [`route`] computes).
pub struct Routed<F> {
    /// `[t, n]` softmax probabilities.
    pub probs: Vec<F>,
    /// `[t, k]` chosen experts and their weights.
    pub topk_idx: Vec<u32>,
    pub topk_w: Vec<F>,
    /// Routed slots per expert among the real tokens.
    pub counts: Vec<u32>,
    /// The load-balancing loss over the real tokens.
    pub aux: F,
}

/// The whole router of a layer: logits `z·W_rᵀ` (`router_w` is `[n, d]`),
/// then [`route_logits`].
pub fn route<F: Float>(
    z: &[F],
    router_w: &[F],
    (t, d, n, k): (usize, usize, usize, usize),
    valid: Option<&[u8]>,
) -> Routed<F> {
    let mut logits = vec![F::ZERO; t * n];
    super::matmul::fwd(z, router_w, None, t, d, n, &mut logits);
    route_logits(&logits, (t, n, k), valid)
}

/// The router from its logits `[t, n]`: [`fwd`] and [`lb_loss`]. The
/// reference layer and the bf16 engine (which routes in f32, from logits
/// it computes row by row) share it.
pub fn route_logits<F: Float>(
    logits: &[F],
    (t, n, k): (usize, usize, usize),
    valid: Option<&[u8]>,
) -> Routed<F> {
    assert_eq!(logits.len(), t * n, "router: logits of the wrong size");
    let mut r = Routed {
        probs: vec![F::ZERO; t * n],
        topk_idx: vec![0u32; t * k],
        topk_w: vec![F::ZERO; t * k],
        counts: vec![0u32; n],
        aux: F::ZERO,
    };
    fwd(
        logits,
        n,
        k,
        valid,
        &mut r.probs,
        &mut r.topk_idx,
        &mut r.topk_w,
        &mut r.counts,
    );
    r.aux = lb_loss(&r.probs, &r.topk_idx, valid, t, n, k);
    r
}

/// Softmax over `n` logits per row, then top-`k` per row ordered by
/// descending probability (ties: lower index first). Weights are the kept
/// probabilities, not renormalised. `counts[e]` = routed slots of expert e
/// among the real tokens (`valid`, see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn fwd<F: Float>(
    logits: &[F],
    n: usize,
    k: usize,
    valid: Option<&[u8]>,
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
            if is_real(valid, t) {
                counts[best] += 1;
            }
        }
    }
}

fn is_real(valid: Option<&[u8]>, t: usize) -> bool {
    valid.is_none_or(|v| v[t] != 0)
}

/// Number of real tokens among the first `t` (`valid`, see the module docs).
pub fn real_tokens(valid: Option<&[u8]>, t: usize) -> usize {
    valid.map_or(t, |v| v[..t].iter().filter(|&&b| b != 0).count())
}

/// Load-balancing loss `N * sum_e load_e * prob_e` over the real tokens:
/// `load_e = count_e/(T_real*k)`, `prob_e = sum_{real t} probs[t,e] / T_real`;
/// 0 without a real token.
pub fn lb_loss<F: Float>(
    probs: &[F],
    topk_idx: &[u32],
    valid: Option<&[u8]>,
    t: usize,
    n: usize,
    k: usize,
) -> F {
    let Some((load, real)) = loads(topk_idx, valid, t, n, k) else {
        return F::ZERO;
    };
    let mut loss = 0.0;
    for (e, &l) in load.iter().enumerate() {
        let pe: f64 = (0..t)
            .filter(|&i| is_real(valid, i))
            .map(|i| probs[i * n + e].to_f64())
            .sum::<f64>()
            / real as f64;
        loss += l * pe;
    }
    F::from_f64(n as f64 * loss)
}

/// `load_e` over the real tokens and their number; `None` without one.
fn loads(
    topk_idx: &[u32],
    valid: Option<&[u8]>,
    t: usize,
    n: usize,
    k: usize,
) -> Option<(Vec<f64>, usize)> {
    let real = real_tokens(valid, t);
    if real == 0 {
        return None;
    }
    let mut load = vec![0.0; n];
    for (s, &e) in topk_idx[..t * k].iter().enumerate() {
        if is_real(valid, s / k) {
            load[e as usize] += 1.0;
        }
    }
    load.iter_mut().for_each(|l| *l /= (real * k) as f64);
    Some((load, real))
}

/// Gradient of `dloss * lb_loss` w.r.t. probs (load is a constant): `+=`, on
/// the real tokens' rows only.
pub fn lb_loss_bwd<F: Float>(
    topk_idx: &[u32],
    valid: Option<&[u8]>,
    t: usize,
    n: usize,
    k: usize,
    dloss: F,
    dprobs: &mut [F],
) {
    let Some((load, real)) = loads(topk_idx, valid, t, n, k) else {
        return;
    };
    for (i, row) in dprobs[..t * n].chunks_exact_mut(n).enumerate() {
        if !is_real(valid, i) {
            continue;
        }
        for (g, &l) in row.iter_mut().zip(&load) {
            *g += dloss * F::from_f64(n as f64 * l / real as f64);
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
        fwd(&logits, n, k, None, &mut p, &mut idx, &mut w, &mut c);
        assert_eq!(idx, [1, 2, 0, 1]);
        assert_eq!(c, [1, 2, 1, 0]);
        assert_eq!(w[0], p[1]);
        assert!((p[..4].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // uniform probs -> loss exactly 1 for any balanced routing
        let probs = [0.25f32; 8];
        let l = lb_loss(&probs, &[0, 1, 2, 3], None, 2, 4, 2);
        assert!((l - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        gradients_match_finite_differences_with(None);
        gradients_match_finite_differences_with(Some(&[1, 0, 1, 1, 0]));
    }

    fn gradients_match_finite_differences_with(valid: Option<&[u8]>) {
        let (t, n, k) = (5, 4, 2);
        let logits = vals(t * n, 7);
        let mut p = vec![0.0; t * n];
        let mut idx = vec![0u32; t * k];
        let mut w = vec![0.0; t * k];
        let mut c = vec![0u32; n];
        fwd(&logits, n, k, valid, &mut p, &mut idx, &mut w, &mut c);
        let dw = vals(t * k, 8);
        // loss = sum(w * dw) + 0.3 * lb_loss, with the selection held fixed
        let f = |l: &[f64]| {
            let mut p = vec![0.0; t * n];
            let mut i2 = vec![0u32; t * k];
            let mut w2 = vec![0.0; t * k];
            let mut c2 = vec![0u32; n];
            fwd(l, n, k, valid, &mut p, &mut i2, &mut w2, &mut c2);
            assert_eq!(i2, idx, "perturbation flipped the selection");
            dot(&w2, &dw) + 0.3 * lb_loss(&p, &i2, valid, t, n, k)
        };
        let mut dp = vec![0.0; t * n];
        topk_bwd(&idx, &dw, n, k, &mut dp);
        lb_loss_bwd(&idx, valid, t, n, k, 0.3, &mut dp);
        let mut dl = vec![0.0; t * n];
        softmax_bwd(&p, &dp, n, &mut dl);
        check_grad(&logits, &dl, f, "dlogits");
    }

    /// Padded positions (routed like any token) change neither the counts,
    /// nor the aux loss, nor its gradient on the real tokens; they get none.
    #[test]
    fn padding_does_not_change_the_aux_loss() {
        let (n, k) = (4, 2);
        let real = 3;
        let logits_real = vals(real * n, 21);
        let pad_logits = vals(2 * n, 22);
        // Batch with padding: real, pad, real, real, pad.
        let order = [Some(0), None, Some(1), Some(2), None];
        let t = order.len();
        let mut logits = Vec::new();
        let mut pad = pad_logits.chunks_exact(n);
        for o in order {
            match o {
                Some(i) => logits.extend_from_slice(&logits_real[i * n..(i + 1) * n]),
                None => logits.extend_from_slice(pad.next().unwrap()),
            }
        }
        let valid: Vec<u8> = order.iter().map(|o| o.is_some() as u8).collect();
        let route = |l: &[f64], t: usize, v: Option<&[u8]>| {
            let mut p = vec![0.0; t * n];
            let mut idx = vec![0u32; t * k];
            let mut w = vec![0.0; t * k];
            let mut c = vec![0u32; n];
            fwd(l, n, k, v, &mut p, &mut idx, &mut w, &mut c);
            let aux = lb_loss(&p, &idx, v, t, n, k);
            let mut dp = vec![0.0; t * n];
            lb_loss_bwd(&idx, v, t, n, k, 0.5, &mut dp);
            (c, aux, dp)
        };
        let (c0, aux0, dp0) = route(&logits_real, real, None);
        let (c1, aux1, dp1) = route(&logits, t, Some(&valid));
        assert_eq!(c0, c1);
        assert!((aux0 - aux1).abs() < 1e-12, "{aux0} vs {aux1}");
        for (row, o) in dp1.chunks_exact(n).zip(order) {
            match o {
                Some(i) => {
                    for (a, b) in row.iter().zip(&dp0[i * n..(i + 1) * n]) {
                        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
                    }
                }
                None => assert!(row.iter().all(|&g| g == 0.0)),
            }
        }
        // No real token: no aux loss, no gradient.
        let (c, aux, dp) = route(&logits, t, Some(&[0; 5]));
        assert_eq!((c, aux), (vec![0; n], 0.0));
        assert!(dp.iter().all(|&g| g == 0.0));
    }
}
