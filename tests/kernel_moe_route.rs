//! cuda/moe_route.cu against backend::cpu::router: softmax probabilities
//! (fp32), top-k indices and counts (exact), the aux loss, and the router
//! backward (top-k weight gradient + aux-loss gradient through the softmax),
//! each without a mask and with a real-token mask that has padding (the aux
//! loss's statistics are over the real tokens only).

mod kernel_util;

use kernel_util::*;
use traffic_moe::backend::cpu::router;
use traffic_moe::backend::gpu::ops::moe_permute::MoePlan;
use traffic_moe::backend::gpu::ops::moe_route::{self, Routing};
use traffic_moe::backend::gpu::params::{LbLossFwdParams, LbLossPartialParams};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};
use traffic_moe::backend::gpu::{Buf, Executor, Launch};

// (tokens, experts, k): the last two give the aux loss several partial blocks,
// and 4099 * 5 probabilities end in a partial float4 (scalar tail).
const SHAPES: [(usize, usize, usize); 5] = [
    (37, 8, 2),
    (300, 5, 3),
    (130, 64, 8),
    (5000, 8, 2),
    (4099, 5, 2),
];

/// No mask, then a mask of sequences with trailing [PAD] (about a third of
/// the positions) and a few padded positions inside, then all padding for the
/// first shape (no real token: aux loss and its gradient 0).
fn masks(t: usize, first_shape: bool) -> Vec<Option<Vec<u8>>> {
    let seq = 16;
    let padded: Vec<u8> = (0..t)
        .map(|i| (i % seq < seq - 5 && i % 37 != 3) as u8)
        .collect();
    let mut v = vec![None, Some(padded)];
    if first_shape {
        v.push(Some(vec![0; t]));
    }
    v
}

/// Every shape with each of its masks, and a label naming both.
fn cases() -> impl Iterator<Item = (Routing, Option<Vec<u8>>, String)> {
    SHAPES.iter().enumerate().flat_map(|(i, &(t, n, k))| {
        masks(t, i == 0).into_iter().map(move |valid| {
            let real = valid
                .as_ref()
                .map_or(t, |v| v.iter().filter(|&&b| b != 0).count());
            let r = Routing {
                tokens: t,
                n_experts: n,
                k,
            };
            (r, valid, format!("T {t} ({real} real) N {n} k {k}"))
        })
    })
}

fn upload_mask(ex: &Executor, valid: &Option<Vec<u8>>) -> anyhow::Result<Option<Buf<u8>>> {
    Ok(match valid {
        Some(v) => Some(ex.upload(v)?),
        None => None,
    })
}

struct Routed {
    probs: Vec<f32>,
    idx: Vec<u32>,
    w: Vec<f32>,
    counts: Vec<u32>,
}

fn route(
    ex: &Executor,
    logits: &[f32],
    valid: Option<&Buf<u8>>,
    r: &Routing,
) -> anyhow::Result<Routed> {
    let (t, n, k) = (r.tokens, r.n_experts, r.k);
    let lb = ex.upload(logits)?;
    let (pb, ib, wb, cb) = (
        ex.alloc_zeroed(t * n)?,
        ex.alloc_zeroed(t * k)?,
        ex.alloc_zeroed(t * k)?,
        ex.alloc_zeroed(n)?,
    );
    moe_route::router_fwd(ex, &lb, &pb, &ib, &wb, Some(&cb), valid, r)?;
    Ok(Routed {
        probs: ex.download(&pb)?,
        idx: ex.download(&ib)?,
        w: ex.download(&wb)?,
        counts: ex.download(&cb)?,
    })
}

/// `lb_loss_fwd` with probs at an arbitrary address (the wrapper only takes
/// whole buffers, which are 256-byte aligned).
fn lb_loss_raw(
    ex: &Executor,
    probs_addr: u64,
    counts: &Buf<u32>,
    valid: Option<&Buf<u8>>,
    partials: &Buf<f32>,
    loss: &Buf<f32>,
    r: &Routing,
) -> anyhow::Result<()> {
    let p1 = LbLossPartialParams {
        probs: probs_addr as *const f32,
        counts: counts.cptr(),
        valid: valid.map_or(std::ptr::null(), |v| v.cptr()),
        partials: partials.mptr(),
        tokens: r.tokens as i32,
        n_experts: r.n_experts as i32,
    };
    ex.launch(&Launch::linear(
        "lb_loss_partial",
        partials.len() as u32,
        256,
        p1,
    ))?;
    let p2 = LbLossFwdParams {
        partials: partials.cptr(),
        counts: counts.cptr(),
        loss: loss.mptr(),
        n_partials: partials.len() as i32,
        n_experts: r.n_experts as i32,
        k: r.k as i32,
        _pad: 0,
    };
    Ok(ex.launch(&Launch::linear("lb_loss_fwd", 1, 256, p2))?)
}

