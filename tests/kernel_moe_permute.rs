//! cuda/moe_permute.cu against backend::cpu::moe_permute::plan: every table
//! equal bit for bit (the plan is built on the device, from a worst-case-sized
//! buffer), padding marked, and the row gather.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use rand::rngs::StdRng;
use traffic_moe::backend::cpu::moe_permute;
use traffic_moe::backend::gpu::ops::moe_permute::{MoePlan, NONE, gather, max_rows};
use traffic_moe::backend::gpu::ops::moe_route::Routing;
use traffic_moe::backend::gpu::params::MoeGatherParams;
use traffic_moe::backend::gpu::testing::run_on_executors;
use traffic_moe::backend::gpu::{Executor, Launch};

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

// (tokens, experts, k, tile, skewed). A plan block sorts a chunk of 1024
// slots: 700*2 slots are two chunks (the second partial), 513*8 five, 5000*2
// ten; expert counts are odd, so segments cross chunk boundaries.
const CASES: [(usize, usize, usize, usize, bool); 7] = [
    (37, 8, 2, 16, false),
    (300, 5, 3, 64, true),
    (700, 8, 2, 128, false),
    (1, 8, 2, 16, false),
    (513, 64, 8, 32, true),
    (5000, 8, 2, 128, false),
    (4097, 7, 1, 16, true),
];

// Gather row widths: scalar (d % 8 != 0), vector with fewer vectors than lanes,
// vector with a partial second pass (41 vectors).
const GATHER_D: [usize; 3] = [45, 64, 328];

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

/// Row r holds x[sorted_slot[r] / k], zero for padding.
fn check_gather(
    got: &[bf16],
    x: &[bf16],
    want: &moe_permute::PermutePlan,
    rows: usize,
    k: usize,
    d: usize,
    what: &str,
) -> anyhow::Result<()> {
    for r in 0..rows {
        let slot = want.sorted_slot.get(r).copied().unwrap_or(u32::MAX);
        let row = &got[r * d..(r + 1) * d];
        if slot == u32::MAX {
            anyhow::ensure!(
                row.iter().all(|v| v.to_bits() == 0),
                "padding row {r} not zero (d {d}, {what})"
            );
        } else {
            let src = slot as usize / k;
            anyhow::ensure!(
                row == &x[src * d..(src + 1) * d],
                "gathered row {r} differs (d {d}, {what})"
            );
        }
    }
    Ok(())
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

            for d in GATHER_D {
                let (x, _) = bf16_input(&mut rng, t * d, 1.0);
                let xp = ex.upload(&vec![bf16::from_f32(7.0); plan.max_rows * d])?;
                gather(ex, &plan, &ex.upload(&x)?, &xp, d)?;
                check_gather(&ex.download(&xp)?, &x, &want, plan.max_rows, k, d, &what)?;
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

#[test]
fn gather_misaligned_pointers_take_the_scalar_path() {
    // d % 8 == 0, but x or out one bf16 past a 16-byte boundary.
    run_on_executors("moe_gather_misaligned", |ex| {
        let mut rng = rng(33);
        let (t, n, k, tile, d) = (300, 8, 2, 16, 64);
        let topk = random_topk(&mut rng, t, n, k, false);
        let plan = MoePlan::alloc(
            ex,
            Routing {
                tokens: t,
                n_experts: n,
                k,
            },
            tile,
        )?;
        plan.build(ex, &ex.upload(&topk)?)?;
        let want = moe_permute::plan(&topk, t, n, k, tile);
        let (x, _) = bf16_input(&mut rng, t * d, 1.0);
        let mut shifted = vec![bf16::ZERO];
        shifted.extend(&x);
        let (xa, xs) = (ex.upload(&x)?, ex.upload(&shifted)?);
        let out = ex.upload(&vec![bf16::from_f32(7.0); plan.max_rows * d + 1])?;
        for (what, x_addr, out_shift) in [
            ("x misaligned", xs.addr() + 2, 0u64),
            ("out misaligned", xa.addr(), 2),
        ] {
            let params = MoeGatherParams {
                x: x_addr as *const _,
                sorted_slot: plan.sorted_slot.cptr(),
                out: (out.addr() + out_shift) as *mut _,
                rows: plan.max_rows as i32,
                d: d as i32,
                k: k as i32,
                _pad: 0,
            };
            ex.launch(&Launch::linear(
                "moe_gather",
                plan.max_rows.div_ceil(8) as u32,
                256,
                params,
            ))?;
            let got = ex.download(&out)?;
            let s = (out_shift / 2) as usize;
            check_gather(
                &got[s..s + plan.max_rows * d],
                &x,
                &want,
                plan.max_rows,
                k,
                d,
                what,
            )?;
        }
        Ok(())
    });
}
