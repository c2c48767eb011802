//! cuda/moe_combine.cu against backend::cpu::moe_permute::{combine, combine_bwd}
//! (f64, same bf16 inputs), with the routing plan built on the device.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::moe_permute;
use traffic_moe::backend::gpu::ops::moe_combine::{self, CombineInputs};
use traffic_moe::backend::gpu::ops::moe_permute::MoePlan;
use traffic_moe::backend::gpu::ops::moe_route::Routing;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

// (tokens, experts, k, tile, d)
const CASES: [(usize, usize, usize, usize, usize); 3] =
    [(37, 8, 2, 16, 45), (20, 5, 3, 8, 300), (9, 4, 1, 4, 64)];

#[test]
fn combine_fwd_bwd_match_reference() {
    run_on_executors("moe_combine", |ex| {
        let mut rng = rng(41);
        for (t, n, k, tile, d) in CASES {
            let what = format!("T {t} N {n} k {k} d {d}");
            let mut topk = Vec::new();
            for _ in 0..t {
                let first = rng.random_range(0..n as u32);
                topk.extend((0..k as u32).map(|j| (first + j) % n as u32));
            }
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
            let slot_pos = ex.download(&plan.slot_pos)?;
            let rows = plan.max_rows;

            let (resid, residf) = bf16_input(&mut rng, t * d, 2.0);
            let (shared, sharedf) = bf16_input(&mut rng, t * d, 1.0);
            let gate: Vec<f32> = uniform(&mut rng, t, 0.5).iter().map(|v| v + 0.5).collect();
            let (y, yf) = bf16_input(&mut rng, rows * d, 1.0);
            let w: Vec<f32> = uniform(&mut rng, t * k, 0.5)
                .iter()
                .map(|v| v + 0.5)
                .collect();
            let mut want = vec![0.0f64; t * d];
            moe_permute::combine(
                &residf,
                &sharedf,
                &f64s(&gate),
                &yf,
                &f64s(&w),
                &slot_pos,
                t,
                k,
                d,
                &mut want,
            );

            let (rb, sb, gb, yb, wb) = (
                ex.upload(&resid)?,
                ex.upload(&shared)?,
                ex.upload(&gate)?,
                ex.upload(&y)?,
                ex.upload(&w)?,
            );
            let ob = ex.alloc_zeroed::<bf16>(t * d)?;
            let inp = CombineInputs {
                resid: Some(&rb),
                shared_out: Some(&sb),
                shared_gate: Some(&gb),
                y_rows: &yb,
                topk_w: Some(&wb),
            };
            moe_combine::fwd(ex, &plan, &inp, &ob, d)?;
            assert_close(
                &format!("combine out ({what})"),
                &bf_f64(&ex.download(&ob)?),
                &want,
                1e-5,
                BF16_RTOL,
            )?;

            // Un-permute sum: only Y (weights 1, no residual / shared terms).
            let ones = vec![1.0f64; t * k];
            moe_permute::combine(
                &vec![0.0; t * d],
                &vec![0.0; t * d],
                &vec![0.0; t],
                &yf,
                &ones,
                &slot_pos,
                t,
                k,
                d,
                &mut want,
            );
            let inp = CombineInputs {
                resid: None,
                shared_out: None,
                shared_gate: None,
                y_rows: &yb,
                topk_w: None,
            };
            moe_combine::fwd(ex, &plan, &inp, &ob, d)?;
            assert_close(
                &format!("un-permute sum ({what})"),
                &bf_f64(&ex.download(&ob)?),
                &want,
                1e-5,
                BF16_RTOL,
            )?;

            // Backward.
            let (dout, doutf) = bf16_input(&mut rng, t * d, 1.0);
            let (mut wds, mut wdg, mut wdy, mut wdw) = (
                vec![0.0f64; t * d],
                vec![0.0f64; t],
                vec![0.0f64; rows * d],
                vec![0.0f64; t * k],
            );
            moe_permute::combine_bwd(
                &doutf,
                &sharedf,
                &f64s(&gate),
                &yf,
                &f64s(&w),
                &slot_pos,
                t,
                k,
                d,
                &mut wds,
                &mut wdg,
                &mut wdy,
                &mut wdw,
            );
            let db = ex.upload(&dout)?;
            // dy starts as garbage: padding rows must come back zero.
            let dyb = ex.upload(&vec![bf16::from_f32(3.0); rows * d])?;
            let dwb = ex.alloc_zeroed::<f32>(t * k)?;
            moe_combine::bwd_rows(ex, &plan, &db, &yb, Some(&wb), &dyb, Some(&dwb), d)?;
            assert_close(
                &format!("combine dy_rows ({what})"),
                &bf_f64(&ex.download(&dyb)?),
                &wdy,
                1e-6,
                BF16_RTOL,
            )?;
            // fp32 dot products of d terms.
            assert_close(
                &format!("combine dtopk_w ({what})"),
                &f64s(&ex.download(&dwb)?),
                &wdw,
                1e-5 * d as f64,
                1e-5,
            )?;
            let (dsb, dgb) = (ex.alloc_zeroed::<bf16>(t * d)?, ex.alloc_zeroed::<f32>(t)?);
            moe_combine::bwd_tokens(ex, &db, &sb, Some(&gb), &dsb, Some(&dgb), t, d)?;
            assert_close(
                &format!("combine dshared_out ({what})"),
                &bf_f64(&ex.download(&dsb)?),
                &wds,
                1e-6,
                BF16_RTOL,
            )?;
            assert_close(
                &format!("combine dshared_gate ({what})"),
                &f64s(&ex.download(&dgb)?),
                &wdg,
                1e-5 * d as f64,
                1e-5,
            )?;
        }
        Ok(())
    });
}