#[test]
fn router_fwd_and_lb_loss_match_reference() {
    run_on_executors("router_fwd", |ex| {
        let mut rng = rng(21);
        for (r, valid, what) in cases() {
            let (t, n, k) = (r.tokens, r.n_experts, r.k);
            let vb = upload_mask(ex, &valid)?;
            let vm = valid.as_deref();
            let mut logits = uniform(&mut rng, t * n, 3.0);
            // Exact ties in the first rows: equal logits must go to the lower index.
            for e in 0..n {
                logits[e] = 1.0;
                logits[n + e] = if e % 2 == 1 { 2.0 } else { 0.0 };
            }
            let got = route(ex, &logits, vb.as_ref(), &r)?;
            let (mut p, mut idx, mut w, mut c) = (
                vec![0f32; t * n],
                vec![0u32; t * k],
                vec![0f32; t * k],
                vec![0u32; n],
            );
            router::fwd(&logits, n, k, vm, &mut p, &mut idx, &mut w, &mut c);
            anyhow::ensure!(got.idx == idx, "router topk_idx differs ({what})");
            anyhow::ensure!(
                got.counts == c,
                "router counts differ ({what}): {:?} vs {c:?}",
                got.counts
            );
            anyhow::ensure!(
                (0..k).all(|j| got.idx[j] == j as u32),
                "ties not broken to the lower index ({what})"
            );
            assert_close(
                &format!("router probs ({what})"),
                &f64s(&got.probs),
                &f64s(&p),
                1e-7,
                1e-5,
            )?;
            assert_close(
                &format!("router topk_w ({what})"),
                &f64s(&got.w),
                &f64s(&w),
                1e-7,
                1e-5,
            )?;

            let (pb, cb, partb, lossb) = (
                ex.upload(&got.probs)?,
                ex.upload(&got.counts)?,
                ex.alloc_zeroed::<f32>(moe_route::lb_loss_partials(&r))?,
                ex.alloc_zeroed::<f32>(1)?,
            );
            moe_route::lb_loss_fwd(ex, &pb, &cb, vb.as_ref(), &partb, &lossb, &r)?;
            let want = router::lb_loss(&f64s(&got.probs), &got.idx, vm, t, n, k);
            let loss = ex.download(&lossb)?;
            assert_close(
                &format!("lb loss ({what})"),
                &f64s(&loss),
                &[want],
                0.0,
                1e-5,
            )?;
            // Fixed partition and order: a second run is bit for bit the same.
            moe_route::lb_loss_fwd(ex, &pb, &cb, vb.as_ref(), &partb, &lossb, &r)?;
            anyhow::ensure!(
                ex.download(&lossb)?[0].to_bits() == loss[0].to_bits(),
                "lb loss not reproducible ({what})"
            );
            // probs one float past a 16-byte boundary: the scalar path.
            let mut shifted = vec![0.0f32];
            shifted.extend(&got.probs);
            let sb = ex.upload(&shifted)?;
            lb_loss_raw(ex, sb.addr() + 4, &cb, vb.as_ref(), &partb, &lossb, &r)?;
            assert_close(
                &format!("lb loss, misaligned probs ({what})"),
                &f64s(&ex.download(&lossb)?),
                &[want],
                0.0,
                1e-5,
            )?;
        }
        Ok(())
    });
}

#[test]
fn router_bwd_matches_reference() {
    run_on_executors("router_bwd", |ex| {
        let mut rng = rng(22);
        for (r, valid, what) in cases() {
            let (t, n, k) = (r.tokens, r.n_experts, r.k);
            let vb = upload_mask(ex, &valid)?;
            let vm = valid.as_deref();
            let got = route(ex, &uniform(&mut rng, t * n, 3.0), vb.as_ref(), &r)?;
            let dw = uniform(&mut rng, t * k, 1.0);
            let lb_dloss = 0.02f32 / 3.0;
            // Reference: dprobs = scatter(dtopk_w) + aux-loss gradient, then the softmax backward.
            let probs = f64s(&got.probs);
            let mut dp = vec![0.0f64; t * n];
            router::topk_bwd(&got.idx, &f64s(&dw), n, k, &mut dp);
            router::lb_loss_bwd(&got.idx, vm, t, n, k, lb_dloss as f64, &mut dp);
            let mut want = vec![0.0f64; t * n];
            router::softmax_bwd(&probs, &dp, n, &mut want);

            let (pb, ib, cb, dwb) = (
                ex.upload(&got.probs)?,
                ex.upload(&got.idx)?,
                ex.upload(&got.counts)?,
                ex.upload(&dw)?,
            );
            let dlb = ex.alloc_zeroed::<f32>(t * n)?;
            moe_route::router_bwd(
                ex,
                &pb,
                &ib,
                Some(&dwb),
                &cb,
                vb.as_ref(),
                lb_dloss,
                &dlb,
                &r,
            )?;
            // fp32 cancellation in p*(dp - <p, dp>): tolerance relative to the row's scale.
            assert_close(
                &format!("router dlogits ({what})"),
                &f64s(&ex.download(&dlb)?),
                &want,
                1e-6,
                1e-4,
            )?;

            // Aux loss only (no top-k weight gradient).
            let mut dp = vec![0.0f64; t * n];
            router::lb_loss_bwd(&got.idx, vm, t, n, k, 1.0, &mut dp);
            router::softmax_bwd(&probs, &dp, n, &mut want);
            moe_route::router_bwd(ex, &pb, &ib, None, &cb, vb.as_ref(), 1.0, &dlb, &r)?;
            let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
            assert_close(
                &format!("router dlogits, aux only ({what})"),
                &f64s(&ex.download(&dlb)?),
                &want,
                1e-5 * scale,
                1e-4,
            )?;
        }
        Ok(())
    });
}

