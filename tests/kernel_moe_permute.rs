//! cuda/moe_permute.cu against backend::cpu::moe_permute::plan: every table
//! equal bit for bit (the plan is built on the device, from a worst-case-sized
//! buffer), padding marked, and the row gather.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use rand::rngs::StdRng;
use traffic_moe::backend::cpu::moe_permute;
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::ops::moe_permute::{MoePlan, NONE, gather, max_rows};
use traffic_moe::backend::gpu::ops::moe_route::Routing;
use traffic_moe::backend::gpu::testing::run_on_executors;

/// k distinct experts per token; `skew` sends most slots to the low experts
/// (and leaves high ones empty), as an unbalanced router does.
fn random_topk(rng: &mut StdRng, t: usize, n: usize, k: usize, skew: bool) -> Vec<u32> {
    let mut idx = Vec::with_capacity(t * k);
    for _ in 0..t {
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < k {
            let e = if skew {
                (rng.random::<f32>().powi(3) * n as f32) as u32 % n as u32
            } else {
                rng.random_range(0..n as u32)
            };
            if !chosen.contains(&e) {
                chosen.push(e);
            }
        }
        idx.extend(chosen);
    }
    idx
}

// (tokens, experts, k, tile, skewed): 700*2 slots span two chunks of the plan block.
const CASES: [(usize, usize, usize, usize, bool); 5] = [
    (37, 8, 2, 16, false),
    (300, 5, 3, 64, true),
    (700, 8, 2, 128, false),
    (1, 8, 2, 16, false),
    (513, 64, 8, 32, true),
];

fn check_plan(
    ex: &Executor,
    plan: &MoePlan,
    topk: &[u32],
    what: &str,
) -> anyhow::Result<moe_permute::PermutePlan> {
    let r = plan.routing;
    let want = moe_permute::plan(topk, r.tokens, r.n_experts, r.k, plan.tile);
    let rows = *want.expert_offset.last().unwrap() as usize;
    let mut counts = vec![0u32; r.n_experts];
    topk.iter().for_each(|&e| counts[e as usize] += 1);
    anyhow::ensure!(
        ex.download(&plan.counts)? == counts,
        "counts differ ({what})"
    );
    anyhow::ensure!(
        ex.download(&plan.expert_offset)? == want.expert_offset,
        "expert_offset differs ({what})"
    );
    anyhow::ensure!(
        ex.download(&plan.total_rows)? == [rows as u32],
        "total_rows differs ({what})"
    );
    anyhow::ensure!(
        ex.download(&plan.slot_pos)? == want.slot_pos,
        "slot_pos differs ({what})"
    );
    let sorted = ex.download(&plan.sorted_slot)?;
    anyhow::ensure!(
        sorted[..rows] == want.sorted_slot[..],
        "sorted_slot differs ({what})"
    );
    anyhow::ensure!(
        sorted[rows..].iter().all(|&s| s == NONE),
        "rows past the end not marked ({what})"
    );
    let tiles = ex.download(&plan.tile_expert)?;
    let used = rows / plan.tile;
    anyhow::ensure!(
        tiles[..used] == want.tile_expert[..],
        "tile_expert differs ({what})"
    );
    anyhow::ensure!(
        tiles[used..].iter().all(|&e| e == NONE),
        "tiles past the end not marked ({what})"
    );
    Ok(want)
}

#[test]
fn permute_plan_matches_reference_bit_for_bit() {
    run_on_executors("moe_permute_plan", |ex| {
        let mut rng = rng(31);
        for (t, n, k, tile, skew) in CASES {
            let what = format!(
                "T {t} N {n} k {k} tile {tile}{}",
                if skew { " skewed" } else { "" }
            );
            let topk = random_topk(&mut rng, t, n, k, skew);
            let plan = MoePlan::alloc(
                ex,
                Routing {
                    tokens: t,
                    n_experts: n,
                    k,
                },
                tile,
            )?;
            anyhow::ensure!(plan.max_rows == max_rows(t, k, n, tile));
            plan.build(ex, &ex.upload(&topk)?)?;
            let want = check_plan(ex, &plan, &topk, &what)?;

            // Gather: row r holds x[sorted_slot[r] / k], zero for padding.
            let d = 45;
            let (x, _) = bf16_input(&mut rng, t * d, 1.0);
            let xp = ex.upload(&vec![bf16::from_f32(7.0); plan.max_rows * d])?;
            gather(ex, &plan, &ex.upload(&x)?, &xp, d)?;
            let got = ex.download(&xp)?;
            for r in 0..plan.max_rows {
                let slot = want.sorted_slot.get(r).copied().unwrap_or(u32::MAX);
                let row = &got[r * d..(r + 1) * d];
                if slot == u32::MAX {
                    anyhow::ensure!(
                        row.iter().all(|v| v.to_f32() == 0.0),
                        "padding row {r} not zero ({what})"
                    );
                } else {
                    let src = slot as usize / k;
                    anyhow::ensure!(
                        row == &x[src * d..(src + 1) * d],
                        "gathered row {r} differs ({what})"
                    );
                }
            }
        }
        Ok(())
    });
}

#[test]
fn permute_plan_is_stable_under_rebuild() {
    // A second build into the same buffers (stale contents) gives the same tables.
    run_on_executors("moe_permute_rebuild", |ex| {
        let mut rng = rng(32);
        let (t, n, k, tile) = (200, 8, 2, 16);
        let plan = MoePlan::alloc(
            ex,
            Routing {
                tokens: t,
                n_experts: n,
                k,
            },
            tile,
        )?;
        plan.build(ex, &ex.upload(&random_topk(&mut rng, t, n, k, true))?)?;
        let topk = random_topk(&mut rng, t, n, k, false);
        plan.build(ex, &ex.upload(&topk)?)?;
        check_plan(ex, &plan, &topk, "rebuild").map(|_| ())
    });
}