#[test]
fn router_rejects_k_above_n() {
    let ex = Executor::sim();
    let b = ex.alloc_zeroed::<f32>(8).unwrap();
    let i = ex.alloc_zeroed::<u32>(8).unwrap();
    let r = Routing {
        tokens: 2,
        n_experts: 4,
        k: 5,
    };
    let err = moe_route::router_fwd(&ex, &b, &b, &i, &b, None, None, &r)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad shape"), "{err}");
}

/// The configs' edges: one expert (k = N = 1), k = N (every expert chosen,
/// in descending order), k = 1, N = 64 with k = 8 and a single token; rows of
/// all-equal logits (every expert ties: lower index first), one expert far
/// ahead (probabilities 1 and exact zeros: the zeros tie), and huge equal
/// logits. Exact top-k and counts against the reference; the aux loss where
/// it is known in closed form (k = N: every load is 1/N, L = sum of probs = 1).
#[test]
fn router_boundary_shapes_and_ties() {
    run_on_executors("router_edges", |ex| {
        for (t, n, k) in [
            (1usize, 1usize, 1usize),
            (4, 8, 8),
            (4, 8, 1),
            (4, 64, 8),
            (1, 5, 5),
        ] {
            let r = Routing {
                tokens: t,
                n_experts: n,
                k,
            };
            let what = format!("T {t} N {n} k {k}");
            let mut logits = Vec::with_capacity(t * n);
            for row in 0..t {
                logits.extend((0..n).map(|e| match row % 4 {
                    0 => 0.5,
                    1 => {
                        if e == n / 2 {
                            1e30
                        } else {
                            -1e30
                        }
                    }
                    2 => 3e38,
                    _ => -(e as f32 % 3.0),
                }));
            }
            let got = route(ex, &logits, None, &r)?;
            let (mut p, mut idx, mut w, mut c) = (
                vec![0f32; t * n],
                vec![0u32; t * k],
                vec![0f32; t * k],
                vec![0u32; n],
            );
            router::fwd(&logits, n, k, None, &mut p, &mut idx, &mut w, &mut c);
            anyhow::ensure!(got.idx == idx, "topk_idx {:?} vs {idx:?} ({what})", got.idx);
            anyhow::ensure!(got.counts == c, "counts {:?} vs {c:?} ({what})", got.counts);
            anyhow::ensure!(
                (0..k).all(|j| got.idx[j] == j as u32),
                "equal logits not taken in index order ({what})"
            );
            for (i, (g, e)) in got.probs.iter().zip(&p).enumerate() {
                anyhow::ensure!((g - e).abs() <= 1e-6, "probs[{i}] {g} vs {e} ({what})");
            }
            for (i, (g, e)) in got.w.iter().zip(&w).enumerate() {
                anyhow::ensure!((g - e).abs() <= 1e-6, "topk_w[{i}] {g} vs {e} ({what})");
            }
            if k == n {
                let (pb, cb) = (ex.upload(&got.probs)?, ex.upload(&got.counts)?);
                let partials = ex.alloc_zeroed::<f32>(moe_route::lb_loss_partials(&r))?;
                let loss = ex.alloc_zeroed::<f32>(1)?;
                moe_route::lb_loss_fwd(ex, &pb, &cb, None, &partials, &loss, &r)?;
                let l = ex.download(&loss)?[0];
                anyhow::ensure!((l - 1.0).abs() <= 1e-5, "aux loss {l}, expected 1 ({what})");
            }
        }
        Ok(())
    });
}

/// A config may ask for up to 64 experts per token; the kernels hold at most
/// MAX_K: refused by name, not routed wrong.
#[test]
fn router_rejects_k_above_max_k() {
    let ex = Executor::sim();
    let r = Routing {
        tokens: 2,
        n_experts: 16,
        k: moe_route::MAX_K + 1,
    };
    let b = ex.alloc_zeroed::<f32>(2 * 16).unwrap();
    let i = ex.alloc_zeroed::<u32>(2 * r.k).unwrap();
    let w = ex.alloc_zeroed::<f32>(2 * r.k).unwrap();
    let err = moe_route::router_fwd(&ex, &b, &b, &i, &w, None, None, &r)
        .unwrap_err()
        .to_string();
    assert!(err.contains("moe routing: bad shape"), "{err}");
    assert!(
        MoePlan::alloc(&ex, r, 64).is_err(),
        "plan for k > MAX_K accepted"
    );
}
